"""Worker scaling: trials per hour with 1 and 2 ``ablate worker`` processes on PostgreSQL.

The same cheap study (1 epoch of a tiny U-Net on 64 pairs, no model logging) is run once per
worker count on a fresh PostgreSQL database for Optuna and one for MLflow, the workers started
as a team would start them. Reported per worker count: wall time from spawning the workers to
the last exit, and trials per hour both over that wall time and over the trials themselves
(first trial start to last trial end, which leaves out each worker's TensorFlow start-up).
Not a test: the ratio depends on the cores the workers share (TensorFlow uses every core, so on
a 2-core machine two workers mostly contend) and on the machine's load.

Run it from the project root with PostgreSQL at 127.0.0.1:5432 (trust auth, user postgres):

    .venv/bin/python benchmarks/workers.py [--trials 8]

Writes ``benchmarks/results/workers.json`` and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = ROOT.parent / "shared" / "data" / "mars_ai4mars_64x128.npz"  # benchmark data only, never committed
PG = "postgresql+psycopg2://postgres@127.0.0.1:5432"


def admin(*statements: str) -> None:
    """Runs statements on the server's maintenance database (a fresh connection each time)."""
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres", connect_timeout=3)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()


def create(folder: Path, name: str, trials: int, storage: str, uri: str) -> None:
    from ablate import tracking
    from ablate.study.files import load_study_file
    from ablate.study.orchestrate import run_study

    body = {"name": name, "base": str(ROOT / "ablations/presets/unet-baseline.yaml"), "trials": trials,
            "budget": {"epochs": 1, "early_stopping": 0, "data_limit": 64},
            "sampler": {"type": "random", "seed": 0}, "pruner": {"type": "none"},
            "space": {"model.skip.type": {"type": "categorical", "choices": ["concat", "add", "multiply"]},
                      "optimizer.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body))
    data = [f"data.path={REAL_DATA}"] if REAL_DATA.is_file() else []
    plan = load_study_file(path, ["model.filters=4", "model.depth=2", "augment=[]", "tracking.mask_every=0",
                                  "tracking.log_model=false", "train.batch_size=16", *data])
    tracking.setup(uri)
    run_study(plan, storage, workers=0, tracking_uri=uri)


def run_workers(folder: Path, name: str, n: int, storage: str, uri: str) -> float:
    """Starts ``n`` workers as ``ablate study run --workers n`` does (a core share each); waits."""
    from ablate.campaign import worker_env

    cmd = [sys.executable, "-m", "ablate.cli", "worker", "--study", name, "--storage", storage,
           "--tracking-uri", uri, "--quiet"]
    t0 = time.perf_counter()
    procs = [subprocess.Popen(cmd, cwd=folder, env={**worker_env(i, n), "PYTHONPATH": str(ROOT)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(n)]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"a worker failed: exit codes {codes}")
    return time.perf_counter() - t0


def measure(folder: Path, n: int, trials: int, storage: str, uri: str) -> dict[str, Any]:
    import optuna
    from optuna.trial import TrialState

    from ablate.study.runner import budget_trials

    name = f"workers_{n}"
    create(folder, name, trials, storage, uri)
    wall = run_workers(folder, name, n, storage, uri)
    done = [t for t in budget_trials(optuna.load_study(study_name=name, storage=storage).get_trials())
            if t.state == TrialState.COMPLETE]
    span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
    return {"workers": n, "trials": len(done), "wall_s": round(wall, 1), "trial_span_s": round(span, 1),
            "trials_per_hour_wall": round(len(done) / wall * 3600, 1),
            "trials_per_hour_trials": round(len(done) / span * 3600, 1),
            "trials_by_worker": _by_worker(done)}


def _by_worker(trials: list[Any]) -> list[int]:
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.user_attrs.get("worker", "?")] = counts.get(t.user_attrs.get("worker", "?"), 0) + 1
    return sorted(counts.values(), reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    args = parser.parse_args()

    names = [f"ablate_bench_{uuid.uuid4().hex[:8]}_{kind}" for kind in ("optuna", "mlflow")]
    admin(*(f'CREATE DATABASE "{name}"' for name in names))
    try:
        storage, uri = (f"{PG}/{n}" for n in names)
        with tempfile.TemporaryDirectory() as tmp:
            runs = [measure(Path(tmp), n, args.trials, storage, uri) for n in (1, 2)]
    finally:
        admin(*(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' for name in names))
    one, two = runs
    result = {
        "benchmark": "workers",
        "study": {"trials": args.trials, "epochs": 1, "data_limit": 64, "model": "unet filters 4 depth 2",
                  "storage": "PostgreSQL 127.0.0.1 (Optuna and MLflow, separate databases)"},
        "runs": runs,
        "ratio_wall": round(two["trials_per_hour_wall"] / one["trials_per_hour_wall"], 2),
        "ratio_trials": round(two["trials_per_hour_trials"] / one["trials_per_hour_trials"], 2),
        "machine": {"platform": platform.platform(), "cpus": len(os.sched_getaffinity(0))},
    }
    out = ROOT / "benchmarks" / "results" / "workers.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
