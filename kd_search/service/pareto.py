"""The feasible Pareto front of (task metric up, sigma down) and its hypervolume.

Pure functions on plain numbers: the search, the CLI and the benchmarks use them, and
tests check them against ``optuna.Study.best_trials``.

A point ``a = (metric_a, sigma_a)`` dominates ``b`` when ``metric_a >= metric_b`` and
``sigma_a <= sigma_b`` with at least one strict (Deb et al., 2002, Def. 1). The front is
the set of feasible points (``sigma <= kappa``) that no other feasible point dominates.
"""

from __future__ import annotations

from collections.abc import Sequence


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether ``a = (metric, sigma)`` dominates ``b`` (metric maximised, sigma minimised).

    Example:
        >>> dominates((0.8, 0.04), (0.7, 0.05))
        True
        >>> dominates((0.8, 0.06), (0.7, 0.05))
        False
    """
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def pareto_front(points: Sequence[tuple[float, float]], feasible: Sequence[bool] | None = None) -> list[int]:
    """Indices of the feasible points that no other feasible point dominates.

    Duplicated points are all kept (neither dominates the other).

    Example:
        >>> pareto_front([(0.8, 0.05), (0.7, 0.03), (0.7, 0.06), (0.9, 0.2)], [True, True, True, False])
        [0, 1]
    """
    keep = [i for i in range(len(points)) if feasible is None or feasible[i]]
    return [i for i in keep if not any(dominates(points[j], points[i]) for j in keep if j != i)]


def join_front(front: Sequence[tuple[float, float]], point: tuple[float, float]) -> tuple[bool, list[int]]:
    """Whether a new feasible ``point`` joins ``front``, and the indices of the members it pushes out.

    The front of the points plus one is the old front less what the new point dominates,
    plus the new point unless a member dominates it (a point off the front is dominated by
    a member, and dominance is transitive), so a growing front is kept in O(front size)
    per point, equal to ``pareto_front`` of all the points.

    Example:
        >>> join_front([(0.8, 0.05), (0.7, 0.03)], (0.9, 0.04))
        (True, [0])
        >>> join_front([(0.8, 0.05), (0.7, 0.03)], (0.7, 0.04))
        (False, [])
    """
    if any(dominates(member, point) for member in front):
        return False, []
    return True, [i for i, member in enumerate(front) if dominates(point, member)]


def hypervolume(points: Sequence[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Area dominated by ``points`` and bounded by ``reference = (worst metric, worst sigma)``.

    Points that do not improve on the reference in both objectives add nothing
    (Zitzler & Thiele, 1998, the S metric, in two dimensions).

    Example:
        >>> round(hypervolume([(0.8, 0.02), (0.6, 0.01)], reference=(0.5, 0.05)), 6)
        0.01
    """
    useful = sorted((p for p in points if p[0] > reference[0] and p[1] < reference[1]),
                    key=lambda p: (-p[0], p[1]))
    area, best_sigma = 0.0, reference[1]
    for metric, sigma in useful:  # sweep from the most accurate point down
        if sigma < best_sigma:
            area += (metric - reference[0]) * (best_sigma - sigma)
            best_sigma = sigma
    return area
