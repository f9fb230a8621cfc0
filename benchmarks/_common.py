"""What every benchmark shares: mean ± sd over seeds, the study copies it runs, its JSON line.

- ``mean_sd`` is kd-search's own rule (``kd_search.service.seed_stats``): the sample
  standard deviation over seeds, ``None`` for a single seed (one value says nothing about
  the spread), so a benchmark and ``kd-search pareto`` never disagree on it.
- ``study_copy`` changes fields of a study, nested ones by ``__``, through the package's
  one rule, :meth:`~kd_search.engine.spec.Study.with_changes` (mappings merged key by key,
  the copy validated again as a study file); ``search_only`` turns the confirmation off.
- ``json_line`` prints the last line a benchmark writes: one JSON object, strict JSON
  (NaN and infinities become ``null``), which the README's figures are read from.

Each benchmark is run as a script (``python benchmarks/NAME.py``), so its own directory
is on ``sys.path`` and it imports this module as ``_common``.
"""

from __future__ import annotations

import json
import math
from typing import Any

from kd_search.engine.spec import Study, merge_fields
from kd_search.service.seed_stats import mean_sd

__all__ = ["format_mean_sd", "json_line", "mean_sd", "search_only", "study_copy", "strict_json"]


def format_mean_sd(mean: float | None, sd: float | None, digits: int = 4) -> str:
    """``mean ± sd`` for a table; ``(one seed)`` where the sd is undefined.

    Example:
        >>> format_mean_sd(*mean_sd([0.03, 0.05]))
        '0.0400 ± 0.0141'
        >>> format_mean_sd(*mean_sd([0.03]), digits=2)
        '0.03 (one seed)'
        >>> format_mean_sd(*mean_sd([]))
        'n/a'
    """
    if mean is None:
        return "n/a"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}" if sd is not None else f"{mean:.{digits}f} (one seed)"


def study_copy(study: Study, **changes: Any) -> Study:
    """``study`` with ``changes`` applied (``search__trials=8`` sets ``search.trials``) by
    :meth:`Study.with_changes`: mappings merge key by key, and the copy is validated.

    Example:
        >>> from kd_search.study_file import load_study
        >>> copy = study_copy(load_study("smoke"), name="smoke-seed1", seed=1, search__trials=2)
        >>> copy.name, copy.seed, copy.search.trials
        ('smoke-seed1', 1, 2)
    """
    nested: dict[str, Any] = {}
    for key, value in changes.items():
        *parents, leaf = key.split("__")
        node = nested
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = merge_fields(node[leaf], value) if isinstance(node.get(leaf), dict) else value
    return study.with_changes(**nested)


def search_only(study: Study, **changes: Any) -> Study:
    """``study_copy`` with no confirmation: the search alone, whose wall time a benchmark times.

    Example:
        >>> from kd_search.study_file import load_study
        >>> search_only(load_study("smoke"), search__trials=3).search.confirm.top
        0
    """
    return study_copy(study, search__confirm__top=0, **changes)


def strict_json(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by ``None`` (JSON's ``null``).

    Example:
        >>> strict_json({"ratio": float("nan"), "per_seed": [1.0, float("inf")]})
        {'ratio': None, 'per_seed': [1.0, None]}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(item) for item in value]
    return value


def json_line(figures: dict[str, Any]) -> None:
    """Print ``figures`` as the benchmark's last line: one strict JSON object.

    Example:
        >>> json_line({"seeds": 3, "ratio": float("nan")})
        {"seeds": 3, "ratio": null}
    """
    print(json.dumps(strict_json(figures), allow_nan=False), flush=True)
