"""The team topology of docker-compose.yml, without Docker: PostgreSQL, an MLflow server, workers.

    .venv/bin/python deploy/team_demo.py [--workers 2] [--keep]      (what `make team-demo` runs)

It creates two databases on the PostgreSQL server at ``$ABLATE_PG_ADMIN`` (default: the local
server, user postgres), starts ``mlflow server`` on one of them (artifacts proxied to a temporary
folder, on a free loopback port), queues a small ablation in the other, starts ``ablate worker``
processes on the queue, then audits every trial and run: metrics of every epoch exactly once,
every mask image, no run left RUNNING. ``--keep`` leaves the servers (and optuna-dashboard) up
until Ctrl-C. The tests in tests/test_team.py and tests/test_faults.py build on these helpers.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = os.environ.get("ABLATE_PG_ADMIN", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
TINY = ["model.filters=4", "model.depth=2", "train.batch_size=16", "data.limit=100", "tracking.mask_every=1",
        "train.early_stopping=0"]  # seconds per epoch on a shared CPU; every epoch logs a mask grid
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # GenAI job runners: unused, and 7 processes


# --- PostgreSQL -------------------------------------------------------------------------------

def _connect(admin: str = PG_ADMIN):  # noqa: ANN202 - psycopg2 is typed loosely
    import psycopg2
    from sqlalchemy.engine import make_url

    u = make_url(admin)
    return psycopg2.connect(host=u.host, port=u.port or 5432, user=u.username, password=u.password,
                            dbname=u.database or "postgres", connect_timeout=3)


def pg_available(admin: str = PG_ADMIN) -> bool:
    """True if the admin URL accepts a connection."""
    try:
        _connect(admin).close()
    except Exception:  # noqa: BLE001 - any failure means 'not available'
        return False
    return True


def pg_unavailable(admin: str = PG_ADMIN) -> str | None:
    """Why PostgreSQL cannot be used for the team tests, or None if it can."""
    return None if pg_available(admin) else f"PostgreSQL is not reachable at {_redact(admin)} (set ABLATE_PG_ADMIN)"


def pg_url(name: str, admin: str = PG_ADMIN, password: str | None = None) -> str:
    """The URL of database ``name`` on the admin URL's server (optionally with a password in it)."""
    from sqlalchemy.engine import make_url

    url = make_url(admin).set(database=name)
    if password is not None:
        url = url.set(password=password)
    return url.render_as_string(hide_password=False)


@contextlib.contextmanager
def database(name: str, admin: str = PG_ADMIN) -> Iterator[str]:
    """A fresh database ``name`` (dropped first if it exists, and dropped again after); yields its URL."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise ValueError(f"database name must be lower-case letters, digits and _, got {name!r}")
    _sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", admin)
    _sql(f"CREATE DATABASE {name}", admin)
    try:
        yield pg_url(name, admin)
    finally:
        with contextlib.suppress(Exception):
            _sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", admin)


def _sql(statement: str, admin: str) -> None:
    conn = _connect(admin)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


# --- an MLflow tracking server ----------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MlflowServer:
    """``mlflow server`` on ``backend`` with proxied artifacts in ``folder``, on 127.0.0.1.

    ``stop()`` and ``start()`` again keep the port and the backend (to simulate an outage).

    Example:
        >>> with MlflowServer("postgresql+psycopg2://postgres@127.0.0.1:5432/mlflow", Path("/tmp/m")) as server:
        ...     print(server.uri)
    """

    def __init__(self, backend: str, folder: Path, port: int | None = None, env: dict[str, str] | None = None,
                 app_name: str | None = None) -> None:
        self.backend, self.folder = backend, folder
        self.port = port or free_port()
        self.env, self.app_name = env or {}, app_name
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = folder / "server.log"

    def start(self, timeout: float = 240.0) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.backend,
               "--artifacts-destination", str(self.folder / "artifacts"), "--host", "127.0.0.1",
               "--port", str(self.port), "--workers", "1"]
        if self.app_name:
            cmd += ["--app-name", self.app_name]
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, **SERVER_ENV, **self.env})
        deadline = time.monotonic() + timeout
        while not healthy(self.uri):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])
                self.stop()
                raise RuntimeError(f"mlflow server on {self.uri} did not start:\n{tail}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        stop_group(self.proc)
        deadline = time.monotonic() + 20
        while _port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.2)

    def __enter__(self) -> MlflowServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(uri + "/health", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Signals the process group that ``proc`` leads (started with ``start_new_session``) and waits."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


# --- queueing and working ---------------------------------------------------------------------

def write_ablation(folder: Path, name: str, seeds: int = 1, epochs: int = 2) -> Path:
    """A two-arm ablation (baseline concat skips vs add) on the preset, ``epochs`` epochs each."""
    path = folder / f"{name}.yaml"
    path.write_text(f"name: {name}\nbase: {ROOT / 'ablations/presets/unet-baseline.yaml'}\n"
                    f"design: one-at-a-time\nseeds: {seeds}\nbudget: {{epochs: {epochs}, early_stopping: 0}}\n"
                    "factors:\n  skip:\n    add: {skip: {type: add}}\n")
    return path


def queue_ablation(path: Path, overrides: Sequence[str], storage: str, tracking_uri: str) -> str:
    """Queues every (arm, seed) of the ablation file without running any; returns the queue name."""
    import mlflow

    from ablate.ablation.design import load_ablation
    from ablate.ablation.runner import prepare
    from ablate.storage import open_storage

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    try:
        study, _, _ = prepare(load_ablation(str(path), overrides=list(overrides)), open_storage(storage))
    finally:
        mlflow.set_tracking_uri(previous)
    return study.study_name


def start_worker(study: str, storage: str, tracking_uri: str, log: Path,
                 env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``ablate worker`` on the queue, in its own process group, output to ``log``."""
    cmd = [sys.executable, "-m", "ablate.cli", "worker", "--study", study, "--storage", storage,
           "--tracking-uri", tracking_uri, "--quiet"]
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def run_ablate(args: Sequence[str], env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:  # noqa: ANN003
    """``ablate ARGS`` as a child process (output passed through unless captured)."""
    return subprocess.run([sys.executable, "-m", "ablate.cli", *args], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, **kwargs)


# --- auditing what arrived ----------------------------------------------------------------------

EPOCH_METRICS = ("loss", "val_loss", "val_miou", "epoch_time")


def audit_run(client, run_id: str, epochs: int, mask_every: int = 1) -> list[str]:  # noqa: ANN001
    """Problems with a finished run: status, every epoch metric once, every mask image once, artifacts."""
    run = client.get_run(run_id)
    problems = [] if run.info.status == "FINISHED" else [f"status {run.info.status}"]
    for key in EPOCH_METRICS:
        steps = sorted(m.step for m in client.get_metric_history(run_id, key))
        if steps != list(range(epochs)):
            problems.append(f"{key} steps {steps}, expected 0..{epochs - 1} once each")
    if "best_val_miou" not in run.data.metrics:
        problems.append("no best_val_miou")
    want = sorted([e for e in range(epochs) if mask_every and (e + 1) % mask_every == 0] + [epochs])
    found = sorted(int(m.group(1)) for a in client.list_artifacts(run_id, "images")
                   if (m := re.search(r"\+step\+(\d+)\+.*\.png$", a.path)))
    if found != want:
        problems.append(f"mask image steps {found}, expected {want}")
    top = {a.path for a in client.list_artifacts(run_id)}
    missing = {"spec.json", "confusion_matrix.png", "predictions", "model"} - top
    if missing:
        problems.append(f"missing artifacts {sorted(missing)}")
    return [f"run {run_id}: {p}" for p in problems]


def audit_ablation(study_name: str, storage: str, tracking_uri: str, epochs: int) -> dict:
    """Counts trials by state and audits the run of every complete trial; lists every problem."""
    import optuna
    from mlflow.tracking import MlflowClient

    from ablate.campaign import running_runs
    from ablate.storage import load_study, open_storage

    client = MlflowClient(tracking_uri)
    study = load_study(study_name, open_storage(storage))
    trials = study.get_trials(deepcopy=False)
    states = {s.name: sum(t.state == s for t in trials) for s in optuna.trial.TrialState}
    problems: list[str] = []
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    for t in complete:
        problems += audit_run(client, t.user_attrs["mlflow_run_id"], epochs)
    # trial runs only: a queue's parent run stays RUNNING until `ablate ablation run` reports it
    problems += [f"run {r.info.run_id} ({r.info.run_name}) left RUNNING" for r in running_runs(client)
                 if "optuna_trial" in r.data.tags]
    parent = client.get_run(study.user_attrs["mlflow_parent_run_id"])
    return {"states": states, "complete_runs": [t.user_attrs["mlflow_run_id"] for t in complete],
            "parent_status": parent.info.status, "problems": problems}


# --- the demo ---------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="leave the servers up until Ctrl-C")
    args = parser.parse_args(argv)
    if not pg_available():
        print(f"team-demo: no PostgreSQL at {_redact(PG_ADMIN)}; start it or set ABLATE_PG_ADMIN", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="ablate-team-") as tmp, \
            database("ablate_team_demo_mlflow") as backend, database("ablate_team_demo_optuna") as storage, \
            MlflowServer(backend, Path(tmp) / "mlflow") as server:
        print(f"PostgreSQL: {_redact(backend)} (MLflow) and {_redact(storage)} (Optuna)")
        print(f"MLflow server: {server.uri} (artifacts in {tmp}/mlflow/artifacts)")
        path = write_ablation(Path(tmp), "team_demo", seeds=args.seeds, epochs=args.epochs)
        cmd = ["ablation", "run", str(path), *TINY, "--storage", storage, "--tracking-uri", server.uri,
               "--workers", str(args.workers), "--report-dir", str(Path(tmp) / "report")]
        print(f"$ ablate {' '.join(_redact(c) for c in cmd)}", flush=True)
        code = run_ablate(cmd).returncode
        report = audit_ablation("ablation.team_demo", storage, server.uri, args.epochs)
        print(f"ablate exited {code}; trials {report['states']}; {len(report['complete_runs'])} runs audited; "
              f"parent run {report['parent_status']}")
        for problem in report["problems"]:
            print(f"  PROBLEM {problem}")
        if args.keep:
            _serve_until_interrupted(storage, server.uri)
        return 0 if not report["problems"] and code == 0 else 1


def _serve_until_interrupted(storage: str, uri: str) -> None:
    port = free_port()
    dash = subprocess.Popen([str(Path(sys.executable).with_name("optuna-dashboard")), storage, "--host", "127.0.0.1",
                             "--port", str(port)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"MLflow UI: {uri}/#/experiments?workflowType=machine_learning")
    print(f"Optuna dashboard: http://127.0.0.1:{port}   (Ctrl-C stops everything and drops the databases)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stop_group(dash)


def _redact(url: str) -> str:
    from ablate.resilience import redact_text

    return redact_text(url)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
