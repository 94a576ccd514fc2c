"""Known-answer tests for core.stats: paired-seed ablation statistics."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from core.stats import (
    EXACT_MAX_N,
    SMALL_N,
    bootstrap_ci,
    compare_arms,
    holm,
    paired_difference,
    paired_test,
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


def test_small_n_t_interval_covers_about_95_percent():
    rng = np.random.default_rng(7)
    hits = 0
    for _ in range(400):
        base = rng.normal(0.7, 0.02, size=3)
        r = paired_difference(base + rng.normal(0.01, 0.01, size=3), base, n_boot=10)
        hits += r.ci_low <= 0.01 <= r.ci_high
    assert r.ci_method == "t"
    assert 0.91 <= hits / 400 <= 0.98


def test_summarize_arm():
    s = summarize_arm([0.70, 0.72, 0.74])
    assert (s.n, round(s.mean, 6), round(s.std, 6)) == (3, 0.72, 0.02)
    assert s.ci_low <= s.mean <= s.ci_high
    one = summarize_arm([0.7])
    assert one.n == 1 and math.isnan(one.std) and (one.ci_low, one.ci_high) == (0.7, 0.7)


# --- paired_test -------------------------------------------------------------------------------


def test_permutation_p_matches_hand_count():
    # +-1 +-2 +-3 over 8 sign assignments: only (+,+,+) and (-,-,-) reach |sum| >= 6.
    assert paired_test([1.0, 2.0, 3.0]) == (0.25, "permutation")


@pytest.mark.parametrize("n", [1, 2, 5, 8, EXACT_MAX_N])
def test_permutation_p_matches_brute_force_enumeration(n):
    d = np.random.default_rng(n).normal(0.01, 0.02, size=n)
    p, test = paired_test(d)
    assert test == "permutation"
    assert p == pytest.approx(_brute_force_p(d))


def test_permutation_minimum_p_is_two_over_two_to_the_n():
    assert paired_test([0.05] * 5)[0] == pytest.approx(2 / 32)
    assert paired_test([0.05, 0.04, 0.06, 0.05, 0.05, 0.03, 0.07, 0.05])[0] == pytest.approx(2 / 256)


def test_wilcoxon_above_exact_limit():
    d = np.random.default_rng(0).normal(0.02, 0.02, size=EXACT_MAX_N + 8)
    p, test = paired_test(d)
    assert test == "wilcoxon"
    assert p == pytest.approx(sps.wilcoxon(d).pvalue)


@pytest.mark.parametrize("n", [3, 30])
def test_all_zero_deltas_give_p_one(n):
    assert paired_test(np.zeros(n))[0] == 1.0


def test_paired_test_rejects_empty():
    with pytest.raises(ValueError, match="at least one paired difference"):
        paired_test([])


# --- paired_difference ---------------------------------------------------------------------------


def test_identical_arms_give_zero_delta_and_no_evidence():
    x = np.random.default_rng(1).normal(0.7, 0.02, size=8)
    r = paired_difference(x, x)
    assert (r.delta, r.ci_low, r.ci_high, r.p, r.prob_better) == (0.0, 0.0, 0.0, 1.0, 0.5)
    assert verdict((r.ci_low, r.ci_high), r.p) == "no evidence"


def test_planted_shift_is_detected():
    rng = np.random.default_rng(5)
    base = rng.normal(0.70, 0.02, size=8)
    r = paired_difference(base + 0.05 + rng.normal(0, 0.005, size=8), base)
    assert r.ci_method == "bootstrap" and r.test == "permutation"
    assert r.ci_low > 0 and r.p == pytest.approx(2 / 256) and r.prob_better > 0.99
    assert verdict((r.ci_low, r.ci_high), r.p) == "better"
    lower = paired_difference(base + 0.05, base, higher_is_better=False)
    assert lower.prob_better < 0.01


def test_pairing_by_seed_drops_unmatched_seeds():
    r = paired_difference([0.80, 0.81, 0.82, 0.83], [0.71, 0.72, 0.73, 0.74], [0, 1, 2, 3], [4, 3, 2, 1])
    # pairs: seed 1 -> 0.81-0.74, seed 2 -> 0.82-0.73, seed 3 -> 0.83-0.72
    assert r.n == 3 and r.n_dropped == 2 and r.dropped_seeds == (0, 4)
    assert r.delta == pytest.approx(np.mean([0.07, 0.09, 0.11]))
    assert r.ci_method == "t"


def test_no_pairs_and_one_pair():
    none = paired_difference([0.8], [0.7], [0], [1])
    assert none.n == 0 and none.test == "none" and math.isnan(none.delta) and none.n_dropped == 2
    one = paired_difference([0.8], [0.7])
    assert one.n == 1 and one.ci_method == "none" and math.isnan(one.ci_low) and one.p == 1.0


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
    assert out.loc["no_skip", "verdict"] == "worse" and out.loc["no_skip", "prob_better"] < 0.01
    assert out["p_adj"].iloc[1:].tolist() == pytest.approx(holm(out["p"].iloc[1:].tolist()))
    assert (out["n_ok"] == 8).all() and (out["n_failed"] == 0).all() and (out["note"] == "").all()


def test_compare_arms_is_deterministic_and_arms_do_not_disturb_each_other():
    arms = _ablation()
    full = compare_arms(_runs(arms), n_boot=500)
    pd.testing.assert_frame_equal(full, compare_arms(_runs(arms), n_boot=500))
    del arms["same"]
    fewer = compare_arms(_runs(arms), n_boot=500).set_index("variant")
    cols = ["mean", "ci_low", "ci_high", "delta", "delta_ci_low", "delta_ci_high", "p", "prob_better"]
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


def test_thresholds_are_consistent():
    assert 2 <= SMALL_N <= EXACT_MAX_N
