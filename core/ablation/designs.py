"""Ablation designs: each one owns the arms it expands to and the analysis it can support.

A design is one registered class; ``expand`` turns an ablation file into arms and
``analyse`` turns the collected runs into what the design claims to measure::

    design = DESIGNS.build("leave-one-out")
    arms = design.expand(ab, base_raw, rebase)
    result = design.analyse(record.runs, record.payload)
    print("\\n".join(result.sentences))

- ``one-at-a-time``: the baseline plus one variant per (factor, variant); the per-arm table
  against the baseline (``ablate.stats.compare_arms``) is the whole analysis.
- ``leave-one-out``: the baseline is the full model and each variant removes one component;
  a component's contribution is ``full - without it``, paired by seed, Holm across components.
- ``factorial``: every combination of the factors' levels; main effects and interaction
  contrasts from one linear model with seed as a block (see ``Factorial``).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from ablate.ablation.design import BASELINE, AblationFile, Arm, _apply
from ablate.ablation.design_base import (
    DESIGNS,
    Design,
    DesignAnalysis,
    Rebase,
    finished,
    pvalue,
    signed,
)
from ablate.ablation.factorial import Factorial
from ablate.stats import holm, paired_difference, verdict

__all__ = [
    "DESIGNS",
    "Design",
    "DesignAnalysis",
    "Factorial",
    "LeaveOneOut",
    "OneAtATime",
    "Rebase",
    "finished",
    "pvalue",
    "signed",
]


@DESIGNS.register("one-at-a-time")
class OneAtATime(Design):
    """The baseline plus one arm per (factor, variant), each changing one thing.

    Its analysis is the per-arm table against the baseline (``ablate.stats.compare_arms``).

    Example:
        >>> [a.key for a in OneAtATime().expand(ab, base_raw)]  # doctest: +SKIP
        ['baseline', 'skip=add', 'depth=d4']
    """

    name = "one-at-a-time"

    def label(self, factor: str, variant: str) -> str:
        return variant

    def variants(self, ab: AblationFile, base_raw: dict[str, Any], rebase: Rebase) -> list[Arm]:
        arms = []
        for factor, variants in ab.factors.items():
            for variant, delta in variants.items():
                key = f"{factor}={variant}"
                spec = _apply(base_raw, delta, f"variant {key}", rebase)
                arms.append(Arm(key, factor, self.label(factor, variant), False, spec, {factor: variant}))
        return arms


@DESIGNS.register("leave-one-out")
class LeaveOneOut(OneAtATime):
    """The full model as baseline; each arm removes one component. Reports each contribution.

    A component's contribution is ``baseline - without it`` paired by seed
    (``ablate.stats.paired_difference``: t CI, its test's p), Holm-adjusted across components.

    Example:
        >>> LeaveOneOut().analyse(runs, record.payload).sentences[0]  # doctest: +SKIP
        'l2 contributes +0.012 mIoU [-0.004, +0.028] (no evidence; p=0.210 Holm, 3 paired seeds): ...'
    """

    name = "leave-one-out"

    def label(self, factor: str, variant: str) -> str:
        return f"without {factor}"

    def analyse(self, runs: pd.DataFrame, payload: dict[str, Any], metric: str = "val_miou",
                alpha: float = 0.05) -> DesignAnalysis:
        """Contribution of each component: ``full - without it``, paired by seed, Holm across components."""
        ok = finished(runs, metric)
        verdict((0.0, 0.0), math.nan, alpha)
        base = ok[ok["variant"] == BASELINE]
        removed = [(k, a) for k, a in payload["arms"].items() if not a["is_baseline"]]
        per_factor = pd.Series([a["factor"] for _, a in removed]).value_counts()
        rows = []
        for key, arm in removed:
            without = ok[ok["variant"] == key]
            r = paired_difference(base[metric].to_numpy(float), without[metric].to_numpy(float),
                                  seeds_variant=base["seed"].tolist(), seeds_baseline=without["seed"].tolist())
            name = arm["factor"] if per_factor[arm["factor"]] == 1 else key
            rows.append({"component": name, "arm": key, "n_pairs": r.n, "contribution": r.delta,
                         "ci_low": r.ci_low, "ci_high": r.ci_high, "p": r.p, "test": r.test})
        table = pd.DataFrame(rows, columns=["component", "arm", "n_pairs", "contribution", "ci_low", "ci_high",
                                            "p", "test", "p_adj", "verdict"])
        if table.empty:
            return DesignAnalysis(table)
        table["p_adj"] = holm(table["p"].tolist())
        words = {"better": "helps", "worse": "hurts", "no evidence": "no evidence"}
        table["verdict"] = [words[verdict((r.ci_low, r.ci_high), r.p_adj, alpha)] for r in table.itertuples()]
        return DesignAnalysis(table, _loo_markdown(table, metric), _loo_sentences(table, metric))


def _loo_markdown(table: pd.DataFrame, metric: str) -> str:
    tests = ", ".join(sorted({t for t in table["test"] if t and t != "none"})) or "paired"
    lines = ["## Component contributions (leave-one-out)", "",
             f"Contribution = {metric} of the full model minus the model without the component, paired by "
             f"seed, with 95% CI; p: paired {tests} test, Holm-adjusted across components. A positive "
             "contribution means removing the component costs that much.", "",
             "| component | arm | seeds | contribution [95% CI] | p (Holm) | verdict |", "|---|---|---|---|---|---|"]
    for r in table.itertuples():
        lines.append(f"| {r.component} | {r.arm} | {r.n_pairs} | {signed(r.contribution)} "
                     f"[{signed(r.ci_low)}, {signed(r.ci_high)}] | {pvalue(r.p_adj)} | {r.verdict} |")
    return "\n".join(lines) + "\n"


def _loo_sentences(table: pd.DataFrame, metric: str) -> list[str]:
    unit = "mIoU" if metric == "val_miou" else metric
    out = []
    for r in table.itertuples():
        if r.n_pairs == 0:
            out.append(f"{r.component}: not estimable, no seed finished both the full model and '{r.arm}'.")
            continue
        effect = "costs" if r.contribution >= 0 else "gains"
        out.append(f"{r.component} contributes {signed(r.contribution)} {unit} [{signed(r.ci_low)}, "
                   f"{signed(r.ci_high)}] ({r.verdict}; p={pvalue(r.p_adj)} Holm, {r.n_pairs} paired seeds): "
                   f"removing it {effect} {abs(r.contribution):.3f} {unit} on average.")
    return out
