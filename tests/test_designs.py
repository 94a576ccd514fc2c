"""Ablation designs: the registry, every design's expansion, and analyses checked on planted effects."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import PRESET

from ablate.ablation.design import AblationFile, Arm, load_ablation
from ablate.ablation.designs import DESIGNS, Design, DesignAnalysis, Factorial
from ablate.errors import SpecError
from ablate.spec import read_yaml, resolve_base

SKIPS = {"add": {"skip": {"type": "add"}}, "multiply": {"skip": {"type": "multiply"}}}
DEPTHS = {"d2": {"depth": 2}, "d4": {"depth": 4}}


def ablation_file(design: str, factors: dict[str, Any]) -> AblationFile:
    return AblationFile.model_validate({"name": "t", "base": str(PRESET), "design": design, "factors": factors})


def base_raw() -> dict[str, Any]:
    return resolve_base(read_yaml(PRESET), Path(PRESET))


def payload_of(arms: list[Arm], design: str) -> dict[str, Any]:
    """What the runner logs as ablation.json, without the specs."""
    return {"name": "t", "design": design, "arms": {a.key: {"factor": a.factor, "variant": a.variant,
                                                            "is_baseline": a.is_baseline, "levels": a.levels}
                                                    for a in arms}}


# --- the registry ----------------------------------------------------------------------------


def test_every_builtin_design_is_registered_under_its_own_name() -> None:
    assert DESIGNS.names() == ["factorial", "leave-one-out", "one-at-a-time"]
    for name in DESIGNS:
        design = DESIGNS.build(name)
        assert isinstance(design, Design) and design.name == name


def test_unknown_design_names_the_known_ones_and_the_closest() -> None:
    message = (r"^Unknown design 'factorail'\. Known: factorial, leave-one-out, one-at-a-time\. "
               r"Did you mean 'factorial'\?$")
    with pytest.raises(SpecError, match=message):
        DESIGNS.get("factorail")


def test_unknown_design_in_an_ablation_file_is_a_spec_error(tmp_path: Path) -> None:
    path = tmp_path / "ab.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "base": str(PRESET), "design": "leave-on-out",
                                    "factors": {"skip": SKIPS}}))
    with pytest.raises(SpecError, match=r"Ablation 't': Unknown design 'leave-on-out'.*Did you mean 'leave-one-out'"):
        load_ablation(path)


def test_duplicate_design_name_raises_and_keeps_the_first() -> None:
    with pytest.raises(ValueError, match=r"Duplicate design 'factorial'"):
        DESIGNS.register("factorial")(Design)
    assert DESIGNS.get("factorial") is Factorial


# --- expansion, for every registered design ----------------------------------------------------


@pytest.mark.parametrize("name", DESIGNS.names())
def test_expansion_contract(name: str) -> None:
    ab = ablation_file(name, {"skip": SKIPS, "depth": DEPTHS})
    arms = DESIGNS.build(name).expand(ab, base_raw())
    assert arms[0].is_baseline and arms[0].key == "baseline"
    assert not any(a.is_baseline for a in arms[1:]) and len(arms) >= 1 + 4  # every variant appears
    assert len({a.key for a in arms}) == len(arms)
    assert len({a.spec.spec_hash for a in arms}) == len(arms)
    for arm in arms[1:]:
        assert arm.levels and set(arm.levels) <= set(ab.factors)
        assert any(level != "baseline" for level in arm.levels.values())
        assert all(level == "baseline" or level in ab.factors[f] for f, level in arm.levels.items())


@pytest.mark.parametrize("name", DESIGNS.names())
def test_empty_factor_is_refused(name: str) -> None:
    ab = ablation_file(name, {"skip": SKIPS, "depth": {}})
    with pytest.raises(SpecError, match=r"Factor 'depth' of ablation 't' has no variants"):
        DESIGNS.build(name).expand(ab, base_raw())


@pytest.mark.parametrize("name", DESIGNS.names())
def test_delta_that_changes_nothing_is_refused(name: str) -> None:
    ab = ablation_file(name, {"skip": {"concat": {"skip": {"type": "concat"}}}})
    with pytest.raises(SpecError, match=r"'skip=concat.*' changes nothing relative to 'baseline'"):
        DESIGNS.build(name).expand(ab, base_raw())


@pytest.mark.parametrize("name", DESIGNS.names())
def test_analysis_contract_on_runs_of_the_expanded_arms(name: str) -> None:
    arms = DESIGNS.build(name).expand(ablation_file(name, {"skip": SKIPS, "depth": DEPTHS}), base_raw())
    payload = payload_of(arms, name)
    rng = np.random.default_rng(0)
    runs = pd.DataFrame([{"variant": a.key, "seed": s, "status": "FINISHED", "val_miou": 0.7 + rng.normal(0, 0.01)}
                         for a in arms for s in range(4)])
    runs.loc[0, "status"] = "FAILED"
    for table in (runs, runs.assign(status="FAILED"), runs.iloc[:0]):
        result = DESIGNS.build(name).analyse(table, payload)
        assert isinstance(result, DesignAnalysis) and isinstance(result.table, pd.DataFrame)
        assert isinstance(result.markdown, str) and all(isinstance(s, str) and s for s in result.sentences)


def test_builtin_expansions_have_the_expected_arms() -> None:
    factors = {"skip": SKIPS, "depth": DEPTHS}
    one = DESIGNS.build("one-at-a-time").expand(ablation_file("one-at-a-time", factors), base_raw())
    loo = DESIGNS.build("leave-one-out").expand(ablation_file("leave-one-out", factors), base_raw())
    grid = DESIGNS.build("factorial").expand(ablation_file("factorial", factors), base_raw())
    assert [a.key for a in one] == [a.key for a in loo] == ["baseline", "skip=add", "skip=multiply",
                                                            "depth=d2", "depth=d4"]
    assert [a.variant for a in loo[1:3]] == ["without skip", "without skip"]
    assert len(grid) == 9 and grid[0].levels == {"skip": "baseline", "depth": "baseline"}
    assert grid[-1].key == "skip=multiply,depth=d4" and grid[-1].spec.model["depth"] == 4


def test_load_ablation_delegates_to_the_design(tmp_path: Path) -> None:
    path = tmp_path / "ab.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "base": str(PRESET), "design": "factorial",
                                    "factors": {"skip": {"add": SKIPS["add"]}, "depth": {"d4": DEPTHS["d4"]}}},
                                   sort_keys=False))
    assert [a.key for a in load_ablation(path).arms] == [
        "baseline", "skip=baseline,depth=d4", "skip=add,depth=baseline", "skip=add,depth=d4"]


# --- factorial analysis on planted effects -------------------------------------------------------


def grid_payload(factors: dict[str, list[str]]) -> dict[str, Any]:
    """A factorial payload: every combination of ``["baseline", *levels]`` per factor."""
    levels = {f: ["baseline", *ls] for f, ls in factors.items()}
    arms = {}
    for combo in itertools.product(*levels.values()):
        chosen = dict(zip(levels, combo, strict=True))
        key = "baseline" if set(combo) == {"baseline"} else ",".join(f"{f}={v}" for f, v in chosen.items())
        arms[key] = {"factor": "", "variant": key, "is_baseline": key == "baseline", "levels": chosen}
    return {"name": "t", "design": "factorial", "arms": arms}


def simulate(payload: dict[str, Any], mean: Any, seeds: int, rng: np.random.Generator, noise: float = 0.003,
             block: float = 0.02) -> pd.DataFrame:
    """One FINISHED run per (arm, seed): ``0.7 + mean(levels) + seed block + noise``."""
    rows = []
    for seed in range(seeds):
        shift = rng.normal(0.0, block)  # the seed's effect, shared by every arm (same split, init, ...)
        for key, arm in payload["arms"].items():
            value = 0.7 + mean(arm["levels"]) + shift + rng.normal(0.0, noise)
            rows.append({"variant": key, "seed": seed, "status": "FINISHED", "val_miou": value})
    return pd.DataFrame(rows)


TWO_BY_TWO = grid_payload({"a": ["on"], "b": ["on"]})
CELLS = {("baseline", "baseline"): 0.0, ("on", "baseline"): 0.02, ("baseline", "on"): -0.01, ("on", "on"): 0.03}


def planted(levels: dict[str, str]) -> float:
    """Main effect of a: +0.03, of b: 0 (both averaged over the other), interaction: +0.02."""
    return CELLS[(levels["a"], levels["b"])]


def effect(result: DesignAnalysis, label: str) -> pd.Series:
    return result.table.set_index("effect").loc[label]


def test_factorial_recovers_planted_main_effects_and_interaction() -> None:
    runs = simulate(TWO_BY_TWO, planted, seeds=8, rng=np.random.default_rng(1))
    result = Factorial().analyse(runs, TWO_BY_TWO)
    a, b, ab = effect(result, "a=on"), effect(result, "b=on"), effect(result, "a x b")
    for row, truth, tol in ((a, 0.03, 0.004), (b, 0.0, 0.004), (ab, 0.02, 0.008)):
        assert abs(row["estimate"] - truth) < tol
        assert row["ci_low"] <= truth <= row["ci_high"]
    assert (a["verdict"], b["verdict"], ab["verdict"]) == ("better", "no evidence", "positive interaction")
    assert b["p_adj"] > 0.05
    assert any(re.match(r"a=on main effect: \+0\.0[23]\d mIoU \[.*\(better than a=baseline\)", s)
               for s in result.sentences)
    assert any(re.match(r"b=on main effect: .*\(no evidence of a difference from b=baseline\)", s)
               for s in result.sentences)
    assert any(re.match(r"a x b interaction: \+0\.0[12]\d mIoU .*\(positive interaction\)", s)
               for s in result.sentences)
    assert "## Factorial effects" in result.markdown and "| a x b | interaction |" in result.markdown


def test_seed_blocks_do_not_widen_the_intervals() -> None:
    runs = simulate(TWO_BY_TWO, planted, seeds=6, rng=np.random.default_rng(2), noise=0.002, block=0.05)
    a = effect(Factorial().analyse(runs, TWO_BY_TWO), "a=on")
    assert a["ci_high"] - a["ci_low"] < 0.01  # 25x smaller than the seed-to-seed spread


def test_factorial_matches_the_formula_model_and_its_anova() -> None:
    """The built design matrix equals statsmodels' ``C(f, Sum) * ... + C(seed)``; F p = anova_lm type III."""
    smf = pytest.importorskip("statsmodels.formula.api")
    from statsmodels.stats.anova import anova_lm

    payload = grid_payload({"skip": ["add"], "depth": ["d2", "d4"]})

    def mean(levels: dict[str, str]) -> float:
        return {"baseline": 0.0, "d2": -0.02, "d4": 0.01}[levels["depth"]] + 0.01 * (levels["skip"] == "add") * (
            1 + (levels["depth"] == "d4"))

    runs = simulate(payload, mean, seeds=4, rng=np.random.default_rng(3), noise=0.01)
    result = Factorial().analyse(runs, payload)
    frame = runs.assign(skip=[payload["arms"][v]["levels"]["skip"] for v in runs["variant"]],
                        depth=[payload["arms"][v]["levels"]["depth"] for v in runs["variant"]],
                        seed=runs["seed"].astype(str))
    fit = smf.ols("val_miou ~ C(skip, Sum) * C(depth, Sum) + C(seed, Sum)", frame).fit()
    anova = anova_lm(fit, typ=3)
    term = result.table.set_index("effect").loc["skip x depth"]
    assert term["kind"] == "interaction term" and term["term_df"] == 2
    assert term["term_p"] == pytest.approx(anova.loc["C(skip, Sum):C(depth, Sum)", "PR(>F)"], rel=1e-8)
    assert effect(result, "skip=add")["term_p"] == pytest.approx(anova.loc["C(skip, Sum)", "PR(>F)"], rel=1e-8)
    cells = frame.groupby(["skip", "depth"])["val_miou"].mean()
    d4 = effect(result, "depth=d4")["estimate"]
    assert d4 == pytest.approx((cells["add", "d4"] + cells["baseline", "d4"]
                                - cells["add", "baseline"] - cells["baseline", "baseline"]) / 2, abs=1e-12)
    inter = effect(result, "skip=add x depth=d4")["estimate"]
    assert inter == pytest.approx(cells["add", "d4"] - cells["baseline", "d4"]
                                  - cells["add", "baseline"] + cells["baseline", "baseline"], abs=1e-12)
    assert inter == pytest.approx(0.01, abs=0.03)


def test_incomplete_seeds_are_dropped_and_counted() -> None:
    runs = simulate(TWO_BY_TWO, planted, seeds=6, rng=np.random.default_rng(4))
    runs.loc[(runs["seed"] == 2) & (runs["variant"] == "a=on,b=on"), "status"] = "FAILED"
    runs = runs[~((runs["seed"] == 5) & (runs["variant"] == "baseline"))]
    result = Factorial().analyse(runs, TWO_BY_TWO)
    assert result.sentences[0].startswith("2 seed(s) dropped (2, 5)")
    assert "4 complete seeds x 4 cells, 9 residual df" in result.markdown


@pytest.mark.parametrize("seeds", [0, 1])
def test_too_few_seeds_is_not_estimable_and_says_so(seeds: int) -> None:
    runs = simulate(TWO_BY_TWO, planted, seeds=max(seeds, 1), rng=np.random.default_rng(5))
    runs = runs if seeds else runs[runs["variant"] != "baseline"]
    result = Factorial().analyse(runs, TWO_BY_TWO)
    assert any("not estimable: need more seeds" in s for s in result.sentences)
    assert set(result.table["verdict"]) == {"not estimable"} and result.table["p"].isna().all()


def test_three_factors_report_the_three_way_term() -> None:
    payload = grid_payload({"a": ["on"], "b": ["on"], "c": ["on"]})
    runs = simulate(payload, lambda lv: 0.02 * (lv["c"] == "on"), seeds=3, rng=np.random.default_rng(6))
    result = Factorial().analyse(runs, payload)
    assert list(result.table["effect"]) == ["a=on", "b=on", "c=on", "a x b", "a x c", "b x c", "a x b x c"]
    assert effect(result, "c=on")["verdict"] == "better"
    assert any(s.startswith("a x b x c interaction, all levels together (F-test, 1 df)") for s in result.sentences)


def test_baseline_logged_without_levels_is_still_the_baseline_cell() -> None:
    runs = simulate(TWO_BY_TWO, planted, seeds=4, rng=np.random.default_rng(7))
    old = {**TWO_BY_TWO, "arms": {**TWO_BY_TWO["arms"], "baseline": {**TWO_BY_TWO["arms"]["baseline"], "levels": {}}}}
    pd.testing.assert_frame_equal(Factorial().analyse(runs, old).table, Factorial().analyse(runs, TWO_BY_TWO).table)


def test_factorial_error_rates_by_simulation() -> None:
    """No interaction: the interaction test rejects at about alpha; main-effect CIs cover about 95%."""
    rng, n_rep = np.random.default_rng(2024), 300
    additive = {k: v for k, v in CELLS.items()}
    additive[("on", "on")] = additive[("on", "baseline")] + additive[("baseline", "on")]  # a +0.02, b -0.01
    rejected, covered = 0, []
    for _ in range(n_rep):
        runs = simulate(TWO_BY_TWO, lambda lv: additive[(lv["a"], lv["b"])], seeds=4, rng=rng, noise=0.01)
        table = Factorial().analyse(runs, TWO_BY_TWO).table.set_index("effect")
        rejected += table.loc["a x b", "term_p"] < 0.05
        for label, truth in (("a=on", 0.02), ("b=on", -0.01)):
            covered.append(table.loc[label, "ci_low"] <= truth <= table.loc[label, "ci_high"])
    assert rejected / n_rep <= 0.05 + 0.02
    assert 0.92 <= np.mean(covered) <= 0.98


# --- leave-one-out and one-at-a-time analyses ---------------------------------------------------


def loo_payload(components: list[str]) -> dict[str, Any]:
    arms = {"baseline": {"factor": "", "variant": "baseline", "is_baseline": True, "levels": {}}}
    for c in components:
        arms[f"{c}=remove"] = {"factor": c, "variant": f"without {c}", "is_baseline": False, "levels": {c: "remove"}}
    return {"name": "t", "design": "leave-one-out", "arms": arms}


def test_leave_one_out_reports_each_components_contribution() -> None:
    payload = loo_payload(["l2", "flips", "se"])
    cost = {"baseline": 0.0, "l2=remove": -0.02, "flips=remove": 0.0, "se=remove": +0.015}
    rng = np.random.default_rng(8)
    runs = pd.DataFrame([{"variant": k, "seed": s, "status": "FINISHED", "val_miou": 0.7 + 0.01 * s + cost[k]
                          + rng.normal(0, 0.002)} for s in range(6) for k in payload["arms"]])
    result = DESIGNS.build("leave-one-out").analyse(runs, payload)
    table = result.table.set_index("component")
    assert table.loc["l2", "contribution"] == pytest.approx(0.02, abs=0.004)
    assert table.loc["se", "contribution"] == pytest.approx(-0.015, abs=0.004)
    assert list(table["verdict"]) == ["helps", "no evidence", "hurts"]
    assert table["n_pairs"].tolist() == [6, 6, 6]
    assert re.match(r"l2 contributes \+0\.0[12]\d mIoU \[.*\(helps; .*removing it costs 0\.0[12]", result.sentences[0])
    assert re.match(r"se contributes -0\.01\d mIoU .*\(hurts; .*removing it gains 0\.01", result.sentences[2])
    assert "## Component contributions (leave-one-out)" in result.markdown


def test_one_at_a_time_adds_nothing_to_the_main_table() -> None:
    runs = pd.DataFrame({"variant": ["baseline", "skip=add"] * 3, "seed": [0, 0, 1, 1, 2, 2],
                         "status": "FINISHED", "val_miou": [0.70, 0.72, 0.71, 0.73, 0.70, 0.71]})
    result = DESIGNS.build("one-at-a-time").analyse(runs, loo_payload(["skip"]))
    assert result.table.empty and result.markdown == "" and result.sentences == []


def test_repeated_finished_runs_are_an_error() -> None:
    runs = simulate(TWO_BY_TWO, planted, seeds=2, rng=np.random.default_rng(9))
    with pytest.raises(ValueError, match=r"one FINISHED run per seed; repeated arm/seed: \['baseline/0'\]"):
        Factorial().analyse(pd.concat([runs, runs.iloc[:1]]), TWO_BY_TWO)


def test_missing_metric_column_is_named() -> None:
    with pytest.raises(ValueError, match=r"runs lacks column\(s\) \['val_miou'\]"):
        Factorial().analyse(pd.DataFrame({"variant": [], "seed": [], "status": []}), TWO_BY_TWO)
