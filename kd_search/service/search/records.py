"""A study's trials as the CLI and the report read them back from Optuna storage.

What ``status``, ``pareto``, ``export`` and ``report`` need, and what a launch returns: one
record per trial, the feasible Pareto front recomputed from the stored values, the trials
that count against the budget. Nothing here needs Ray.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from kd_search.engine.spec import Study
from kd_search.errors import SearchError
from kd_search.service import figures, pareto
from kd_search.service.search.optuna_study import INTERRUPTED_ATTR

# The metrics a trial's result leaves on its Optuna trial (user attributes), for readers
# of the storage; the driver copies them from the trial's last result.
RECORDED_METRICS = ("accuracy", "teacher_accuracy", "sigma", "mean_delta", "n_both", "kappa", "phi_cnf",
                    "sigma_train", "sigma_eval", "ece", "ece_teacher", "classwise_ece", "agreement",
                    "agreement_train", "train_seconds", "epoch", "resumed_from_epoch",
                    "sigma_ci_low", "sigma_ci_high", "sigma_se", "accuracy_ci_low", "accuracy_ci_high",
                    "f1_ci_low", "f1_ci_high", "mcc_ci_low", "mcc_ci_high")
# Study user attributes holding a trial's confirmations (its retraining with further
# seeds), one per (trial, seed): f"{CONFIRMATION_ATTR_PREFIX}{trial}:{seed}". Finished
# trials cannot take new attributes, so they live on the study.
CONFIRMATION_ATTR_PREFIX = "kd_search_confirmation:"


@dataclass
class TrialRecord:
    """One Optuna trial as the CLI and the report show it."""

    number: int
    state: str
    metric: float | None
    sigma: float | None
    kappa: float | None
    params: dict[str, Any]
    attrs: dict[str, Any]

    @property
    def counts_against_budget(self) -> bool:
        """Whether it has used up one of the study's trials (see ``counts_against_budget``)."""
        return uses_budget(self.state, self.attrs)

    @property
    def feasible(self) -> bool:
        return self.state == "COMPLETE" and self.sigma is not None and self.kappa is not None \
            and self.sigma <= self.kappa

    def as_dict(self, metric_name: str) -> dict[str, Any]:
        # Trials recorded before the intervals existed have none: null in JSON.
        intervals = ("sigma_ci_low", "sigma_ci_high", f"{metric_name}_ci_low", f"{metric_name}_ci_high")
        return {"trial": self.number, metric_name: self.metric, "accuracy": self.attrs.get("accuracy", self.metric),
                "sigma": self.sigma, "kappa": self.kappa, "phi_cnf": self.feasible, "params": self.params} \
            | {name: self.attrs.get(name) for name in intervals}


@dataclass
class StudySummary:
    """The state of a study after a launch (or as read from storage)."""

    name: str
    metric_name: str
    trials: list[TrialRecord]
    front: list[TrialRecord] = field(default_factory=list)
    ui_url: str = ""
    # MLflow writes a launch could not deliver (saved for the next launch).
    tracking_backlog: int = 0

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for trial in self.trials:
            out[trial.state] = out.get(trial.state, 0) + 1
        return out

    def pareto_figure(self, kappa: float | None, title: str = ""):
        """Task metric against sigma for the finished trials, the front joined (see figures)."""
        complete = [t for t in self.trials if t.state == "COMPLETE"]
        front = {t.number for t in self.front}
        return figures.pareto_figure([t.metric for t in complete], [t.sigma for t in complete],
                                     [t.feasible for t in complete],
                                     [i for i, t in enumerate(complete) if t.number in front], kappa,
                                     metric_name=self.metric_name, labels=[str(t.number) for t in complete],
                                     title=title)

    def best_feasible(self) -> TrialRecord | None:
        """The most accurate trial that satisfies phi_cnf (sigma <= kappa)."""
        feasible = [t for t in self.trials if t.feasible]
        return max(feasible, key=lambda t: (t.metric, -t.sigma)) if feasible else None


def trial_record(trial: FrozenTrial) -> TrialRecord:
    """The record of one stored trial; only a COMPLETE trial has objective values.

    Example:
        >>> frozen = optuna.trial.create_trial(values=[0.81, 0.04], user_attrs={"kappa": 0.05})
        >>> trial_record(frozen).feasible
        True
    """
    metric = sigma = None
    if trial.state == TrialState.COMPLETE and trial.values:
        metric, sigma = trial.values
    return TrialRecord(number=trial.number, state=trial.state.name, metric=metric, sigma=sigma,
                       kappa=trial.user_attrs.get("kappa"), params=dict(trial.params), attrs=dict(trial.user_attrs))


def summarize(optuna_study: optuna.Study) -> StudySummary:
    """Every trial and the feasible Pareto front, recomputed from the stored values.

    Example:
        >>> summarize(load_optuna_study("demo", "sqlite:///runs/optuna.db")).front  # doctest: +SKIP
    """
    records = [trial_record(t) for t in optuna_study.get_trials(deepcopy=False)]
    complete = [r for r in records if r.state == "COMPLETE"]
    front = [complete[i] for i in pareto.pareto_front([(r.metric, r.sigma) for r in complete],
                                                      [r.feasible for r in complete])]
    metric_names = optuna_study.metric_names or ["accuracy", "sigma"]
    return StudySummary(optuna_study.study_name, metric_names[0], records, sorted(front, key=lambda r: -r.metric))


def counts_against_budget(trial: FrozenTrial) -> bool:
    """Whether a trial has used up one of the study's trials (see ``finished_count``).

    Example:
        >>> counts_against_budget(optuna.trial.create_trial(state=TrialState.PRUNED))
        True
    """
    return uses_budget(trial.state.name, trial.user_attrs)


def uses_budget(state: str, attrs: dict[str, Any]) -> bool:
    """Whether a trial in ``state`` (a ``TrialState`` name) with user ``attrs`` counts against the budget.

    Example:
        >>> uses_budget("FAIL", {INTERRUPTED_ATTR: True})
        False
    """
    return state in ("COMPLETE", "PRUNED") or (state == "FAIL" and not attrs.get(INTERRUPTED_ATTR))


def finished_count(optuna_study: optuna.Study) -> int:
    """Trials that count against the budget: COMPLETE, PRUNED and FAIL (not interrupted)."""
    return sum(map(counts_against_budget, optuna_study.get_trials(deepcopy=False)))


def select_trial(summary: StudySummary, number: int | None = None, best: bool = False) -> TrialRecord:
    """Trial ``number``, or with ``best`` the most accurate trial satisfying phi_cnf.

    Example:
        >>> select_trial(summary, best=True).number  # doctest: +SKIP
        3
    """
    if best:
        chosen = summary.best_feasible()
        if chosen is None:
            raise SearchError(f"study {summary.name!r} has no finished trial with sigma <= kappa yet")
        return chosen
    by_number = {t.number: t for t in summary.trials}
    if number not in by_number:
        raise SearchError(f"study {summary.name!r} has no trial {number} (trials: 0..{len(summary.trials) - 1})")
    chosen = by_number[number]
    if chosen.state != "COMPLETE":
        raise SearchError(f"trial {number} of study {summary.name!r} is {chosen.state}, not COMPLETE")
    return chosen


def summary_table(summary: StudySummary) -> pd.DataFrame:
    """One row per trial: state, objectives, kappa, phi_cnf, on the front, parameters."""
    front = {t.number for t in summary.front}
    rows = [{"trial": t.number, "state": t.state, summary.metric_name: t.metric, "sigma": t.sigma,
             "kappa": t.kappa, "phi_cnf": t.feasible, "pareto": t.number in front, **t.params}
            for t in summary.trials]
    return pd.DataFrame(rows)


def confirmation_seeds(study: Study, n: int) -> list[int]:
    """The ``n`` training seeds that confirm a trial: never the search's seed nor the study's.

    Example:
        >>> confirmation_seeds(Study(name="demo", seed=7, student={"teacher_layers": [2]}), 2)
        [1007, 2007]
    """
    search_seed = study.seed if study.distillation.seed is None else study.distillation.seed
    return [search_seed + 1000 * (k + 1) for k in range(n)]


def confirmation_key(trial_number: int, seed: int) -> str:
    """The study user attribute holding trial ``trial_number``'s confirmation with ``seed``.

    Example:
        >>> confirmation_key(3, 1000)
        'kd_search_confirmation:3:1000'
    """
    return f"{CONFIRMATION_ATTR_PREFIX}{trial_number}:{seed}"


def record_confirmation(optuna_study: optuna.Study, trial_number: int, seed: int, payload: dict[str, Any]) -> None:
    """Store a finished confirmation: ``payload`` holds its ``state`` (COMPLETE or FAIL),
    ``failure`` (FAIL only) and its recorded metrics. Only the driver calls this.

    Example:
        >>> study = optuna.create_study(directions=["maximize", "minimize"])
        >>> record_confirmation(study, 3, 1000, {"state": "COMPLETE", "accuracy": 0.8, "sigma": 0.04})
        >>> study.user_attrs["kd_search_confirmation:3:1000"]["seed"]
        1000
    """
    if payload.get("state") not in ("COMPLETE", "FAIL"):
        raise ValueError(f"a confirmation is COMPLETE or FAIL, not {payload.get('state')!r}")
    optuna_study.set_user_attr(confirmation_key(trial_number, seed), payload | {"seed": seed, "trial": trial_number})
