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
from core.ablation.report import build_report, summary_lines, terminal_table
from core.ablation.runner import (
    Pair,
    all_pairs,
    completed_values,
    counts,
    dashboard_note,
    enqueue_missing,
    prepare,
)
from core.reconcile import reconcile
from core.storage import open_storage, resolve_storage_url


def run_ablation(ab: Ablation, storage_url: str | None = None, workers: int = 1, report_dir: str | None = None,
                 tracking_uri: str | None = None) -> str:
    """Runs every missing (arm, seed) of ``ab`` (in rounds for a sequential design); returns the parent run id."""
    storage_url = resolve_storage_url(storage_url)
    storage = open_storage(storage_url)
    study, parent, queued = prepare(ab, storage)
    client = MlflowClient()
    try:
        if ab.sequential is None:
            c = counts(study, ab)
            print(f"ablation '{ab.name}': {len(ab.arms)} arms x {len(ab.seeds)} seeds = {c['total']} runs; "
                  f"{c['done']} already finished, {queued} queued now")
            _run_pairs(study, ab, all_pairs(ab), storage_url, workers, tracking_uri)
        else:
            _run_sequential(study, ab, storage_url, workers, tracking_uri)
    except KeyboardInterrupt:
        client.set_terminated(parent, "KILLED")
        print(f"interrupted: run the same command again to resume ({counts(study, ab)['done']} runs kept)")
        raise
    reconcile(study)
    c = counts(study, ab)
    out, table = build_report(parent, report_dir)
    print(terminal_table(table))
    for line in summary_lines(table):
        print(line)
    if not table.empty:
        dashboard_note(study, ab, summary_lines(table))
    client.set_terminated(parent, "FINISHED")
    if c["failed"]:
        client.set_tag(parent, "failed_runs", str(c["failed"]))
        print(f"{c['failed']} run(s) failed: they are shown as failed in the report; run again to retry them")
    uri = tracking.resolve_tracking_uri(tracking_uri)
    print(f"report: {out}/report.md and {out}/report.html (also on the parent run's artifacts under report/)")
    print(f"MLflow: {tracking.experiment_link(uri, client.get_run(parent).info.experiment_id)}"
          + ("  (start the UI with `ablate ui`)" if not uri.startswith("http") else ""))
    print("  in the runs table: expand the parent run, add the column best_val_miou, group by tag 'variant'")
    return parent


def _run_pairs(study: optuna.Study, ab: Ablation, pairs: list[Pair], storage_url: str, workers: int,
               tracking_uri: str | None) -> None:
    """Queues the missing ``pairs`` and runs them (worker processes, then leftovers inline)."""
    enqueue_missing(study, ab, pairs)
    if workers > 1:
        _run_workers(study, ab, pairs, storage_url, workers, tracking_uri)
    c = counts(study, ab, pairs)
    if workers == 1 or c["waiting"] or c["running"]:  # leftovers of lost workers run here
        _run_inline(study, ab, pairs, storage_url)
    reconcile(study)


def _run_sequential(study: optuna.Study, ab: Ablation, storage_url: str, workers: int,
                    tracking_uri: str | None) -> None:
    """Rounds of seeds: after each look, settled variants stop and the rest get more seeds.

    The decisions are replayed from the finished values alone (``core.sequential.decide``), so
    a resumed run takes the same decisions; a look that adds no data (failed runs) ends the loop.
    """
    from core.sequential import decide, next_seed_count

    design = ab.sequential
    assert design is not None
    looks = design.looks()
    print(f"ablation '{ab.name}': {len(ab.arms)} arms, sequential seeds {looks[0]}..{looks[-1]} (rounds at "
          f"{looks}); settled variants stop after each round")
    active, n = ab.variants, looks[0]
    while True:
        arms = [ab.baseline, *active]
        _run_pairs(study, ab, [(a, s) for a in arms for s in ab.seeds[:n]], storage_url, workers, tracking_uri)
        decisions = decide(design, paired_deltas(completed_values(study, ab), ab))
        for arm in active:
            d = decisions[arm.key]
            print(f"  look at {n} seeds: {arm.key}: {d.status} ({d.reason})")
        active = [a for a in ab.variants if decisions[a.key].status == "continue"]
        following = next_seed_count(design, decisions)
        if following is None or following <= n or not active:
            return
        n = following


def paired_deltas(values: dict[str, dict[int, float]], ab: Ablation) -> dict[str, list[float]]:
    """Each variant's per-seed differences to the baseline, in seed order, over the seeds both have."""
    base = values[ab.baseline.key]
    return {a.key: [values[a.key][s] - base[s] for s in ab.seeds if s in values[a.key] and s in base]
            for a in ab.variants}


def _bar(ab: Ablation, initial: int, total: int) -> tqdm:
    return tqdm(total=total, initial=initial, desc=f"{ab.name} arms", unit="run", dynamic_ncols=True,
                file=sys.stderr)


def _run_inline(study: optuna.Study, ab: Ablation, pairs: list[Pair], storage_url: str) -> None:
    from core.worker import work

    c = counts(study, ab, pairs)
    with _bar(ab, c["done"], c["total"]) as bar:
        def on_trial(st: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            state = trial.state.name.lower()
            value = f" val mIoU {trial.value:.4f}" if trial.value is not None else ""
            if trial.user_attrs.get("arm"):
                bar.write(f"  {trial.user_attrs['arm']} seed {trial.user_attrs['seed']}: {state}{value}")
            bar.n = counts(st, ab, pairs)["done"]
            bar.refresh()

        while True:
            work(study.study_name, storage_url=storage_url, on_trial=on_trial)
            c = counts(study, ab, pairs)
            if not c["running"] and not c["waiting"]:
                break
            # Trials held by other (or killed) workers: wait until they finish or go stale and are re-queued.
            time.sleep(2)
            reconcile(study)


def _run_workers(study: optuna.Study, ab: Ablation, pairs: list[Pair], storage_url: str, workers: int,
                 tracking_uri: str | None) -> None:
    """Starts ``workers`` worker processes on the shared queue and follows their progress."""
    cmd = [sys.executable, "-m", "core.cli.main", "worker", "--study", study.study_name, "--storage", storage_url,
           "--quiet"]
    if tracking_uri:
        cmd += ["--tracking-uri", tracking_uri]
    procs = [subprocess.Popen(cmd, env={**os.environ, "ABLATE_WORKER_INDEX": str(i)}) for i in range(workers)]
    c = counts(study, ab, pairs)
    try:
        with _bar(ab, c["done"], c["total"]) as bar:
            while any(p.poll() is None for p in procs):
                time.sleep(2)
                bar.n = counts(study, ab, pairs)["done"]
                bar.refresh()
            bar.n = counts(study, ab, pairs)["done"]
            bar.refresh()
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=60)
        raise
