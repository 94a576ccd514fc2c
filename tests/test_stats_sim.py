"""Simulation checks of ablate.stats at ablation seed counts (vectorised, fixed RNG seeds).

Each check draws ``REPS`` replicate ablations at once and runs them through the internals
that ``summarize_arm``, ``paired_difference`` and ``compare_arms`` call (``_t_batch``,
``_adjust_batch``, ``_verdict_codes``); ``test_batch_internals_match_compare_arms`` ties
those internals to the public functions, so a regression in either shows up here.

Seed model: ``metric = arm mean + seed effect (shared by all arms on a seed) + run noise``;
the seed effect cancels in the paired differences, the run noise does not.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from ablate.stats import (
    _adjust_batch,
    _t_batch,
    _verdict_codes,
    compare_arms,
    paired_difference,
    power_paired_t,
    summarize_arm,
)

REPS = 20_000  # binomial SE of a 95% coverage estimate: 0.0015
ALPHA = 0.05
Noise = Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]
NOISES: dict[str, Noise] = {
    "normal": lambda rng, size: rng.standard_normal(size),
    "t3": lambda rng, size: rng.standard_t(3, size),  # heavy tails: an occasional wild seed
}
COVERAGE_CASES = [(n, noise) for noise in NOISES for n in (2, 3, 5, 8, 12, 30)]


def _arm_coverage(n: int, noise: str, seed: int) -> float:
    """Share of 95% arm CIs that contain the arm's true mean 0.70."""
    rng = np.random.default_rng(seed)
    draw = NOISES[noise]
    values = 0.70 + 0.02 * draw(rng, (REPS, n))
    ci = _t_batch(values, 0.95)
    return float(np.mean((ci.low <= 0.70) & (0.70 <= ci.high)))


def _delta_coverage(n: int, noise: str, seed: int) -> float:
    """Share of 95% delta CIs that contain the true paired effect 0.02."""
    rng = np.random.default_rng(seed)
    draw = NOISES[noise]
    shared = 0.02 * draw(rng, (REPS, n))
    baseline = 0.70 + shared + 0.01 * draw(rng, (REPS, n))
    variant = 0.72 + shared + 0.01 * draw(rng, (REPS, n))
    ci = _t_batch(variant - baseline, 0.95)
    return float(np.mean((ci.low <= 0.02) & (0.02 <= ci.high)))


def _verdicts(deltas: np.ndarray) -> np.ndarray:
    """compare_arms's rule on (replicates, arms, seeds) deltas: paired t, Holm, verdict."""
    t = _t_batch(deltas, 1.0 - ALPHA)
    return _verdict_codes(t.low, t.high, _adjust_batch(t.p, "holm"), ALPHA, True)


def _null_family(n: int, noise: str, seed: int, arms: int = 4) -> np.ndarray:
    """Deltas of ``arms`` null variants against one shared baseline: (REPS, arms, n)."""
    rng = np.random.default_rng(seed)
    draw = NOISES[noise]
    shared = draw(rng, (REPS, 1, n))
    baseline = shared + draw(rng, (REPS, 1, n))
    return shared + draw(rng, (REPS, arms, n)) - baseline


@pytest.mark.parametrize(("n", "noise"), COVERAGE_CASES)
def test_arm_ci_coverage_is_near_nominal(n, noise):
    assert 0.93 <= _arm_coverage(n, noise, seed=n) <= 0.97


@pytest.mark.parametrize(("n", "noise"), COVERAGE_CASES)
def test_delta_ci_coverage_is_near_nominal(n, noise):
    assert 0.93 <= _delta_coverage(n, noise, seed=1000 + n) <= 0.97


@pytest.mark.parametrize(("n", "noise"), [(3, "normal"), (5, "normal"), (8, "normal"), (5, "t3")])
def test_family_wise_false_positives_are_controlled(n, noise):
    fwer = float(np.mean(np.any(_verdicts(_null_family(n, noise, seed=2000 + n)) != 0, axis=1)))
    assert fwer <= 0.06
    assert fwer >= 0.02  # the rule can still fire: a test that never rejects would pass above


def test_power_at_five_seeds_for_a_two_sd_effect():
    rng = np.random.default_rng(3000)
    deltas = 2.0 + rng.standard_normal((REPS, 1, 5))  # effect = 2 sd of the paired differences
    power = float(np.mean(_verdicts(deltas)[:, 0] == 1))
    assert power >= 0.8
    assert power == pytest.approx(power_paired_t(5, 2.0, 1.0), abs=0.015)


@pytest.mark.parametrize(("n", "effect"), [(3, 1.5), (8, 1.0), (12, 0.5)])
def test_power_paired_t_matches_simulation(n, effect):
    rng = np.random.default_rng(4000 + n)
    deltas = effect + rng.standard_normal((REPS, 1, n))
    power = float(np.mean(_t_batch(deltas, 0.95).p < ALPHA))
    assert power == pytest.approx(power_paired_t(n, effect, 1.0), abs=0.015)


def test_primary_test_reaches_005_with_three_consistent_seeds():
    baseline = np.array([0.70, 0.71, 0.72])
    r = paired_difference(baseline + [-0.04, -0.05, -0.045], baseline)
    assert r.test == "paired-t" and r.p < 0.05 and r.ci_high < 0
    assert r.p_perm == 0.25  # the permutation floor at 3 seeds: it never could


def _family_table(rng: np.random.Generator, n: int, effects: list[float]) -> pd.DataFrame:
    shared = rng.normal(0.0, 0.02, size=n)
    rows = []
    for arm, effect in zip(["baseline", "a", "b", "c", "d"], [0.0, *effects], strict=True):
        values = 0.70 + effect + shared + rng.normal(0.0, 0.01, size=n)
        rows += [{"variant": arm, "seed": s, "status": "FINISHED", "val_miou": v} for s, v in enumerate(values)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("n", [3, 5])
def test_batch_internals_match_compare_arms(n):
    rng = np.random.default_rng(5000 + n)
    codes = {"better": 1, "worse": -1, "no evidence": 0}
    for _ in range(25):
        table = _family_table(rng, n, effects=[0.0, 0.01, -0.01, 0.02])
        out = compare_arms(table).iloc[1:]
        wide = table.pivot(index="seed", columns="variant", values="val_miou")
        deltas = np.stack([wide[a] - wide["baseline"] for a in out["variant"]])[None]
        t = _t_batch(deltas, 0.95)
        np.testing.assert_allclose(out["p"], t.p[0], rtol=1e-12)
        np.testing.assert_allclose(out["p_adj"], _adjust_batch(t.p, "holm")[0], rtol=1e-12)
        np.testing.assert_allclose(out["delta_ci_low"], t.low[0], rtol=1e-12)
        np.testing.assert_allclose(out["prob_better"], t.prob_positive()[0], rtol=1e-12)
        np.testing.assert_array_equal(out["verdict"].map(codes), _verdicts(deltas)[0])
        arms = _t_batch(wide[out["variant"]].to_numpy().T, 0.95)
        np.testing.assert_allclose(out["ci_low"], arms.low, rtol=1e-12)
        np.testing.assert_allclose(out["ci_high"], arms.high, rtol=1e-12)
        arm = summarize_arm(wide["a"])
        assert (arm.ci_low, arm.ci_high) == pytest.approx((arms.low[0], arms.high[0]), rel=1e-12)
