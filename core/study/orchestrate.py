"""``ablate study run``: create or resume a study, run its trials in this process or in worker
processes, show progress, then write the report and close the parent run."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import optuna
from optuna.trial import FrozenTrial
from tqdm import tqdm

from core import tracking
from core.storage import HEARTBEAT_S, open_storage, redact, resolve_storage_url
from core.study.report import build_report, trial_line
from core.study.runner import (
    SURPLUS,
    Counts,
    StudyObjective,
    counts,
    finish_parent,
    has_budget,
    plan_of,
    prepare,
    reconcile,
)
from core.study.space import StudyDef


def run_study(plan: StudyDef, storage_url: str | None = None, workers: int = 1, timeout: float | None = None,
              tracking_uri: str | None = None, report_dir: str | None = None, verbose: int | None = 0,
              report: bool = True) -> optuna.Study:
    """Runs ``plan`` until its trial budget is used (or ``timeout`` seconds); returns the study.

    ``workers=0`` only creates (or updates) the study and prints the command that adds workers.
    Call ``tracking.setup`` first.
    """
    storage_url = resolve_storage_url(storage_url)
    study = prepare(plan, open_storage(storage_url), timeout, tracking_uri)
    c = counts(study, plan)
    print(f"study '{plan.name}': {c.done} of {plan.n_trials} trials done, {c.running} running; "
          f"sampler {plan.sampler['type']}, pruner {plan.pruner['type']}; storage {redact(storage_url)}")
    uri = tracking.resolve_tracking_uri(tracking_uri)
    if workers == 0:
        print(f"add workers (on any machine that reaches both stores) with:\n  ablate worker --study {plan.name} "
              f"--storage {redact(storage_url)} --tracking-uri {redact(uri)}")
        return study
    try:
        if workers == 1:
            _run_inline(study, plan, verbose)
        else:
            _run_workers(study, plan, storage_url, workers, uri)
    except KeyboardInterrupt:
        reconcile(study)
        finish_parent(study, plan, "KILLED")
        print(f"interrupted: run the same command again to resume ({counts(study, plan).done} trials kept)")
        raise
    reconcile(study)
    if report:
        out, summary = build_report(study, report_dir)
        print(summary)
        print(f"report: {out}/ (also on the parent run's artifacts under report/)")
    finish_parent(study, plan)
    parent = study.user_attrs["mlflow_parent_run_id"]
    from mlflow.tracking import MlflowClient

    exp_id = MlflowClient().get_run(parent).info.experiment_id
    print(f"MLflow: {tracking.experiment_link(uri, exp_id)}"
          + ("  (start the UI with `ablate ui`)" if not uri.startswith("http") else ""))
    return study


class Progress:
    """A bar of finished trials with pruned / failed counts and the best value so far."""

    def __init__(self, study: optuna.Study, plan: StudyDef) -> None:
        self.study, self.plan = study, plan
        c = counts(study, plan)
        self.bar = tqdm(total=plan.n_trials, initial=min(c.done, plan.n_trials), desc=plan.name, unit="trial",
                        dynamic_ncols=True, file=sys.stderr)
        self._show(c)

    def refresh(self) -> Counts:
        c = counts(self.study, self.plan)
        self.bar.n = min(c.done, self.plan.n_trials)
        self._show(c)
        return c

    def on_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """An Optuna callback: one line per finished trial, then the bar."""
        if not trial.user_attrs.get(SURPLUS):
            self.bar.write(f"  trial #{trial.number}: {trial_line(trial, self.plan)}")
        self.refresh()

    def _show(self, c: Counts) -> None:
        self.bar.set_postfix_str(f"pruned {c.pruned}, failed {c.failed}, running {c.running}; best {c.best}")

    def close(self) -> None:
        self.bar.close()


def _run_inline(study: optuna.Study, plan: StudyDef, verbose: int | None) -> None:
    """Trials in this process, seeded exactly as the file says (seed offset 0)."""
    objective = StudyObjective(study, verbose=verbose or 0, seed_offset=0)
    progress = Progress(study, plan)
    try:
        while True:
            reconcile(study)
            if has_budget(study):
                study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[progress.on_trial])
            elif progress.refresh().running:
                time.sleep(HEARTBEAT_S)  # another worker's trial: wait for it to end or turn stale
            else:
                break
    finally:
        progress.close()


def _run_workers(study: optuna.Study, plan: StudyDef, storage_url: str, workers: int, tracking_uri: str) -> None:
    """Starts ``workers`` ``ablate worker`` processes (seed offsets 0..N-1) and follows them."""
    cmd = [sys.executable, "-m", "core.cli.main", "worker", "--study", study.study_name, "--storage", storage_url,
           "--tracking-uri", tracking_uri, "--quiet"]
    procs = [subprocess.Popen(cmd, env=worker_env(i, workers)) for i in range(workers)]
    progress = Progress(study, plan)
    try:
        while any(p.poll() is None for p in procs):
            time.sleep(2)
            progress.refresh()
        progress.refresh()
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()  # a worker ends its current run KILLED on SIGTERM
        for p in procs:
            p.wait(timeout=120)
        raise
    finally:
        progress.close()


def worker_env(index: int, workers: int) -> dict[str, str]:
    """The environment of worker ``index`` of ``workers`` started on this machine: its seed offset
    and, unless already set, an equal share of the CPU cores for TensorFlow's op threads (several
    processes that each use every core mostly contend)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    env = {**os.environ, "ABLATE_WORKER_INDEX": str(index)}
    env.setdefault("TF_NUM_INTRAOP_THREADS", str(max(1, cores // workers)))
    return env


def report_study(name: str, storage_url: str | None = None, out_dir: str | None = None) -> tuple[str, str]:
    """``ablate study report NAME``: reconcile, rebuild the report, close a finished study."""
    from core.storage import load_study

    study = load_study(name, open_storage(storage_url))
    plan_of(study)  # a clear error for an ablation queue or a foreign study
    reconcile(study)
    out, summary = build_report(study, out_dir)
    has_budget(study)  # ends the parent run if nothing is left to run
    return str(out), summary
