"""How many workers one PostgreSQL serves: no-op trials against the Optuna storage, 1 to 16 processes.

Each worker process opens the storage as ``ablate worker`` does (``ablate.storage.open_storage``:
heartbeats, stale-trial retries, ``pool_pre_ping``) and runs ``study.optimize`` on a trial that
does no work: it samples two parameters and reports ``--reports`` intermediate values, asking
the median pruner after each one (what a study's ``PruningCallback`` does every epoch). All
processes start together and start trials for ``--seconds`` (the rate is taken up to the last
worker's exit, which ends its last trial); each worker count gets a fresh database.

Reported per worker count: trials per second over the window, the PostgreSQL backends' CPU
seconds per trial (their ``/proc`` times) and the workers' own, and the connections each worker
holds (``pg_stat_activity``, sampled). Separately, in one process: SQL statements per trial,
split into the trial itself, each reported value and each pruning question (SQLAlchemy's
``before_cursor_execute`` event), and writes among them. Not a test: the client side shares the
machine's cores with the server (2 here), so past a few processes the figures measure the CPU,
and the server's CPU per trial is the number that carries over to a bigger machine.

Run it from the project root with PostgreSQL at 127.0.0.1:5432 (trust auth, user postgres):

    .venv/bin/python benchmarks/storage_scale.py [--seconds 15] [--workers 1 2 4 8 16]

Writes ``benchmarks/results/storage_scale.json`` and prints it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import ROOT, machine

sys.path.insert(0, str(ROOT))

PG = "postgresql+psycopg2://postgres@127.0.0.1:5432"
STUDY = "scale"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- the trial ------------------------------------------------------------------------------------

def objective(reports: int, prune: bool):  # noqa: ANN201 - an Optuna objective
    """A trial with no work: two sampled parameters, ``reports`` intermediate values (and a pruning question each)."""

    def run(trial: Any) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        trial.suggest_categorical("skip", ["concat", "add", "multiply"])
        for step in range(1, reports + 1):
            trial.report(x * step, step)
            if prune and trial.should_prune():
                import optuna

                raise optuna.TrialPruned()  # never here: the pruner's warm-up covers every step
        return x

    return run


def open_study(url: str, reports: int) -> Any:
    """The study, on the storage ``ablate worker`` opens (``open_storage``; Optuna wraps it in its cache).

    The median pruner reads the finished trials at every question, as it does in a study, but its
    warm-up covers every step, so that no trial is cut short and every trial has the same shape.
    """
    import optuna

    from ablate.storage import open_storage

    return optuna.create_study(study_name=STUDY, storage=open_storage(url), load_if_exists=True,
                               direction="maximize", sampler=optuna.samplers.RandomSampler(),
                               pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=reports + 1))


def worker(url: str, start_at: float, seconds: float, reports: int) -> None:
    """One worker process: waits for the common start, runs trials for ``seconds``, prints its counts."""
    study = open_study(url, reports)
    time.sleep(max(0.0, start_at - time.time()))
    cpu0 = _own_cpu()
    ran: list[int] = []  # this process's trials (the study's count would include every worker's)
    study.optimize(objective(reports, prune=True), timeout=seconds, callbacks=[lambda st, t: ran.append(t.number)])
    print(json.dumps({"cpu_s": _own_cpu() - cpu0, "ran": len(ran)}))


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


# --- PostgreSQL side --------------------------------------------------------------------------------

def admin(statement: str) -> None:
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres", connect_timeout=3)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


@contextlib.contextmanager
def fresh_database() -> Iterator[tuple[str, str]]:
    """A new database (dropped after); yields (its name, its URL)."""
    name = f"ablate_scale_{uuid.uuid4().hex[:8]}"
    admin(f'CREATE DATABASE "{name}"')
    try:
        yield name, f"{PG}/{name}"
    finally:
        admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Backends:
    """The server processes of one database: how many, and their CPU seconds (from /proc)."""

    def __init__(self, database: str) -> None:
        import psycopg2

        self.database = database
        self.conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
        self.conn.autocommit = True
        self.start_cpu: dict[int, float] = {}
        self.seen_cpu: dict[int, float] = {}

    def pids(self) -> list[int]:
        with self.conn.cursor() as cur:
            cur.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (self.database,))
            return [int(row[0]) for row in cur.fetchall()]

    def sample(self) -> int:
        """Records the backends' CPU times; returns how many are connected now."""
        pids = self.pids()
        for pid in pids:
            cpu = _proc_cpu(pid)
            if cpu is not None:
                self.start_cpu.setdefault(pid, cpu)
                self.seen_cpu[pid] = cpu
        return len(pids)

    def mark_start(self) -> None:
        self.start_cpu = {}
        self.sample()

    def cpu_s(self) -> float:
        """CPU seconds the backends used since ``mark_start`` (a backend started later counts from 0)."""
        return sum(cpu - self.start_cpu.get(pid, 0.0) for pid, cpu in self.seen_cpu.items())

    def close(self) -> None:
        self.conn.close()


def _proc_cpu(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


# --- one worker count ---------------------------------------------------------------------------------

def measure(n: int, seconds: float, reports: int) -> dict[str, Any]:
    with fresh_database() as (database, url):
        _engine(open_study(url, reports)).dispose()  # tables and study made once, before the workers race
        lead = 3.0 + 0.4 * n  # time for n interpreters to import optuna and connect on 2 cores
        start_at = time.time() + lead
        cmd = [sys.executable, __file__, "--child", url, str(start_at), str(seconds), str(reports)]
        procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True) for _ in range(n)]
        backends = Backends(database)
        try:
            time.sleep(max(0.0, start_at - time.time()))
            backends.mark_start()
            peak = 0
            while any(p.poll() is None for p in procs):  # a worker ends its last trial after the window
                peak = max(peak, backends.sample())
                time.sleep(0.5)
            elapsed = time.time() - start_at
            outs = [p.communicate(timeout=120)[0] for p in procs]
            server_cpu = backends.cpu_s()
        finally:
            backends.close()
        if any(p.returncode for p in procs):
            raise SystemExit(f"a worker failed: exit codes {[p.returncode for p in procs]}")
    per = [json.loads(out.strip().splitlines()[-1]) for out in outs]
    trials = sum(p["ran"] for p in per)
    return {"workers": n, "trials": trials, "seconds": round(elapsed, 1), "trials_per_s": round(trials / elapsed, 1),
            "per_worker_trials_per_s": round(trials / elapsed / n, 2),
            "server_cpu_ms_per_trial": round(server_cpu / trials * 1000, 2),
            "client_cpu_ms_per_trial": round(sum(p["cpu_s"] for p in per) / trials * 1000, 2),
            "server_cores": round(server_cpu / elapsed, 2),
            "client_cores": round(sum(p["cpu_s"] for p in per) / elapsed, 2),
            "connections_peak": peak, "connections_per_worker": round(peak / n, 2)}


# --- SQL statements per trial, per report, per pruning question --------------------------------------------

def statements(trials: int = 20, reports: int = 10) -> dict[str, Any]:
    """Statements (and writes among them) per trial, in one process, for three shapes of trial."""
    from sqlalchemy import event

    out: dict[str, Any] = {}
    with fresh_database() as (_, url):
        study = open_study(url, reports)
        study.optimize(objective(0, prune=False), n_trials=10)  # past the pruner's start-up trials
        counted = {"all": 0, "writes": 0}

        def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            counted["all"] += 1
            counted["writes"] += statement.lstrip().split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE")

        event.listen(_engine(study), "before_cursor_execute", count)
        for label, n_reports, prune in (("bare", 0, False), ("report", reports, False), ("prune", reports, True)):
            counted.update(all=0, writes=0)
            study.optimize(objective(n_reports, prune), n_trials=trials)
            out[label] = {"statements": counted["all"] / trials, "writes": counted["writes"] / trials}
        _engine(study).dispose()
    bare, rep, prn = out["bare"], out["report"], out["prune"]
    return {
        "trials_each": trials, "reports": reports,
        "per_trial": {"statements": round(bare["statements"], 1), "writes": round(bare["writes"], 1)},
        "per_report": {"statements": round((rep["statements"] - bare["statements"]) / reports, 2),
                       "writes": round((rep["writes"] - bare["writes"]) / reports, 2)},
        "per_prune_question": {"statements": round((prn["statements"] - rep["statements"]) / reports, 2),
                               "writes": round((prn["writes"] - rep["writes"]) / reports, 2)},
    }


def _engine(study: Any) -> Any:
    """The SQLAlchemy engine under the study's storage (Optuna wraps an RDB storage in a cache)."""
    storage = study._storage
    return getattr(storage, "_backend", storage).engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="measuring window per worker count")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--reports", type=int, default=10, help="intermediate values per trial")
    parser.add_argument("--child", nargs=4, metavar=("URL", "START_AT", "SECONDS", "REPORTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        url, start_at, seconds, reports = args.child
        worker(url, float(start_at), float(seconds), int(reports))
        return

    import optuna
    import sqlalchemy

    print(f"setup: no-op trials (2 parameters, {args.reports} reports each with a median-pruner question), "
          f"{args.seconds:.0f} s per worker count, a fresh PostgreSQL database each", flush=True)
    counts = statements(reports=args.reports)
    print(f"statements: {json.dumps(counts)}", flush=True)
    runs = []
    for n in args.workers:
        runs.append(measure(n, args.seconds, args.reports))
        print(f"  {json.dumps(runs[-1])}", flush=True)
    with fresh_database() as (_, url):
        engine = _engine(open_study(url, args.reports))
        with engine.connect() as conn:
            pg_version = conn.exec_driver_sql("SHOW server_version").scalar()
        engine.dispose()
    result = {
        "benchmark": "storage_scale",
        "setup": {"seconds_per_count": args.seconds, "reports_per_trial": args.reports,
                  "trial": "2 sampled parameters (random sampler), reports with a median-pruner question each",
                  "storage": "ablate.storage.open_storage (heartbeats, stale-trial retries, pool_pre_ping), "
                             "PostgreSQL on 127.0.0.1, one fresh database per worker count",
                  "postgresql": pg_version, "optuna": optuna.__version__, "sqlalchemy": sqlalchemy.__version__},
        "statements": counts,
        "runs": runs,
        "machine": machine(),
    }
    out = ROOT / "benchmarks" / "results" / "storage_scale.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
