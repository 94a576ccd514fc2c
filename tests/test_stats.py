"""Known-answer tests for ablate.stats: paired-seed ablation statistics."""

from __future__ import annotations

import doctest
import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

import ablate.stats
from ablate.stats import (
    CORRECTIONS,
    EXACT_MAX_N,
    PROB_BETTER_EXPLAINED,
    adjust,
    bootstrap_ci,
    compare_arms,
    holm,
    min_adjusted_p,
    min_p,
    paired_difference,
    paired_test,
    permutation_test,
    pooled_seed_sd,
    power_paired_t,
    seeds_for_power,
    seeds_needed_permutation,
    summarize_arm,
    verdict,
)


def _runs(arms: dict[str, list[float]], status: dict[str, list[str]] | None = None) -> pd.DataFrame:
    """One row per run; seeds are 0..n-1 per arm; every run FINISHED unless `status` says."""
    status = status or {}
    rows = [
        {"variant": arm, "seed": i, "status": status.get(arm, ["FINISHED"] * len(vals))[i], "val_miou": v}
        for arm, vals in arms.items()
        for i, v in enumerate(vals)
    ]
    return pd.DataFrame(rows)


def _brute_force_p(d: np.ndarray) -> float:
    observed = abs(d.sum())
    hits = [
        abs(sum(s * x for s, x in zip(signs, d, strict=True))) >= observed - 1e-12
        for signs in itertools.product([1, -1], repeat=len(d))
    ]
    return sum(hits) / len(hits)


# --- bootstrap_ci / summarize_arm -------------------------------------------------------------


def test_bootstrap_ci_edge_sizes():
    assert bootstrap_ci([0.7]) == (0.7, 0.7)
    low, high = bootstrap_ci([])
    assert math.isnan(low) and math.isnan(high)


def test_bootstrap_ci_is_deterministic_and_brackets_the_mean():
    x = [0.70, 0.72, 0.71, 0.74, 0.69, 0.73]
    assert bootstrap_ci(x, seed=3) == bootstrap_ci(x, seed=3)
    assert bootstrap_ci(x, seed=np.random.default_rng(3)) == bootstrap_ci(x, seed=3)
    low, high = bootstrap_ci(x)
    assert low < np.mean(x) < high


def test_bootstrap_ci_covers_the_true_mean_about_95_percent():
    rng = np.random.default_rng(2024)
    hits = 0
    for _ in range(400):
        low, high = bootstrap_ci(rng.normal(0.0, 1.0, size=20), n_boot=2000, seed=rng)
        hits += low <= 0.0 <= high
    assert 0.91 <= hits / 400 <= 0.98


def _t_ci(x: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """scipy's t interval of the mean: the reference the module must reproduce."""
    return sps.t.interval(confidence, df=len(x) - 1, loc=np.mean(x), scale=sps.sem(x))


@pytest.mark.parametrize("n", [2, 3, 5, 12, 30])
def test_summarize_arm_is_the_t_interval(n):
    x = np.random.default_rng(n).normal(0.7, 0.02, size=n)
    s = summarize_arm(x)
    assert (s.n, s.mean, s.std) == (n, pytest.approx(x.mean()), pytest.approx(x.std(ddof=1)))
    assert (s.ci_low, s.ci_high) == pytest.approx(_t_ci(x), rel=1e-12)
    assert (summarize_arm(x, 0.8).ci_low, summarize_arm(x, 0.8).ci_high) == pytest.approx(_t_ci(x, 0.8))


def test_summarize_arm_known_answer_and_small_sizes():
    s = summarize_arm([0.70, 0.72, 0.74])  # 0.72 -+ 4.302653 * 0.02 / sqrt(3)
    assert (s.ci_low, s.ci_high) == pytest.approx((0.72 - 0.0496828, 0.72 + 0.0496828), abs=1e-6)
    one = summarize_arm([0.7])  # never min/max: no interval from one seed
    assert one.n == 1 and one.mean == 0.7 and all(math.isnan(v) for v in (one.std, one.ci_low, one.ci_high))
    none = summarize_arm([])
    assert none.n == 0 and math.isnan(none.mean) and math.isnan(none.ci_low)
    flat = summarize_arm([0.7, 0.7, 0.7])
    assert (flat.ci_low, flat.ci_high) == pytest.approx((0.7, 0.7))


# --- paired_test (paired t) / permutation_test ---------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 5, 8, 20])
def test_paired_test_matches_scipy_ttest(n):
    rng = np.random.default_rng(n)
    base = rng.normal(0.7, 0.02, size=n)
    variant = base + rng.normal(0.01, 0.01, size=n)
    p, name = paired_test(variant - base)
    assert name == "paired-t"
    assert p == pytest.approx(sps.ttest_rel(variant, base).pvalue, rel=1e-9)
    assert p == pytest.approx(sps.ttest_1samp(variant - base, 0.0).pvalue, rel=1e-9)


def test_paired_test_reaches_005_with_three_consistent_seeds():
    p, _ = paired_test([-0.04, -0.05, -0.045])  # t = -15.59 on 2 df
    assert p == pytest.approx(sps.ttest_1samp([-0.04, -0.05, -0.045], 0.0).pvalue)
    assert p == pytest.approx(0.00409, abs=1e-5) and p < 0.05 < min_p(3, "permutation")


def test_paired_test_zero_spread_and_tiny_samples():
    assert paired_test([0.05] * 5) == (0.0, "paired-t")  # identical, non-zero: t is infinite
    assert paired_test(np.full(4, 0.8) - np.full(4, 0.7))[0] == 0.0  # equal up to float noise
    assert paired_test(np.zeros(3))[0] == 1.0 and paired_test(np.zeros(30))[0] == 1.0
    assert paired_test([0.03]) == (1.0, "paired-t")  # one pair: no spread to test with
    with pytest.raises(ValueError, match="at least one paired difference"):
        paired_test([])


def test_permutation_p_matches_hand_count():
    # +-1 +-2 +-3 over 8 sign assignments: only (+,+,+) and (-,-,-) reach |sum| >= 6.
    assert permutation_test([1.0, 2.0, 3.0]) == 0.25


@pytest.mark.parametrize("n", [1, 2, 5, 8, EXACT_MAX_N])
def test_permutation_p_matches_brute_force_enumeration(n):
    d = np.random.default_rng(n).normal(0.01, 0.02, size=n)
    assert permutation_test(d) == pytest.approx(_brute_force_p(d))


def test_permutation_minimum_p_is_two_over_two_to_the_n():
    assert permutation_test([0.05] * 5) == pytest.approx(2 / 32) == min_p(5, "permutation")
    d8 = [0.05, 0.04, 0.06, 0.05, 0.05, 0.03, 0.07, 0.05]
    assert permutation_test(d8) == pytest.approx(2 / 256) == min_p(8, "permutation")
    assert permutation_test(np.zeros(6)) == 1.0


def test_monte_carlo_permutation_above_exact_limit():
    d = np.random.default_rng(0).normal(0.005, 0.02, size=EXACT_MAX_N + 2)
    exact = _brute_force_p(d)  # 16384 assignments: still fine to enumerate here
    p = permutation_test(d, n_mc=20_000, seed=1)
    assert p == permutation_test(d, n_mc=20_000, seed=1)
    assert abs(p - exact) < 4 * math.sqrt(exact * (1 - exact) / 20_000) + 1e-4
    assert permutation_test(np.full(EXACT_MAX_N + 5, 0.1), n_mc=999) == pytest.approx(1 / 1000)
    with pytest.raises(ValueError, match="n_mc"):
        permutation_test(d, n_mc=0)


# --- paired_difference ---------------------------------------------------------------------------


def test_identical_arms_give_zero_delta_and_no_evidence():
    x = np.random.default_rng(1).normal(0.7, 0.02, size=8)
    r = paired_difference(x, x)
    assert (r.delta, r.ci_low, r.ci_high, r.p, r.prob_better, r.p_perm) == (0.0, 0.0, 0.0, 1.0, 0.5, 1.0)
    assert verdict((r.ci_low, r.ci_high), r.p) == "no evidence"


def test_planted_shift_matches_scipy():
    rng = np.random.default_rng(5)
    base = rng.normal(0.70, 0.02, size=8)
    variant = base + 0.05 + rng.normal(0, 0.005, size=8)
    d = variant - base
    r = paired_difference(variant, base)
    assert (r.n, r.ci_method, r.test) == (8, "t", "paired-t")
    assert r.delta == pytest.approx(d.mean())
    assert (r.ci_low, r.ci_high) == pytest.approx(_t_ci(d), rel=1e-12)
    assert r.p == pytest.approx(sps.ttest_rel(variant, base).pvalue, rel=1e-9)
    assert r.p_perm == pytest.approx(2 / 256)
    assert r.prob_better == pytest.approx(sps.t.cdf(d.mean() / sps.sem(d), df=7))
    assert verdict((r.ci_low, r.ci_high), r.p) == "better"
    lower = paired_difference(variant, base, higher_is_better=False)
    assert lower.prob_better == pytest.approx(sps.t.sf(d.mean() / sps.sem(d), df=7))
    assert (lower.ci_low, lower.ci_high, lower.p) == (r.ci_low, r.ci_high, r.p)


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6, 10])
def test_prob_better_is_the_t_posterior_consistent_with_the_ci(n):
    rng = np.random.default_rng(100 + n)
    for _ in range(40):
        d = rng.normal(0.01, 0.02, size=n)
        r = paired_difference(d, np.zeros(n), confidence=0.9)
        assert r.prob_better == pytest.approx(sps.t.cdf(d.mean() / sps.sem(d), df=n - 1))
        assert (r.prob_better > 0.95) == (r.ci_low > 0)  # one-sided 5% tail of the 90% CI
        assert (r.p < 0.1) == (r.ci_low > 0 or r.ci_high < 0)


def test_prob_better_is_explained_for_students():
    assert "probability" in PROB_BETTER_EXPLAINED and "flat prior" in PROB_BETTER_EXPLAINED


def test_consistent_effect_has_zero_spread_p():
    r = paired_difference([0.8, 0.8, 0.8], [0.7, 0.7, 0.7])
    assert r.p == 0.0 and r.prob_better == 1.0 and r.ci_low == pytest.approx(0.1) == r.ci_high
    assert r.p_perm == 0.25 and verdict((r.ci_low, r.ci_high), r.p) == "better"


def test_pairing_by_seed_drops_unmatched_seeds():
    r = paired_difference([0.80, 0.81, 0.82, 0.83], [0.71, 0.72, 0.73, 0.74], [0, 1, 2, 3], [4, 3, 2, 1])
    # pairs: seed 1 -> 0.81-0.74, seed 2 -> 0.82-0.73, seed 3 -> 0.83-0.72
    assert r.n == 3 and r.n_dropped == 2 and r.dropped_seeds == (0, 4)
    assert r.delta == pytest.approx(np.mean([0.07, 0.09, 0.11]))
    assert r.p == pytest.approx(sps.ttest_1samp([0.07, 0.09, 0.11], 0.0).pvalue)


def test_no_pairs_and_one_pair():
    none = paired_difference([0.8], [0.7], [0], [1])
    assert none.n == 0 and none.test == "none" and math.isnan(none.delta) and none.n_dropped == 2
    assert math.isnan(none.p) and math.isnan(none.p_perm)
    one = paired_difference([0.8], [0.7])
    assert one.n == 1 and one.ci_method == "none" and math.isnan(one.ci_low) and one.p == 1.0
    assert one.test == "paired-t" and one.p_perm == 1.0 and math.isnan(one.prob_better)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"variant": [0.1, 0.2], "baseline": [0.1]}, "paired by position"),
        ({"variant": [0.1], "baseline": [0.1], "seeds_variant": [0]}, "together, or neither"),
        (
            {"variant": [0.1, 0.2], "baseline": [0.1, 0.2], "seeds_variant": [0, 0], "seeds_baseline": [0, 1]},
            "must be unique",
        ),
        (
            {"variant": [0.1, 0.2], "baseline": [0.1, 0.2], "seeds_variant": [0], "seeds_baseline": [0, 1]},
            "2 values but 1 seeds",
        ),
        ({"variant": [0.1, math.nan], "baseline": [0.1, 0.2]}, "must be finite"),
        ({"variant": [[0.1]], "baseline": [[0.1]]}, "one-dimensional"),
        ({"variant": ["a"], "baseline": [0.1]}, "must be numbers"),
        ({"variant": [0.1], "baseline": [0.1], "confidence": 1.0}, "confidence"),
        ({"variant": [0.1], "baseline": [0.1], "n_boot": 0}, "n_boot"),
    ],
)
def test_paired_difference_rejects_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        paired_difference(**kwargs)


def test_bad_seed_type_is_a_type_error():
    with pytest.raises(TypeError, match="seed must be an int"):
        bootstrap_ci([0.1, 0.2], seed="zero")


# --- holm / verdict ----------------------------------------------------------------------------


def test_holm_matches_hand_computation():
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_and_passes_nan_through():
    out = holm([0.5, math.nan, 0.4])  # m = 2: 0.4*2 = 0.8, then max(0.5*1, 0.8) = 0.8
    assert out[0] == pytest.approx(0.8) and math.isnan(out[1]) and out[2] == pytest.approx(0.8)
    assert holm([0.7, 0.6]) == [1.0, 1.0]  # 0.6*2 = 1.2 capped at 1
    assert holm([]) == []


def test_holm_rejects_out_of_range():
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        holm([0.2, 1.5])


def test_adjust_methods():
    p = [0.01, 0.04, 0.03, 0.005]
    assert adjust(p, "holm") == holm(p)
    assert adjust(p, "bonferroni") == pytest.approx([0.04, 0.16, 0.12, 0.02])
    assert adjust(p, "none") == p
    out = adjust([0.3, math.nan, 0.02], "bonferroni")  # m = 2 known p-values
    assert out[0] == pytest.approx(0.6) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)
    assert adjust([0.7, 0.6], "bonferroni") == [1.0, 1.0]
    assert set(CORRECTIONS) == {"holm", "bonferroni", "none"}


def test_holm_is_never_above_bonferroni_and_never_below_raw():
    p = np.random.default_rng(3).uniform(0, 0.2, size=7).tolist()
    h, b = np.array(holm(p)), np.array(adjust(p, "bonferroni"))
    assert np.all(h <= b + 1e-15) and np.all(h >= np.array(p))


def test_adjust_rejects_unknown_method():
    with pytest.raises(ValueError, match="Unknown correction 'holms'.*Did you mean 'holm'"):
        adjust([0.1], "holms")


@pytest.mark.parametrize(
    ("ci", "p", "higher", "expected"),
    [
        ((0.01, 0.05), 0.01, True, "better"),
        ((-0.05, -0.01), 0.01, True, "worse"),
        ((-0.05, -0.01), 0.01, False, "better"),
        ((0.01, 0.05), 0.2, True, "no evidence"),
        ((-0.01, 0.05), 0.01, True, "no evidence"),
        ((math.nan, math.nan), 0.01, True, "no evidence"),
        ((0.01, 0.05), math.nan, True, "no evidence"),
    ],
)
def test_verdict(ci, p, higher, expected):
    assert verdict(ci, p, higher_is_better=higher) == expected


def test_verdict_rejects_inverted_ci():
    with pytest.raises(ValueError, match="low <= high"):
        verdict((0.05, 0.01), 0.01)


# --- compare_arms -------------------------------------------------------------------------------


def _ablation(n: int = 8) -> dict[str, list[float]]:
    rng = np.random.default_rng(11)
    base = rng.normal(0.70, 0.02, size=n)
    return {
        "baseline": base.tolist(),
        "same": base.tolist(),
        "plus_se": (base + 0.05 + rng.normal(0, 0.005, size=n)).tolist(),
        "no_skip": (base - 0.05 + rng.normal(0, 0.005, size=n)).tolist(),
    }


def test_compare_arms_known_answers():
    out = compare_arms(_runs(_ablation()), n_boot=2000).set_index("variant")
    assert list(out.index) == ["baseline", "same", "plus_se", "no_skip"]
    assert out.loc["baseline", "verdict"] == "baseline" and math.isnan(out.loc["baseline", "p"])
    assert out.loc["same", "delta"] == 0.0 and out.loc["same", "p"] == 1.0
    assert out.loc["same", "verdict"] == "no evidence"
    assert out.loc["plus_se", "verdict"] == "better" and out.loc["plus_se", "p_adj"] < 0.05
    assert (out["test"].iloc[1:] == "paired-t").all() and (out["ci_method"].iloc[1:] == "t").all()
    assert out.loc["plus_se", "p_perm"] == pytest.approx(2 / 256) and out.loc["same", "p_perm"] == 1.0
    assert out["p_perm_adj"].iloc[1:].tolist() == pytest.approx(holm(out["p_perm"].iloc[1:].tolist()))
    assert math.isnan(out.loc["baseline", "p_perm"]) and math.isnan(out.loc["baseline", "p_perm_adj"])
    arms = _ablation()
    d = np.subtract(arms["plus_se"], arms["baseline"])
    assert out.loc["plus_se", "p"] == pytest.approx(sps.ttest_1samp(d, 0.0).pvalue, rel=1e-9)
    assert (out.loc["plus_se", "delta_ci_low"], out.loc["plus_se", "delta_ci_high"]) == pytest.approx(_t_ci(d))
    assert (out.loc["plus_se", "ci_low"], out.loc["plus_se", "ci_high"]) == pytest.approx(_t_ci(arms["plus_se"]))
    assert out.loc["no_skip", "verdict"] == "worse" and out.loc["no_skip", "prob_better"] < 0.01
    assert out["p_adj"].iloc[1:].tolist() == pytest.approx(holm(out["p"].iloc[1:].tolist()))
    assert (out["n_ok"] == 8).all() and (out["n_failed"] == 0).all() and (out["note"] == "").all()


def test_compare_arms_is_deterministic_and_arms_do_not_disturb_each_other():
    arms = _ablation()
    full = compare_arms(_runs(arms), n_boot=500)
    pd.testing.assert_frame_equal(full, compare_arms(_runs(arms), n_boot=500))
    del arms["same"]
    fewer = compare_arms(_runs(arms), n_boot=500).set_index("variant")
    cols = ["mean", "ci_low", "ci_high", "delta", "delta_ci_low", "delta_ci_high", "p", "prob_better", "p_perm"]
    pd.testing.assert_frame_equal(fewer[cols], full.set_index("variant").loc[fewer.index, cols])


def test_failed_runs_are_excluded_and_counted():
    arms = _ablation()
    arms["plus_se"][6:] = [0.0, 99.0]  # garbage metrics logged by crashed runs
    status = {"plus_se": ["FINISHED"] * 6 + ["FAILED", "KILLED"]}
    row = compare_arms(_runs(arms, status), n_boot=500).set_index("variant").loc["plus_se"]
    assert (row["n_ok"], row["n_failed"], row["n_used"], row["n_pairs"]) == (6, 2, 6, 6)
    assert row["mean"] == pytest.approx(np.mean(arms["plus_se"][:6]))
    assert "2 run(s) excluded" in row["note"] and "FAILED: 1" in row["note"] and "seeds 6, 7" in row["note"]
    assert "unpaired on val_miou: seeds 6, 7" in row["note"]


def test_non_finite_metric_of_finished_run_is_excluded_and_noted():
    arms = _ablation()
    arms["same"][0] = math.nan
    row = compare_arms(_runs(arms), n_boot=500).set_index("variant").loc["same"]
    assert (row["n_ok"], row["n_failed"], row["n_used"], row["n_pairs"]) == (8, 0, 7, 7)
    assert "non-finite val_miou (seeds 0)" in row["note"]


def test_compare_arms_pairs_by_seed():
    table = _runs(_ablation(n=8))
    table = table[~((table["variant"] == "plus_se") & (table["seed"] == 3))]
    table = table[~((table["variant"] == "baseline") & (table["seed"] == 5))]
    row = compare_arms(table, n_boot=500).set_index("variant").loc["plus_se"]
    assert row["n_pairs"] == 6 and "unpaired on val_miou: seeds 5" in row["note"]


def test_compare_arms_several_metrics_are_prefixed():
    table = _runs(_ablation())
    table["iou_rock"] = table["val_miou"] * 0.9
    out = compare_arms(table, metrics=["val_miou", "iou_rock"], n_boot=200)
    assert {"val_miou.delta", "iou_rock.delta", "iou_rock.verdict", "note"} <= set(out.columns)
    assert out["iou_rock.delta"].iloc[2] == pytest.approx(0.9 * out["val_miou.delta"].iloc[2])


@pytest.mark.parametrize(
    ("edit", "kwargs", "message"),
    [
        (lambda t: t.drop(columns="status"), {}, "lacks column"),
        (lambda t: t, {"baseline": "base"}, "Baseline 'base' not in column"),
        (lambda t: pd.concat([t, t.iloc[:1]]), {}, "repeated arm/seed"),
        (lambda t: t.assign(val_miou="high"), {}, "must be numeric"),
        (lambda t: t.assign(seed=None), {}, "must not have missing values"),
        (lambda t: t, {"metrics": []}, "distinct column names"),
        (lambda t: t, {"alpha": 0.0}, "alpha"),
    ],
)
def test_compare_arms_rejects_bad_tables(edit, kwargs, message):
    with pytest.raises(ValueError, match=message):
        compare_arms(edit(_runs(_ablation())), **kwargs)


def test_compare_arms_rejects_non_dataframe():
    with pytest.raises(TypeError, match="pandas DataFrame"):
        compare_arms([{"variant": "baseline"}])


def test_compare_arms_column_order():
    out = compare_arms(_runs(_ablation(n=4)))
    assert list(out.columns) == [
        "variant",
        "n_ok",
        "n_failed",
        "n_used",
        "mean",
        "std",
        "ci_low",
        "ci_high",
        "n_pairs",
        "delta",
        "delta_ci_low",
        "delta_ci_high",
        "ci_method",
        "p",
        "test",
        "prob_better",
        "p_perm",
        "p_adj",
        "p_perm_adj",
        "verdict",
        "note",
    ]


def test_three_consistent_seeds_give_a_verdict_the_permutation_test_could_not():
    base = [0.70, 0.71, 0.72]
    arms = {"baseline": base, "no_skip": np.add(base, [-0.04, -0.05, -0.045]).tolist()}
    row = compare_arms(_runs(arms)).set_index("variant").loc["no_skip"]
    assert row["p"] < 0.05 and row["verdict"] == "worse" and row["p_perm"] == 0.25


def test_compare_arms_monte_carlo_p_perm_above_exact_limit():
    row = compare_arms(_runs(_ablation(n=EXACT_MAX_N + 2)), n_boot=999).set_index("variant").loc["plus_se"]
    assert row["p_perm"] == pytest.approx(1 / 1000)  # every random flip falls short of all-plus


# --- planning helpers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "test", "expected"),
    [
        (0, "paired-t", 1.0),
        (1, "paired-t", 1.0),
        (2, "paired-t", 0.0),
        (30, "paired-t", 0.0),
        (0, "permutation", 1.0),
        (1, "permutation", 1.0),
        (3, "permutation", 0.25),
        (5, "permutation", 0.0625),
        (8, "permutation", 2 / 256),
    ],
)
def test_min_p(n, test, expected):
    assert min_p(n, test) == expected


@pytest.mark.parametrize("n", [1, 3, 6])
def test_min_p_is_reached_by_the_permutation_test(n):
    assert permutation_test(np.full(n, 0.01)) == pytest.approx(min_p(n, "permutation"))


def test_min_adjusted_p():
    assert min_adjusted_p(5, 4, "permutation", "holm") == 0.25
    assert min_adjusted_p(5, 4, "permutation", "bonferroni") == 0.25
    assert min_adjusted_p(5, 4, "permutation", "none") == 0.0625
    assert min_adjusted_p(3, 20, "permutation", "holm") == 1.0  # capped
    assert min_adjusted_p(3, 20, "paired-t", "holm") == 0.0
    assert min_adjusted_p(1, 2, "paired-t", "holm") == 1.0


@pytest.mark.parametrize("m", range(1, 11))
@pytest.mark.parametrize("correction", ["holm", "bonferroni", "none"])
def test_seeds_needed_permutation_is_the_smallest_n(m, correction):
    n = seeds_needed_permutation(m, 0.05, correction)
    assert min_adjusted_p(n, m, "permutation", correction) < 0.05
    assert min_adjusted_p(n - 1, m, "permutation", correction) >= 0.05
    k = 1 if correction == "none" else m
    assert 2 * k / 2**n < 0.05 <= 2 * k / 2 ** (n - 1)


def test_seeds_needed_permutation_known_answers():
    assert (seeds_needed_permutation(1), seeds_needed_permutation(4), seeds_needed_permutation(8)) == (6, 8, 9)
    assert seeds_needed_permutation(4, alpha=0.01) == 10  # 8 / 1024 < 0.01 <= 8 / 512


def test_power_paired_t_known_answers():
    assert power_paired_t(5, 2.0, 1.0) == pytest.approx(0.90888, abs=1e-4)
    assert power_paired_t(5, -2.0, 1.0) == pytest.approx(power_paired_t(5, 2.0, 1.0))
    assert power_paired_t(7, 0.0, 1.0, alpha=0.05) == pytest.approx(0.05)  # no effect: the level
    assert power_paired_t(1, 5.0, 1.0) == 0.0
    assert power_paired_t(5, 0.02, 0.01) == pytest.approx(power_paired_t(5, 2.0, 1.0))  # scale-free
    powers = [power_paired_t(n, 1.0, 1.0) for n in range(2, 20)]
    assert all(a < b for a, b in zip(powers, powers[1:], strict=False))


def test_seeds_for_power():
    n = seeds_for_power(0.01, 0.01)
    assert n is not None and power_paired_t(n, 0.01, 0.01) >= 0.8 > power_paired_t(n - 1, 0.01, 0.01)
    assert n == 10  # the textbook answer for a one-sample t-test at d = 1, 80% power
    assert seeds_for_power(2.0, 1.0) == 5 and seeds_for_power(2.0, 1.0, power=0.95) == 6
    assert seeds_for_power(0.0, 1.0) is None and seeds_for_power(0.1, 1.0, n_max=20) is None


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: min_p(-1, "paired-t"), "n must be an integer >= 0"),
        (lambda: min_p(3, "permutaton"), "Unknown test 'permutaton'.*Did you mean 'permutation'"),
        (lambda: min_adjusted_p(3, 0, "paired-t", "holm"), "m must be an integer >= 1"),
        (lambda: min_adjusted_p(3, 2, "paired-t", "sidak"), "Unknown correction 'sidak'"),
        (lambda: seeds_needed_permutation(2, alpha=0.0), "alpha must be in"),
        (lambda: power_paired_t(5, 0.1, 0.0), "sd must be a positive"),
        (lambda: power_paired_t(5, math.nan, 1.0), "effect must be a finite"),
        (lambda: seeds_for_power(0.1, 1.0, power=1.0), "power must be in"),
        (lambda: seeds_for_power(0.1, 1.0, n_max=1), "n_max must be an integer >= 2"),
        (lambda: pooled_seed_sd({"a": [0.7], "b": []}), "at least 2 values"),
        (lambda: pooled_seed_sd({"a": [0.7, math.nan]}), "values of arm 'a' must be finite"),
    ],
)
def test_planning_helpers_reject_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_pooled_seed_sd():
    arms = {"baseline": [0.70, 0.72, 0.74], "se": [0.80, 0.84], "one_seed": [0.9]}
    # (n - 1) * var per arm: 2 * 0.0004 + 1 * 0.0008 over 2 + 1 df; one_seed adds nothing
    assert pooled_seed_sd(arms) == pytest.approx(math.sqrt((2 * 0.0004 + 0.0008) / 3))
    x = np.random.default_rng(0).normal(size=(4, 6))
    equal = {str(i): row.tolist() for i, row in enumerate(x)}
    assert pooled_seed_sd(equal) == pytest.approx(math.sqrt(np.mean(x.var(axis=1, ddof=1))))


def test_docstring_examples_run():
    result = doctest.testmod(ablate.stats)
    assert result.failed == 0 and result.attempted >= 20


def test_thresholds_are_consistent():
    assert 2 <= EXACT_MAX_N <= 16
