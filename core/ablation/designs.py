"""Ablation designs: each one owns the arms it expands to and the analysis it can support.

A design is one registered class; ``expand`` turns an ablation file into arms and
``analyse`` turns the collected runs into what the design claims to measure::

    design = DESIGNS.build("leave-one-out")
    arms = design.expand(ab, base_raw, rebase)
    result = design.analyse(record.runs, record.payload)
    print("\\n".join(result.sentences))

- ``one-at-a-time``: the baseline plus one variant per (factor, variant); the per-arm table
  against the baseline (``core.stats.compare_arms``) is the whole analysis.
- ``leave-one-out``: the baseline is the full model and each variant removes one component;
  a component's contribution is ``full - without it``, paired by seed, Holm across components.
- ``factorial``: every combination of the factors' levels; main effects and interaction
  contrasts from one linear model with seed as a block (see ``Factorial``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from core.ablation.design import BASELINE, AblationFile, Arm, _apply, normalise_delta
from core.errors import SpecError
from core.registry import Registry
from core.spec import Spec, deep_merge, validate
from core.stats import OK_STATUS, holm, paired_difference, verdict

DESIGNS = Registry("design")

Rebase = Callable[[str], dict[str, Any]] | None


@dataclass
class DesignAnalysis:
    """What a design adds to the report beyond the per-arm table.

    Attributes:
        table: one row per effect the design estimates (empty when it adds none).
        markdown: a section for report.md, "" when there is nothing to add.
        sentences: plain-language lines, one per effect or caveat.

    Example:
        >>> DesignAnalysis().sentences
        []
    """

    table: pd.DataFrame = field(default_factory=pd.DataFrame)
    markdown: str = ""
    sentences: list[str] = field(default_factory=list)


class Design:
    """Base of every design: the baseline arm, the variant arms, checks and an analysis.

    Subclasses set ``name``, implement ``variants`` and override ``analyse`` when the design
    supports more than the per-arm comparison with the baseline.

    Example:
        >>> @DESIGNS.register("pairs")  # doctest: +SKIP
        ... class Pairs(Design):
        ...     name = "pairs"
        ...     def variants(self, ab, base_raw, rebase): ...
    """

    name: ClassVar[str] = ""

    def expand(self, ab: AblationFile, base_raw: dict[str, Any], rebase: Rebase = None) -> list[Arm]:
        """The baseline arm first, then the variants; empty factors and no-op deltas are errors."""
        if not ab.factors:
            raise SpecError(f"Ablation '{ab.name}' has no factors; expected at least one factor with variants.")
        for factor, variants in ab.factors.items():
            if not variants:
                raise SpecError(f"Factor '{factor}' of ablation '{ab.name}' has no variants; "
                                f"give it at least one, e.g. '{factor}: {{name: {{key: value}}}}'.")
        arms = [self.baseline(ab, validate(base_raw)), *self.variants(ab, base_raw, rebase)]
        _check_distinct(arms)
        return arms

    def baseline(self, ab: AblationFile, spec: Spec) -> Arm:
        """The baseline arm: the base spec unchanged."""
        return Arm(BASELINE, "", BASELINE, True, spec)

    def variants(self, ab: AblationFile, base_raw: dict[str, Any], rebase: Rebase) -> list[Arm]:
        """The non-baseline arms."""
        raise NotImplementedError(f"Design '{self.name}' must implement variants().")

    def analyse(self, runs: pd.DataFrame, payload: dict[str, Any], metric: str = "val_miou",
                alpha: float = 0.05) -> DesignAnalysis:
        """Nothing beyond the per-arm table; subclasses add their own effects."""
        finished(runs, metric)
        verdict((0.0, 0.0), math.nan, alpha)  # validates alpha
        return DesignAnalysis()


@DESIGNS.register("one-at-a-time")
class OneAtATime(Design):
    """The baseline plus one arm per (factor, variant), each changing one thing.

    Its analysis is the per-arm table against the baseline (``core.stats.compare_arms``).

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
    (``core.stats.paired_difference``: t CI, its test's p), Holm-adjusted across components.

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


@DESIGNS.register("factorial")
class Factorial(Design):
    """Every combination of the factors' levels, the baseline cell included.

    The analysis fits ``metric ~ C(f1, Sum) * C(f2, Sum) * ... + C(seed, Sum)`` by OLS on the
    seeds that finished every cell (seed is a block). Each effect is a contrast of the model's
    cell means (design rows averaged per cell, as emmeans does), so its CI and p come from the
    model's residual variance with ``(seeds - 1) * (cells - 1)`` degrees of freedom:

    - main effect of ``f=a``: mean over the other factors' levels of ``cell(f=a) - cell(f=baseline)``;
    - 2-way interaction ``f=a x g=b``: ``(ab - a) - (b - baseline)``, averaged over other factors;
    - every interaction term also gets its F-test (all its contrasts at once).

    Holm's correction runs over the main effects and 2-way contrasts reported. Seeds that miss a
    cell are dropped (and counted); under 2 complete seeds nothing is estimable and the
    sentences say so.

    Example:
        >>> result = Factorial().analyse(runs, record.payload)  # doctest: +SKIP
        >>> result.sentences[0]  # doctest: +SKIP
        'depth=d4 main effect: +0.021 mIoU [+0.012, +0.030], p=0.002 (Holm) (better than depth=baseline).'
    """

    name = "factorial"

    def baseline(self, ab: AblationFile, spec: Spec) -> Arm:
        """The baseline cell: every factor at its baseline level."""
        return Arm(BASELINE, "", BASELINE, True, spec, {f: BASELINE for f in ab.factors})

    def variants(self, ab: AblationFile, base_raw: dict[str, Any], rebase: Rebase) -> list[Arm]:
        levels = {f: [BASELINE, *variants] for f, variants in ab.factors.items()}
        arms = []
        for combo in itertools.product(*levels.values()):
            chosen = dict(zip(levels, combo, strict=True))
            changed = {f: v for f, v in chosen.items() if v != BASELINE}
            if not changed:
                continue
            delta: dict[str, Any] = {}
            for f, v in changed.items():
                delta = deep_merge(delta, normalise_delta(ab.factors[f][v]))
            key = ",".join(f"{f}={v}" for f, v in chosen.items())
            arms.append(Arm(key, "+".join(changed), key, False, _apply(base_raw, delta, f"arm {key}"), chosen))
        return arms

    def analyse(self, runs: pd.DataFrame, payload: dict[str, Any], metric: str = "val_miou",
                alpha: float = 0.05) -> DesignAnalysis:
        """Main effects and interaction contrasts with 95% CIs, t-tests (Holm) and term F-tests."""
        ok = finished(runs, metric)
        verdict((0.0, 0.0), math.nan, alpha)
        factors = _factor_levels(payload)
        if not factors:
            return DesignAnalysis(sentences=["No factor has a level besides its baseline: nothing to estimate."])
        return _FactorialFit(factors, payload, ok, metric).analysis(alpha)


def finished(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The FINISHED runs with a finite ``metric``; one per (variant, seed) or a ValueError."""
    if not isinstance(runs, pd.DataFrame):
        raise TypeError(f"runs must be a pandas DataFrame, got {type(runs).__name__}.")
    missing = [c for c in ("variant", "seed", "status", metric) if c not in runs.columns]
    if missing:
        raise ValueError(f"runs lacks column(s) {missing}; it has {list(runs.columns)}.")
    ok = runs[(runs["status"] == OK_STATUS) & np.isfinite(runs[metric].to_numpy(float))]
    repeats = ok[ok.duplicated(["variant", "seed"], keep=False)]
    if not repeats.empty:
        pairs = sorted({f"{v}/{s}" for v, s in zip(repeats["variant"], repeats["seed"], strict=True)})
        raise ValueError(f"Each arm may have one {OK_STATUS} run per seed; repeated arm/seed: {pairs}.")
    return ok


def _check_distinct(arms: Sequence[Arm]) -> None:
    seen: dict[str, str] = {}
    for arm in arms:
        h = arm.spec.spec_hash
        if h in seen:
            raise SpecError(
                f"Variant '{arm.key}' changes nothing relative to '{seen[h]}' (same resolved spec); "
                f"give it a delta that differs from the base."
            )
        seen[h] = arm.key


def signed(x: float) -> str:
    """``+0.031``, or ``n/a`` for nan."""
    return "n/a" if not np.isfinite(x) else f"{x:+.3f}"


def pvalue(p: float) -> str:
    """``0.012``, ``<0.001``, or ``n/a`` for nan."""
    return "n/a" if not np.isfinite(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")


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


def _factor_levels(payload: dict[str, Any]) -> dict[str, list[str]]:
    """Each factor's levels, baseline first, in the order the logged arms introduce them."""
    factors: dict[str, list[str]] = {}
    for arm in payload["arms"].values():
        for factor, level in (arm.get("levels") or {}).items():
            levels = factors.setdefault(factor, [BASELINE])
            if level not in levels:
                levels.append(level)
    return {f: levels for f, levels in factors.items() if len(levels) > 1}


def _sum_coded(codes: np.ndarray, n_levels: int) -> np.ndarray:
    """Sum (deviation) coding: level k < n - 1 is unit column k, the last level is all -1."""
    basis = np.vstack([np.eye(n_levels - 1), -np.ones((1, n_levels - 1))])
    return basis[codes]


@dataclass(frozen=True)
class _Effect:
    label: str
    kind: str  # "main" or "interaction"
    chosen: dict[int, str]  # factor index -> its non-baseline level in this contrast


_WORDS = {"main": {"better": "better", "worse": "worse", "no evidence": "no evidence"},
          "interaction": {"better": "positive interaction", "worse": "negative interaction",
                          "no evidence": "no evidence of interaction"}}
_COLUMNS = ["effect", "kind", "estimate", "ci_low", "ci_high", "p", "p_adj", "term_p", "term_df", "verdict"]


class _FactorialFit:
    """One factorial ablation's complete blocks, its linear model and the contrasts it reports."""

    def __init__(self, factors: dict[str, list[str]], payload: dict[str, Any], ok: pd.DataFrame,
                 metric: str) -> None:
        self.names, self.levels, self.metric = list(factors), list(factors.values()), metric
        self.cells = list(itertools.product(*self.levels))
        index = {cell: i for i, cell in enumerate(self.cells)}
        cell_of = {key: index[tuple((arm.get("levels") or {}).get(f, BASELINE) for f in self.names)]
                   for key, arm in payload["arms"].items()}
        runs = [(cell_of[v], s, y) for v, s, y in zip(ok["variant"], ok["seed"], ok[metric].to_numpy(float),
                                                       strict=True) if v in cell_of]
        seen: dict[Any, set[int]] = {}
        for cell, seed, _ in runs:
            seen.setdefault(seed, set()).add(cell)
        self.seeds = sorted(s for s, cells in seen.items() if len(cells) == len(self.cells))
        self.dropped = sorted(s for s, cells in seen.items() if len(cells) < len(self.cells))
        complete = [r for r in runs if r[1] in set(self.seeds)]
        self.cell = np.array([r[0] for r in complete], dtype=int)
        self.seed = np.array([self.seeds.index(r[1]) for r in complete], dtype=int)
        self.y = np.array([r[2] for r in complete], dtype=float)
        self.df_resid = (len(self.seeds) - 1) * (len(self.cells) - 1)

    def effects(self) -> list[_Effect]:
        """Every main effect, then every 2-way interaction contrast."""
        out = [_Effect(f"{name}={a}", "main", {i: a})
               for i, name in enumerate(self.names) for a in self.levels[i][1:]]
        for i, j in itertools.combinations(range(len(self.names)), 2):
            one_each = len(self.levels[i]) == 2 and len(self.levels[j]) == 2
            for a, b in itertools.product(self.levels[i][1:], self.levels[j][1:]):
                label = (f"{self.names[i]} x {self.names[j]}" if one_each
                         else f"{self.names[i]}={a} x {self.names[j]}={b}")
                out.append(_Effect(label, "interaction", {i: a, j: b}))
        return out

    def contrast(self, chosen: dict[int, str]) -> np.ndarray:
        """Weights on the cells: difference (of differences) over chosen factors, mean over the rest."""
        weights: np.ndarray = np.ones(1)
        for i, levels in enumerate(self.levels):
            part: np.ndarray
            if i in chosen:
                part = np.zeros(len(levels))
                part[levels.index(chosen[i])], part[0] = 1.0, -1.0
            else:
                part = np.full(len(levels), 1.0 / len(levels))
            weights = np.kron(weights, part)  # same order as itertools.product over the levels
        return weights

    def term_contrasts(self, term: tuple[int, ...]) -> np.ndarray:
        """All contrasts of one model term; together they span its degrees of freedom."""
        combos = itertools.product(*(self.levels[i][1:] for i in term))
        return np.array([self.contrast(dict(zip(term, combo, strict=True))) for combo in combos])

    def fit(self) -> tuple[Any, np.ndarray]:
        """The OLS fit and each cell's design row averaged over seeds (a cell mean is ``row @ params``).

        The design matrix is the one of ``y ~ C(f1, Sum) * C(f2, Sum) * ... + C(seed, Sum)``, built
        directly: patsy would triple the cost of a fit, which simulations of this design repeat.
        """
        from statsmodels.regression.linear_model import OLS  # a heavy import, needed by this design only

        codes = np.array([[levels.index(self.cells[c][i]) for i, levels in enumerate(self.levels)]
                          for c in range(len(self.cells))])[self.cell]
        per_factor = [_sum_coded(codes[:, i], len(levels)) for i, levels in enumerate(self.levels)]
        columns = [np.ones((len(self.y), 1))]
        for order in range(1, len(self.levels) + 1):
            for term in itertools.combinations(per_factor, order):
                block = term[0]
                for coded in term[1:]:  # an interaction's columns: products of its factors' columns
                    block = (block[:, :, None] * coded[:, None, :]).reshape(len(self.y), -1)
                columns.append(block)
        exog = np.hstack([*columns, _sum_coded(self.seed, len(self.seeds))])
        model = OLS(self.y, exog).fit()
        rows = np.vstack([exog[self.cell == k].mean(axis=0) for k in range(len(self.cells))])
        return model, rows

    def table(self, alpha: float) -> pd.DataFrame:
        effects = self.effects()
        weights = np.array([self.contrast(e.chosen) for e in effects])
        kinds, labels = [e.kind for e in effects], [e.label for e in effects]
        if len(self.seeds) < 2:
            estimates = np.full(len(effects), np.nan)
            if self.seeds:  # one complete seed: one run per cell, so point estimates without a CI
                estimates = weights @ np.bincount(self.cell, self.y, len(self.cells))
            return pd.DataFrame({"effect": labels, "kind": kinds, "estimate": estimates,
                                 "verdict": "not estimable"}, columns=_COLUMNS)
        model, rows = self.fit()
        t = model.t_test(weights @ rows)
        ci = np.atleast_2d(t.conf_int(alpha=0.05))
        terms = {}
        for order in range(1, len(self.names) + 1):
            for term in itertools.combinations(range(len(self.names)), order):
                f = model.f_test(self.term_contrasts(term) @ rows)
                terms[term] = (float(np.squeeze(f.pvalue)), int(f.df_num))
        of_effect = [terms[tuple(sorted(e.chosen))] for e in effects]
        p = np.ravel(t.pvalue)
        p_adj = holm(p.tolist())
        verdicts = [_WORDS[k][verdict((lo, hi), pa, alpha)] for k, lo, hi, pa in zip(kinds, ci[:, 0], ci[:, 1], p_adj,
                                                                                       strict=True)]
        # An interaction term with more than one contrast (or above 2-way) also gets its F-test line.
        higher = [(" x ".join(self.names[i] for i in term), p_term, df) for term, (p_term, df) in terms.items()
                  if len(term) > 2 or (len(term) == 2 and df > 1)]
        nan = [np.nan] * len(higher)
        return pd.DataFrame({
            "effect": labels + [h[0] for h in higher], "kind": kinds + ["interaction term"] * len(higher),
            "estimate": [*np.ravel(t.effect), *nan], "ci_low": [*ci[:, 0], *nan], "ci_high": [*ci[:, 1], *nan],
            "p": [*p, *nan], "p_adj": [*p_adj, *nan], "term_p": [x[0] for x in of_effect] + [h[1] for h in higher],
            "term_df": [x[1] for x in of_effect] + [h[2] for h in higher], "verdict": verdicts + [""] * len(higher),
        }, columns=_COLUMNS)

    def analysis(self, alpha: float) -> DesignAnalysis:
        table = self.table(alpha)
        records = table.to_dict("records")
        return DesignAnalysis(table, self.markdown(records), self.sentences(records))

    def notes(self) -> list[str]:
        k = len(self.cells)
        out = []
        if self.dropped:
            out.append(f"{len(self.dropped)} seed(s) dropped ({', '.join(map(str, self.dropped))}): they did not "
                       f"finish all {k} cells, and a seed is a block only when complete.")
        if len(self.seeds) < 2:
            out.append(f"Factorial effects not estimable: need more seeds. {len(self.seeds)} seed(s) finished all "
                       f"{k} cells; at least 2 are needed to estimate the run-to-run noise (3 or more for useful CIs).")
        return out

    def sentences(self, records: list[dict[str, Any]]) -> list[str]:
        unit = "mIoU" if self.metric == "val_miou" else self.metric
        out = self.notes()
        if len(self.seeds) < 2:
            return out
        for r in records:
            if r["kind"] == "interaction term":
                out.append(f"{r['effect']} interaction, all levels together (F-test, {r['term_df']} df): "
                           f"p={pvalue(r['term_p'])}.")
                continue
            what, reading = "interaction", r["verdict"]
            if r["kind"] == "main":
                base = f"{r['effect'].rsplit('=', 1)[0]}={BASELINE}"
                what = "main effect"
                reading = (f"no evidence of a difference from {base}" if r["verdict"] == "no evidence"
                           else f"{r['verdict']} than {base}")
            out.append(f"{r['effect']} {what}: {signed(r['estimate'])} {unit} [{signed(r['ci_low'])}, "
                       f"{signed(r['ci_high'])}], p={pvalue(r['p_adj'])} (Holm) ({reading}).")
        if any(r["verdict"] in ("positive interaction", "negative interaction") for r in records):
            out.append("The factors interact, so a main effect is an average over the other factors' levels: "
                       "compare the cells themselves before concluding.")
        return out

    def markdown(self, records: list[dict[str, Any]]) -> str:
        lines = ["## Factorial effects", "",
                 f"OLS of {self.metric} on every factor interaction with seed as a block "
                 f"({len(self.seeds)} complete seeds x {len(self.cells)} cells, {self.df_resid} residual df). "
                 "Main effect: mean over the other factors' levels of (level - baseline level). Interaction: "
                 "difference of differences, (ab - a) - (b - baseline). 95% CIs from the model's t distribution; "
                 "p: t-test of the contrast, Holm-adjusted across the effects listed; term p: the F-test of the "
                 "whole model term.", "",
                 "| effect | kind | estimate [95% CI] | p (Holm) | term p | verdict |",
                 "|---|---|---|---|---|---|"]
        for r in records:
            estimate = ("-" if pd.isna(r["estimate"])
                        else f"{signed(r['estimate'])} [{signed(r['ci_low'])}, {signed(r['ci_high'])}]")
            term = "-" if pd.isna(r["term_df"]) else f"{pvalue(r['term_p'])} (F, {int(r['term_df'])} df)"
            lines.append(f"| {r['effect']} | {r['kind']} | {estimate} | {pvalue(r['p_adj'])} | {term} "
                         f"| {r['verdict']} |")
        notes = self.notes()
        return "\n".join(lines + ([""] + [f"- {n}" for n in notes] if notes else [])) + "\n"
