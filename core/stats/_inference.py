"""Inference for one arm and for a variant against the baseline: t intervals, paired tests, P(better)."""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as sps

from ablate.stats._checks import Seed, _as_values, _check_options, _count, _fraction, _rng

EXACT_MAX_N = 12  # 2**12 = 4096 sign assignments: exact and still instant
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
