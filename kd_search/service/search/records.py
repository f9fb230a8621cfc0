"""A study's trials read back from Optuna storage.

What ``status``, ``pareto``, ``export`` and ``report`` need, and what a launch returns: one
record per trial with its confirmations, the feasible Pareto front recomputed from the
stored values, the trials that count against the budget. Nothing here writes to the
storage or needs Ray; ``presenting`` shows these records to people, ``selection`` chooses
among them, and ``_confirm`` stores the confirmations read here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from kd_search.engine.measures import (
    SIGMA_CLASS_PREFIX,
    TRUST_METRICS,
    Certification,
    Verdict,
    certify,
)
from kd_search.service import figures, pareto
from kd_search.service.search.optuna_study import DUPLICATE_ATTR, INTERRUPTED_ATTR, REDRAWN_ATTR
from kd_search.service.seed_stats import mean_sd

# The metrics a trial's result leaves on its Optuna trial (user attributes), for readers
# of the storage; the driver copies them from the trial's last result.
RECORDED_METRICS = ("accuracy", "teacher_accuracy", "sigma", "mean_delta", "n_both", "kappa", "phi_cnf",
                    "sigma_train", "sigma_eval", "ece", "ece_teacher", "classwise_ece", "agreement",
                    "agreement_train", "train_seconds", "epoch", "resumed_from_epoch",
                    "sigma_ci_low", "sigma_ci_high", "sigma_se", "accuracy_ci_low", "accuracy_ci_high",
                    "f1_ci_low", "f1_ci_high", "mcc_ci_low", "mcc_ci_high", *TRUST_METRICS)
# What a trial tells about trust beyond sigma (pareto --json, the model card): sigma on
# both splits, then the trust measures on eval; sigma_class_<k> follow on K > 2 classes.
TRUST_FIELDS = ("sigma_train", "sigma_eval", *TRUST_METRICS)
# Study user attributes holding a trial's confirmations (its retraining with further
# seeds), one per (trial, seed): f"{CONFIRMATION_ATTR_PREFIX}{trial}:{seed}". Finished
# trials cannot take new attributes, so they live on the study.
CONFIRMATION_ATTR_PREFIX = "kd_search_confirmation:"


def recorded_metrics(result: dict[str, Any] | None) -> dict[str, Any]:
    """The metrics of a trial's last result that its record keeps: ``RECORDED_METRICS`` and
    the per-class sigmas (``sigma_class_<k>``).

    Example:
        >>> recorded_metrics({"accuracy": 0.8, "sigma_class_2": 0.05, "pid": 7})
        {'accuracy': 0.8, 'sigma_class_2': 0.05}
    """
    if not result:
        return {}
    return {k: v for k, v in result.items() if k in RECORDED_METRICS or k.startswith(SIGMA_CLASS_PREFIX)}


def trust_fields(attrs: dict[str, Any]) -> dict[str, float | None]:
    """The trust measures among a trial's recorded metrics (``TRUST_FIELDS``, then
    ``sigma_class_<k>`` by class), None where not measured (NaN or an older study).

    Example:
        >>> trust_fields({"flip_rate": 0.1, "nll": float("nan"), "sigma_class_1": 0.02})["sigma_class_1"]
        0.02
    """
    classes = sorted((k for k in attrs if k.startswith(SIGMA_CLASS_PREFIX)),
                     key=lambda k: int(k.removeprefix(SIGMA_CLASS_PREFIX)))
    found = {name: attrs.get(name) for name in (*TRUST_FIELDS, *classes)}
    return {name: None if isinstance(value, float) and math.isnan(value) else value for name, value in found.items()}


@dataclass
class TrialRecord:
    """One Optuna trial as the CLI and the report show it, with its confirmations.

    ``metric`` and ``sigma`` are the search's own values (one seed, the ones the front and
    Optuna's constraint use); ``confirmations`` are the trial's finished retrainings with
    further seeds (see :func:`confirmations`), whose COMPLETE ones join the search's run in
    ``seeds``, the means and standard deviations, and the ``verdict``.
    """

    number: int
    state: str
    metric: float | None
    sigma: float | None
    kappa: float | None
    params: dict[str, Any]
    attrs: dict[str, Any]
    confirmations: list[dict[str, Any]] = field(default_factory=list)
    metric_name: str = "accuracy"

    @property
    def duplicate_of(self) -> int | None:
        """The trial whose student this one shares (its effective configuration), or None."""
        return self.attrs.get(DUPLICATE_ATTR)

    @property
    def counts_against_budget(self) -> bool:
        """Whether it has used up one of the study's trials (see ``counts_against_budget``)."""
        return uses_budget(self.state, self.attrs)

    @property
    def feasible(self) -> bool:
        """The search's own run satisfies phi_cnf (sigma <= kappa): one seed, not certified."""
        return self.state == "COMPLETE" and self.sigma is not None and self.kappa is not None \
            and self.sigma <= self.kappa

    def _seed_runs(self) -> list[dict[str, Any]]:
        # The search's run first, then every COMPLETE confirmation: one dict per seed.
        if self.state != "COMPLETE" or self.sigma is None:
            return []
        own = self.attrs | {self.metric_name: self.metric, "sigma": self.sigma}
        return [own, *(c for c in self.confirmations if c.get("state") == "COMPLETE" and c.get("sigma") is not None)]

    @property
    def seeds(self) -> int:
        """COMPLETE training seeds: the search's own and the COMPLETE confirmations."""
        return len(self._seed_runs())

    @property
    def seed_sigmas(self) -> list[float]:
        """sigma of each COMPLETE seed, the search's first."""
        return [float(run["sigma"]) for run in self._seed_runs()]

    @property
    def sigma_mean(self) -> float | None:
        return mean_sd(self.seed_sigmas)[0]

    @property
    def sigma_std(self) -> float | None:
        """Sample standard deviation of sigma over the seeds; None with one seed."""
        return mean_sd(self.seed_sigmas)[1]

    @property
    def metric_mean(self) -> float | None:
        return mean_sd(self._seed_metrics())[0]

    @property
    def metric_std(self) -> float | None:
        """Sample standard deviation of the task metric over the seeds; None with one seed."""
        return mean_sd(self._seed_metrics())[1]

    def _seed_metrics(self) -> list[float]:
        return [float(run[self.metric_name]) for run in self._seed_runs() if run.get(self.metric_name) is not None]

    @property
    def sigma_ci_low(self) -> float | None:
        """Lower end of the search run's bootstrap interval of sigma (None in older studies)."""
        return self.attrs.get("sigma_ci_low")

    @property
    def sigma_ci_high(self) -> float | None:
        return self.attrs.get("sigma_ci_high")

    @property
    def metric_ci_low(self) -> float | None:
        """Lower end of the search run's bootstrap interval of the task metric (None in older studies)."""
        return self.attrs.get(f"{self.metric_name}_ci_low")

    @property
    def metric_ci_high(self) -> float | None:
        return self.attrs.get(f"{self.metric_name}_ci_high")

    @property
    def verdict(self) -> Certification | None:
        """:func:`kd_search.engine.measures.certify` over every COMPLETE seed's sigma and
        its bootstrap standard error (``sigma_se``; 0 where a study did not record it);
        None for a trial without a COMPLETE run or a kappa."""
        runs = self._seed_runs()
        if not runs or self.kappa is None:
            return None
        errors = [float(run.get("sigma_se") or 0.0) for run in runs]
        return certify([float(run["sigma"]) for run in runs], errors, float(self.kappa))

    @property
    def certified(self) -> bool:
        verdict = self.verdict
        return verdict is not None and verdict.verdict == Verdict.CERTIFIED

    def as_dict(self, metric_name: str) -> dict[str, Any]:
        verdict = self.verdict
        return {"trial": self.number, metric_name: self.metric, "accuracy": self.attrs.get("accuracy", self.metric),
                "sigma": self.sigma, "kappa": self.kappa, "phi_cnf": self.feasible, "params": self.params,
                "verdict": verdict.verdict.value if verdict else None, "seeds": self.seeds,
                "sigma_ci_low": self.sigma_ci_low, "sigma_ci_high": self.sigma_ci_high,
                f"{metric_name}_ci_low": self.attrs.get(f"{metric_name}_ci_low"),
                f"{metric_name}_ci_high": self.attrs.get(f"{metric_name}_ci_high"),
                "sigma_mean": self.sigma_mean, "sigma_std": self.sigma_std,
                f"{metric_name}_mean": self.metric_mean, f"{metric_name}_std": self.metric_std,
                "sigma_upper_bound": verdict.upper_bound if verdict else None, **trust_fields(self.attrs)}


@dataclass
class StudySummary:
    """The state of a study after a launch (or as read from storage)."""

    name: str
    metric_name: str
    trials: list[TrialRecord]
    front: list[TrialRecord] = field(default_factory=list)
    # MLflow writes a launch could not deliver (saved for the next launch).
    tracking_backlog: int = 0

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for trial in self.trials:
            out[trial.state] = out.get(trial.state, 0) + 1
        return out

    def verdicts(self) -> dict[int, str]:
        """Trial number -> verdict value (certified, unconfirmed, fails) of the finished trials."""
        return {t.number: verdict.verdict.value for t in self.trials if (verdict := t.verdict) is not None}

    def verdict_counts(self) -> dict[str, int]:
        """How many finished trials have each verdict."""
        out: dict[str, int] = {}
        for verdict in self.verdicts().values():
            out[verdict] = out.get(verdict, 0) + 1
        return out

    def pareto_figure(self, kappa: float | None, title: str = ""):
        """Task metric against sigma for the finished trials, with their intervals, the
        certified ones marked and the front joined (see figures)."""
        complete = [t for t in self.trials if t.state == "COMPLETE"]
        front = {t.number for t in self.front}
        return figures.pareto_figure([t.metric for t in complete], [t.sigma for t in complete],
                                     [t.feasible for t in complete],
                                     [i for i, t in enumerate(complete) if t.number in front], kappa,
                                     metric_name=self.metric_name, labels=[str(t.number) for t in complete],
                                     title=title,
                                     sigma_intervals=[(t.sigma_ci_low, t.sigma_ci_high) for t in complete],
                                     metric_intervals=[(t.metric_ci_low, t.metric_ci_high) for t in complete],
                                     certified=[t.certified for t in complete])

    def best_feasible(self) -> TrialRecord | None:
        """The most accurate trial whose search run satisfies phi_cnf (sigma <= kappa)."""
        feasible = [t for t in self.trials if t.feasible]
        return max(feasible, key=lambda t: (t.metric, -t.sigma)) if feasible else None

    def best_certified(self) -> TrialRecord | None:
        """The certified trial with the highest task metric, averaged over its seeds."""
        certified = [t for t in self.trials if t.certified]
        return max(certified, key=lambda t: (t.metric_mean, -t.sigma_mean)) if certified else None


def confirmations_in(study_attrs: dict[str, Any]) -> dict[int, list[dict[str, Any]]]:
    """The confirmations among a study's user attributes: trial number -> its finished
    confirmations (COMPLETE and FAIL), sorted by seed.

    Example:
        >>> confirmations_in({"kd_search_confirmation:3:2000": {"state": "FAIL", "seed": 2000, "trial": 3},
        ...                   "kd_search_confirmation:3:1000": {"state": "COMPLETE", "seed": 1000, "trial": 3},
        ...                   "spec": {}})
        {3: [{'state': 'COMPLETE', 'seed': 1000, 'trial': 3}, {'state': 'FAIL', 'seed': 2000, 'trial': 3}]}
    """
    out: dict[int, list[dict[str, Any]]] = {}
    for key, value in study_attrs.items():
        if key.startswith(CONFIRMATION_ATTR_PREFIX) and isinstance(value, dict):
            number = int(key.removeprefix(CONFIRMATION_ATTR_PREFIX).split(":")[0])
            out.setdefault(number, []).append(value)
    return {number: sorted(found, key=lambda c: c["seed"]) for number, found in sorted(out.items())}


def confirmations(optuna_study: optuna.Study) -> dict[int, list[dict[str, Any]]]:
    """Each trial's finished confirmations as stored on the study (see ``confirmations_in``).

    Example:
        >>> study = optuna.create_study(directions=["maximize", "minimize"])
        >>> study.set_user_attr("kd_search_confirmation:0:1000", {"state": "COMPLETE", "seed": 1000, "trial": 0})
        >>> confirmations(study)[0][0]["seed"]
        1000
    """
    return confirmations_in(optuna_study.user_attrs)


def trial_record(trial: FrozenTrial, confirmed: list[dict[str, Any]] | None = None,
                 metric_name: str = "accuracy") -> TrialRecord:
    """The record of one stored trial, with its confirmations; only a COMPLETE trial has
    objective values.

    Example:
        >>> frozen = optuna.trial.create_trial(values=[0.81, 0.04], user_attrs={"kappa": 0.05})
        >>> trial_record(frozen).feasible, trial_record(frozen).verdict.verdict.value
        (True, 'unconfirmed')
    """
    metric = sigma = None
    if trial.state == TrialState.COMPLETE and trial.values:
        metric, sigma = trial.values
    return TrialRecord(number=trial.number, state=trial.state.name, metric=metric, sigma=sigma,
                       kappa=trial.user_attrs.get("kappa"), params=dict(trial.params), attrs=dict(trial.user_attrs),
                       confirmations=list(confirmed or []), metric_name=metric_name)


def summarize(optuna_study: optuna.Study) -> StudySummary:
    """Every trial with its confirmations and the feasible Pareto front, recomputed from
    the stored values (the search's own: confirmations do not move the front). Proposals
    the driver set aside unrun (``REDRAWN_ATTR``) are no trials of the study here.

    Example:
        >>> summarize(load_optuna_study("demo", "sqlite:///runs/optuna.db")).front  # doctest: +SKIP
    """
    metric_name = (optuna_study.metric_names or ["accuracy", "sigma"])[0]
    confirmed = confirmations_in(optuna_study.user_attrs)  # one storage read for every trial
    records = [trial_record(t, confirmed.get(t.number), metric_name)
               for t in optuna_study.get_trials(deepcopy=False) if REDRAWN_ATTR not in t.user_attrs]
    return with_front(optuna_study.study_name, metric_name, records)


def with_front(name: str, metric_name: str, records: list[TrialRecord]) -> StudySummary:
    """Study ``name``'s summary of ``records``: their feasible Pareto front recomputed from
    the search's own values, most accurate first.

    Example:
        >>> records = [TrialRecord(0, "COMPLETE", 0.8, 0.04, 0.05, {}, {}),
        ...            TrialRecord(1, "COMPLETE", 0.7, 0.03, 0.05, {}, {}),
        ...            TrialRecord(2, "COMPLETE", 0.6, 0.05, 0.05, {}, {})]
        >>> [t.number for t in with_front("demo", "accuracy", records).front]
        [0, 1]
    """
    complete = [r for r in records if r.state == "COMPLETE"]
    front = [complete[i] for i in pareto.pareto_front([(r.metric, r.sigma) for r in complete],
                                                      [r.feasible for r in complete])]
    return StudySummary(name, metric_name, records, sorted(front, key=lambda r: -r.metric))


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
    if REDRAWN_ATTR in attrs:  # a proposal set aside unrun
        return False
    return state in ("COMPLETE", "PRUNED") or (state == "FAIL" and not attrs.get(INTERRUPTED_ATTR))


def finished_count(optuna_study: optuna.Study) -> int:
    """Trials that count against the budget: COMPLETE, PRUNED and FAIL (not interrupted).

    Example:
        >>> study = optuna.create_study(directions=["maximize", "minimize"])
        >>> study.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED))
        >>> finished_count(study)
        1
    """
    return sum(map(counts_against_budget, optuna_study.get_trials(deepcopy=False)))
