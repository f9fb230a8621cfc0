"""Early stopping for the search: FIFO, ASHA on the task metric, or multi-objective ASHA.

ASHA ranks a trial at an epoch rung by its task metric alone, so it stops exactly the
low-sigma trials a confidence-aware study wants to keep. Multi-objective ASHA (Schmucker
et al., 2021; Salinas et al., 2021, as in Syne Tune's ``MOASHA``) ranks the trials at a
rung by non-dominated sorting instead, here with Optuna's constrained dominance so that
``sigma <= kappa`` counts the way it does on the study's front:

- a feasible trial (violation ``sigma - kappa <= 0``) dominates an infeasible one;
- of two infeasible trials, the one with the smaller violation dominates;
- of two feasible trials, Pareto dominance on (task metric up, sigma down) decides.

Within a front, trials are ordered by crowding distance on (metric, sigma) as NSGA-II
does (the front's two ends first, so both the most accurate and the lowest-sigma trials
survive), then by metric (higher first), then by sigma (lower first). Syne Tune breaks
these ties with an epsilon-net on the raw objectives instead; the crowding distance is
scale-free, which matters when accuracy spans tenths and sigma hundredths.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from kd_search.errors import StateFileError
from kd_search.service.pareto import dominates
from kd_search.service.search.confirmation_queue import is_confirmation
from kd_search.state_files import decode_float, encode_float, read_state, write_state

# (task metric, sigma, violation): the violation is sigma - kappa, feasible when <= 0.
Point = tuple[float, float, float]

SCHEDULER_KINDS = ("fifo", "asha", "mo_asha")

# What ``MultiObjectiveASHA.save`` writes: JSON of this kind and schema version.
STATE_KIND, STATE_VERSION = "kd-search MO-ASHA state", 1


def constrained_nondominated_ranks(points: Sequence[Point]) -> list[int]:
    """The front of each ``(metric, sigma, violation)`` point under constrained dominance.

    Rank 0 is the first front. Feasible points are sorted into Pareto fronts on (metric
    up, sigma down); the infeasible ones follow, one front per distinct violation,
    smallest first. Equal points share a front. This is Optuna's
    ``_fast_non_domination_rank`` with the penalty ``max(0, violation)``.

    Example:
        >>> constrained_nondominated_ranks([(0.9, 0.2, 0.15), (0.7, 0.03, -0.02),
        ...                                 (0.8, 0.02, -0.03), (0.6, 0.08, 0.03)])
        [3, 1, 0, 2]
    """
    ranks = [0] * len(points)
    remaining = [i for i, point in enumerate(points) if point[2] <= 0]
    rank = 0
    while remaining:
        front = {i for i in remaining
                 if not any(dominates(points[j][:2], points[i][:2]) for j in remaining)}
        for i in front:
            ranks[i] = rank
        remaining = [i for i in remaining if i not in front]
        rank += 1
    infeasible = [i for i, point in enumerate(points) if point[2] > 0]
    violations = sorted({points[i][2] for i in infeasible})
    for i in infeasible:
        ranks[i] = rank + violations.index(points[i][2])
    return ranks


def _crowding_distances(points: Sequence[Point], members: list[int]) -> dict[int, float]:
    """NSGA-II's crowding distance of each member of one front, on (metric, sigma)."""
    distance = dict.fromkeys(members, 0.0)
    for axis in (0, 1):
        ordered = sorted(members, key=lambda i: (points[i][axis], i))
        values = [points[i][axis] for i in ordered]
        finite = [v for v in values if math.isfinite(v)]
        width = max(finite) - min(finite) if finite else 0.0
        if values[0] == values[-1]:
            continue  # the whole front agrees on this objective: it tells them apart nowhere
        padded = [-math.inf, *values, math.inf]
        for position, i in enumerate(ordered):
            below, above = padded[position], padded[position + 2]
            gap = 0.0 if below == above else above - below
            distance[i] += gap / (width if width > 0 else 1.0)
    return distance


def rung_priorities(points: Sequence[Point]) -> list[tuple[float, ...]]:
    """A sort key per point: smaller is better (front, then crowding, metric and sigma).

    Example:
        >>> keys = rung_priorities([(0.7, 0.03, -0.02), (0.8, 0.02, -0.03), (0.9, 0.2, 0.15)])
        >>> sorted(range(3), key=keys.__getitem__)
        [1, 0, 2]
    """
    ranks = constrained_nondominated_ranks(points)
    crowding: dict[int, float] = {}
    for rank in set(ranks):
        crowding |= _crowding_distances(points, [i for i, r in enumerate(ranks) if r == rank])
    return [(ranks[i], -crowding[i], -point[0], point[1]) for i, point in enumerate(points)]


def rung_decision(rung_results: Sequence[Point], new: Point, reduction_factor: float) -> bool:
    """Whether a trial that reaches a rung with ``new`` goes on (True) or stops (False).

    ``rung_results`` are the points of the other trials recorded at that rung so far.
    The trial goes on when fewer than ``max(1, ceil(n / reduction_factor))`` of the ``n``
    trials at the rung (itself included) rank strictly ahead of it, so the first trial at
    a rung always goes on, and a trial equal to one that went on goes on too.

    Example:
        >>> feasible, infeasible = (0.7, 0.03, -0.02), (0.9, 0.2, 0.15)
        >>> rung_decision([feasible], infeasible, reduction_factor=2)
        False
        >>> rung_decision([infeasible], feasible, reduction_factor=2)
        True
    """
    keys = rung_priorities([*rung_results, new])
    quota = max(1, math.ceil(len(keys) / reduction_factor))
    ahead = sum(1 for key in keys[:-1] if key < keys[-1])
    return ahead < quota


def rung_milestones(grace_period: float, reduction_factor: float, max_t: float) -> list[float]:
    """The epochs ``grace_period * reduction_factor**k`` below ``max_t`` where trials are judged.

    Example:
        >>> rung_milestones(1, 2, 10)
        [1, 2, 4, 8]
        >>> rung_milestones(1, 2, 2)
        [1]
    """
    milestones, milestone = [], grace_period
    while milestone < max_t:
        milestones.append(milestone)
        milestone *= reduction_factor
    return milestones


class MultiObjectiveASHA(FIFOScheduler):
    """Asynchronous successive halving that ranks a rung by constrained non-dominated sorting.

    At each rung epoch a trial goes on only if it ranks in the top ``1/reduction_factor``
    of the trials that have reached the rung so far (see ``rung_decision``); at ``max_t``
    it stops, as ASHA's does. Records are keyed by the study's trial number (Ray's trial
    id where the config carries none) and rung, so a trial resumed from a checkpoint that
    reports a rung again is neither recorded nor judged twice. A relaunched study
    ``replay``s what its trials reported before, so the rungs are not empty after a
    driver restart. Its state is plain dictionaries of numbers: Ray can pickle it in
    memory, and ``save``/``restore`` write and read it as versioned JSON (a checkpoint
    file is never unpickled).

    Example:
        >>> from ray.tune.experiment import Trial
        >>> scheduler = MultiObjectiveASHA("accuracy", max_t=4)
        >>> good, bad = Trial("demo", trial_id="good", stub=True), Trial("demo", trial_id="bad", stub=True)
        >>> scheduler.on_trial_result(None, good, {"epoch": 1, "accuracy": 0.7, "sigma": 0.03, "kappa": 0.05})
        'CONTINUE'
        >>> scheduler.on_trial_result(None, bad, {"epoch": 1, "accuracy": 0.9, "sigma": 0.2, "kappa": 0.05})
        'STOP'
    """

    def __init__(self, metric: str, max_t: int, *, sigma: str = "sigma", kappa: str = "kappa",
                 time_attr: str = "epoch", grace_period: float = 1, reduction_factor: float = 2):
        if grace_period <= 0 or max_t < grace_period:
            raise ValueError(f"need 0 < grace_period <= max_t, got {grace_period} and {max_t}")
        if reduction_factor <= 1:
            raise ValueError(f"reduction_factor must be above 1, got {reduction_factor}")
        super().__init__()
        self._metric, self._sigma, self._kappa, self._time_attr = metric, sigma, kappa, time_attr
        self._max_t, self._reduction_factor = max_t, reduction_factor
        self._rungs: dict[float, dict[str, Point]] = {
            milestone: {} for milestone in rung_milestones(grace_period, reduction_factor, max_t)}
        self._num_stopped = 0

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        # The objectives are fixed at construction; Tune's single metric/mode (for the
        # searcher) neither replaces nor conflicts with them.
        return True

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        point = self._point(result)
        if point is None:
            return TrialScheduler.CONTINUE
        if result[self._time_attr] >= self._max_t:
            return TrialScheduler.STOP
        rung, key = self._rung(result[self._time_attr]), _trial_key(trial)
        if rung is None or key in self._rungs[rung]:
            return TrialScheduler.CONTINUE  # before the first rung, or judged there already
        recorded = self._rungs[rung]
        goes_on = rung_decision(list(recorded.values()), point, self._reduction_factor)
        recorded[key] = point
        if goes_on:
            return TrialScheduler.CONTINUE
        self._num_stopped += 1
        return TrialScheduler.STOP

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        # A trial that ends at a rung still counts there for the trials that come later.
        self._record(_trial_key(trial), result or {})

    def replay(self, number: int, results: Iterable[dict]) -> None:
        """Record, without judging, the results a study's trial ``number`` reported before.

        A relaunched driver calls this for every stored trial, so a trial that reaches a
        rung after the restart is ranked against the trials that reached it before.

        Example:
            >>> scheduler = MultiObjectiveASHA("accuracy", max_t=4)
            >>> scheduler.replay(0, [{"epoch": 1, "accuracy": 0.7, "sigma": 0.03, "kappa": 0.05}])
            >>> scheduler.recorded(1)
            {'trial 0': (0.7, 0.03, -0.020000000000000004)}
        """
        for result in results:
            self._record(f"trial {number}", result)

    def _record(self, key: str, result: dict) -> None:
        point = self._point(result)
        rung = self._rung(result[self._time_attr]) if point is not None else None
        if rung is not None:
            self._rungs[rung].setdefault(key, point)

    def debug_string(self) -> str:
        rungs = " | ".join(f"epoch {milestone}: {len(recorded)} trials"
                           for milestone, recorded in self._rungs.items())
        return f"Using multi-objective ASHA: num_stopped={self._num_stopped}; {rungs}"

    def save(self, checkpoint_path: str) -> None:
        """Write the rungs and settings to ``checkpoint_path`` as versioned JSON."""
        rungs = [[milestone, {key: [encode_float(v) for v in point] for key, point in recorded.items()}]
                 for milestone, recorded in self._rungs.items()]
        write_state(checkpoint_path, STATE_KIND, STATE_VERSION, {
            "metric": self._metric, "sigma": self._sigma, "kappa": self._kappa, "time_attr": self._time_attr,
            "max_t": self._max_t, "reduction_factor": self._reduction_factor,
            "num_stopped": self._num_stopped, "rungs": rungs})

    def restore(self, checkpoint_path: str) -> None:
        """Read back what ``save`` wrote; a pickle or another schema raises ``StateFileError``.

        Example:
            >>> import tempfile
            >>> path = f"{tempfile.mkdtemp()}/scheduler.json"
            >>> scheduler = MultiObjectiveASHA("accuracy", max_t=4)
            >>> scheduler.replay(3, [{"epoch": 1, "accuracy": 0.7, "sigma": float("nan"), "kappa": 0.05}])
            >>> scheduler.save(path)
            >>> restored = MultiObjectiveASHA("accuracy", max_t=4)
            >>> restored.restore(path)
            >>> restored.recorded(1)
            {'trial 3': (0.7, inf, inf)}
        """
        state = read_state(checkpoint_path, STATE_KIND, STATE_VERSION)
        try:
            rungs = {milestone: {key: tuple(decode_float(v) for v in point) for key, point in recorded.items()}
                     for milestone, recorded in state["rungs"]}
            settings = [state[name] for name in ("metric", "sigma", "kappa", "time_attr", "max_t",
                                                 "reduction_factor", "num_stopped")]
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise StateFileError(f"{checkpoint_path}: a {STATE_KIND} file without valid {error}") from None
        (self._metric, self._sigma, self._kappa, self._time_attr, self._max_t,
         self._reduction_factor, self._num_stopped) = settings
        self._rungs = rungs

    def recorded(self, milestone: float) -> dict[str, Point]:
        """The ``(metric, sigma, violation)`` points recorded at one rung, by trial key.

        Example:
            >>> MultiObjectiveASHA("accuracy", max_t=4).recorded(2)
            {}
        """
        return dict(self._rungs[milestone])

    def _rung(self, epoch: float) -> float | None:
        reached = [milestone for milestone in self._rungs if milestone <= epoch]
        return max(reached) if reached else None

    def _point(self, result: dict) -> Point | None:
        names = (self._time_attr, self._metric, self._sigma, self._kappa)
        if any(result.get(name) is None for name in names):
            return None
        metric, sigma = float(result[self._metric]), float(result[self._sigma])
        violation = sigma - float(result[self._kappa])
        # An undefined sigma (no example both models get right) or metric ranks last.
        return (-math.inf if math.isnan(metric) else metric, math.inf if math.isnan(sigma) else sigma,
                math.inf if math.isnan(violation) else violation)


def _trial_key(trial: Any) -> str:
    # The searcher puts the study's trial number in the config: unlike Ray's trial id it
    # survives a driver restart, so a resumed trial keeps its place at the rungs.
    number = (getattr(trial, "config", None) or {}).get("number")
    return trial.trial_id if number is None else f"trial {number}"


# The clock both ASHAs judge by: epochs trained in stages on predictions. A two-stage trial
# is not judged while only its intermediate layers have learnt (its predictions are still
# the untrained head's), and trials meet at a rung with the same prediction training.
RUNG_CLOCK = "prediction_epoch"


def make_scheduler(kind: str, task_metric: str, total_epochs: int) -> TrialScheduler:
    """The Ray Tune scheduler for ``search.scheduler``: ``fifo``, ``asha`` or ``mo_asha``.

    Both ASHAs judge trials at prediction-stage epochs 1, 2, 4, ... (``RUNG_CLOCK``) below
    ``max(total_epochs, 2)`` and keep the top half at each rung.

    Example:
        >>> type(make_scheduler("mo_asha", "accuracy", total_epochs=4)).__name__
        'MultiObjectiveASHA'
        >>> make_scheduler("fifo", "accuracy", total_epochs=4).debug_string()
        'Using FIFO scheduling algorithm.'
    """
    max_t = max(total_epochs, 2)
    if kind == "asha":
        return ASHAScheduler(time_attr=RUNG_CLOCK, metric=task_metric, mode="max", max_t=max_t,
                             grace_period=1, reduction_factor=2)
    if kind == "mo_asha":
        return MultiObjectiveASHA(task_metric, max_t=max_t, time_attr=RUNG_CLOCK, grace_period=1, reduction_factor=2)
    if kind == "fifo":
        return FIFOScheduler()
    raise ValueError(f"unknown scheduler {kind!r}: choose one of {', '.join(SCHEDULER_KINDS)}")


class SearchTrialsOnly(TrialScheduler):
    """``scheduler`` judging the search's trials only: a confirmation (a trial trained
    again with another seed, ``seed`` in its config) runs to its end, never enters the
    rungs and never ranks against the search's trials.

    Example:
        >>> SearchTrialsOnly(make_scheduler("asha", "accuracy", total_epochs=4)).debug_string()[:13]
        'Using AsyncHy'
    """

    def __init__(self, scheduler: TrialScheduler):
        super().__init__()
        self.scheduler = scheduler
        self._supports_buffered_results = scheduler.supports_buffered_results

    @property
    def metric(self):
        return self.scheduler.metric

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return self.scheduler.set_search_properties(metric, mode, **spec)

    def on_trial_add(self, tune_controller, trial) -> None:
        if not _confirms(trial):
            self.scheduler.on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller, trial) -> None:
        if not _confirms(trial):
            self.scheduler.on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if _confirms(trial):
            return TrialScheduler.CONTINUE
        return self.scheduler.on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        if not _confirms(trial):
            self.scheduler.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial) -> None:
        if not _confirms(trial):
            self.scheduler.on_trial_remove(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller):
        # Every scheduler here is a FIFOScheduler underneath: it picks from all PENDING trials.
        return self.scheduler.choose_trial_to_run(tune_controller)

    def debug_string(self) -> str:
        return self.scheduler.debug_string()


def _confirms(trial: Any) -> bool:
    return is_confirmation(getattr(trial, "config", None) or {})
