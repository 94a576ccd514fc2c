"""Known answers and error rates for ablate.sequential: seeds until decided."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from scipy import special

from ablate.sequential import Decision, SequentialDesign, decide, efficacy_thresholds, next_seed_count

DESIGN = SequentialDesign(min_seeds=3, max_seeds=10)
OFF = SequentialDesign(min_seeds=3, max_seeds=10, futility=0.0, min_effect=0.0)  # no futility stops


def _benchmark() -> ModuleType:
    """benchmarks/sequential.py, for its simulated ablations (the same mix as the benchmark)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "sequential.py"
    spec = importlib.util.spec_from_file_location("benchmark_sequential", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _names(rows: np.ndarray) -> dict[str, np.ndarray]:
    return {f"v{j}": row for j, row in enumerate(rows)}


# --- validation --------------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "match"), [
    ({"min_seeds": 1, "max_seeds": 10}, r"'min_seeds' must be at least 2 .*received 1"),
    ({"min_seeds": 5, "max_seeds": 4}, r"'max_seeds' must be between min_seeds \(5\) and 100, received 4"),
    ({"min_seeds": 3, "max_seeds": 101}, r"'max_seeds' must be between .* received 101"),
    ({"min_seeds": 3.0, "max_seeds": 10}, r"'min_seeds' must be an integer, received 3.0"),
    ({"min_seeds": True, "max_seeds": 10}, r"'min_seeds' must be an integer, received True"),
    ({"min_seeds": 3, "max_seeds": 10, "step": 0}, r"'step' must be at least 1, received 0"),
    ({"min_seeds": 3, "max_seeds": 10, "alpha": 0.0}, r"'alpha' must be a number in \(0, 0.5\), received 0.0"),
    ({"min_seeds": 3, "max_seeds": 10, "alpha": 0.5}, r"'alpha' must be a number in \(0, 0.5\), received 0.5"),
    ({"min_seeds": 3, "max_seeds": 10, "futility": 1.0}, r"'futility' must be a number in \[0, 1\), received 1.0"),
    ({"min_seeds": 3, "max_seeds": 10, "min_effect": -0.01}, r"'min_effect' must be a finite number >= 0"),
    ({"min_seeds": 3, "max_seeds": 10, "min_effect": math.nan}, r"'min_effect' must be a finite number >= 0"),
])
def test_invalid_design_names_the_field(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SequentialDesign(**kwargs)


@pytest.mark.parametrize(("deltas", "match"), [
    ({"a": [0.1, math.nan, 0.2]}, r"deltas of 'a' must be a flat sequence of finite numbers"),
    ({"a": [[0.1, 0.2]]}, r"deltas of 'a' must be a flat sequence"),
    ({"a": ["x", "y"]}, r"deltas of 'a' must be a sequence of numbers"),
    ([0.1, 0.2], r"'deltas' must map variant names to per-seed differences, received list"),
])
def test_invalid_deltas_name_the_variant(deltas: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        decide(DESIGN, deltas)  # type: ignore[arg-type]


def test_invalid_level_and_status_are_named() -> None:
    with pytest.raises(ValueError, match=r"efficacy_thresholds: 'level' must be a number in \(0, 1\), received 0"):
        efficacy_thresholds(DESIGN, 0)
    with pytest.raises(ValueError, match=r"'status' must be one of continue, better, worse, no evidence, "
                                         r"received 'won'"):
        Decision("won", 3, "", 0.0, 0.0)


@pytest.mark.parametrize(("args", "looks"), [
    ((3, 10, 1), [3, 4, 5, 6, 7, 8, 9, 10]),
    ((3, 10, 2), [3, 5, 7, 9, 10]),
    ((3, 10, 3), [3, 6, 9, 10]),
    ((2, 4, 5), [2, 4]),
    ((10, 10, 1), [10]),
])
def test_looks_end_at_max_seeds(args: tuple[int, int, int], looks: list[int]) -> None:
    assert SequentialDesign(*args).looks() == looks


# --- boundaries ----------------------------------------------------------------------------------

def test_thresholds_grow_over_looks_and_with_the_level() -> None:
    low, high = efficacy_thresholds(DESIGN, 0.0125), efficacy_thresholds(DESIGN, 0.05)
    assert all(a < b for a, b in zip(low, low[1:], strict=False))
    assert all(a < b for a, b in zip(low, high, strict=True))
    assert 0.0125 * 0.5 < low[-1] < 0.0125  # the last look pays a little for the earlier ones


def test_thresholds_spend_exactly_the_level_on_t_statistics() -> None:
    """Fresh pseudo-random null paths cross some look with probability ``level`` (not more)."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((400_000, 10))
    looks = DESIGN.looks()
    thresholds = efficacy_thresholds(DESIGN, 0.05)
    crossed = np.zeros(len(x), bool)
    for n, threshold in zip(looks, thresholds, strict=True):
        y = x[:, :n]
        t = y.mean(1) / (y.std(1, ddof=1) / math.sqrt(n))
        crossed |= 2.0 * special.stdtr(n - 1, -np.abs(t)) <= threshold
    assert crossed.mean() == pytest.approx(0.05, abs=0.0015)  # simulation sd 0.00034


# --- known answers -------------------------------------------------------------------------------

def test_a_large_consistent_effect_stops_early() -> None:
    rng = np.random.default_rng(0)
    up, down = 0.03 + rng.normal(0, 0.003, 10), -0.03 + rng.normal(0, 0.003, 10)
    got = decide(DESIGN, {"up": up, "down": down})
    assert (got["up"].status, got["down"].status) == ("better", "worse")
    assert got["up"].n < 10 and got["down"].n < 10
    assert got["up"].reason.startswith(f"crossed the efficacy boundary at {got['up'].n} seeds (p=")
    assert got["up"].p <= got["up"].threshold
    flipped = decide(DESIGN, {"up": up, "down": down}, higher_is_better=False)
    assert (flipped["up"].status, flipped["down"].status) == ("worse", "better")


def test_noise_only_gives_no_evidence() -> None:
    rng = np.random.default_rng(1)
    got = decide(DESIGN, _names(rng.normal(0, 0.015, (4, 10))))
    assert {d.status for d in got.values()} == {"no evidence"}
    assert all(d.reason.startswith(("futile at", "max seeds reached")) for d in got.values())
    assert decide(DESIGN, {"same": [0.0, 0.0, 0.0]})["same"].reason.startswith("futile at 3 seeds")


def test_an_effect_surely_below_min_effect_stops() -> None:
    got = decide(DESIGN, {"a": [0.0035, 0.004, 0.0045]})["a"]
    assert (got.status, got.n) == ("no evidence", 3)
    assert got.reason == "futile at 3 seeds (90% CI [0.00316, 0.00484] within +/-0.01)"
    assert decide(SequentialDesign(3, 10, min_effect=0.0), {"a": [0.0035, 0.004, 0.0045]})["a"].status == "continue"


def test_too_few_seeds_continue() -> None:
    got = decide(DESIGN, {"a": [0.01, 0.02]})
    assert got["a"] == Decision("continue", 0, "waiting for 3 seeds (has 2)", got["a"].p, got["a"].threshold)
    assert next_seed_count(DESIGN, got) == 3


def test_a_look_waits_for_every_running_variant() -> None:
    a = [0.02, 0.01, 0.03, 0.02, 0.015]
    b = [0.01, 0.03, 0.02, 0.01]
    got = decide(OFF, {"a": a, "b": b})
    assert [got[k].n for k in "ab"] == [4, 4] and {d.status for d in got.values()} == {"continue"}
    assert next_seed_count(OFF, got) == 5


def test_next_seed_count_is_none_when_settled() -> None:
    assert next_seed_count(DESIGN, {"a": Decision("better", 5, "", 1e-4, 1e-3)}) is None
    with pytest.raises(ValueError, match="cannot occur when max_seeds is 10"):
        next_seed_count(DESIGN, {"a": Decision("continue", 10, "", 0.5, 0.01)})


def test_holm_recycles_alpha_from_a_rejected_variant() -> None:
    z = np.random.default_rng(3).standard_normal(10)
    b = 0.9 + (z - z.mean()) / z.std(ddof=1)  # p = 0.019 at 10 seeds
    p = 2.0 * special.stdtr(9, -0.9 * math.sqrt(10))
    assert efficacy_thresholds(OFF, 0.025)[-1] < p < efficacy_thresholds(OFF, 0.05)[-1]
    strong = decide(OFF, {"a": 5.0 + z, "b": b})
    assert strong["a"].status == "better" and strong["b"].status == "better"
    alone = decide(OFF, {"a": z, "b": b})
    assert alone["b"].status == "no evidence" and alone["b"].reason.startswith("max seeds reached")


def test_rounds_replay_to_the_same_decisions() -> None:
    """Feeding seeds round by round (as the orchestrator does) ends where the full data does."""
    effect, deltas = _benchmark().simulate(np.random.default_rng(5), 40, 10)
    for row in deltas:
        full = _names(row)
        given = dict.fromkeys(full, 0)
        while True:
            decisions = decide(DESIGN, {k: v[:given[k]] for k, v in full.items()})
            n = next_seed_count(DESIGN, decisions)
            if n is None:
                break
            given.update({k: n for k, d in decisions.items() if not d.settled})
        assert decisions == decide(DESIGN, full) == decide(DESIGN, full)
        assert all(given[k] == d.n for k, d in decisions.items())


# --- error rates and savings ---------------------------------------------------------------------

@pytest.mark.parametrize("design", [DESIGN, OFF], ids=["with-futility", "without-futility"])
def test_fwer_of_four_null_variants(design: SequentialDesign) -> None:
    _, deltas = _benchmark().simulate(np.random.default_rng(11), 3000, 10, null_only=True)
    claims = [any(d.settled and d.status != "no evidence" for d in decide(design, _names(row)).values())
              for row in deltas]
    assert np.mean(claims) <= 0.05 + 0.01  # simulation sd ~0.004


def test_savings_on_the_benchmark_mix() -> None:
    bench = _benchmark()
    effect, deltas = bench.simulate(np.random.default_rng(12), 6000, 10)
    seq, seeds = bench.sequential_verdicts(DESIGN, deltas)
    fraction = bench.run_fraction(seeds, 10).mean()
    agreement = (seq == bench.fixed_verdicts(deltas, 0.05)).mean()
    assert fraction <= 0.60  # the benchmark measures ~0.593 (sd of this estimate ~0.0016)
    assert agreement >= 0.945  # the benchmark measures ~0.953 (sd of this estimate ~0.0015)
