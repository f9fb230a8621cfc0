"""Which teacher layer each student layer learns from (TinyBERT Sec. 3.1, "mapping function")."""

from __future__ import annotations

from typing import Literal


def layer_pairs(
    kind: Literal["uniform", "last", "pairs"],
    num_student_layers: int,
    num_teacher_layers: int,
    pairs: list[tuple[int, int]] | None = None,
) -> list[tuple[int, int]]:
    """1-based (student layer m, teacher layer g(m)) pairs, m = 1..M.

    * ``uniform``: g(m) = m * N / M (TinyBERT's uniform strategy, rounded down when M
      does not divide N);
    * ``last``: g(m) = N - M + m (the last M teacher layers);
    * ``pairs``: the given pairs, checked against both depths.

    The embedding layer (0 -> 0) is always mapped and is not listed.

    Example:
        >>> layer_pairs("uniform", 4, 12)
        [(1, 3), (2, 6), (3, 9), (4, 12)]
    """
    if num_student_layers < 1 or num_teacher_layers < 1:
        raise ValueError("both models need at least one layer")
    if kind == "uniform":
        if num_student_layers > num_teacher_layers:
            raise ValueError(f"a uniform map needs M <= N; got M={num_student_layers}, N={num_teacher_layers}")
        return [(m, m * num_teacher_layers // num_student_layers) for m in range(1, num_student_layers + 1)]
    if kind == "last":
        if num_student_layers > num_teacher_layers:
            raise ValueError(f"a last-layers map needs M <= N; got M={num_student_layers}, N={num_teacher_layers}")
        offset = num_teacher_layers - num_student_layers
        return [(m, offset + m) for m in range(1, num_student_layers + 1)]
    if kind == "pairs":
        if not pairs:
            raise ValueError("a 'pairs' map needs at least one pair")
        for student, teacher in pairs:
            if not (1 <= student <= num_student_layers and 1 <= teacher <= num_teacher_layers):
                raise ValueError(
                    f"pair ({student}, {teacher}) is outside the student's 1..{num_student_layers} "
                    f"or the teacher's 1..{num_teacher_layers} layers"
                )
        return sorted((int(s), int(t)) for s, t in pairs)
    raise ValueError(f"unknown layer map kind {kind!r}")
