"""Statistics for paired-seed ablations: pure numpy/scipy, deterministic.

Each arm runs with the same seeds as the baseline (same split, init, data order and
augmentation stream), so arms are compared through per-seed differences
``variant - baseline``, not through two independent means. Choices, and why:

- **Arm CI**: percentile bootstrap of the mean; no normality assumption, close to nominal
  coverage from about 10 values; BCa's acceleration is itself noisy at ablation seed counts.
- **Delta CI**: a t-interval below ``SMALL_N`` pairs (a bootstrap over 2-4 values has a
  handful of distinct resamples and is far too narrow), else the percentile bootstrap of
  the paired differences. ``PairedResult.ci_method`` says which.
- **Test**: two-sided exact sign-flip permutation test up to ``EXACT_MAX_N`` pairs, Wilcoxon
  signed-rank above. The smallest exact p is ``2 / 2**n`` (0.0625 for 5 seeds), so an arm
  needs at least 6 seeds to reach p < 0.05, and more to survive Holm: plan for 8 or more.
- **prob_better**: posterior probability that the mean delta favours the variant: the
  Bayesian bootstrap (Dirichlet(1, ..., 1) weights on the pairs) from ``SMALL_N`` pairs up,
  below that the t posterior of the mean under a flat prior, matching the t-interval.
- **Multiplicity**: Holm-Bonferroni across the non-baseline arms, separately per metric.
- **Verdict**: "better"/"worse" only when the adjusted p is below alpha *and* the delta CI
  excludes zero on that side; otherwise "no evidence".
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats as sps

Seed = int | np.random.Generator

OK_STATUS = "FINISHED"  # MLflow's status for a normal end; every other status is failed
SMALL_N = 5  # below this many pairs a bootstrap has too few distinct resamples: use t
EXACT_MAX_N = 12  # 2**12 = 4096 sign assignments: exact and still instant
_CHUNK = 1_000_000  # resampled values held at once, so memory stays bounded


@dataclass(frozen=True)
class ArmSummary:
    """One arm over its seeds: n, mean, std (ddof=1, nan if n < 2) and bootstrap CI.

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

    ``delta`` is ``mean(variant - baseline)``; ``ci_method`` is "t", "bootstrap" or
    "none" (under 2 pairs); ``test`` is "permutation", "wilcoxon" or "none" (no pairs).
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
    n_dropped: int
    dropped_seeds: tuple[Hashable, ...]


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


def _check_options(confidence: float, n_boot: int) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}.")
    integer = isinstance(n_boot, int | np.integer) and not isinstance(n_boot, bool)
    if not integer or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}.")


def _resampled_means(x: np.ndarray, n_boot: int, rng: np.random.Generator, bayesian: bool = False) -> np.ndarray:
    """Means of ``n_boot`` resamples: with replacement, or Dirichlet-weighted."""
    per_chunk = max(1, _CHUNK // x.size)
    parts = []
    for start in range(0, n_boot, per_chunk):
        size = min(per_chunk, n_boot - start)
        if bayesian:
            parts.append(rng.dirichlet(np.ones(x.size), size=size) @ x)
        else:
            parts.append(x[rng.integers(0, x.size, size=(size, x.size))].mean(axis=1))
    return np.concatenate(parts)


def bootstrap_ci(
    values: ArrayLike, confidence: float = 0.95, n_boot: int = 10_000, seed: Seed = 0
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean.

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
    tail = (1.0 - confidence) / 2.0
    means = _resampled_means(x, n_boot, rng)
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def summarize_arm(values: ArrayLike, confidence: float = 0.95, n_boot: int = 10_000, seed: Seed = 0) -> ArmSummary:
    """Summarize one arm; arguments as in ``bootstrap_ci``.

    Example:
        >>> summarize_arm([0.70, 0.72]).n
        2
    """
    x = _as_values(values, "values")
    low, high = bootstrap_ci(x, confidence, n_boot, seed)
    mean = float(x.mean()) if x.size else math.nan
    std = float(x.std(ddof=1)) if x.size >= 2 else math.nan
    return ArmSummary(int(x.size), mean, std, low, high)


def paired_test(deltas: ArrayLike) -> tuple[float, str]:
    """Two-sided paired test that the per-seed differences are centred on zero.

    Exact sign-flip permutation test over all ``2**n`` sign assignments (statistic
    ``|sum|``) when ``n <= EXACT_MAX_N``, Wilcoxon signed-rank otherwise.

    Returns:
        ``(p, test_name)``; p is 1.0 when every difference is zero.

    Example:
        >>> paired_test([1.0, 2.0, 3.0])  # 2 of 8 assignments reach |sum| >= 6
        (0.25, 'permutation')
    """
    d = _as_values(deltas, "deltas")
    if d.size == 0:
        raise ValueError("paired_test needs at least one paired difference, got none.")
    test = "permutation" if d.size <= EXACT_MAX_N else "wilcoxon"
    if not np.any(d):
        return 1.0, test
    if test == "wilcoxon":
        return float(sps.wilcoxon(d).pvalue), test
    bits = (np.arange(2**d.size)[:, None] >> np.arange(d.size)) & 1
    sums = np.abs((1 - 2 * bits) @ d)
    tolerance = 1e-12 * np.abs(d).sum()  # float noise must not break exact ties
    return float(np.mean(sums >= abs(d.sum()) - tolerance)), test


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


def _t_interval(d: np.ndarray, confidence: float) -> tuple[float, float]:
    se = d.std(ddof=1) / math.sqrt(d.size)
    half = sps.t.ppf(0.5 + confidence / 2.0, df=d.size - 1) * se
    return float(d.mean() - half), float(d.mean() + half)


def _prob_positive(d: np.ndarray, n_boot: int, rng: np.random.Generator) -> float:
    if d.size >= SMALL_N:
        means = _resampled_means(d, n_boot, rng, bayesian=True)
        return float(np.mean(means > 0) + 0.5 * np.mean(means == 0))
    se = d.std(ddof=1) / math.sqrt(d.size)
    if se == 0.0:
        return float(0.5 + 0.5 * np.sign(d.mean()))
    return float(sps.t.cdf(d.mean() / se, df=d.size - 1))


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
    without, they are paired by position. CI, test and ``prob_better`` (in the direction
    set by ``higher_is_better``) are chosen as the module docstring explains; with no
    pairs every number is nan. Other arguments are as in ``bootstrap_ci``.

    Example:
        >>> r = paired_difference([0.75, 0.77, 0.76], [0.70, 0.71, 0.72])
        >>> round(r.delta, 3), r.ci_method, r.test
        (0.05, 't', 'permutation')
    """
    v, b = _as_values(variant, "variant"), _as_values(baseline, "baseline")
    _check_options(confidence, n_boot)
    rng = _rng(seed)
    deltas, dropped = _pair(v, b, seeds_variant, seeds_baseline)
    n, nan = int(deltas.size), math.nan
    if n == 0:
        return PairedResult(0, nan, nan, nan, "none", nan, "none", nan, len(dropped), dropped)
    if n < 2:
        (low, high), method = (nan, nan), "none"
    elif n < SMALL_N:
        (low, high), method = _t_interval(deltas, confidence), "t"
    else:
        (low, high), method = bootstrap_ci(deltas, confidence, n_boot, rng), "bootstrap"
    p, test = paired_test(deltas)
    signed = deltas if higher_is_better else -deltas
    better = _prob_positive(signed, n_boot, rng) if n >= 2 else nan
    delta = float(deltas.mean())
    return PairedResult(n, delta, low, high, method, p, test, better, len(dropped), dropped)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1).

    NaN entries pass through and are not counted among the hypotheses.

    Example:
        >>> [round(p, 3) for p in holm([0.01, 0.04, 0.03, 0.005])]
        [0.03, 0.06, 0.06, 0.02]
    """
    p = np.asarray(pvalues, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"pvalues must be one-dimensional, got shape {p.shape}.")
    known = np.flatnonzero(~np.isnan(p))
    if np.any((p[known] < 0.0) | (p[known] > 1.0)):
        raise ValueError(f"p-values must lie in [0, 1] or be nan, got {p.tolist()}.")
    order = known[np.argsort(p[known], kind="stable")]
    steps = (order.size - np.arange(order.size)) * p[order]
    adjusted = np.full(p.shape, math.nan)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(steps))
    return [float(x) for x in adjusted]


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
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}.")
    low, high = (float(x) for x in delta_ci)
    if any(math.isnan(x) for x in (low, high, p_adj)):
        return "no evidence"
    if low > high:
        raise ValueError(f"delta_ci must be (low, high) with low <= high, got {delta_ci}.")
    if not 0.0 <= p_adj <= 1.0:
        raise ValueError(f"p_adj must lie in [0, 1] or be nan, got {p_adj!r}.")
    if p_adj >= alpha or low <= 0.0 <= high:
        return "no evidence"
    return "better" if (low > 0.0) == higher_is_better else "worse"


_NOT_PAIRED = PairedResult(0, math.nan, math.nan, math.nan, "", math.nan, "", math.nan, 0, ())
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
    arms = pd.DataFrame([asdict(summarize_arm(v, **boot)) for v in values])
    paired = pd.DataFrame([asdict(p) for p in pairs]).rename(columns=_PAIRED_NAMES)
    block = pd.concat([arms.rename(columns={"n": "n_used"}), paired], axis=1)
    block["p_adj"] = [math.nan, *holm(block["p"].iloc[1:].tolist())]
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
    Holm's correction runs across the non-baseline arms, per metric. Each arm resamples
    from the same int ``seed``, so adding an arm changes no other arm's CIs or
    ``prob_better``; only ``p_adj`` (and so the verdict) moves, as the family grows.

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
        n_boot: bootstrap resamples per CI.
        seed: bootstrap seed.

    Returns:
        Columns ``arm_col, n_ok, n_failed``; per metric ``n_used, mean, std, ci_low,
        ci_high, n_pairs, delta, delta_ci_low, delta_ci_high, ci_method, p, test,
        prob_better, p_adj, verdict`` (the baseline's paired columns are empty and its
        verdict is "baseline"); then ``note``.

    Example:
        >>> runs = pd.DataFrame({"variant": ["baseline"] * 3 + ["se"] * 3,
        ...                      "seed": [0, 1, 2] * 2, "status": ["FINISHED"] * 6,
        ...                      "val_miou": [0.70, 0.71, 0.72, 0.74, 0.76, 0.75]})
        >>> compare_arms(runs)[["variant", "delta", "test"]].round(3).values.tolist()
        [['baseline', nan, ''], ['se', 0.04, 'permutation']]
    """
    names = [metric] if metrics is None else list(metrics)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"metrics must be distinct column names, got {metrics!r}.")
    boot = {"confidence": confidence, "n_boot": n_boot, "seed": seed}
    _check_options(confidence, n_boot)
    _rng(seed)
    verdict((0.0, 0.0), math.nan, alpha)  # validates alpha before any work
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
