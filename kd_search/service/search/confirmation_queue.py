"""Certification inside the search: confirmations take free slots beside search trials.

With ``search.confirm.top > 0`` the launch's one Ray Tune run trains confirmations too.
Whenever a slot frees, the driver asks this queue first: a trial on the feasible front
that is among the ``top`` most accurate feasible trials (or whose sigma interval
straddles kappa, see ``trials_to_confirm``) gets its next confirmation seed, the most
accurate first and straddling ones last. A trial that fell off the front before its
confirmation started is passed over; once the search's budget is spent and no search
trial runs, the whole final selection is confirmed, as a confirmation after the search
would, each trial's next seed before any trial's one after it. A trial that a certified
trial dominates is not confirmed at all (its verdict could change neither the front nor
the export).

Confirmations take slots *beside* the search: until a trial is certified, while search
trials wait for a slot, confirmations hold at most half of the ``concurrency`` slots (at
least one), so the study has a certified student early; once one is certified,
confirmations wait for slots no search trial waits for. Confirming an early front member
is a bet that it stays in the final selection; keeping the search going settles the front
sooner, so fewer such bets are lost (when confirmations could take every slot, the demo
confirmed four early leaders, and none of them stayed among the final two; holding half
the slots to the end, 10 of 16 confirmation trainings in two demo-scale studies went to
trials outside the final selection).
With ``decide_early`` a trial's further seeds are left untrained once its verdict is
decided (U <= kappa: certified; the mean sigma above kappa: fails; see
:func:`~kd_search.engine.measures.certify`), and while the search goes on a trial trains
one confirmation seed at a time, so that a decided verdict spares the rest.

The queue holds no state a relaunch needs: what is pending follows from the stored
trials and confirmations, so a relaunch confirms what the last launch left (its FAIL
confirmations again, once).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import optuna

from kd_search.engine.hyperparameters import training_params
from kd_search.engine.measures import Verdict
from kd_search.engine.spec import Study
from kd_search.service.pareto import dominates
from kd_search.service.search.records import (
    StudySummary,
    TrialRecord,
    summarize,
)


def trials_to_confirm(summary: StudySummary, top: int) -> list[TrialRecord]:
    """The ``top`` most accurate feasible trials and every finished trial whose sigma
    interval (``sigma_ci_low``, ``sigma_ci_high``, when recorded) straddles kappa, in the
    order to confirm them: the most accurate first, straddling ones last (their next seed
    is the least likely to decide a verdict; the demo spent two seeds on its most accurate
    trial, sigma 0.0727 at kappa 0.075, and ended undecided, while the next one was
    certified by its second).

    A trial that a certified trial dominates (on the search seed's accuracy and sigma, the
    values the front uses) is left out: whatever its verdict, it is neither on the front
    nor the export (a trial at least as accurate and surer is certified). The demo of
    2026-11-22 spent two of its six confirmation trainings on such a trial (0.757 / 0.0764,
    straddling kappa, under the certified 0.764 / 0.0609).

    Example:
        >>> trials = [TrialRecord(0, "COMPLETE", 0.8, 0.02, 0.05, {}, {}),
        ...           TrialRecord(1, "COMPLETE", 0.9, 0.03, 0.05, {}, {}),
        ...           TrialRecord(2, "COMPLETE", 0.95, 0.045, 0.05, {}, {"sigma_ci_low": 0.04, "sigma_ci_high": 0.08}),
        ...           TrialRecord(3, "COMPLETE", 0.7, 0.06, 0.05, {}, {"sigma_ci_low": 0.04, "sigma_ci_high": 0.08})]
        >>> [t.number for t in trials_to_confirm(StudySummary("demo", "accuracy", trials), top=3)]
        [1, 0, 2, 3]
    """
    feasible = sorted((t for t in summary.trials if t.feasible), key=lambda t: (-t.metric, t.sigma))[:top]
    top_numbers = {t.number for t in feasible}
    straddling = [t for t in summary.trials
                  if t.state == "COMPLETE" and _straddles_kappa(t) and t.number not in top_numbers]
    certified = [(t.metric, t.sigma) for t in summary.trials if t.certified]
    return [t for t in sorted(feasible, key=_straddles_kappa) + straddling
            if not any(dominates(point, (t.metric, t.sigma)) for point in certified)]


def _straddles_kappa(trial: TrialRecord) -> bool:
    low, high = trial.attrs.get("sigma_ci_low"), trial.attrs.get("sigma_ci_high")
    return None not in (low, high, trial.kappa) and low <= trial.kappa < high


def confirmation_seeds(study: Study, n: int) -> list[int]:
    """The ``n`` training seeds that confirm a trial: never the search's seed nor the study's.

    Example:
        >>> confirmation_seeds(Study(name="demo", seed=7, student={"teacher_layers": [2]}), 2)
        [1007, 2007]
    """
    return [study.training_seed + 1000 * (k + 1) for k in range(n)]


def is_confirmation(config: dict[str, Any]) -> bool:
    """A Ray trial's configuration is a confirmation's (a trial trained again with a ``seed``).

    Example:
        >>> is_confirmation({"number": 3, "seed": 1000, "params": {}}), is_confirmation({"number": 3, "params": {}})
        (True, False)
    """
    return config.get("seed") is not None


def verdict_decided(record: TrialRecord) -> bool:
    """Further seeds cannot change what the stored ones say in the rule of ``decide_early``:
    at least two seeds and the verdict certified (U <= kappa) or fails (mean above kappa).

    Example:
        >>> two = TrialRecord(0, "COMPLETE", 0.8, 0.04, 0.2, {}, {"sigma_se": 0.003},
        ...                   confirmations=[{"state": "COMPLETE", "seed": 1000, "sigma": 0.041, "sigma_se": 0.003}])
        >>> verdict_decided(two), verdict_decided(TrialRecord(1, "COMPLETE", 0.8, 0.04, 0.2, {}, {}))
        (True, False)
    """
    verdict = record.verdict
    return record.seeds >= 2 and verdict is not None and verdict.verdict in (Verdict.CERTIFIED, Verdict.FAILS)


class ConfirmationQueue:
    """What the driver trains next as a confirmation, from the study's stored state.

    Example:
        >>> queue = ConfirmationQueue(study, optuna_study, defaults)  # doctest: +SKIP
        >>> queue.next(front={3}, search_over=False)  # doctest: +SKIP
        {'number': 3, 'seed': 1000, 'params': {...}}
    """

    def __init__(self, study: Study, optuna_study: optuna.Study, defaults: dict[str, Any]):
        self.study, self.optuna_study, self.defaults = study, optuna_study, defaults
        self.top, self.seeds = study.search.confirm.top, study.search.confirm.seeds
        # The slots confirmations may hold while search trials wait for one.
        self.share = max(1, study.search.concurrency // 2)
        self.decide_early = study.search.confirm.decide_early
        # (trial, seed) started in this launch: a FAIL one waits for the next launch.
        self.started: set[tuple[int, int]] = set()
        self.running: Counter[int] = Counter()  # trial number -> its confirmations training now
        # Trials with a confirmation started or stored: their students stay for export.
        self.confirmed: set[int] = set()
        self._summary: StudySummary | None = None

    def stale(self) -> None:
        """A trial finished: read the study again before the next choice."""
        self._summary = None

    def finished(self, number: int) -> None:
        """A confirmation of trial ``number`` was stored (COMPLETE or FAIL)."""
        self.running[number] -= 1
        self.stale()

    def record(self, number: int) -> TrialRecord:
        """Trial ``number`` as storage holds it, its confirmations included."""
        return next(t for t in self._read().trials if t.number == number)

    def _read(self) -> StudySummary:
        if self._summary is None:  # one read per finished trial or confirmation, not per slot
            self._summary = summarize(self.optuna_study)
        return self._summary

    def _any_certified(self) -> bool:
        return self.top > 0 and self._read().best_certified() is not None

    def pending(self, front: set[int], search_over: bool) -> Iterator[tuple[TrialRecord, int]]:
        """The (trial, seed) pairs to train, in order: only the front's while the search
        goes on, the whole final selection once ``search_over``; each trial's next seed
        before any trial's one after it, so that two trials confirmed side by side can
        both be decided by one seed each (seeds of one trial side by side would train
        the second even where the first decides)."""
        if self.top == 0:
            return
        seeds = confirmation_seeds(self.study, self.seeds)
        pairs: list[tuple[int, int, TrialRecord, int]] = []  # (the seed's rank in its trial, order, ...)
        for order, record in enumerate(trials_to_confirm(self._read(), self.top)):
            if not search_over and record.number not in front:
                continue
            if self.decide_early and verdict_decided(record):
                continue
            # While search trials can use the slots, one seed of a trial at a time, so that
            # a decided verdict spares the rest; at the end, every slot helps.
            if self.decide_early and not search_over and self.running[record.number]:
                continue
            done = {c.get("seed") for c in record.confirmations if c.get("state") == "COMPLETE"}
            untrained = [seed for seed in seeds if seed not in done and (record.number, seed) not in self.started]
            taken = len(seeds) - len(untrained)
            pairs.extend((taken + k, order, record, seed) for k, seed in enumerate(untrained))
        for _, _, record, seed in sorted(pairs, key=lambda pair: pair[:2]):
            yield record, seed

    def next(self, front: set[int], search_over: bool, search_waits: bool = False) -> dict[str, Any] | None:
        """The next confirmation's Ray configuration (marked started), or None; None too
        while a search trial waits (``search_waits``) and confirmations hold their share
        of the slots, or a trial is certified already."""
        if search_waits and (sum(self.running.values()) >= self.share or self._any_certified()):
            return None
        for record, seed in self.pending(front, search_over):
            self.started.add((record.number, seed))
            self.running[record.number] += 1
            self.confirmed.add(record.number)
            return {"number": record.number, "seed": seed,
                    "params": training_params(self.study, self.defaults, record.params)}
        return None
