"""``ablate ablation run``: queue the arms, run them (in-process or with worker processes),
show progress, then write the report and close the parent run."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import optuna
from mlflow.tracking import MlflowClient
from tqdm import tqdm

from core import tracking
from core.ablation.design import Ablation
from core.ablation.report import build_report, terminal_table
from core.ablation.runner import counts, prepare
from core.reconcile import reconcile
from core.storage import open_storage, resolve_storage_url


def run_ablation(ab: Ablation, storage_url: str | None = None, workers: int = 1, report_dir: str | None = None,
                 tracking_uri: str | None = None) -> str:
    """Runs every missing (arm, seed) of ``ab``; returns the parent run id."""
    storage_url = resolve_storage_url(storage_url)
    storage = open_storage(storage_url)
    study, parent, queued = prepare(ab, storage)
    c = counts(study, ab)
    print(f"ablation '{ab.name}': {len(ab.arms)} arms x {len(ab.seeds)} seeds = {c['total']} runs; "
          f"{c['done']} already finished, {queued} queued now")
    client = MlflowClient()
    try:
        if workers > 1:
            _run_workers(study, ab, storage_url, workers, tracking_uri)
        c = counts(study, ab)
        if workers == 1 or c["waiting"] or c["running"]:  # leftovers of lost workers run here
            _run_inline(study, ab, storage_url)
    except KeyboardInterrupt:
        client.set_terminated(parent, "KILLED")
        print(f"interrupted: run the same command again to resume ({counts(study, ab)['done']} runs kept)")
        raise
    reconcile(study)
    c = counts(study, ab)
    out, table = build_report(parent, report_dir)
    print(terminal_table(table))
    client.set_terminated(parent, "FINISHED")
    if c["failed"]:
        client.set_tag(parent, "failed_runs", str(c["failed"]))
        print(f"{c['failed']} run(s) failed: they are shown as failed in the report; run again to retry them")
    uri = tracking.resolve_tracking_uri(tracking_uri)
    print(f"report: {out}/report.md (also on the parent run's artifacts under report/)")
    print(f"MLflow: {tracking.experiment_link(uri, client.get_run(parent).info.experiment_id)}"
          + ("  (start the UI with `ablate ui`)" if not uri.startswith("http") else ""))
    return parent


def _bar(ab: Ablation, initial: int, total: int) -> tqdm:
    return tqdm(total=total, initial=initial, desc=f"{ab.name} arms", unit="run", dynamic_ncols=True,
                file=sys.stderr)


def _run_inline(study: optuna.Study, ab: Ablation, storage_url: str) -> None:
    from core.worker import work

    c = counts(study, ab)
    with _bar(ab, c["done"], c["total"]) as bar:
        def on_trial(st: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            state = trial.state.name.lower()
            value = f" val mIoU {trial.value:.4f}" if trial.value is not None else ""
            if trial.user_attrs.get("arm"):
                bar.write(f"  {trial.user_attrs['arm']} seed {trial.user_attrs['seed']}: {state}{value}")
            bar.n = counts(st, ab)["done"]
            bar.refresh()

        while True:
            work(study.study_name, storage_url=storage_url, on_trial=on_trial)
            c = counts(study, ab)
            if not c["running"] and not c["waiting"]:
                break
            # Trials held by other (or killed) workers: wait until they finish or go stale and are re-queued.
            time.sleep(2)
            reconcile(study)


def _run_workers(study: optuna.Study, ab: Ablation, storage_url: str, workers: int, tracking_uri: str | None) -> None:
    """Starts ``workers`` worker processes on the shared queue and follows their progress."""
    cmd = [sys.executable, "-m", "core.cli.main", "worker", "--study", study.study_name, "--storage", storage_url,
           "--quiet"]
    if tracking_uri:
        cmd += ["--tracking-uri", tracking_uri]
    procs = [subprocess.Popen(cmd, env={**os.environ, "ABLATE_WORKER_INDEX": str(i)}) for i in range(workers)]
    c = counts(study, ab)
    try:
        with _bar(ab, c["done"], c["total"]) as bar:
            while any(p.poll() is None for p in procs):
                time.sleep(2)
                bar.n = counts(study, ab)["done"]
                bar.refresh()
            bar.n = counts(study, ab)["done"]
            bar.refresh()
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=60)
        raise
