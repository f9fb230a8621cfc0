"""Choosing among a study's trials: the one to export (``select_trial``: a trial by its
number, or the most accurate certified), and the study judged at another kappa than its
own (``check_kappa``, ``at_kappa``; ``kappa_curve``: the best task metric each kappa
offers). Nothing is trained again: each works on the trials a ``StudySummary`` holds.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from kd_search.errors import OptionsError, SearchError
from kd_search.service.search.presenting import verdict_text
from kd_search.service.search.records import StudySummary, TrialRecord, with_front


def check_kappa(kappa: str | float) -> float:
    """``kappa`` (a number, or its text as given on the command line) as a threshold on
    sigma; raises :class:`OptionsError` unless it is a finite number > 0.

    Example:
        >>> check_kappa("0.06")
        0.06
        >>> check_kappa("-1")
        Traceback (most recent call last):
        kd_search.errors.OptionsError: --kappa: expected a finite number > 0, got '-1'
    """
    try:
        value = float(kappa)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(kappa, bool) or not math.isfinite(value) or value <= 0:
        raise OptionsError(f"--kappa: expected a finite number > 0, got {str(kappa)!r}")
    return value


def at_kappa(summary: StudySummary, kappa: float) -> StudySummary:
    """The study as it would read with sigma <= ``kappa`` as the constraint, from its stored
    trials (nothing is trained again): every trial's kappa, feasibility and verdict over
    its seeds recomputed at ``kappa``, the feasible front recomputed from them.

    Each trial compares with the same ``kappa``, also in a study with ``kappa: bound``
    (whose trials each stored their own bound). A trial's upper bound U does not depend on
    kappa, so its verdict at ``kappa`` is the one :func:`~kd_search.engine.measures.certify`
    gives with it.

    Example:
        >>> record = TrialRecord(0, "COMPLETE", 0.8, 0.04, 0.05, {}, {})
        >>> [t.feasible for t in at_kappa(StudySummary("s", "accuracy", [record]), 0.03).trials]
        [False]
    """
    kappa = check_kappa(kappa)
    records = [dataclasses.replace(t, kappa=kappa, attrs=t.attrs | {"kappa": kappa}) for t in summary.trials]
    return with_front(summary.name, summary.metric_name, records)


@dataclass(frozen=True)
class KappaCurve:
    """The best task metric a study offers at each kappa (see :func:`kappa_curve`): the
    best ``certified`` (mean over seeds) and the best ``feasible`` on the search seed
    (sigma <= kappa), None where no trial qualifies."""

    kappas: list[float]
    certified: list[float | None]
    feasible: list[float | None]


def kappa_curve(summary: StudySummary, points: int = 200) -> KappaCurve:
    """The best certified and best feasible task metric against kappa, over the range the
    trials span: from the lowest sigma of a finished trial to 10% past the highest upper
    bound U of a trial with two seeds or more (or the highest sigma), so the last step shows.

    A trial with k >= 2 seeds is certified at kappa exactly when its U <= kappa (U does
    not depend on kappa), so the certified curve is a staircase rising at the trials' U.

    Example:
        >>> record = TrialRecord(0, "COMPLETE", 0.8, 0.04, 0.05, {}, {"sigma_se": 0.001},
        ...                      [{"state": "COMPLETE", "sigma": 0.041, "accuracy": 0.82}])
        >>> curve = kappa_curve(StudySummary("s", "accuracy", [record]), points=3)
        >>> [round(k, 4) for k in curve.kappas], curve.certified, curve.feasible
        ([0.04, 0.0457, 0.0515], [None, None, 0.81], [0.8, 0.8, 0.8])
    """
    complete = [t for t in summary.trials if t.state == "COMPLETE" and t.sigma is not None]
    if not complete:
        return KappaCurve([], [], [])
    bounds = [(v.upper_bound, t.metric_mean) for t in complete
              if t.seeds >= 2 and (v := dataclasses.replace(t, kappa=1.0).verdict) is not None]
    low = min(t.sigma for t in complete)
    high = max([u for u, _ in bounds] + [t.sigma for t in complete]) * 1.1 + 1e-9
    kappas = [low + (high - low) * i / (points - 1) for i in range(points)]
    certified = [max((m for u, m in bounds if u <= k and m is not None), default=None) for k in kappas]
    feasible = [max((t.metric for t in complete if t.sigma <= k), default=None) for k in kappas]
    return KappaCurve(kappas, certified, feasible)


def select_trial(summary: StudySummary, number: int | None = None, best: bool = False,
                 allow_unconfirmed: bool = False) -> TrialRecord:
    """Trial ``number``, or with ``best`` the most accurate certified trial.

    Where no trial is certified, ``best`` raises :class:`SearchError` saying why (the
    verdict of the most accurate feasible trial and what to do), unless
    ``allow_unconfirmed``: then the most accurate trial whose search run satisfies phi_cnf.

    Example:
        >>> select_trial(summary, best=True).number  # doctest: +SKIP
        3
    """
    if best:
        chosen = summary.best_certified()
        feasible = summary.best_feasible()
        if chosen is not None:
            return chosen
        if feasible is None:
            raise SearchError(f"study {summary.name!r} has no finished trial with sigma <= kappa yet")
        if allow_unconfirmed:
            return feasible
        raise SearchError(f"no certified trial: trial {feasible.number} {verdict_text(feasible)}; "
                          f"run `kd-search confirm {summary.name}` or pass --allow-unconfirmed")
    by_number = {t.number: t for t in summary.trials}
    if number not in by_number:
        raise SearchError(f"study {summary.name!r} has no trial {number} (trials: 0..{len(summary.trials) - 1})")
    chosen = by_number[number]
    if chosen.state != "COMPLETE":
        raise SearchError(f"trial {number} of study {summary.name!r} is {chosen.state}, not COMPLETE")
    return chosen
