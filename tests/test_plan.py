"""Planning an ablation before running it: reachable p, refusal, seeds for a stated effect."""

from __future__ import annotations

import math
from pathlib import Path

import mlflow
import pytest
import yaml
from helpers import ROOT, assert_one_error_line, run_cli
from mlflow.tracking import MlflowClient

from ablate.ablation.design import load_ablation
from ablate.ablation.plan import check, detectable_effect, make_plan, store_estimate
from ablate.errors import SpecError
from ablate.stats import power_paired_t

PRESET = str(ROOT / "ablations/presets/unet-baseline.yaml")
SKIPS = {"skip": {k: {"skip": {"type": k}} for k in ("add", "multiply", "attention", "none")}}


def write(tmp_path: Path, **extra) -> Path:
    body = {"name": "plan_t", "base": PRESET, "seeds": 3, "factors": SKIPS, **extra}
    path = tmp_path / "ab.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def test_paired_t_plan_has_no_floor_and_names_runs(tmp_path):
    plan = make_plan(load_ablation(write(tmp_path)))
    assert plan.reachable and plan.min_p_adj == 0.0
    assert (plan.runs_min, plan.runs_max) == (15, 15)
    # the permutation robustness column cannot go below 4 * 2/2^3 = 1 with 3 seeds and 4 variants
    assert plan.min_p_adj_perm == pytest.approx(1.0)
    text = plan.text()
    assert "5 arms" in text and "15 runs" in text and "no floor" in text


def test_permutation_design_that_cannot_reach_alpha_is_refused_with_seeds_needed(tmp_path):
    ab = load_ablation(write(tmp_path, test="permutation"))
    plan = make_plan(ab)
    assert not plan.reachable
    # Holm over 4: 4 * 2 / 2^n < 0.05  <=>  2^n > 160  <=>  n >= 8
    assert plan.seeds_needed == 8
    with pytest.raises(SpecError, match=r"3 seed\(s\) can never reach p < 0.05.*use 8 seeds or more.*--screening"):
        check(plan, screening=False)
    check(plan, screening=True)  # screening runs anyway
    assert make_plan(load_ablation(write(tmp_path, test="permutation"), seeds=8)).reachable


def test_detectable_effect_inverts_power():
    d = detectable_effect(5, 0.05)
    assert power_paired_t(5, d, 1.0, 0.05) == pytest.approx(0.8, abs=1e-3)
    assert detectable_effect(3, 0.05) > d > detectable_effect(12, 0.05)
    assert math.isinf(detectable_effect(1, 0.05))


def test_sequential_plan_spans_min_to_max_runs(tmp_path):
    ab = load_ablation(write(tmp_path, seeds={"min": 3, "max": 8}))
    plan = make_plan(ab)
    assert ab.sequential is not None and ab.seeds == list(range(8))
    assert plan.runs_min == 5 * 3 and plan.runs_max == 5 * 8
    assert "sequential" in plan.text()


def test_cli_until_decided_and_fixed_seeds_conflict(tmp_path):
    with pytest.raises(SpecError, match="either --seeds"):
        load_ablation(write(tmp_path), seeds=4, until_decided=True)
    ab = load_ablation(write(tmp_path), until_decided=True, max_seeds=6)
    assert ab.sequential.min_seeds == 3 and ab.sequential.max_seeds == 6


def test_store_estimate_sizes_seeds_for_min_effect(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    ab = load_ablation(write(tmp_path, min_effect=0.01))
    assert store_estimate(ab) is None  # empty store
    client = MlflowClient()
    exp = client.create_experiment("earlier")
    values = [0.60, 0.62, 0.61, 0.63, 0.59]
    for seed, v in enumerate(values):
        run = client.create_run(exp, tags={"arm_hash": ab.baseline.spec.spec_hash, "seed": str(seed)})
        client.log_metric(run.info.run_id, "best_val_miou", v)
        client.set_terminated(run.info.run_id, "FINISHED")
    est = store_estimate(ab)
    assert est.n_runs == 5
    assert est.seed_sd == pytest.approx(0.0158114, rel=1e-4)  # np.std(values, ddof=1)
    plan = make_plan(ab, est)
    n = plan.seeds_for_effect
    # the smallest n whose paired t at alpha/4 reaches 80% power for 0.01 with sd sqrt(2) * 0.0158
    assert power_paired_t(n, 0.01, est.diff_sd, 0.05 / 4) >= 0.8 > power_paired_t(n - 1, 0.01, est.diff_sd, 0.05 / 4)
    assert f"{n} seeds per arm" in plan.text()


def test_cli_plan_refuses_and_run_refuses_before_touching_the_store(tmp_path):
    path = write(tmp_path, test="permutation")
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    done = run_cli(["ablation", "plan", str(path), "--no-store"], env=env)
    assert done.returncode == 1 and "REFUSED" in done.stdout
    done = run_cli(["ablation", "run", str(path), "--storage", f"sqlite:///{tmp_path}/optuna.db"], env=env)
    assert done.returncode != 0
    assert_one_error_line(done.stderr, r"can never reach p < 0.05.*use 8 seeds")
    assert not (tmp_path / "optuna.db").exists()
