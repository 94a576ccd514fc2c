"""Plain-language lines of an ablation report: what each comparison found, in one sentence.

Each line names the variant, what it changes relative to the baseline, the paired delta with
its 95% CI and the verdict; a "no evidence" line says why and what to run next (the seeds a
fixed design would need for an effect of the observed size, or that the design could never
reach alpha).

Example:
    >>> comparison_line("skip=none", "skip: none", -0.041, -0.061, -0.018, "worse", "p=0.003 after holm")
    'skip=none vs baseline (skip: none): -0.041 mIoU [-0.061, -0.018], worse (p=0.003 after holm)'
"""

from __future__ import annotations

import math
from typing import Any

from ablate import stats
from ablate.spec import flatten

MAX_CHANGES = 3  # spec keys named per variant; more are summarised as "and N more"


def what_changes(payload: dict[str, Any], key: str) -> str:
    """The spec keys an arm changes relative to the baseline, e.g. ``model.skip.type: add instead of concat``."""
    arms = payload["arms"]
    base_key = next(k for k, a in arms.items() if a["is_baseline"])
    base = flatten(arms[base_key]["spec"])
    mine = flatten(arms[key]["spec"])
    skip = {"name", "seed"}
    changed = [k for k in sorted(set(base) | set(mine)) if k not in skip and base.get(k) != mine.get(k)]
    changed = [k for k in changed if not any(k != o and k.startswith(o + ".") for o in changed)]  # block beats keys
    parts = [f"{k}: {mine.get(k, '(unset)')} instead of {base.get(k, '(unset)')}" for k in changed[:MAX_CHANGES]]
    if len(changed) > MAX_CHANGES:
        parts.append(f"and {len(changed) - MAX_CHANGES} more")
    return "; ".join(parts) or "no spec change"


def baseline_sentence(payload: dict[str, Any]) -> str:
    """Names the baseline: for leave-one-out it is the full model."""
    if payload.get("design") == "leave-one-out":
        return ("The baseline is the full model; each variant removes one component, so a negative delta is "
                "what that component contributes.")
    return "The baseline is the base spec of the ablation file; each variant changes what its line names."


def comparison_line(key: str, change: str, delta: float, low: float, high: float, verdict: str, why: str) -> str:
    """One comparison in words."""
    def f(x: float) -> str:
        return "-" if x is None or not math.isfinite(x) else f"{x:+.3f}"
    return f"{key} vs baseline ({change}): {f(delta)} mIoU [{f(low)}, {f(high)}], {verdict} ({why})"


def reason(row: Any, payload: dict[str, Any], n_variants: int) -> str:
    """Why a comparison ended as it did, and for "no evidence" what to run next."""
    alpha = float(payload.get("alpha", 0.05))
    correction = payload.get("correction", "holm")
    n = int(row["n_pairs"]) if math.isfinite(row["n_pairs"]) else 0
    if isinstance(row.get("decision"), str) and row["decision"]:
        return row["decision"]
    if n < 2:
        return f"{n} paired seed(s): no test; run at least 3 seeds"
    p_text = f"p={row['p_adj']:.3g} after {correction}"
    if row["verdict"] in ("better", "worse"):
        return p_text
    floor = stats.min_adjusted_p(n, max(1, n_variants), payload.get("test", "paired-t"), correction)
    if floor >= alpha:
        need = stats.seeds_needed_permutation(max(1, n_variants), alpha, correction)
        return f"{n} seeds cannot reach p < {alpha:g}, run {need} or use --until-decided"
    sd = abs(row["delta_ci_high"] - row["delta_ci_low"]) / (2 * stats_t(n)) * math.sqrt(n)
    need = stats.seeds_for_power(abs(row["delta"]), sd, alpha / max(1, n_variants), 0.8) if sd > 0 else None
    more = (f"a delta this size would need about {need} seeds for 80% power" if need and need > n else
            "run more seeds or use --until-decided")
    return f"{p_text}; {more}"


def stats_t(n: int) -> float:
    """The 97.5% t quantile with n-1 degrees of freedom (the half-width factor of a 95% CI)."""
    from scipy import stats as sps

    return float(sps.t.ppf(0.975, df=n - 1))
