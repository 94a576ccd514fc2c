"""Statistics for paired-seed ablations: pure numpy/scipy, deterministic.

Each arm runs with the same seeds as the baseline (same split, init, data order and
augmentation stream), so arms are compared through per-seed differences
``variant - baseline``, not through two independent means. Ablations run 2-12 seeds, so
every choice is made for small samples and checked by simulation
(``tests/test_stats_sim.py``). Choices, and why:

- **Arm CI**: Student-t interval of the mean at every n >= 2 (nan below, never min/max).
  A percentile bootstrap of 2-12 values has few distinct resamples and is too narrow (it
  covered about 76% at 3 seeds); the t interval is exact for normal seed noise.
- **Delta CI**: the same t interval of the paired differences (``ci_method`` "t").
- **Primary test**: two-sided paired t-test on the differences (``test`` "paired-t"). It
  is the test of the mean the delta CI describes (p < 1 - confidence exactly when the CI
  excludes zero), and its p can reach alpha at 3-5 seeds when the effect is consistent:
  deltas -0.04, -0.05, -0.045 give p = 0.004. The sign-flip test cannot: its floor is
  ``2 / 2**n`` (0.25 at 3 seeds, 0.0625 at 5). Zero spread gives p = 0 (all differences
  equal, non-zero) or 1 (all zero); under 2 pairs p = 1, so the arm still counts for Holm.
- **p_perm** (robustness column): two-sided sign-flip permutation test of ``|sum|``,
  distribution-free; exact up to ``EXACT_MAX_N`` pairs, above that Monte-Carlo with
  ``n_boot`` random flips, ``p = (1 + hits) / (1 + n_boot)``. A verdict whose ``p_perm_adj``
  is far above alpha leans on the normality of few differences (or on too few seeds:
  see ``min_p``).
- **prob_better**: ``PROB_BETTER_EXPLAINED``; it exceeds 1 - (1 - confidence) / 2
  exactly when the delta CI excludes zero on the variant's side.
- **Multiplicity**: Holm across the non-baseline arms, per metric, for p and p_perm.
- **Verdict** (unchanged): "better"/"worse" only when the Holm-adjusted p is below alpha
  *and* the delta CI excludes zero on that side; otherwise "no evidence".
- **Planning**: ``min_p``, ``min_adjusted_p``, ``seeds_needed_permutation``,
  ``power_paired_t``, ``seeds_for_power``, ``pooled_seed_sd``.

Measured (``tests/test_stats_sim.py``, 20,000 replicates per cell, 95% intervals):

=========  ======  ======  ======  ======  ======  ======
n seeds      2       3       5       8       12      30
=========  ======  ======  ======  ======  ======  ======
arm, N     0.952   0.949   0.951   0.951   0.950   0.952
delta, N   0.949   0.950   0.951   0.951   0.949   0.949
arm, t3    0.959   0.963   0.961   0.959   0.959   0.953
delta, t3  0.956   0.961   0.961   0.958   0.956   0.954
=========  ======  ======  ======  ======  ======  ======

(N: normal seed noise; t3: Student t with 3 df; the bootstrap it replaces covered 0.76
at 3 seeds.) Family-wise false-positive rate of the verdict, 4 null variants against
one shared baseline, Holm: 0.048 at 3 seeds, 0.045 at 5, 0.047 at 8 (normal), 0.034 at
5 (t3). Power of the verdict for one variant whose effect is 2 sd of the paired
differences, 5 seeds: 0.909 (``power_paired_t``: 0.909).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats as sps

Seed = int | np.random.Generator

OK_STATUS = "FINISHED"  # MLflow's status for a normal end; every other status is failed
EXACT_MAX_N = 12  # 2**12 = 4096 sign assignments: exact and still instant
TESTS = ("paired-t", "permutation")  # tests the planning helpers know
CORRECTIONS = ("holm", "bonferroni", "none")  # multiplicity corrections of ``adjust``
PROB_BETTER_EXPLAINED = (
    "P(better) is the probability, given these seeds, that the variant's true mean beats "
    "the baseline's (t posterior of the mean paired difference, flat prior)."
)
_CHUNK = 1_000_000  # resampled values held at once, so memory stays bounded
_TIE = 1e-12  # relative float noise read as exact equality (zero spread, permutation ties)


@dataclass(frozen=True)
class ArmSummary:
    """One arm over its seeds: n, mean, std (ddof=1) and t CI of the mean (nan if n < 2).

    Example:
        >>> round(summarize_arm([0.71, 0.73, 0.72]).mean, 3)
        0.72
    """

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class PairedResult:
    """Paired comparison of a variant with the baseline over shared seeds.

    ``delta`` is ``mean(variant - baseline)``; ``ci_method`` is "t" or "none" (under 2
    pairs); ``test`` is "paired-t" or "none" (no pairs) and gives ``p``; ``p_perm`` is the
    sign-flip permutation p (exact up to ``EXACT_MAX_N`` pairs, Monte-Carlo above).
    ``n_dropped`` counts runs whose seed is in one arm only, listed in ``dropped_seeds``.

    Example:
        >>> r = paired_difference([0.75, 0.76], [0.70, 0.71], [1, 2], [2, 3])
        >>> r.n, r.n_dropped, r.dropped_seeds
        (1, 2, (1, 3))
    """

    n: int
    delta: float
    ci_low: float
    ci_high: float
    ci_method: str
    p: float
    test: str
    prob_better: float
    p_perm: float
    n_dropped: int
    dropped_seeds: tuple[Hashable, ...]


@dataclass(frozen=True)
class _TBatch:
    """Student-t inference on the mean along the last axis; one entry per row."""

    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    t: np.ndarray  # mean / standard error; +-inf for zero spread, 0 when all values are 0
    df: int

    @property
    def p(self) -> np.ndarray:
        """Two-sided p of the t-test that the true mean is zero."""
        return 2.0 * sps.t.sf(np.abs(self.t), self.df)

    def prob_positive(self, higher_is_better: bool = True) -> np.ndarray:
        """t posterior (flat prior) that the true mean lies on the favourable side of 0."""
        return sps.t.cdf(self.t if higher_is_better else -self.t, self.df)


def _t_batch(x: np.ndarray, confidence: float) -> _TBatch:
    """t interval, t statistic and df of the mean of the last axis (at least 2 values)."""
    n = x.shape[-1]
    mean = x.mean(axis=-1)
    sd = x.std(axis=-1, ddof=1)
    se = np.where(sd <= _TIE * np.abs(x).max(axis=-1), 0.0, sd) / math.sqrt(n)
    half = sps.t.ppf(0.5 + confidence / 2.0, df=n - 1) * se
    flat = np.where(mean > 0, np.inf, np.where(mean < 0, -np.inf, 0.0))
    t = np.where(se > 0, mean / np.where(se > 0, se, 1.0), flat)
    return _TBatch(mean, mean - half, mean + half, t, n - 1)


def _as_values(values: ArrayLike, name: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be numbers, got {values!r}.") from err
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {arr.tolist()}; drop failed runs first.")
    return arr


def _rng(seed: Seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"seed must be an int or a numpy Generator, got {seed!r}.")
    return np.random.default_rng(seed)


def _count(value: int, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _fraction(value: float, name: str) -> float:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {value!r}.")
    return float(value)


def _choose(value: str, known: Sequence[str], what: str) -> str:
    if value in known:
        return value
    close = difflib.get_close_matches(str(value), known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"Unknown {what} {value!r}. Known: {', '.join(known)}.{hint}")


def _check_options(confidence: float, n_boot: int) -> None:
    _fraction(confidence, "confidence")
    _count(n_boot, "n_boot", minimum=1)


def bootstrap_ci(
    values: ArrayLike, confidence: float = 0.95, n_boot: int = 10_000, seed: Seed = 0
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean (a utility; arms use t).

    Too narrow below about 15 values; ``summarize_arm`` uses the t interval instead.

    Args:
        values: one number per seed.
        confidence: coverage of the interval, in (0, 1).
        n_boot: number of resamples.
        seed: int or numpy Generator; the same seed gives the same interval.

    Returns:
        ``(low, high)``; ``(v, v)`` for a single value, ``(nan, nan)`` for none.

    Example:
        >>> low, high = bootstrap_ci([0.70, 0.72, 0.71, 0.74, 0.69], seed=0)
    """
    x = _as_values(values, "values")
    _check_options(confidence, n_boot)
    rng = _rng(seed)
    if x.size == 0:
        return math.nan, math.nan
    if x.size == 1:
        return float(x[0]), float(x[0])
    per_chunk = max(1, _CHUNK // x.size)
    means = np.concatenate(
        [
            x[rng.integers(0, x.size, size=(min(per_chunk, n_boot - start), x.size))].mean(axis=1)
            for start in range(0, n_boot, per_chunk)
        ]
    )
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def summarize_arm(values: ArrayLike, confidence: float = 0.95) -> ArmSummary:
    """Summarize one arm: Student-t interval of the mean at n >= 2, nan below.

    Example:
        >>> s = summarize_arm([0.70, 0.72, 0.74])
        >>> round(s.ci_low, 4), round(s.ci_high, 4)  # 0.72 -+ t(0.975, 2) * 0.02 / sqrt(3)
        (0.6703, 0.7697)
    """
    x = _as_values(values, "values")
    _fraction(confidence, "confidence")
    mean = float(x.mean()) if x.size else math.nan
    if x.size < 2:
        return ArmSummary(int(x.size), mean, math.nan, math.nan, math.nan)
    t = _t_batch(x, confidence)
    return ArmSummary(int(x.size), mean, float(x.std(ddof=1)), float(t.low), float(t.high))


def paired_test(deltas: ArrayLike) -> tuple[float, str]:
    """The primary test: two-sided paired t-test that the mean difference is zero.

    Returns:
        ``(p, "paired-t")``; p is 0.0 when every difference is the same non-zero value,
        1.0 when all are zero, and 1.0 for a single difference (no spread to test with).

    Example:
        >>> p, name = paired_test([-0.04, -0.05, -0.045])
        >>> round(p, 4), name
        (0.0041, 'paired-t')
    """
    d = _as_values(deltas, "deltas")
    if d.size == 0:
        raise ValueError("paired_test needs at least one paired difference, got none.")
    if d.size == 1:
        return 1.0, "paired-t"
    return float(_t_batch(d, 0.95).p), "paired-t"


def permutation_test(deltas: ArrayLike, n_mc: int = 10_000, seed: Seed = 0) -> float:
    """Two-sided sign-flip permutation p of ``|sum(deltas)|``, distribution-free.

    Exact over all ``2**n`` sign assignments up to ``EXACT_MAX_N`` differences (smallest
    p ``2 / 2**n``); above, ``n_mc`` random assignments and ``(1 + hits) / (1 + n_mc)``.

    Example:
        >>> permutation_test([1.0, 2.0, 3.0])  # 2 of 8 assignments reach |sum| >= 6
        0.25
    """
    d = _as_values(deltas, "deltas")
    _count(n_mc, "n_mc", minimum=1)
    if d.size == 0:
        raise ValueError("permutation_test needs at least one paired difference, got none.")
    observed = abs(d.sum()) - _TIE * np.abs(d).sum()  # float noise must not break exact ties
    if d.size <= EXACT_MAX_N:
        signs = 1 - 2 * ((np.arange(2**d.size)[:, None] >> np.arange(d.size)) & 1)
        return float(np.mean(np.abs(signs @ d) >= observed))
    rng, hits, per_chunk = _rng(seed), 0, max(1, _CHUNK // d.size)
    for start in range(0, n_mc, per_chunk):
        signs = 1 - 2 * rng.integers(0, 2, size=(min(per_chunk, n_mc - start), d.size))
        hits += int(np.sum(np.abs(signs @ d) >= observed))
    return (1 + hits) / (1 + n_mc)


def _by_seed(values: np.ndarray, seeds: Sequence[Hashable], name: str) -> dict[Hashable, float]:
    seeds = list(seeds)
    if len(seeds) != values.size:
        raise ValueError(f"{name} has {values.size} values but {len(seeds)} seeds.")
    index = dict(zip(seeds, values.tolist(), strict=True))
    if len(index) != len(seeds):
        repeats = sorted({str(s) for s in seeds if seeds.count(s) > 1})
        raise ValueError(f"Seeds of {name} must be unique; repeated: {repeats}.")
    return index


def _pair(
    v: np.ndarray,
    b: np.ndarray,
    seeds_v: Sequence[Hashable] | None,
    seeds_b: Sequence[Hashable] | None,
) -> tuple[np.ndarray, tuple[Hashable, ...]]:
    if seeds_v is None and seeds_b is None:
        if v.size != b.size:
            raise ValueError(
                f"Without seeds, arms are paired by position and need equal lengths, "
                f"got {v.size} and {b.size}; pass seeds_variant and seeds_baseline."
            )
        return v - b, ()
    if seeds_v is None or seeds_b is None:
        raise ValueError("Give seeds_variant and seeds_baseline together, or neither.")
    by_v, by_b = _by_seed(v, seeds_v, "variant"), _by_seed(b, seeds_b, "baseline")
    deltas = np.array([by_v[s] - by_b[s] for s in by_v if s in by_b], dtype=float)
    dropped = [s for s in by_v if s not in by_b] + [s for s in by_b if s not in by_v]
    return deltas, tuple(dropped)


def paired_difference(
    variant: ArrayLike,
    baseline: ArrayLike,
    seeds_variant: Sequence[Hashable] | None = None,
    seeds_baseline: Sequence[Hashable] | None = None,
    *,
    higher_is_better: bool = True,
    confidence: float = 0.95,
    n_boot: int = 10_000,
    seed: Seed = 0,
) -> PairedResult:
    """Compare a variant with the baseline through per-seed differences.

    With seed lists, runs are paired by seed and unmatched runs are dropped and counted;
    without, they are paired by position. The delta CI is the t interval, ``p`` the paired
    t-test, ``prob_better`` the t posterior in the direction set by ``higher_is_better``
    (see ``PROB_BETTER_EXPLAINED``); all nan under 2 pairs except p = 1. ``n_boot`` and
    ``seed`` drive the Monte-Carlo ``p_perm`` above ``EXACT_MAX_N`` pairs. With no pairs
    every number is nan.

    Example:
        >>> r = paired_difference([0.75, 0.77, 0.76], [0.70, 0.71, 0.72])
        >>> round(r.delta, 3), r.ci_method, r.test, r.p_perm
        (0.05, 't', 'paired-t', 0.25)
    """
    v, b = _as_values(variant, "variant"), _as_values(baseline, "baseline")
    _check_options(confidence, n_boot)
    rng = _rng(seed)
    deltas, dropped = _pair(v, b, seeds_variant, seeds_baseline)
    n, nan = int(deltas.size), math.nan
    if n == 0:
        return PairedResult(0, nan, nan, nan, "none", nan, "none", nan, nan, len(dropped), dropped)
    p_perm = permutation_test(deltas, n_boot, rng)
    if n == 1:
        return PairedResult(1, float(deltas[0]), nan, nan, "none", 1.0, "paired-t", nan, p_perm, len(dropped), dropped)
    t = _t_batch(deltas, confidence)
    better = float(t.prob_positive(higher_is_better))
    low, high = float(t.low), float(t.high)
    return PairedResult(n, float(t.mean), low, high, "t", float(t.p), "paired-t", better, p_perm, len(dropped), dropped)


def _adjust_batch(p: np.ndarray, method: str) -> np.ndarray:
    """Adjusted p-values along the last axis (no nan; ``method`` already validated)."""
    m = p.shape[-1]
    if method == "none" or m == 0:
        return p.copy()
    if method == "bonferroni":
        return np.minimum(1.0, m * p)
    order = np.argsort(p, axis=-1, kind="stable")
    steps = (m - np.arange(m)) * np.take_along_axis(p, order, axis=-1)
    out = np.empty_like(p)
    np.put_along_axis(out, order, np.minimum(1.0, np.maximum.accumulate(steps, axis=-1)), axis=-1)
    return out


def adjust(pvalues: Sequence[float], method: str = "holm") -> list[float]:
    """Multiplicity-adjusted p-values: "holm" (step-down), "bonferroni" or "none".

    NaN entries pass through and are not counted among the hypotheses; results are
    capped at 1.

    Example:
        >>> adjust([0.01, 0.04], "bonferroni")
        [0.02, 0.08]
    """
    method = _choose(method, CORRECTIONS, "correction")
    p = np.asarray(pvalues, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"pvalues must be one-dimensional, got shape {p.shape}.")
    known = np.flatnonzero(~np.isnan(p))
    if np.any((p[known] < 0.0) | (p[known] > 1.0)):
        raise ValueError(f"p-values must lie in [0, 1] or be nan, got {p.tolist()}.")
    adjusted = np.full(p.shape, math.nan)
    adjusted[known] = _adjust_batch(p[known], method)
    return [float(x) for x in adjusted]


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1); see ``adjust``.

    Example:
        >>> [round(p, 3) for p in holm([0.01, 0.04, 0.03, 0.005])]
        [0.03, 0.06, 0.06, 0.02]
    """
    return adjust(pvalues, "holm")


def _verdict_codes(
    low: ArrayLike, high: ArrayLike, p_adj: ArrayLike, alpha: float, higher_is_better: bool
) -> np.ndarray:
    """The verdict rule on arrays: +1 better, -1 worse, 0 no evidence (also for any nan)."""
    significant = np.asarray(p_adj) < alpha
    up = significant & (np.asarray(low) > 0.0)
    down = significant & (np.asarray(high) < 0.0)
    codes = up.astype(int) - down.astype(int)
    return codes if higher_is_better else -codes


_VERDICTS = {1: "better", -1: "worse", 0: "no evidence"}


def verdict(
    delta_ci: tuple[float, float],
    p_adj: float,
    alpha: float = 0.05,
    higher_is_better: bool = True,
) -> str:
    """Turn a delta CI and an adjusted p-value into "better", "worse" or "no evidence".

    A direction is claimed only when ``p_adj < alpha`` and the CI excludes zero on that
    side; any nan gives "no evidence".

    Example:
        >>> verdict((0.02, 0.06), 0.01)
        'better'
    """
    _fraction(alpha, "alpha")
    low, high = (float(x) for x in delta_ci)
    if any(math.isnan(x) for x in (low, high, p_adj)):
        return "no evidence"
    if low > high:
        raise ValueError(f"delta_ci must be (low, high) with low <= high, got {delta_ci}.")
    if not 0.0 <= p_adj <= 1.0:
        raise ValueError(f"p_adj must lie in [0, 1] or be nan, got {p_adj!r}.")
    return _VERDICTS[int(_verdict_codes(low, high, p_adj, alpha, higher_is_better))]


# --- planning ------------------------------------------------------------------------------------


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


# --- the ablation table ---------------------------------------------------------------------------

_NOT_PAIRED = PairedResult(0, math.nan, math.nan, math.nan, "", math.nan, "", math.nan, math.nan, 0, ())
_PAIRED_NAMES = {"n": "n_pairs", "ci_low": "delta_ci_low", "ci_high": "delta_ci_high"}


def _fmt(seeds: Sequence[Hashable]) -> str:
    return ", ".join(str(s.item() if isinstance(s, np.generic) else s) for s in seeds)


def _failure_note(runs: pd.DataFrame, seed_col: str, status_col: str) -> str:
    failed = runs[runs[status_col] != OK_STATUS]
    if failed.empty:
        return ""
    counts = ", ".join(f"{k}: {c}" for k, c in failed[status_col].value_counts().items())
    return f"{len(failed)} run(s) excluded ({counts}; seeds {_fmt(failed[seed_col])})"


def _finite_runs(ok: pd.DataFrame, metric: str, seed_col: str, notes: list[str]) -> pd.DataFrame:
    keep = np.isfinite(ok[metric].to_numpy(float))
    if not keep.all():
        seeds = _fmt(ok.loc[~keep, seed_col])
        notes.append(f"{(~keep).sum()} run(s) with non-finite {metric} (seeds {seeds})")
    return ok[keep]


def _metric_block(
    ok_by_arm: list[pd.DataFrame],
    metric: str,
    seed_col: str,
    notes: list[list[str]],
    higher_is_better: bool,
    *,
    alpha: float,
    boot: dict[str, Any],
) -> pd.DataFrame:
    """Statistics of one metric for every arm; the first arm is the baseline."""
    runs = [_finite_runs(ok, metric, seed_col, n) for ok, n in zip(ok_by_arm, notes, strict=True)]
    values = [r[metric].to_numpy(float) for r in runs]
    seeds = [r[seed_col].tolist() for r in runs]
    pairs = [_NOT_PAIRED] + [
        paired_difference(v, values[0], s, seeds[0], higher_is_better=higher_is_better, **boot)
        for v, s in zip(values[1:], seeds[1:], strict=True)
    ]
    for pair, arm_notes in zip(pairs, notes, strict=True):
        if pair.n_dropped:
            arm_notes.append(f"unpaired on {metric}: seeds {_fmt(pair.dropped_seeds)}")
    arms = pd.DataFrame([asdict(summarize_arm(v, boot["confidence"])) for v in values])
    paired = pd.DataFrame([asdict(p) for p in pairs]).rename(columns=_PAIRED_NAMES)
    block = pd.concat([arms.rename(columns={"n": "n_used"}), paired], axis=1)
    block["p_adj"] = [math.nan, *holm(block["p"].iloc[1:].tolist())]
    block["p_perm_adj"] = [math.nan, *holm(block["p_perm"].iloc[1:].tolist())]
    block["verdict"] = ["baseline"] + [
        verdict((row.delta_ci_low, row.delta_ci_high), row.p_adj, alpha, higher_is_better)
        for row in block.iloc[1:].itertuples()
    ]
    return block.drop(columns=["n_dropped", "dropped_seeds"])


def _check_table(table: pd.DataFrame, columns: list[str], baseline: Hashable) -> list[Hashable]:
    """Validate the runs table; return its arms, baseline first."""
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"table must be a pandas DataFrame, got {type(table).__name__}.")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"table lacks column(s) {missing}; it has {list(table.columns)}.")
    arm_col, seed_col, status_col, *metrics = columns
    if table[[arm_col, seed_col, status_col]].isna().to_numpy().any():
        raise ValueError(f"Columns {columns[:3]} must not have missing values.")
    for m in metrics:
        if not pd.api.types.is_numeric_dtype(table[m]):
            raise ValueError(f"Metric column {m!r} must be numeric, got {table[m].dtype}.")
    arms = list(pd.unique(table[arm_col]))
    if baseline not in arms:
        raise ValueError(f"Baseline {baseline!r} not in column {arm_col!r}: {_fmt(arms)}.")
    ok = table[table[status_col] == OK_STATUS]
    repeats = ok[ok.duplicated([arm_col, seed_col], keep=False)]
    if not repeats.empty:
        pairs = sorted({f"{a}/{s}" for a, s in zip(repeats[arm_col], repeats[seed_col], strict=True)})
        raise ValueError(
            f"Each arm may have one {OK_STATUS} run per seed; repeated arm/seed: {pairs}. "
            "Drop the extra replicates or give them their own seeds."
        )
    return [baseline] + [a for a in arms if a != baseline]


def compare_arms(
    table: pd.DataFrame,
    metric: str = "val_miou",
    baseline: Hashable = "baseline",
    arm_col: str = "variant",
    seed_col: str = "seed",
    status_col: str = "status",
    *,
    metrics: Sequence[str] | None = None,
    higher_is_better: bool = True,
    alpha: float = 0.05,
    confidence: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
) -> pd.DataFrame:
    """Ablation table: one row per arm (baseline first), each compared with the baseline.

    ``table`` has one row per run. Runs not ``OK_STATUS`` are left out of every statistic
    and counted in ``n_failed``; FINISHED runs with a non-finite metric, or whose seed the
    baseline lacks, are left out of that metric. All exclusions are listed in ``note``.
    Holm's correction runs across the non-baseline arms, per metric, for ``p`` (giving
    ``p_adj`` and the verdict) and for ``p_perm`` (``p_perm_adj``). CIs, p and
    ``prob_better`` of an arm depend on that arm and the baseline only; adding an arm
    moves only the adjusted p-values (and so the verdicts), as the family grows.

    Args:
        table: runs, with columns ``arm_col``, ``seed_col``, ``status_col``, metrics.
        metric: the metric column when ``metrics`` is None (columns are unprefixed).
        baseline: the baseline arm's name in ``arm_col``.
        arm_col: column naming each run's arm.
        seed_col: column with each run's seed; arms are paired on it.
        status_col: column with each run's MLflow status.
        metrics: several metric columns (e.g. per-class IoU); output columns are then
            prefixed ``"<metric>."``, e.g. ``"iou_road.delta"``.
        higher_is_better: direction of every metric in this call (False for losses).
        alpha: level of the verdict, applied to Holm-adjusted p-values.
        confidence: coverage of every CI.
        n_boot: random sign flips of ``p_perm`` above ``EXACT_MAX_N`` pairs.
        seed: seed of those sign flips (the same for every arm).

    Returns:
        Columns ``arm_col, n_ok, n_failed``; per metric ``n_used, mean, std, ci_low,
        ci_high, n_pairs, delta, delta_ci_low, delta_ci_high, ci_method, p, test,
        prob_better, p_perm, p_adj, p_perm_adj, verdict`` (the baseline's paired columns
        are empty and its verdict is "baseline"); then ``note``.

    Example:
        >>> runs = pd.DataFrame({"variant": ["baseline"] * 3 + ["se"] * 3,
        ...                      "seed": [0, 1, 2] * 2, "status": ["FINISHED"] * 6,
        ...                      "val_miou": [0.70, 0.71, 0.72, 0.74, 0.76, 0.75]})
        >>> compare_arms(runs)[["variant", "delta", "test", "p_perm"]].round(3).values.tolist()
        [['baseline', nan, '', nan], ['se', 0.04, 'paired-t', 0.25]]
    """
    names = [metric] if metrics is None else list(metrics)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"metrics must be distinct column names, got {metrics!r}.")
    boot = {"confidence": confidence, "n_boot": n_boot, "seed": seed}
    _check_options(confidence, n_boot)
    _rng(seed)
    _fraction(alpha, "alpha")
    arms = _check_table(table, [arm_col, seed_col, status_col, *names], baseline)
    by_arm = [table[table[arm_col] == arm] for arm in arms]
    ok_by_arm = [runs[runs[status_col] == OK_STATUS] for runs in by_arm]
    out = pd.DataFrame({arm_col: arms, "n_ok": [len(ok) for ok in ok_by_arm]})
    out["n_failed"] = [len(runs) for runs in by_arm] - out["n_ok"]
    notes = [[_failure_note(runs, seed_col, status_col)] for runs in by_arm]
    for name in names:
        block = _metric_block(ok_by_arm, name, seed_col, notes, higher_is_better, alpha=alpha, boot=boot)
        prefix = "" if metrics is None else f"{name}."
        out = pd.concat([out, block.add_prefix(prefix)], axis=1)
    out["note"] = ["; ".join(n for n in arm_notes if n) for arm_notes in notes]
    return out
