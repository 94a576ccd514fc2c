"""Team mode without Docker: PostgreSQL, an MLflow server on it, two `ablate worker`s; `ablate doctor`.

The topology test uses the local PostgreSQL server (``$ABLATE_PG_ADMIN``, default
postgres@127.0.0.1:5432 with trust auth): it creates its own databases and drops them after.
Under CI=true a missing server is a failure; elsewhere the test skips and says why.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ROOT, require_postgres, run_cli

sys.path.insert(0, str(ROOT))
from deploy import team_demo as td  # noqa: E402 - the native topology, shared with `make team-demo`

EPOCHS = 2


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, td.MlflowServer]]:
    """(Optuna storage URL, MLflow server on PostgreSQL), in databases of this test run."""
    require_postgres()
    tag = f"ablate_test_team_{os.getpid()}"
    with td.database(f"{tag}_mlflow") as backend, td.database(f"{tag}_optuna") as storage, \
            td.MlflowServer(backend, tmp_path_factory.mktemp("mlflow")) as server:
        yield storage, server


@pytest.mark.slow
def test_two_workers_fill_one_ablation(team: tuple[str, td.MlflowServer], synth_npz: Path, tmp_path: Path) -> None:
    """`ablate ablation run --workers 2`: two `ablate worker` processes share the PostgreSQL queue."""
    storage, server = team
    path = td.write_ablation(tmp_path, "team", seeds=1, epochs=EPOCHS)
    # one seed cannot reach a verdict: the plan refuses it unless --screening, and the report says so
    out = run_cli(["ablation", "run", str(path), "--screening", *td.TINY, f"data.path={synth_npz}",
                   "--storage", storage, "--tracking-uri", server.uri, "--workers", "2",
                   "--report-dir", str(tmp_path / "report")])
    assert out.returncode == 0, out.stderr[-3000:]
    report = td.audit_ablation("ablation.team", storage, server.uri, EPOCHS)
    assert report["states"]["COMPLETE"] == 2 and report["states"]["FAIL"] == 0, report["states"]
    assert report["problems"] == []
    assert report["parent_status"] == "FINISHED"
    from mlflow.tracking import MlflowClient

    client = MlflowClient(server.uri)
    pids = {client.get_run(r).data.tags["ablate.pid"] for r in report["complete_runs"]}
    assert len(pids) == 2, f"one worker took every run: {pids}"
    assert "SCREENING RUN" in (tmp_path / "report/report.md").read_text()


# --- ablate doctor ---------------------------------------------------------------------------

def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_doctor_lists_and_repairs_what_a_crash_leaves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A stale trial and its run, a run whose process died, and a live run that must stay RUNNING."""
    import mlflow
    import optuna
    from mlflow.tracking import MlflowClient
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    from ablate.adapters import trial_id
    from ablate.doctor import diagnose

    storage_url, tracking_uri = f"sqlite:///{tmp_path / 'optuna.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}"
    storage = RDBStorage(storage_url, heartbeat_interval=1, grace_period=1,
                         heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3))
    study = optuna.create_study(study_name="ablation.crash", storage=storage, direction="maximize")
    trial = study.ask()  # RUNNING, like a worker's trial
    storage.record_heartbeat(trial_id(trial))  # ... that beat once, then the worker was killed
    client = MlflowClient(tracking_uri)
    exp = client.create_experiment("crash", artifact_location=(tmp_path / "artifacts").as_uri())
    host = platform.node()
    trial_run = client.create_run(exp, tags={"optuna_study": "ablation.crash", "optuna_trial": str(trial.number),
                                             "ablate.host": host, "ablate.pid": str(os.getpid())}).info.run_id
    dead_run = client.create_run(exp, tags={"ablate.host": host, "ablate.pid": str(_dead_pid())}).info.run_id
    live_run = client.create_run(exp, tags={"ablate.host": host, "ablate.pid": str(os.getpid())}).info.run_id
    time.sleep(2.5)  # past the grace period

    found = {f.run_id or f"trial {f.trial_number}": f for f in diagnose(storage, client)}
    assert set(found) == {"trial 0", trial_run, dead_run}, [f.line() for f in found.values()]

    from ablate import storage as storage_module
    from ablate.cli.main import main

    monkeypatch.setattr(storage_module, "GRACE_S", 1)  # what ABLATE_GRACE_S=1 sets in a new process
    previous = mlflow.get_tracking_uri()
    try:
        assert main(["doctor", "--storage", storage_url, "--tracking-uri", tracking_uri]) == 1
        assert main(["doctor", "--repair", "--storage", storage_url, "--tracking-uri", tracking_uri]) == 0
    finally:
        mlflow.set_tracking_uri(previous)
    listed, repaired = capsys.readouterr().out.split("run `ablate doctor --repair`")
    assert listed.count(" -> ") == 3 and repaired.count("  repaired ") == 3, listed + repaired
    assert {client.get_run(r).info.status for r in (trial_run, dead_run)} == {"KILLED"}
    assert client.get_run(live_run).info.status == "RUNNING"
    states = [t.state.name for t in study.get_trials()]
    assert states == ["FAIL", "WAITING"], states  # failed, and its retry queued
    assert diagnose(storage, client) == []
