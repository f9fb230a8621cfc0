"""The driver's own view of its study, kept current from the events it writes.

The driver is the only writer of the study's storage during a launch, so after one
full read when it starts it knows every trial without reading storage again: each
event updates the state counts, the trials counted against the budget and the
feasible front in memory (the front in O(front size), see ``pareto.join_front``).
Whatever changes a trial's state in storage during a launch must tell this view too.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from kd_search.service import pareto
from kd_search.service.search.records import StudySummary, TrialRecord


@dataclass
class FrontChange:
    """The trials that joined and left the feasible front with one event."""

    joined: list[int] = field(default_factory=list)
    left: list[int] = field(default_factory=list)


class LiveStudy:
    """States, budget and feasible front of a study, read once and then kept from events.

    Example:
        >>> live = LiveStudy(StudySummary("demo", "accuracy", []))
        >>> live.started(0)
        >>> live.finished(TrialRecord(0, "COMPLETE", 0.8, 0.04, 0.05, {}, {}))
        FrontChange(joined=[0], left=[])
        >>> dict(live.counts), live.budget_used, live.front
        ({'COMPLETE': 1}, 1, {0: (0.8, 0.04)})
    """

    def __init__(self, summary: StudySummary):
        self.states = {t.number: t.state for t in summary.trials}
        # As Counter(states) would count them: no zero entries.
        self.counts = Counter(self.states.values())
        self.budget_used = sum(t.counts_against_budget for t in summary.trials)
        # Trial number -> (task metric, sigma) of the feasible front's members.
        self.front = {t.number: (t.metric, t.sigma) for t in summary.front}

    def started(self, number: int) -> None:
        """A trial asked for (new, or an enqueued one) or adopted: it is RUNNING."""
        self._move(number, "RUNNING")

    def finished(self, record: TrialRecord) -> FrontChange:
        """A trial told its final state (its record as storage now holds it); what the front did."""
        self._move(record.number, record.state)
        self.budget_used += record.counts_against_budget
        if not record.feasible:
            return FrontChange()
        joins, pushed_out = pareto.join_front(list(self.front.values()), (record.metric, record.sigma))
        if not joins:
            return FrontChange()
        members = list(self.front)
        left = [members[i] for i in pushed_out]
        for number in left:
            del self.front[number]
        self.front[record.number] = (record.metric, record.sigma)
        return FrontChange([record.number], left)

    def _move(self, number: int, state: str) -> None:
        previous = self.states.get(number)
        if previous is not None:
            self.counts[previous] -= 1
            if not self.counts[previous]:
                del self.counts[previous]
        self.states[number] = state
        self.counts[state] += 1
