"""FSD's teacher memory: k-means centroids of the teacher's features over the training set.

An unsupervised post-training stage (FSD, global inter-feature structure): computed once
per teacher, data, layer and k, and cached beside the teacher outputs so every trial
(on any node) reads the same memory.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from kd_search.files import write_file


def kmeans(features: torch.Tensor, k: int, iterations: int = 100, seed: int = 0) -> torch.Tensor:
    """Lloyd's k-means with k-means++ seeding; returns the (k, width) centroids.

    Stops when no assignment changes. An emptied cluster takes the point farthest from
    its centroid, so all k centroids stay in use.

    Example:
        >>> blobs = torch.cat([torch.randn(50, 2) * 0.1 + c for c in (-5.0, 5.0)])
        >>> sorted(round(float(x)) for x in kmeans(blobs, 2)[:, 0])
        [-5, 5]
    """
    features = features.double()
    k = min(k, len(features))
    generator = torch.Generator().manual_seed(seed)
    centroids = features[torch.randint(len(features), (1,), generator=generator)]
    while len(centroids) < k:  # k-means++: far points are likelier next centroids
        nearest = torch.cdist(features, centroids).min(dim=1).values.pow(2)
        pick = torch.multinomial(nearest / nearest.sum(), 1, generator=generator) if nearest.sum() > 0 \
            else torch.randint(len(features), (1,), generator=generator)
        centroids = torch.cat([centroids, features[pick]])
    assignment = None
    for _ in range(iterations):
        distances = torch.cdist(features, centroids)
        new_assignment = distances.argmin(dim=1)
        if assignment is not None and torch.equal(new_assignment, assignment):
            break
        assignment = new_assignment
        for cluster in range(k):
            members = features[assignment == cluster]
            if len(members):
                centroids[cluster] = members.mean(dim=0)
            else:
                farthest = distances.gather(1, assignment[:, None]).squeeze(1).argmax()
                centroids[cluster] = features[farthest]
    return centroids.float()


def teacher_memory(path: str | Path, features: Callable[[], torch.Tensor], k: int, seed: int = 0) -> torch.Tensor:
    """The cached memory at ``path``, or k-means over ``features()`` written there first.

    Example:
        >>> memory = teacher_memory("runs/cache/memory-k100.safetensors", pooled_features, 100)  # doctest: +SKIP
    """
    path = Path(path)
    if path.is_file():
        return load_file(str(path))["centroids"]
    centroids = kmeans(features(), k, seed=seed)
    # Concurrent trials may write the same content: the last whole file wins.
    write_file(path, lambda partial: save_file({"centroids": centroids.contiguous()}, str(partial)))
    return centroids
