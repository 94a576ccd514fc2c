"""The ablation table: every arm against the baseline, per metric, from one row per run."""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd

from ablate.stats._checks import _check_options, _fraction, _rng
from ablate.stats._inference import PairedResult, paired_difference, summarize_arm
from ablate.stats._multiplicity import holm, verdict

OK_STATUS = "FINISHED"  # MLflow's status for a normal end; every other status is failed
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
        >>> import pandas as pd
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
