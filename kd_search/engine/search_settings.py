"""The search service's settings in the study file: ``search`` (sampler, budget, search
space, enqueued trials, scheduler, confirmation) and ``tracking`` (where a study lives).

They are the service's, but they stay in the engine: one study file holds the whole study,
and :class:`~kd_search.engine.spec.Study` validates it in one piece (the search space
against the distillation stages, enqueued trials against the space), while the engine's
:mod:`kd_search.engine.hyperparameters` turns the space into Optuna distributions.

Example:
    >>> SearchSpec(space={"alpha": {"low": 0.0, "high": 0.5}}).space["alpha"].high
    0.5
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from kd_search.engine.validation import PositiveFloat, PositiveInt, StrictModel
from kd_search.urls import has_password


class ParameterRange(StrictModel):
    """One searched hyperparameter: a range (``low``, ``high``, ``log``, ``step``) or ``choices``."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    step: PositiveFloat | None = None
    choices: list[float | int | str] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _range_or_choices(self) -> ParameterRange:
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either choices or low/high, not both")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high (or choices)")
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("step cannot be combined with log")
        return self


def check_enqueued(where: str, value: float | int | str, rng: ParameterRange | None) -> None:
    """Raise ``ValueError`` (naming ``where``) unless ``value`` is one ``rng`` can take.

    Example:
        >>> check_enqueued("search.enqueue[0].alpha", 0.7, ParameterRange(low=0.0, high=0.5))
        Traceback (most recent call last):
        ValueError: search.enqueue[0].alpha: 0.7 is outside the range [0.0, 0.5]
    """
    if rng is None:
        raise ValueError(f"{where}: not a name of search.space")
    if rng.choices is not None:
        if value not in rng.choices:
            raise ValueError(f"{where}: {value!r} is not one of the choices {rng.choices}")
    elif isinstance(value, str) or not rng.low <= value <= rng.high:
        raise ValueError(f"{where}: {value!r} is outside the range [{rng.low}, {rng.high}]")


class ResourcesSpec(StrictModel):
    cpu: Annotated[float, Field(ge=0)] = 1
    gpu: Annotated[float, Field(ge=0)] = 0


class ConfirmSpec(StrictModel):
    """Confirmation within the search: the ``top`` most accurate feasible trials (and any
    trial whose sigma interval straddles kappa) trained again with ``seeds`` more seeds,
    none that a certified trial dominates.

    Example:
        >>> ConfirmSpec(top=3).seeds, ConfirmSpec(top=3).decide_early
        (3, True)
    """

    # 0: no confirmation (``kd-search confirm`` can still run it after the search).
    top: Annotated[int, Field(ge=0)] = 0
    # Up to 3: benchmarks/bound_coverage.py found U covering every fresh seed from 1 to 4
    # confirmation seeds, while each further seed certified more recipes; with
    # decide_early most trials stop before the third (see the README's coverage table).
    seeds: PositiveInt = 3
    # Stop confirming a trial once its verdict is decided (U <= kappa: certified; the
    # mean sigma above kappa: fails), leaving its further seeds untrained.
    decide_early: bool = True


class SearchSpec(StrictModel):
    sampler: Literal["tpe", "gp", "nsga2", "random"] = "gp"
    trials: PositiveInt = 8
    concurrency: PositiveInt = 1
    resources: ResourcesSpec = ResourcesSpec()
    space: dict[str, ParameterRange] = Field(default_factory=dict)
    # Run the study's defaults (the TinyBERT recipe) as the first trial.
    enqueue_defaults: bool = True
    # Known good starting points, run in order after the defaults: each maps searched
    # names to values; names it leaves out are sampled.
    enqueue: list[dict[str, float | int | str]] = Field(default_factory=list)
    # Trials the sampler draws at random before it models the results; by default a
    # quarter of the budget (at least 2), so short studies still get guided trials.
    startup_trials: PositiveInt | None = None
    # Students kept for export: the feasible Pareto front and every confirmed trial, every
    # finished trial, or none.
    keep_checkpoints: Literal["pareto", "all", "none"] = "pareto"
    # How often Ray restarts a crashed trial from its last epoch checkpoint.
    max_failures: Annotated[int, Field(ge=0)] = 2
    # fifo runs every trial to the end; asha stops trials whose task metric lags at an
    # epoch rung; mo_asha stops those outside the top half of the rung by constrained
    # non-dominated sorting on (task metric up, sigma down, sigma <= kappa). Stopped
    # trials are recorded as PRUNED and never reach the front.
    scheduler: Literal["fifo", "asha", "mo_asha"] = "fifo"
    confirm: ConfirmSpec = ConfirmSpec()


class TrackingSpec(StrictModel):
    """Where a study lives; each can be overridden on the command line or by environment."""

    workdir: str | None = None
    storage: str | None = None
    tracking_uri: str | None = None
    experiment: str | None = None

    @field_validator("storage", "tracking_uri")
    @classmethod
    def _no_secrets(cls, url: str | None) -> str | None:
        # Study files are committed and stored with the study; credentials are not.
        if url and has_password(url):
            raise ValueError("holds a password: give it in the environment (PGPASSWORD, MLFLOW_TRACKING_PASSWORD) "
                             "or in --storage/--tracking-uri, never in a study file")
        return url
