"""Faults that must not lose data: each test injects one, then counts every metric step and image.

Nothing lost, nothing duplicated, no run left RUNNING:
- the tracking server unreachable at start (a clear error, or --offline-ok) and mid-run;
- a worker killed with SIGKILL mid-trial;
- Ctrl-C during an ablation, then the same command again;
- the PostgreSQL server restarted while workers train.
The server tests use the local PostgreSQL server (see tests/test_team.py) and an MLflow server on it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import PRESET, ROOT, assert_one_error_line, require_postgres, run_cli

sys.path.insert(0, str(ROOT))
from deploy import team_demo as td  # noqa: E402 - the native topology, shared with `make team-demo`

FAST_HEARTBEAT = {"ABLATE_HEARTBEAT_S": "2", "ABLATE_GRACE_S": "10"}  # a killed worker's trial is retried in ~10 s


# --- the delivery queue on its own (no server) -------------------------------------------------

class FlakyClient:
    """An MlflowClient stand-in whose first ``failures`` calls fail like a server that is down."""

    def __init__(self, failures: int, refuse: Callable[[object], bool] = lambda rows: False) -> None:
        self.failures, self.refuse, self.calls = failures, refuse, []

    def log_batch(self, run_id: str, metrics: object = (), params: object = (), tags: object = ()) -> None:
        from mlflow.exceptions import MlflowException, RestException

        if self.failures:
            self.failures -= 1
            raise MlflowException("API request to http://127.0.0.1:1/api failed with exception Connection refused")
        if self.refuse(metrics):
            raise RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "bad metric"})
        self.calls.append([(m.key, m.step) for m in metrics] or "other")


@pytest.fixture
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    from ablate import resilience

    monkeypatch.setattr(resilience, "MAX_BACKOFF_S", 0.01)


def test_delivery_retries_in_order_and_duplicates_nothing(quick_backoff: None) -> None:
    from ablate.resilience import Delivery

    client = FlakyClient(failures=5)
    delivery = Delivery("run0", client=client)
    for step in range(10):
        delivery.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
    delivery.close(timeout=30)
    assert client.calls == [[("loss", step)] for step in range(10)]


def test_delivery_reports_and_skips_what_the_server_refuses(quick_backoff: None,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from ablate.resilience import Delivery

    client = FlakyClient(failures=0, refuse=lambda rows: any(m.step == 1 for m in rows))
    delivery = Delivery("run1", client=client)
    for step in range(3):
        delivery.log_metrics({"loss": 0.5}, step=step)
    delivery.close(timeout=30)
    assert client.calls == [[("loss", 0)], [("loss", 2)]] and delivery.dropped == ["metrics step 1"]
    assert "refused metrics step 1" in capsys.readouterr().err


def test_transient_errors_are_told_from_bad_requests() -> None:
    from mlflow.exceptions import MlflowException, RestException

    from ablate.resilience import is_transient

    assert is_transient(MlflowException("API request to http://x failed with exception ConnectionError"))
    assert is_transient(RestException({"error_code": "INTERNAL_ERROR", "message": "db restarting"}))
    assert not is_transient(RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "bad"}))
    assert not is_transient(ValueError("not a number"))


# --- the tracking server unreachable at start ----------------------------------------------------

def tiny_run_args(data: Path, epochs: int) -> list[str]:
    return ["run", str(PRESET), *td.TINY, f"data.path={data}", f"train.epochs={epochs}"]


@pytest.mark.slow
def test_unreachable_server_at_start_is_one_clear_line(synth_npz: Path, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{td.free_port()}"
    out = run_cli([*tiny_run_args(synth_npz, 1), "--tracking-uri", dead], cwd=tmp_path)
    assert out.returncode == 2
    assert_one_error_line(out.stderr, rf"tracking server {dead} is not reachable.*--offline-ok")
    assert "Epoch" not in out.stdout and not (tmp_path / "mlruns").exists()  # nothing trained, nothing logged


@pytest.mark.slow
def test_offline_ok_logs_to_the_local_store_and_says_so(synth_npz: Path, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    dead = f"http://127.0.0.1:{td.free_port()}"
    out = run_cli([*tiny_run_args(synth_npz, 1), "--tracking-uri", dead, "--offline-ok"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"tracking server {dead} is not reachable; logging to the local store" in out.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns/mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("ablate-runs").experiment_id])
    assert len(runs) == 1 and td.audit_run(client, runs[0].info.run_id, epochs=1) == []


# --- faults with a tracking server and PostgreSQL ------------------------------------------------

@dataclass
class Stack:
    storage: str
    server: td.MlflowServer
    folder: Path

    def client(self):  # noqa: ANN201
        from mlflow.tracking import MlflowClient

        return MlflowClient(self.server.uri)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_postgres()
    tag = f"ablate_test_faults_{os.getpid()}"
    folder = tmp_path_factory.mktemp("faults")
    with td.database(f"{tag}_mlflow") as backend, td.database(f"{tag}_optuna") as storage, \
            td.MlflowServer(backend, folder / "mlflow") as server:
        yield Stack(storage, server, folder)


def wait_for(condition: Callable[[], object], timeout: float, what: str, procs: tuple = ()) -> object:
    """Polls ``condition`` until it returns something truthy; fails if a watched process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        for p in procs:
            assert p.poll() is None, f"process {p.args} exited with {p.returncode} while waiting for {what}"
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def training_runs(stack: Stack, experiment: str, min_epochs: int = 1, status: str = "RUNNING") -> list:
    """Training runs of ``experiment`` in ``status`` that have logged at least ``min_epochs`` epochs."""
    client = stack.client()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], f"attributes.status = '{status}'")
    return [r for r in runs if "ablate.pid" in r.data.tags  # not the ablation's parent run
            if len(client.get_metric_history(r.info.run_id, "loss")) >= min_epochs]


def popen_cli(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "ablate.cli", *args], cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


@pytest.mark.slow
def test_server_down_mid_run_buffers_and_delivers_in_order(stack: Stack, synth_npz: Path) -> None:
    epochs = 6
    log = stack.folder / "midrun.log"
    proc = popen_cli([*tiny_run_args(synth_npz, epochs), "--experiment", "midrun", "--tracking-uri",
                      stack.server.uri], log)
    try:
        run = wait_for(lambda: training_runs(stack, "midrun"), 240, "the first epoch", (proc,))[0]
        stack.server.stop()
        down_at = time.monotonic()
        while time.monotonic() - down_at < 30 and f"Epoch {epochs}/{epochs}" not in log.read_text():
            time.sleep(1)
        assert f"Epoch {epochs}/{epochs}" in log.read_text(), "training did not go on while the server was down"
        time.sleep(max(0.0, 30 - (time.monotonic() - down_at)))  # a 30 s outage
        stack.server.start()
        assert proc.wait(timeout=240) == 0, log.read_text()[-3000:]
    finally:
        td.stop_group(proc)
        if not td.healthy(stack.server.uri):
            stack.server.start()
    output = log.read_text()
    assert "tracking server unavailable" in output and "tracking server back after" in output
    assert td.audit_run(stack.client(), run.info.run_id, epochs) == []


@pytest.mark.slow
def test_killed_worker_trial_is_retried_and_its_run_ended(stack: Stack, synth_npz: Path) -> None:
    epochs = 6  # seconds of training left after the first epoch is seen: time to kill mid-trial
    path = td.write_ablation(stack.folder, "killed", seeds=1, epochs=epochs)
    study = td.queue_ablation(path, [*td.TINY, f"data.path={synth_npz}"], stack.storage, stack.server.uri)
    workers = [td.start_worker(study, stack.storage, stack.server.uri, stack.folder / f"killed{i}.log",
                               FAST_HEARTBEAT) for i in range(2)]
    try:
        victim = wait_for(lambda: training_runs(stack, "killed"), 240, "a worker's first epoch", tuple(workers))[0]
        pid = int(victim.data.tags["ablate.pid"])
        killed = next(w for w in workers if w.pid == pid)
        os.killpg(killed.pid, signal.SIGKILL)
        survivor = next(w for w in workers if w is not killed)
        assert survivor.wait(timeout=300) == 0, (stack.folder / "killed0.log").read_text()[-2000:]
    finally:
        for w in workers:
            td.stop_group(w)
    report = td.audit_ablation(study, stack.storage, stack.server.uri, epochs)
    assert (report["states"]["COMPLETE"], report["states"]["FAIL"]) == (2, 1), report["states"]
    assert report["problems"] == []
    assert stack.client().get_run(victim.info.run_id).info.status == "KILLED"


@pytest.mark.slow
def test_ctrl_c_ends_the_run_killed_and_the_ablation_resumes(stack: Stack, synth_npz: Path) -> None:
    epochs = 4
    path = td.write_ablation(stack.folder, "interrupted", seeds=1, epochs=epochs)
    args = ["ablation", "run", str(path), "--screening", *td.TINY, f"data.path={synth_npz}", "--storage", stack.storage,
            "--tracking-uri", stack.server.uri, "--report-dir", str(stack.folder / "report")]
    log = stack.folder / "interrupted.log"
    proc = popen_cli(args, log)
    try:  # interrupt the second run, so that one finished run must be kept
        victim = wait_for(lambda: training_runs(stack, "interrupted", status="FINISHED")
                          and training_runs(stack, "interrupted"), 300, "the second run's first epoch", (proc,))[0]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 130, log.read_text()[-3000:]
    finally:
        td.stop_group(proc)
    assert "run the same command again to resume" in log.read_text()
    assert stack.client().get_run(victim.info.run_id).info.status == "KILLED"

    again = run_cli(args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "1 already finished, 1 queued now" in again.stdout
    report = td.audit_ablation("ablation.interrupted", stack.storage, stack.server.uri, epochs)
    assert report["states"]["COMPLETE"] == 2 and report["problems"] == []
    assert report["parent_status"] == "FINISHED"
    assert stack.client().get_run(victim.info.run_id).info.status == "KILLED"  # kept, as interrupted


def restart_postgres() -> None:
    cluster = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", cluster, "main", "restart"], check=True,
                   capture_output=True, timeout=120)


def ensure_postgres_up() -> None:
    if not td.pg_available():
        cluster = sorted(os.listdir("/etc/postgresql"))[-1]
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", cluster, "main", "start"], timeout=120)


@pytest.mark.slow
def test_workers_ride_out_a_database_restart(stack: Stack, synth_npz: Path) -> None:
    if not Path("/etc/postgresql").is_dir() or os.geteuid() != 0:
        pytest.skip("restarting PostgreSQL needs pg_ctlcluster and root (the CI machine has both)")
    epochs = 4
    path = td.write_ablation(stack.folder, "dbrestart", seeds=1, epochs=epochs)
    study = td.queue_ablation(path, [*td.TINY, f"data.path={synth_npz}"], stack.storage, stack.server.uri)
    workers = [td.start_worker(study, stack.storage, stack.server.uri, stack.folder / f"db{i}.log",
                               FAST_HEARTBEAT) for i in range(2)]  # beats every 2 s: some hit the restart
    try:
        wait_for(lambda: len(training_runs(stack, "dbrestart")) == 2, 240, "both workers' first epoch",
                 tuple(workers))
        restart_postgres()
        codes = [w.wait(timeout=300) for w in workers]
    finally:
        ensure_postgres_up()
        for w in workers:
            td.stop_group(w)
    assert codes == [0, 0], (stack.folder / "db0.log").read_text()[-2000:]
    report = td.audit_ablation(study, stack.storage, stack.server.uri, epochs)
    assert (report["states"]["COMPLETE"], report["states"]["FAIL"]) == (2, 0), report["states"]
    assert report["problems"] == []
