"""A study's trials for people: a trial's verdict in words, every trial in one table."""

from __future__ import annotations

import pandas as pd

from kd_search.engine.measures import Verdict
from kd_search.service.search.records import StudySummary, TrialRecord


def verdict_text(record: TrialRecord) -> str:
    """A trial's verdict for people: "certified", "holds on one seed (unconfirmed)",
    "holds on N seeds, not certified", "fails", or "-" without a finished run.

    Example:
        >>> record = TrialRecord(3, "COMPLETE", 0.81, 0.04, 0.05, {}, {})
        >>> verdict_text(record)
        'holds on one seed (unconfirmed)'
        >>> record.confirmations = [{"state": "COMPLETE", "seed": 1000, "sigma": 0.041, "accuracy": 0.8},
        ...                         {"state": "COMPLETE", "seed": 2000, "sigma": 0.039, "accuracy": 0.8}]
        >>> verdict_text(record)
        'certified'
    """
    verdict = record.verdict
    if record.duplicate_of is not None:
        return f"duplicate of trial {record.duplicate_of}"
    if verdict is None:
        return "-"
    if verdict.verdict == Verdict.UNCONFIRMED:
        return "holds on one seed (unconfirmed)" if verdict.seeds == 1 else \
            f"holds on {verdict.seeds} seeds, not certified"
    return verdict.verdict.value


def summary_table(summary: StudySummary) -> pd.DataFrame:
    """One row per trial: state, objectives, kappa, phi_cnf, on the front, the verdict
    over its seeds with sigma's interval and spread, parameters.

    Example:
        >>> record = TrialRecord(0, "COMPLETE", 0.8, 0.04, 0.05, {"alpha": 0.1}, {})
        >>> table = summary_table(StudySummary("demo", "accuracy", [record]))
        >>> table[["trial", "accuracy", "phi_cnf", "verdict", "alpha"]].to_dict("records")
        [{'trial': 0, 'accuracy': 0.8, 'phi_cnf': True, 'verdict': 'holds on one seed (unconfirmed)', 'alpha': 0.1}]
    """
    front = {t.number for t in summary.front}
    rows = [{"trial": t.number, "state": t.state, summary.metric_name: t.metric, "sigma": t.sigma,
             "sigma_ci_low": t.sigma_ci_low, "sigma_ci_high": t.sigma_ci_high, "kappa": t.kappa,
             "phi_cnf": t.feasible, "pareto": t.number in front, "seeds": t.seeds, "sigma_mean": t.sigma_mean,
             "sigma_std": t.sigma_std, f"{summary.metric_name}_mean": t.metric_mean,
             f"{summary.metric_name}_std": t.metric_std, "verdict": verdict_text(t),
             "duplicate_of": t.duplicate_of, **t.params}
            for t in summary.trials]
    return pd.DataFrame(rows)
