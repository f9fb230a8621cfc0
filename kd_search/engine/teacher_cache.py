"""Teacher outputs computed once, memory-mapped and shared by every trial and worker.

A study runs dozens of trials on the same teacher and data, and the teacher forward is
most of a distillation step's cost. The teacher therefore runs once per (teacher, data,
max length, layers) and writes, as ``.npy`` files:

* ``<split>_logits.npy``: float32 logits for the train and eval splits;
* ``train_hidden_<l>.npy``: float16 hidden states of teacher layer l (0 = embeddings),
  only for the layers the layer map uses and only when an intermediate stage needs them;
* ``train_scores_<l>.npy``: float16 unnormalised attention scores of layer l, masked
  entries stored as 0 (the value TinyBERT's loss gives them);
* ``train_values_<l>.npy``: float16 value vectors of layer l (MiniLM's value relation).

Before a fill, the entry's size on disk is computed from the data, layers and lengths
(``cache_bytes``), shown in the progress line, and a fill the cache's filesystem cannot
hold is refused in one line before the teacher runs (``check_cache_space``).

Filling is atomic and safe across processes: a file lock lets one process compute
while the others wait, the files are written in a staging directory that is renamed
into place, and readers only ever see complete entries. On a cluster, point
``distillation.cache_dir`` at a directory every node reaches.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kd_search.engine.data import TaskData, batches
from kd_search.engine.losses.tinybert import MASKED_SCORE_THRESHOLD
from kd_search.engine.models import capture_values, use_attention_scores
from kd_search.engine.progress import ProgressCallback
from kd_search.errors import CacheSpaceError
from kd_search.files import write_directory

_COMPLETE = "meta.json"


@dataclass(frozen=True)
class TeacherLayers:
    """The teacher's intermediate outputs a study's trials read, by layer: hidden states
    (0 = embeddings), attention scores and value vectors (1-based layers).

    Example:
        >>> TeacherLayers(hidden=(0, 2), scores=(2,))
        TeacherLayers(hidden=(0, 2), scores=(2,), values=())
    """

    hidden: tuple[int, ...] = ()
    scores: tuple[int, ...] = ()
    values: tuple[int, ...] = ()


@dataclass
class TeacherBatch:
    """The teacher's outputs for one batch: ``hidden`` in the order of the layers asked
    for (hidden[0] the embeddings), ``scores`` and ``values`` keyed by layer."""

    logits: torch.Tensor
    hidden: list[torch.Tensor]
    scores: dict[int, torch.Tensor]
    values: dict[int, torch.Tensor]


def cache_key(teacher_key: str, data_fingerprint: str, layers: TeacherLayers) -> str:
    """The cache entry's name: a hash of everything the stored outputs depend on.

    Example:
        >>> len(cache_key("teacher-key", "data-fingerprint", TeacherLayers(hidden=(0, 2), scores=(2,))))
        20
    """
    recipe = json.dumps([teacher_key, data_fingerprint, sorted(layers.hidden), sorted(layers.scores),
                         sorted(layers.values), 2])
    return hashlib.sha256(recipe.encode()).hexdigest()[:20]


# numpy's .npy header, padded to this many bytes for the arrays a cache holds.
NPY_HEADER_BYTES = 128


def cache_bytes(train_rows: int, eval_rows: int, max_length: int, num_labels: int, hidden_size: int,
                num_heads: int, layers: TeacherLayers) -> int:
    """Bytes a cache entry takes on disk: float32 logits of both splits, and per train row
    float16 hidden states and value vectors (max_length x hidden_size per layer) and
    attention scores (num_heads x max_length x max_length per layer).

    Example:
        >>> # SST-2 (67,349 train, 872 eval rows, length 64), BERT-base's hidden states of
        >>> # 5 layers and scores of 4: TinyBERT-4L's intermediate stage.
        >>> round(cache_bytes(67349, 872, 64, 2, 768, 12, TeacherLayers((0, 3, 6, 9, 12), (3, 6, 9, 12))) / 1e9, 1)
        59.6
    """
    files = 2 + len(layers.hidden) + len(layers.scores) + len(layers.values)
    per_row = (2 * max_length * hidden_size * (len(layers.hidden) + len(layers.values))
               + 2 * num_heads * max_length * max_length * len(layers.scores))
    return 4 * (train_rows + eval_rows) * num_labels + train_rows * per_row + NPY_HEADER_BYTES * files


def human_bytes(size: float) -> str:
    """A byte count for people, in powers of 1000 as ``df -H`` shows them.

    Example:
        >>> human_bytes(46_600_000_000), human_bytes(512)
        ('46.6 GB', '512 B')
    """
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def check_cache_space(directory: Path, size: int) -> None:
    """Refuse, in one line, a fill of ``size`` bytes that ``directory``'s filesystem cannot hold.

    Example:
        >>> check_cache_space(Path("/tmp"), 10**18)
        Traceback (most recent call last):
        kd_search.errors.CacheSpaceError: teacher-output cache /tmp needs 1000000.0 TB, its filesystem has ... free; ...
    """
    free = shutil.disk_usage(directory).free
    if size > free:
        raise CacheSpaceError(f"teacher-output cache {directory} needs {human_bytes(size)}, its filesystem has "
                              f"{human_bytes(free)} free; free space, or point distillation.cache_dir at a larger "
                              "filesystem (or set distillation.cache_teacher: false)")


class CachedTeacher:
    """Teacher outputs read from a complete cache entry (memory-mapped, read-only)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.meta = json.loads((directory / _COMPLETE).read_text())
        self._arrays: dict[str, np.ndarray] = {}

    def _array(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            self._arrays[name] = np.load(self.directory / f"{name}.npy", mmap_mode="r")
        return self._arrays[name]

    def logits(self, split: str) -> torch.Tensor:
        """All logits of a split (float32)."""
        return torch.from_numpy(np.array(self._array(f"{split}_logits")))

    def batch(self, rows: torch.Tensor, batch: dict, device: torch.device, with_intermediate: bool) -> TeacherBatch:
        """Train-split outputs for ``rows``, trimmed to the length of the student's ``batch``."""
        length = batch["input_ids"].shape[1]
        index = np.sort(rows.numpy())
        order = torch.from_numpy(np.searchsorted(index, rows.numpy()))  # back to batch order

        def take(name: str, trim) -> torch.Tensor:
            # Sorted reads are sequential in the memory map; reorder afterwards.
            values = torch.from_numpy(np.ascontiguousarray(trim(self._array(name)[index])))
            return values[order].to(device, non_blocking=True)

        logits = take("train_logits", lambda a: a)
        if not with_intermediate:
            return TeacherBatch(logits, [], {}, {})
        hidden = [take(f"train_hidden_{layer}", lambda a: a[:, :length]) for layer in self.meta["hidden_layers"]]
        scores = {layer: take(f"train_scores_{layer}", lambda a: a[:, :, :length, :length])
                  for layer in self.meta["score_layers"]}
        values = {layer: take(f"train_values_{layer}", lambda a: a[:, :length]) for layer in self.meta["value_layers"]}
        return TeacherBatch(logits, hidden, scores, values)


def _teacher_forward(teacher, batch: dict, device: torch.device, layers: TeacherLayers):
    """The teacher's output and, for ``layers.values``, its value vectors by layer."""
    with capture_values(teacher, list(layers.values)) as values:
        out = teacher(input_ids=batch["input_ids"].to(device), token_type_ids=batch["token_type_ids"].to(device),
                      attention_mask=batch["attention_mask"].to(device), output_hidden_states=bool(layers.hidden),
                      output_attentions=bool(layers.scores))
    return out, values


def _zero_masked(scores: torch.Tensor) -> torch.Tensor:
    return torch.where(scores <= MASKED_SCORE_THRESHOLD, torch.zeros_like(scores), scores)


def _fill(directory: Path, teacher, data: TaskData, layers: TeacherLayers, batch_size: int, device: torch.device,
          progress: ProgressCallback | None, description: str) -> None:
    use_attention_scores(teacher, bool(layers.scores))
    teacher.eval().to(device)
    max_length = data.train.input_ids.shape[1]
    files: dict[str, np.ndarray] = {}

    def array(name: str, shape: tuple, dtype) -> np.ndarray:
        if name not in files:
            files[name] = np.lib.format.open_memmap(directory / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)
        return files[name]

    total = -(-len(data.train) // batch_size) + -(-len(data.eval) // batch_size)
    done = 0
    with torch.inference_mode():
        for split_name, split in (("train", data.train), ("eval", data.eval)):
            intermediate = layers if split_name == "train" else TeacherLayers()
            for rows, batch in batches(split, batch_size, shuffle=False):
                out, values = _teacher_forward(teacher, batch, device, intermediate)
                start, stop, length = int(rows[0]), int(rows[-1]) + 1, batch["input_ids"].shape[1]
                logits = out.logits.float().cpu().numpy()
                array(f"{split_name}_logits", (len(split), logits.shape[1]), np.float32)[start:stop] = logits
                for layer in intermediate.hidden:
                    h = out.hidden_states[layer].to(torch.float16).cpu().numpy()
                    target = array(f"train_hidden_{layer}", (len(split), max_length, h.shape[-1]), np.float16)
                    target[start:stop, :length] = h  # rows beyond `length` stay 0 (never read)
                for layer in intermediate.scores:
                    a = _zero_masked(out.attentions[layer - 1].float()).to(torch.float16).cpu().numpy()
                    target = array(f"train_scores_{layer}", (len(split), a.shape[1], max_length, max_length), np.float16)
                    target[start:stop, :, :length, :length] = a
                for layer in intermediate.values:
                    v = values[layer].to(torch.float16).cpu().numpy()
                    target = array(f"train_values_{layer}", (len(split), max_length, v.shape[-1]), np.float16)
                    target[start:stop, :length] = v
                done += 1
                if progress:
                    progress(description, done, total)
    for values in files.values():
        values.flush()
    use_attention_scores(teacher, False)


@contextmanager
def _exclusive(lock_path: Path):
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_teacher(cache_root: str | Path, key: str, load_teacher: Callable[[], torch.nn.Module], data: TaskData,
                   layers: TeacherLayers, batch_size: int = 128, device: torch.device | None = None,
                   progress: ProgressCallback | None = None) -> CachedTeacher:
    """Open the cache entry ``key``, computing it first if no process has yet.

    ``load_teacher`` is only called when the entry must be computed. Before computing,
    the entry's size (``cache_bytes``) is shown in the progress line and checked against
    the free space of ``cache_root``'s filesystem (``CacheSpaceError`` when it cannot fit).

    Example:
        >>> layers = TeacherLayers(hidden=(0, 2), scores=(2,))
        >>> cache = cached_teacher("runs/demo/cache", key, lambda: teacher, data, layers)  # doctest: +SKIP
        >>> cache.logits("eval").shape  # doctest: +SKIP
        torch.Size([1000, 2])
    """
    root = Path(cache_root)
    directory = root / key
    if (directory / _COMPLETE).is_file():
        return CachedTeacher(directory)
    with _exclusive(root / f"{key}.lock"):
        if not (directory / _COMPLETE).is_file():  # nobody filled it while we waited
            teacher = load_teacher()
            config = teacher.config
            size = cache_bytes(len(data.train), len(data.eval), data.train.input_ids.shape[1], data.num_labels,
                               config.hidden_size, config.num_attention_heads, layers)
            check_cache_space(root, size)  # before the teacher's first forward pass

            def fill(staging: Path) -> None:
                staging.mkdir()
                _fill(staging, teacher, data, layers, batch_size, device or torch.device("cpu"), progress,
                      f"caching teacher outputs ({human_bytes(size)} in {root})")
                meta = {"hidden_layers": list(layers.hidden), "score_layers": list(layers.scores),
                        "value_layers": list(layers.values), "bytes": size,
                        "train_rows": len(data.train), "eval_rows": len(data.eval), "train_ids": data.train.ids[:3]}
                (staging / _COMPLETE).write_text(json.dumps(meta))

            write_directory(directory, fill)
    return CachedTeacher(directory)


class OnTheFlyTeacher:
    """The teacher run in every step: for teacher dropout (train mode) or no cache at all."""

    def __init__(self, teacher, layers: TeacherLayers, device: torch.device, dropout: bool) -> None:
        self.teacher = teacher.to(device)
        self.layers = layers
        self.dropout = dropout

    def batch(self, rows: torch.Tensor, batch: dict, device: torch.device, with_intermediate: bool) -> TeacherBatch:
        """The teacher's outputs on the student's (already trimmed) ``batch``, computed now."""
        layers = self.layers if with_intermediate else TeacherLayers()
        self.teacher.train(self.dropout)
        use_attention_scores(self.teacher, bool(layers.scores))
        with torch.no_grad():
            out, values = _teacher_forward(self.teacher, batch, device, layers)
        return TeacherBatch(
            out.logits.float(),
            [out.hidden_states[layer] for layer in layers.hidden],
            {layer: _zero_masked(out.attentions[layer - 1]) for layer in layers.scores},
            {layer: values[layer] for layer in layers.values},
        )
