"""The factorial design: every combination of the factors' levels, analysed by one linear model.

Registered as ``"factorial"`` in ``DESIGNS`` on import; :mod:`ablate.ablation.designs` imports
this module, so the registry always holds it.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ablate.ablation.design import BASELINE, AblationFile, Arm, _apply, normalise_delta
from ablate.ablation.design_base import DESIGNS, Design, DesignAnalysis, Rebase, finished, pvalue, signed
from ablate.spec import Spec, deep_merge
from ablate.stats import holm, verdict


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

    complete_blocks = True  # the linear model uses only seeds that finished every cell

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
