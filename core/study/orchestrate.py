"""``ablate study run``: create or resume a study, run its trials on the campaign engine (in this
process or in worker processes), then write the report and close the parent run."""

from __future__ import annotations

import optuna
from mlflow.tracking import MlflowClient

from ablate import tracking
from ablate.campaign import PARENT, Launch, note_failure, reconcile, resumable, run_round
from ablate.errors import AblateError, DataError
from ablate.storage import load_study, open_storage, redact, resolve_storage_url
from ablate.study.report import build_report
from ablate.study.runner import counts, finish_parent, has_budget, plan_of, prepare, study_round, study_trials
from ablate.study.space import StudyDef


def run_study(plan: StudyDef, storage_url: str | None = None, workers: int = 1, timeout: float | None = None,
              tracking_uri: str | None = None, report_dir: str | None = None, verbose: int | None = 0,
              report: bool = True) -> optuna.Study:
    """Runs ``plan`` until its trial budget is used (or ``timeout`` seconds); returns the study.

    ``workers=0`` only creates (or updates) the study and prints the command that adds workers.
    Call ``tracking.setup`` first.

    Raises:
        DataError: the data file is unusable (checked before the study or its parent run exist).
        TrialsFailed: trials failed for a reason that fails every trial; the parent run ends FAILED.
        AblateError: no trial completed and some failed; the parent ends FAILED, no report is written.
    """
    check_data(plan)
    storage_url = resolve_storage_url(storage_url)
    study = prepare(plan, open_storage(storage_url), timeout)
    c = counts(study, plan)
    print(f"study '{plan.name}': {c.done} of {plan.n_trials} trials done, {c.running} running; "
          f"sampler {plan.sampler['type']}, pruner {plan.pruner['type']}; storage {redact(storage_url)}")
    uri = tracking.resolve_tracking_uri(tracking_uri)
    if workers == 0:
        print(f"add workers (on any machine that reaches both stores) with:\n  ablate worker --study {plan.name} "
              f"--storage {redact(storage_url)} --tracking-uri {redact(uri)}")
        return study
    # Trials run here are seeded exactly as the file says (seed offset 0); workers get 0..N-1.
    launch = Launch(storage_url, workers, uri, verbose=verbose or 0)
    with resumable(study, kept=lambda: f"{counts(study, plan).done} trials kept",
                   end=lambda status: finish_parent(study, plan, status)):
        run_round(study, study_trials(seed_offset=0), study_round(study, plan), launch)
    reconcile(study)
    _fail_if_nothing_completed(study, plan)
    if report:
        out, summary = build_report(study, report_dir)
        print(summary)
        print(f"report: {out}/ (also on the parent run's artifacts under report/)")
    finish_parent(study, plan)
    exp_id = MlflowClient().get_run(study.user_attrs[PARENT]).info.experiment_id
    print(f"MLflow: {tracking.experiment_link(uri, exp_id)}"
          + ("  (start the UI with `ablate ui`)" if not uri.startswith("http") else ""))
    return study


def check_data(plan: StudyDef) -> None:
    """Checks the data file of the base spec (and each choice of a ``data.path`` space key) from
    its headers (``ablate.data.loader.check_header``), before the study or its parent run exist.

    Specs were validated when the file was loaded (every choice of every key, see
    ``ablate.study.files.check_space``); a bad data file would otherwise fail every trial.
    """
    from ablate.data.loader import check_header

    paths = {plan.base["data"].get("path")}
    if "data.path" in plan.params:
        param = plan.params["data.path"]
        paths |= {param.value(label) for label in param.labels()}
    for path in sorted(p for p in paths if p):
        try:
            check_header(path, plan.task if plan.base.get("task") is not None else None)  # as the base spec says
        except DataError as e:
            raise DataError(f"study '{plan.name}': {e} No study was created.") from None


def _fail_if_nothing_completed(study: optuna.Study, plan: StudyDef) -> None:
    """No report of a study whose trials all failed: its parent run ends FAILED (even if the
    last worker already ended it FINISHED when the budget ran out) and the command fails."""
    c = counts(study, plan)
    if c.complete or not (c.failed or c.pruned):
        return
    error = AblateError(f"no trial of study '{plan.name}' completed ({c.failed} failed, {c.pruned} pruned); no "
                        f"report written. The trials' 'error' tag in MLflow (or 'ablate.error' and 'infeasible' "
                        f"in the dashboard) says why.")
    note_failure(study, error)
    finish_parent(study, plan, "FAILED")
    MlflowClient().set_terminated(study.user_attrs[PARENT], "FAILED")
    raise error


def report_study(name: str, storage_url: str | None = None, out_dir: str | None = None) -> tuple[str, str]:
    """``ablate study report NAME``: reconcile, rebuild the report, close a finished study."""
    study = load_study(name, open_storage(storage_url))
    plan_of(study)  # a clear error for an ablation queue or a foreign study
    reconcile(study)
    out, summary = build_report(study, out_dir)
    has_budget(study)  # ends the parent run if nothing is left to run
    return str(out), summary
