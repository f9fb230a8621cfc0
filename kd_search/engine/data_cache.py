"""The study's task tokenised once and shared by every worker, like the teacher's outputs.

Each trial's worker would otherwise read the examples and tokenise them again. The first
one stores the tokenised splits (``splits.safetensors``) with their example ids, class
count and data fingerprint (``meta.json``) under ``<cache>/data/<key>``; the others load
the tensors. The key hashes what the tokens depend on: the task section (source, limits,
``max_length``, columns), the tokenizer's full definition, and the size and modification
time of the local files read (the embedded snippets, CSV/JSONL/Parquet files); a GLUE
task is keyed by its name alone (the hub's datasets do not change). Entries are written
whole (:func:`kd_search.files.write_directory`): a reader sees all of one or nothing.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from safetensors.torch import load_file, save_file

from kd_search.engine.data import TaskData, TokenizedSplit, load_task, rotten_tomatoes_path
from kd_search.engine.spec import TaskSpec
from kd_search.files import write_directory

_TENSORS = ("input_ids", "token_type_ids", "attention_mask", "labels")
# Bumped when an entry's contents change meaning (2: the class names are stored), so
# entries written before are never read as if they held what is stored now.
CACHE_FORMAT = "2"


def _tokenizer_definition(tokenizer) -> str:
    # A fast tokenizer serialises everything that shapes its output (vocabulary,
    # normaliser, lower-casing); a slow one is known by its class and vocabulary.
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return backend.to_str()
    return type(tokenizer).__name__ + json.dumps(tokenizer.get_vocab(), sort_keys=True)


def _source_files(task: TaskSpec) -> list[Path]:
    if task.source == "rotten_tomatoes":
        return [rotten_tomatoes_path()]
    if task.source == "files":
        return [Path(task.train_file).expanduser(), Path(task.eval_file).expanduser()]
    return []


def _stamp(path: Path) -> str:
    # A file's size and modification time; a saved dataset directory's, of every file in it.
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path] if path.is_file() else []
    return ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)  # none: load_task says why


def data_cache_key(task: TaskSpec, tokenizer) -> str:
    """The cache entry's name for ``task`` tokenised by ``tokenizer``.

    Example:
        >>> from kd_search.engine.models import load_tokenizer
        >>> tokenizer = load_tokenizer("embedded:minilm-l6")
        >>> short, long = (data_cache_key(TaskSpec(max_length=n), tokenizer) for n in (32, 64))
        >>> len(short), short == long
        (20, False)
    """
    digest = hashlib.sha256(CACHE_FORMAT.encode())
    digest.update(json.dumps(task.model_dump(), sort_keys=True, default=str).encode())
    digest.update(_tokenizer_definition(tokenizer).encode())
    for path in _source_files(task):
        digest.update(f"{path.resolve()}:{_stamp(path)}".encode())
    return digest.hexdigest()[:20]


def cached_task(task: TaskSpec, tokenizer, cache_root: str | Path) -> TaskData:
    """The task tokenised (:func:`~kd_search.engine.data.load_task`), read from the cache
    under ``cache_root`` or computed and stored there first.

    Example:
        >>> data = cached_task(study.task, tokenizer, "runs/demo/cache")  # doctest: +SKIP
        >>> data.train.input_ids.shape  # doctest: +SKIP
        torch.Size([2000, 64])
    """
    directory = Path(cache_root) / "data" / data_cache_key(task, tokenizer)
    if (directory / "meta.json").is_file():
        return _read(directory)
    data = load_task(task, tokenizer)

    def store(staging: Path) -> None:
        staging.mkdir()
        tensors = {f"{split}_{name}": getattr(getattr(data, split), name).contiguous()
                   for split in ("train", "eval") for name in _TENSORS}
        save_file(tensors, str(staging / "splits.safetensors"))
        meta = {"train_ids": data.train.ids, "eval_ids": data.eval.ids, "num_labels": data.num_labels,
                "fingerprint": data.fingerprint, "label_names": data.label_names}
        (staging / "meta.json").write_text(json.dumps(meta))

    # Concurrent workers may store the same entry: the first one stays.
    write_directory(directory, store, replace=False)
    return data


def _read(directory: Path) -> TaskData:
    meta = json.loads((directory / "meta.json").read_text())
    tensors = load_file(str(directory / "splits.safetensors"))

    def split(name: str) -> TokenizedSplit:
        return TokenizedSplit(meta[f"{name}_ids"], *(tensors[f"{name}_{field}"] for field in _TENSORS))

    names = meta.get("label_names")
    return TaskData(train=split("train"), eval=split("eval"), num_labels=meta["num_labels"],
                    fingerprint=meta["fingerprint"], label_names=tuple(names) if names is not None else None)
