"""The structure losses by name, with what each one reads: plain data, no torch.

The study file's ``distillation.structure`` weights, the search space's
``weight_<name>`` hyperparameters and the teacher outputs a trial must provide all
follow from this table; :mod:`kd_search.engine.losses.structure` registers each
loss's function against its name. Validating a study imports this, never torch.

Example:
    >>> STRUCTURE_LOSSES[:3]
    ('fsd_intra', 'fsd_local', 'fsd_global')
    >>> MINILM_LOSSES, MEMORY_LOSSES
    (('minilm_attention', 'minilm_value'), ('fsd_global',))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class StructureLossNeeds:
    """What one structure loss compares, besides the student's and teacher's hidden states.

    ``layers``: ``last`` compares the last mapped layer, ``mapped`` every mapped layer.
    ``self_attention``: the last mapped layer's attention scores and value vectors.
    ``memory``: FSD's memories of k items (the teacher's k-means centroids, the student's learned).

    Example:
        >>> STRUCTURE_LOSS_NEEDS["pkd"].layers
        'mapped'
    """

    description: str
    layers: Literal["last", "mapped"] = "last"
    self_attention: bool = False
    memory: bool = False


STRUCTURE_LOSS_NEEDS: dict[str, StructureLossNeeds] = {
    "fsd_intra": StructureLossNeeds("FSD intra-feature structure: CKA of each sample's tokens"),
    "fsd_local": StructureLossNeeds("FSD local inter-feature structure: CKA between the batch's samples"),
    "fsd_global": StructureLossNeeds("FSD global inter-feature structure against memories of k items",
                                     memory=True),
    "pkd": StructureLossNeeds("Patient KD: normalised [CLS] vectors of every mapped layer", layers="mapped"),
    "rkd_distance": StructureLossNeeds("RKD distance-wise relations of the batch's [CLS] vectors"),
    "rkd_angle": StructureLossNeeds("RKD angle-wise relations of the batch's [CLS] vectors"),
    "minilm_attention": StructureLossNeeds("MiniLM: attention distributions of the last mapped layer",
                                           self_attention=True),
    "minilm_value": StructureLossNeeds("MiniLM: value relations of the last mapped layer", self_attention=True),
}
STRUCTURE_LOSSES = tuple(STRUCTURE_LOSS_NEEDS)
MINILM_LOSSES = tuple(name for name, needs in STRUCTURE_LOSS_NEEDS.items() if needs.self_attention)
MEMORY_LOSSES = tuple(name for name, needs in STRUCTURE_LOSS_NEEDS.items() if needs.memory)
