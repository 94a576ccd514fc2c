"""Planning: how small a p the seeds allow, and how many seeds an effect needs."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats as sps

from ablate.stats._checks import _as_values, _choose, _count, _fraction
from ablate.stats._multiplicity import CORRECTIONS

TESTS = ("paired-t", "permutation")  # tests the planning helpers know


def min_p(n: int, test: str) -> float:
    """Smallest two-sided p that ``test`` can give with ``n`` pairs.

    "paired-t": 0.0 from 2 pairs (unbounded below: p falls as the differences agree), 1.0
    under 2 (``paired_difference`` reports p = 1 there). "permutation": ``2 / 2**n``, the
    exact test's floor (all-plus and all-minus are the only extreme sign assignments);
    1.0 for n = 0. The Monte-Carlo test above ``EXACT_MAX_N`` adds ``1 / (1 + n_boot)``.

    Example:
        >>> min_p(5, "permutation"), min_p(3, "paired-t"), min_p(1, "paired-t")
        (0.0625, 0.0, 1.0)
    """
    n = _count(n, "n", minimum=0)
    if _choose(test, TESTS, "test") == "paired-t":
        return 0.0 if n >= 2 else 1.0
    return min(1.0, math.ldexp(1.0, 1 - n))


def min_adjusted_p(n: int, m: int, test: str, correction: str) -> float:
    """Smallest adjusted p the best of ``m`` comparisons can get with ``n`` pairs each.

    Holm's first step and Bonferroni both multiply the smallest p by ``m`` (capped at 1).

    Example:
        >>> min_adjusted_p(5, 4, "permutation", "holm"), min_adjusted_p(8, 4, "permutation", "holm")
        (0.25, 0.03125)
    """
    m = _count(m, "m", minimum=1)
    smallest = min_p(n, test)
    if _choose(correction, CORRECTIONS, "correction") == "none":
        return smallest
    return min(1.0, m * smallest)


def seeds_needed_permutation(m: int = 1, alpha: float = 0.05, correction: str = "holm") -> int:
    """Fewest seeds whose exact permutation p can fall below ``alpha`` after correction.

    Example:
        >>> seeds_needed_permutation(1), seeds_needed_permutation(4), seeds_needed_permutation(4, correction="none")
        (6, 8, 6)
    """
    _fraction(alpha, "alpha")
    n = 1
    while min_adjusted_p(n, m, "permutation", correction) >= alpha:
        n += 1
    return n


def _power(n: np.ndarray, effect: float, sd: float, alpha: float) -> np.ndarray:
    df = n - 1
    crit = sps.t.isf(alpha / 2.0, df)
    ncp = effect / sd * np.sqrt(n)
    return sps.nct.sf(crit, df, ncp) + sps.nct.cdf(-crit, df, ncp)


def _check_effect(effect: float, sd: float) -> None:
    if not math.isfinite(effect):
        raise ValueError(f"effect must be a finite number, got {effect!r}.")
    if not (math.isfinite(sd) and sd > 0.0):
        raise ValueError(f"sd must be a positive finite number (sd of paired differences), got {sd!r}.")


def power_paired_t(n: int, effect: float, sd: float, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test (noncentral t): P(p < alpha).

    Args:
        n: pairs (seeds); power is 0 under 2.
        effect: true mean difference, in metric units.
        sd: standard deviation of the paired differences (not of one arm; see
            ``pooled_seed_sd``).
        alpha: level; pass ``alpha / m`` to plan conservatively for Holm over m arms.

    Example:
        >>> round(power_paired_t(5, effect=0.02, sd=0.01), 3)
        0.909
    """
    n = _count(n, "n", minimum=0)
    _check_effect(effect, sd)
    _fraction(alpha, "alpha")
    return float(_power(np.asarray(n), effect, sd, alpha)) if n >= 2 else 0.0


def seeds_for_power(effect: float, sd: float, alpha: float = 0.05, power: float = 0.8, n_max: int = 200) -> int | None:
    """Fewest seeds (>= 2) at which the paired t-test reaches ``power``; None if over n_max.

    ``sd`` is the sd of the paired differences. Measured from an earlier ablation it is
    ``std(variant - baseline)``; from arm spreads alone, ``sqrt(2) * pooled_seed_sd``
    assumes uncorrelated seeds, an upper bound when the shared seed helps both arms.

    Example:
        >>> seeds_for_power(effect=0.02, sd=0.01), seeds_for_power(0.0, 0.01)
        (5, None)
    """
    _check_effect(effect, sd)
    _fraction(alpha, "alpha")
    _fraction(power, "power")
    ns = np.arange(2, _count(n_max, "n_max", minimum=2) + 1)
    reached = np.flatnonzero(_power(ns, effect, sd, alpha) >= power)
    return int(ns[reached[0]]) if reached.size else None


def pooled_seed_sd(values_by_arm: Mapping[str, Sequence[float]]) -> float:
    """Pooled within-arm standard deviation over seeds (ddof=1 per arm).

    The sd of a paired difference is about ``sqrt(2) *`` this when the correlation between
    arms on a seed is unknown (taken as zero); ``seeds_for_power`` wants that paired sd.

    Example:
        >>> round(pooled_seed_sd({"baseline": [0.70, 0.72], "se": [0.80, 0.84]}), 4)
        0.0224
    """
    squares, df = 0.0, 0
    for arm, values in values_by_arm.items():
        x = _as_values(values, f"values of arm {arm!r}")
        if x.size >= 2:
            squares += float(np.sum((x - x.mean()) ** 2))
            df += x.size - 1
    if df == 0:
        sizes = {arm: len(v) for arm, v in values_by_arm.items()}
        raise ValueError(f"pooled_seed_sd needs an arm with at least 2 values, got sizes {sizes}.")
    return math.sqrt(squares / df)
