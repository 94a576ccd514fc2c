"""Multiplicity: Holm (or Bonferroni) across arms, and the verdict rule that reads adjusted p-values."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from ablate.stats._checks import _choose, _fraction

CORRECTIONS = ("holm", "bonferroni", "none")  # multiplicity corrections of ``adjust``


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
