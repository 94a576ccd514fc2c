"""Studies on a real PostgreSQL server: many workers share one budget; a killed worker is recovered.

Each test creates its own databases (one for Optuna, one for MLflow: both keep an
``alembic_version`` table) and drops them at the end. Without a reachable server the tests skip,
saying why; under CI=true they fail instead.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import mlflow
import optuna
import pytest
import yaml
from helpers import ROOT, in_ci
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
PRESET = str(ROOT / "ablations/presets/unet-baseline.yaml")
# Heartbeats every second, stale after 3 s: a killed worker's trial is retried within seconds.
FAST_HEARTBEAT = {"ABLATE_HEARTBEAT_S": "1", "ABLATE_GRACE_S": "3"}


@pytest.fixture(autouse=True)
def _restore_tracking_uri() -> Iterator[None]:
    """Studies point MLflow at their own stores; later tests get the previous URI back."""
    before = mlflow.get_tracking_uri()
    yield
    mlflow.set_tracking_uri(before)


def admin(*statements: str) -> None:
    """Runs statements on the server's maintenance database (a fresh connection each time)."""
    import psycopg2

    conn = psycopg2.connect(dbname="postgres", connect_timeout=3, **PG)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()


@pytest.fixture
def pg_urls() -> Iterator[tuple[str, str]]:
    """(Optuna storage URL, MLflow tracking URI): two fresh databases, dropped afterwards."""
    names = [f"ablate_test_{uuid.uuid4().hex[:10]}_{kind}" for kind in ("optuna", "mlflow")]
    try:
        admin(*(f'CREATE DATABASE "{name}"' for name in names))
    except Exception as e:  # noqa: BLE001 - any driver or network error means "no server"
        reason = f"{type(e).__name__}: {str(e).splitlines()[0]}"
        message = f"PostgreSQL at {PG['host']}:{PG['port']} is not reachable ({reason})"
        if in_ci():
            pytest.fail(f"CI=true but {message}", pytrace=False)
        pytest.skip(message)
    try:
        yield tuple(f"postgresql+psycopg2://{PG['user']}@{PG['host']}:{PG['port']}/{n}" for n in names)
    finally:
        admin(*(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' for name in names))


def create_study(tmp_path: Path, data: Path, storage: str, uri: str, name: str, trials: int) -> optuna.Study:
    """The study and its MLflow parent run, created as `ablate study run --workers 0` does."""
    from ablate import tracking
    from ablate.storage import open_storage
    from ablate.study.files import load_study_file
    from ablate.study.orchestrate import run_study

    body = {"name": name, "base": PRESET, "trials": trials,
            "budget": {"epochs": 1, "early_stopping": 0, "data_limit": 64},
            "sampler": {"type": "random", "seed": 0}, "pruner": {"type": "none"},
            "space": {"model.skip.type": {"type": "categorical", "choices": ["concat", "add", "multiply"]},
                      "optimizer.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body))
    plan = load_study_file(path, [f"data.path={data}", "model.filters=4", "model.depth=2", "augment=[]",
                                  "tracking.mask_every=0", "tracking.log_model=false", "train.batch_size=16"])
    tracking.setup(uri)
    run_study(plan, storage, workers=0, tracking_uri=uri)
    return optuna.load_study(study_name=name, storage=open_storage(storage))


def start_worker(tmp_path: Path, name: str, storage: str, uri: str, tag: str) -> subprocess.Popen[bytes]:
    log = open(tmp_path / f"worker_{tag}.log", "wb")  # noqa: SIM115 - the child keeps it open
    env = {**os.environ, "PYTHONPATH": str(ROOT), **FAST_HEARTBEAT}
    env.pop("ABLATE_WORKER_INDEX", None)
    return subprocess.Popen([sys.executable, "-m", "ablate.cli", "worker", "--study", name, "--storage", storage,
                             "--tracking-uri", uri, "--quiet"], cwd=tmp_path, env=env, stdout=log,
                            stderr=subprocess.STDOUT)


def wait(procs: list[subprocess.Popen[bytes]], tmp_path: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            logs = "\n".join(f.read_text(errors="replace")[-3000:] for f in tmp_path.glob("worker_*.log"))
            pytest.fail(f"workers did not finish in {timeout:.0f} s:\n{logs}")


def child_runs(client: MlflowClient, study: optuna.Study) -> list:
    parent = client.get_run(study.user_attrs["mlflow_parent_run_id"])
    return client.search_runs([parent.info.experiment_id], "tags.`ablate.kind` = 'trial'")


def real_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    from ablate.study.runner import budget_trials

    return budget_trials(study.get_trials())


def test_two_workers_finish_exactly_the_budget(tmp_path, synth_npz, pg_urls):
    storage, uri = pg_urls
    study = create_study(tmp_path, synth_npz, storage, uri, "pg_budget", trials=4)
    workers = [start_worker(tmp_path, "pg_budget", storage, uri, str(i)) for i in range(2)]
    wait(workers, tmp_path)
    assert [w.returncode for w in workers] == [0, 0], (tmp_path / "worker_0.log").read_text()[-2000:]

    trials = real_trials(study)
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    numbers = [t.number for t in study.get_trials()]
    assert len(numbers) == len(set(numbers))
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both workers took trials
    client = MlflowClient()
    runs = child_runs(client, study)
    assert sorted(int(r.data.tags["optuna_trial"]) for r in runs) == sorted(t.number for t in trials)
    assert {t.user_attrs["mlflow_run_id"] for t in trials} == {r.info.run_id for r in runs}
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert client.get_run(study.user_attrs["mlflow_parent_run_id"]).info.status == "FINISHED"


def test_killed_worker_trial_is_failed_retried_and_nothing_stays_running(tmp_path, synth_npz, pg_urls):
    storage, uri = pg_urls
    study = create_study(tmp_path, synth_npz, storage, uri, "pg_kill", trials=3)
    victim = start_worker(tmp_path, "pg_kill", storage, uri, "victim")
    survivor = start_worker(tmp_path, "pg_kill", storage, uri, "survivor")
    killed = _wait_for_training(study, victim, timeout=180)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    wait([survivor], tmp_path)
    assert survivor.returncode == 0, (tmp_path / "worker_survivor.log").read_text()[-2000:]

    trials = {t.number: t for t in study.get_trials()}
    assert trials[killed].state == TrialState.FAIL
    retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == trials[killed].params
    real = real_trials(study)
    assert len(real) == 3 and all(t.state == TrialState.COMPLETE for t in real)
    assert not [t for t in trials.values() if t.state in (TrialState.RUNNING, TrialState.WAITING)]

    client = MlflowClient()
    runs = child_runs(client, study)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    by_trial = {int(r.data.tags["optuna_trial"]): r for r in runs}
    assert len(by_trial) == len(runs)  # one run per trial number
    assert by_trial[killed].info.status in ("KILLED", "FAILED")
    assert {by_trial[t.number].info.status for t in real} == {"FINISHED"}
    assert client.get_run(study.user_attrs["mlflow_parent_run_id"]).info.status == "FINISHED"


def _wait_for_training(study: optuna.Study, worker: subprocess.Popen[bytes], timeout: float) -> int:
    """The number of the trial ``worker`` is training (its MLflow run has started)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for t in study.get_trials(states=(TrialState.RUNNING,)):
            if t.user_attrs.get("worker", "").endswith(f":{worker.pid}") and t.user_attrs.get("mlflow_run_id"):
                return t.number
        assert worker.poll() is None, "the worker exited before it trained"
        time.sleep(0.3)
    pytest.fail(f"worker {worker.pid} did not start training in {timeout:.0f} s")
