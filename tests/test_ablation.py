"""Ablation designs, the resumable queue and the report rebuilt from MLflow alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from helpers import ROOT, TINY_MODEL, real_data_path, requires_real_data
from mlflow.tracking import MlflowClient

from ablate.ablation.design import load_ablation
from ablate.errors import SpecError

PRESET = str(ROOT / "ablations/presets/unet-baseline.yaml")
TINY = [*TINY_MODEL, "tracking.mask_every=0", "train.batch_size=16"]


def write(tmp_path: Path, body: dict, name: str = "ab.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def ablation(factors: dict, design: str = "one-at-a-time", **extra) -> dict:
    return {"name": "t", "base": PRESET, "design": design, "seeds": 2, "factors": factors, **extra}


SKIPS = {"skip": {"add": {"skip": {"type": "add"}}, "multiply": {"skip": {"type": "multiply"}}}}
DEPTH = {"depth": {"d2": {"depth": 2}, "d4": {"depth": 4}}}


def test_one_at_a_time_expands_baseline_plus_each_variant(tmp_path):
    ab = load_ablation(write(tmp_path, ablation({**SKIPS, **DEPTH})))
    assert [a.key for a in ab.arms] == ["baseline", "skip=add", "skip=multiply", "depth=d2", "depth=d4"]
    assert ab.seeds == [0, 1]
    assert ab.arm("skip=add").spec.model["skip"] == {"type": "add"}
    assert ab.arm("skip=add").spec.model["depth"] == 3  # everything else stays the base
    assert ab.arm("depth=d4").spec.model["skip"] == {"type": "concat"}


def test_factorial_expands_every_combination(tmp_path):
    ab = load_ablation(write(tmp_path, ablation({**SKIPS, **DEPTH}, design="factorial")))
    assert len(ab.arms) == 3 * 3  # (baseline + 2 skips) x (baseline + 2 depths)
    arm = ab.arm("skip=multiply,depth=d4")
    assert arm.spec.model["skip"]["type"] == "multiply" and arm.spec.model["depth"] == 4


def test_leave_one_out_labels_removed_components(tmp_path):
    factors = {"l2": {"remove": {"regularizer": {"type": "none"}}},
               "flips": {"remove": {"augment": []}}}
    base = {"base": PRESET, "model": {"regularizer": {"type": "l2", "strength": 1e-4}}}
    ab = load_ablation(write(tmp_path, ablation(factors, design="leave-one-out", base=base)))
    assert [a.variant for a in ab.arms[1:]] == ["without l2", "without flips"]
    assert ab.arm("flips=remove").spec.augment == []


def test_seeds_list_and_cli_override(tmp_path):
    path = write(tmp_path, ablation(SKIPS, seeds=[3, 7]))
    assert load_ablation(path).seeds == [3, 7]
    assert load_ablation(path, seeds=4).seeds == [0, 1, 2, 3]


def test_budget_and_overrides_reach_every_arm(tmp_path):
    path = write(tmp_path, ablation(SKIPS, budget={"epochs": 2, "data_limit": 50}))
    ab = load_ablation(path, overrides=["train.batch_size=8"])
    for arm in ab.arms:
        assert (arm.spec.train.epochs, arm.spec.data.limit, arm.spec.train.batch_size) == (2, 50, 8)


def test_delta_that_changes_nothing_is_an_error(tmp_path):
    path = write(tmp_path, ablation({"skip": {"concat": {"skip": {"type": "concat"}}}}))
    with pytest.raises(SpecError, match="changes nothing"):
        load_ablation(path)


def test_unknown_block_in_a_delta_is_an_error_naming_it(tmp_path):
    path = write(tmp_path, ablation({"skip": {"typo": {"skip": {"type": "concatt"}}}}))
    with pytest.raises(SpecError, match=r"skip=typo.*Unknown skip 'concatt'.*Did you mean 'concat'"):
        load_ablation(path)


def test_unknown_key_in_ablation_file_is_an_error(tmp_path):
    path = write(tmp_path, {**ablation(SKIPS), "sedes": 3})
    with pytest.raises(SpecError, match="sedes"):
        load_ablation(path)


@pytest.mark.parametrize("path", sorted((ROOT / "ablations").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_ablation_expands(path):
    ab = load_ablation(path)
    assert ab.arms[0].is_baseline and len(ab.arms) >= 2
    assert len({a.spec.spec_hash for a in ab.arms}) == len(ab.arms)


# --- the queue (no training) ----------------------------------------------------------------

def test_pairs_are_queued_once_named_for_the_dashboard_and_counted(tmp_path):
    from ablate.ablation.runner import all_pairs, counts, describe, enqueue_missing, pairs_round

    ab = load_ablation(write(tmp_path, ablation({"skip": {"add": {"skip": {"type": "add"}}}})))
    study = optuna.create_study(direction="maximize")
    first = [(arm, 0) for arm in ab.arms]
    assert enqueue_missing(study, ab, first) == 2
    assert enqueue_missing(study, ab) == 2  # the queue grows: seed 1 of both arms
    labels = [t.user_attrs["label"] for t in study.get_trials()]
    assert labels == ["arm baseline, seed 0", "arm skip=add, seed 0", "arm baseline, seed 1", "arm skip=add, seed 1"]
    trial = study.ask()
    study.tell(trial, 0.5)
    assert describe(study.trials[0]) == "baseline seed 0: complete val mIoU 0.5000"
    assert (counts(study, ab).complete, counts(study, ab).waiting, counts(study, ab).total) == (1, 3, 4)
    assert pairs_round(ab, first).counts(study).total == 2 and len(all_pairs(ab)) == 4


# --- running ---------------------------------------------------------------------------------


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "ABLATE_HEARTBEAT_S": "1", "ABLATE_GRACE_S": "4",
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}


def _cmd(path: Path, tmp_path: Path, *extra: str) -> list[str]:
    data = real_data_path()
    return [sys.executable, "-m", "ablate.cli", "ablation", "run", str(path), *TINY, f"data.path={data}",
            "--storage", f"sqlite:///{tmp_path}/optuna.db", "--report-dir", str(tmp_path / "report"), *extra]


@requires_real_data
def test_end_to_end_report_rebuilt_from_mlflow_equals_first(tmp_path):
    path = write(tmp_path, ablation({"skip": {"add": {"skip": {"type": "add"}}}},
                                    budget={"epochs": 1, "early_stopping": 0, "data_limit": 96}, name="e2e"))
    env = _env(tmp_path)
    done = subprocess.run(_cmd(path, tmp_path), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    first = (tmp_path / "report/report.csv").read_text()

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("e2e")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("ablate.kind") == "ablation"]
    children = [r for r in runs if r.data.tags.get("ablate.kind") == "arm"]
    assert len(parents) == 1 and len(children) == 4  # 2 arms x 2 seeds
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert {(r.data.tags["arm"], r.data.tags["seed"]) for r in children} == {
        ("baseline", "0"), ("baseline", "1"), ("skip=add", "0"), ("skip=add", "1")}
    for r in children:
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert r.info.status == "FINISHED"
        assert {"ablation", "factor", "variant", "seed", "is_baseline"} <= set(r.data.tags)
    names = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {f"report/{f}" for f in ("report.md", "report.csv", "deltas.png", "per_class.png", "masks.png")} <= names
    assert "baseline_val_miou" in client.get_run(parent.info.run_id).data.metrics

    rebuilt = subprocess.run([sys.executable, "-m", "ablate.cli", "ablation", "report", "e2e", "--out",
                              str(tmp_path / "again")], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=300)
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    assert (tmp_path / "again/report.csv").read_text() == first
    assert "skip=add" in rebuilt.stdout


def _trials(tmp_path: Path) -> list[optuna.trial.FrozenTrial]:
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/optuna.db")
    return optuna.load_study(study_name="ablation.resume", storage=storage).get_trials()


@requires_real_data
def test_killed_ablation_resumes_every_arm_exactly_once(tmp_path):
    path = write(tmp_path, ablation({"skip": {"add": {"skip": {"type": "add"}}}},
                                    budget={"epochs": 3, "early_stopping": 0, "data_limit": 96}, name="resume"))
    env = _env(tmp_path)
    proc = subprocess.Popen(_cmd(path, tmp_path), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 600
        while time.time() < deadline:  # kill once one arm finished and the next is running
            time.sleep(1)
            if (tmp_path / "optuna.db").exists():
                try:
                    states = [t.state for t in _trials(tmp_path)]
                except Exception:  # noqa: BLE001 - the study may not exist yet
                    continue
                if states.count(optuna.trial.TrialState.COMPLETE) >= 1 and optuna.trial.TrialState.RUNNING in states:
                    break
        else:
            pytest.fail("the ablation never reached a running second arm")
        time.sleep(3)  # inside the second arm's training
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    done = subprocess.run(_cmd(path, tmp_path), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]

    complete = [t for t in _trials(tmp_path) if t.state == optuna.trial.TrialState.COMPLETE]
    pairs = [(t.user_attrs["arm"], t.user_attrs["seed"]) for t in complete]
    assert sorted(pairs) == sorted([("baseline", 0), ("baseline", 1), ("skip=add", 0), ("skip=add", 1)])
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("resume").experiment_id])
    assert not [r for r in runs if r.info.status == "RUNNING"], "a run was left RUNNING"
    finished = [(r.data.tags["arm"], r.data.tags["seed"]) for r in runs
                if r.data.tags.get("ablate.kind") == "arm" and r.info.status == "FINISHED"]
    assert sorted(finished) == sorted([("baseline", "0"), ("baseline", "1"), ("skip=add", "0"), ("skip=add", "1")])
    assert any(r.info.status == "KILLED" for r in runs), "the killed worker's run should end KILLED"


def test_variant_may_start_from_another_preset_with_the_same_budget(tmp_path):
    other = ROOT / "ablations/presets/seed-baseline.yaml"
    path = write(tmp_path, ablation({"preset": {"seed": {"base": str(other)}}}, budget={"epochs": 2}))
    ab = load_ablation(path)
    arm = ab.arm("preset=seed")
    assert arm.spec.model["bottleneck"]["type"] == "se_da"  # from seed-baseline
    assert arm.spec.train.epochs == 2  # the ablation's budget still applies
    assert arm.spec.name == "t"
