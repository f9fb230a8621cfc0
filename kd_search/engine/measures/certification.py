"""Certification of phi_cnf across training seeds: :func:`certify` and its verdict.

This project's, not the paper's: with k seeds, their sigmas and the bootstrap standard
errors of each (:mod:`kd_search.engine.measures.bootstrap`), a one-sided upper prediction
bound on the sigma of the recipe trained with a new seed,

    U = mean(sigma_i) + t_{level, k-1} * sqrt(var(sigma_i) * (1 + 1/k) + mean(se_i)^2),

compared with kappa. The Student t quantile is computed here, from the exact distribution
function for whole degrees of freedom (Abramowitz & Stegun 26.7.3-26.7.4), because scipy
is not a dependency of the package; tests/engine/test_intervals.py pins it to tabled values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from statistics import NormalDist

import numpy as np

from kd_search.errors import ConfidenceInputError


def _student_t_central(t: float, df: int) -> float:
    # P(|T| <= t) for T ~ Student t with integer df: the closed-form finite series of
    # Abramowitz & Stegun 26.7.3 (odd df) and 26.7.4 (even df), theta = atan(t / sqrt(df)).
    theta = math.atan(t / math.sqrt(df))
    cos2 = math.cos(theta) ** 2
    if df % 2 == 0:
        term, total = 1.0, 1.0
        for j in range(1, df // 2):
            term *= cos2 * (2 * j - 1) / (2 * j)
            total += term
        return math.sin(theta) * total
    if df == 1:
        return 2.0 * theta / math.pi
    term = math.cos(theta)
    total = term
    for j in range(1, (df - 1) // 2):
        term *= cos2 * (2 * j) / (2 * j + 1)
        total += term
    return 2.0 / math.pi * (theta + math.sin(theta) * total)


def student_t_quantile(probability: float, df: int) -> float:
    """The Student t quantile t with P(T <= t) = ``probability``, ``df`` whole degrees of freedom.

    Bisection on the exact distribution function of Abramowitz & Stegun 26.7.3-26.7.4
    (finite series for integer df), to ~1e-12 relative precision.

    Example:
        >>> round(student_t_quantile(0.95, 1), 3), round(student_t_quantile(0.95, 4), 3)
        (6.314, 2.132)
    """
    if not 0.0 < probability < 1.0:
        raise ConfidenceInputError(f"probability must be in (0, 1), got {probability}")
    if df < 1 or df != int(df):
        raise ConfidenceInputError(f"degrees of freedom must be a whole number >= 1, got {df}")
    if probability < 0.5:
        return -student_t_quantile(1.0 - probability, df)
    target = 2.0 * probability - 1.0
    low, high = 0.0, 1.0
    while _student_t_central(high, int(df)) < target:
        low, high = high, 2.0 * high
    for _ in range(200):
        middle = (low + high) / 2.0
        if high - low <= 1e-12 * high:
            break
        if _student_t_central(middle, int(df)) < target:
            low = middle
        else:
            high = middle
    return (low + high) / 2.0


class Verdict(str, Enum):
    """Whether phi_cnf (sigma <= kappa) is certified across training seeds."""

    CERTIFIED = "certified"
    UNCONFIRMED = "unconfirmed"
    FAILS = "fails"


@dataclass(frozen=True)
class Certification:
    """A verdict with the numbers behind it (see :func:`certify`)."""

    verdict: Verdict
    mean_sigma: float
    upper_bound: float
    kappa: float
    seeds: int
    level: float


def certify(sigmas_by_seed: list[float], bootstrap_std_errors: list[float], kappa: float,
            level: float = 0.95) -> Certification:
    """Certify phi_cnf: a one-sided upper prediction bound on the sigma of the trial's recipe
    trained again with a new seed.

    With k seeds (one trained student each), per seed its sigma_i and the bootstrap
    standard error se_i of sigma_i (:attr:`Interval.std_error`):

      m = mean(sigma_i);  s^2 = sample variance of the sigma_i (ddof=1);
      U = m + t_{level, k-1} * sqrt(s^2 * (1 + 1/k) + mean(se_i)^2)

    with t_{level, k-1} the Student t quantile (:func:`student_t_quantile`). s^2 (1 + 1/k)
    is the variance of a new seed's sigma around m (the training randomness: the student
    users would get by training the recipe again); mean(se_i)^2 the sampling error of the
    examples. It is not divided by k: every seed is measured on the same split, so their
    example errors are correlated and do not average out (dividing would make U too low as
    k grows). Verdicts for k >= 2: ``certified`` if U <= kappa, ``fails`` if m > kappa,
    ``unconfirmed`` otherwise. One seed cannot be certified: ``unconfirmed`` if
    sigma <= kappa, else ``fails``; U is then the normal-approximation bootstrap bound
    sigma + z_level * se. Assumes the seeds are independent draws of the training randomness.

    Example:
        >>> result = certify([0.04, 0.05, 0.06], [0.003, 0.003, 0.003], kappa=0.09)
        >>> result.verdict.value, round(result.upper_bound, 4)
        ('certified', 0.0848)
    """
    sigmas = np.asarray(sigmas_by_seed, dtype=np.float64)
    errors = np.asarray(bootstrap_std_errors, dtype=np.float64)
    if sigmas.ndim != 1 or sigmas.size == 0 or sigmas.shape != errors.shape:
        raise ConfidenceInputError(
            f"need one sigma and one bootstrap standard error per seed, got {sigmas.size} and {errors.size}"
        )
    if np.isnan(sigmas).any() or np.isnan(errors).any() or (sigmas < 0).any() or (errors < 0).any():
        raise ConfidenceInputError("sigmas and standard errors must be non-negative numbers")
    if math.isnan(kappa) or not 0.0 < level < 1.0:
        raise ConfidenceInputError(f"kappa must be a number and level in (0, 1), got {kappa}, {level}")
    seeds, mean = sigmas.size, float(sigmas.mean())
    if seeds == 1:
        upper = mean + NormalDist().inv_cdf(level) * float(errors[0])
        verdict = Verdict.UNCONFIRMED if mean <= kappa else Verdict.FAILS
    else:
        spread = float(sigmas.var(ddof=1)) * (1 + 1 / seeds) + float(errors.mean()) ** 2
        upper = mean + student_t_quantile(level, seeds - 1) * math.sqrt(spread)
        if upper <= kappa:
            verdict = Verdict.CERTIFIED
        else:
            verdict = Verdict.FAILS if mean > kappa else Verdict.UNCONFIRMED
    return Certification(verdict=verdict, mean_sigma=mean, upper_bound=upper, kappa=kappa,
                         seeds=seeds, level=level)
