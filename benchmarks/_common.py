"""What every benchmark shares: mean ± sd over seeds, the study copies it runs, its JSON line.

- ``mean_sd`` is kd-search's own rule (``kd_search.service.seed_stats``): the sample
  standard deviation over seeds, ``None`` for a single seed (one value says nothing about
  the spread), so a benchmark and ``kd-search pareto`` never disagree on it.
- ``study_copy`` changes fields of a study, nested ones by ``__``, through the package's
  one rule, :meth:`~kd_search.engine.spec.Study.with_changes` (mappings merged key by key,
  the copy validated again as a study file); ``search_only`` turns the confirmation off.
- ``fresh_seeds``: the retraining seeds that neither the search nor confirmation uses.
- ``reference_kappa``: the study's kappa, the hypervolume's reference sigma (a usage error
  when kappa is ``bound``).
- ``wilson_interval``: the 95% interval of a rate (how often a bound covers, a verdict holds).
- ``json_line`` prints the last line a benchmark writes: one JSON object, strict JSON
  (NaN and infinities become ``null``), which the README's figures are read from.

Each benchmark is run as a script (``python benchmarks/NAME.py``), so its own directory
is on ``sys.path`` and it imports this module as ``_common``.
"""

from __future__ import annotations

import argparse
import json
import math
from statistics import NormalDist
from typing import Any

from kd_search.engine.spec import Study, merge_fields
from kd_search.service.seed_stats import mean_sd

__all__ = ["FRESH_SEED_OFFSET", "format_mean_sd", "fresh_seeds", "json_line", "mean_sd", "reference_kappa", "search_only",
           "study_copy", "strict_json", "wilson_interval"]


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


FRESH_SEED_OFFSET = 100_000  # confirmation uses search seed + 1000 k: never reaches it for k < 100


def fresh_seeds(study: Study, n: int) -> list[int]:
    """Training seeds no search or confirmation of ``study`` uses: search seed + 100000 + k.

    Example:
        >>> from kd_search.study_file import load_study
        >>> fresh_seeds(load_study("smoke"), 2)
        [100000, 100001]
    """
    return [study.training_seed + FRESH_SEED_OFFSET + k for k in range(n)]


def wilson_interval(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``successes / trials`` at ``level``:
    unlike the normal approximation it stays inside [0, 1] and is not empty at 0 or 1
    (Wilson 1927; Brown, Cai & DasGupta 2001 recommend it for small counts).

    Example:
        >>> [round(x, 3) for x in wilson_interval(57, 60)]
        [0.863, 0.983]
        >>> [round(x, 3) for x in wilson_interval(6, 6)]
        [0.61, 1.0]
    """
    if trials == 0:
        return (math.nan, math.nan)
    z = NormalDist().inv_cdf(0.5 + level / 2)
    share = successes / trials
    centre = (share + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z / (1 + z * z / trials) * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials))
    return (max(0.0, centre - half), min(1.0, centre + half))


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


def reference_kappa(parser: argparse.ArgumentParser, study: Study, name: str) -> float:
    """The study's kappa, the hypervolume's reference sigma; ``parser``'s one-line usage
    error (exit 2) naming the study ``name`` when kappa is not a number (``bound``).

    Example:
        >>> from kd_search.study_file import load_study
        >>> reference_kappa(argparse.ArgumentParser(), load_study("demo"), "demo")
        0.075
    """
    kappa = study.objectives.confidence.fixed_kappa
    if kappa is None:
        parser.error(f"{name}: objectives.confidence.kappa must be a number here (the hypervolume's reference)")
    return kappa


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
