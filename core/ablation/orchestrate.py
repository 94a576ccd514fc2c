"""``ablate ablation run``: queue the arms, run them on the campaign engine (in this process or
with worker processes; in rounds for a sequential design), then write the report and close
the parent run."""

from __future__ import annotations

import optuna
from mlflow.tracking import MlflowClient

from ablate import tracking
from ablate.ablation.design import Ablation
from ablate.ablation.designs import DESIGNS
from ablate.ablation.report import build_report, summary_lines, terminal_table
from ablate.ablation.runner import (
    ARMS,
    Pair,
    all_pairs,
    completed_values,
    counts,
    dashboard_note,
    enqueue_missing,
    pairs_round,
    prepare,
)
from ablate.campaign import Launch, end_parent, note_failure, reconcile, resumable, run_round
from ablate.errors import AblateError, DataError, SpecError
from ablate.sequential import SequentialDesign, decide, next_seed_count
from ablate.storage import open_storage, redact, resolve_storage_url


def run_ablation(ab: Ablation, storage_url: str | None = None, workers: int = 1, report_dir: str | None = None,
                 tracking_uri: str | None = None) -> str:
    """Runs every missing (arm, seed) of ``ab`` (in rounds for a sequential design); returns the parent run id.

    ``workers=0`` only queues them (``queue_only``).

    Raises:
        DataError: an arm's data file is unusable (checked before anything is queued or created).
        TrialsFailed: trials failed for a reason that fails every trial; the parent run ends FAILED.
        AblateError: no run completed; the parent run ends FAILED and no report is written.
    """
    if workers == 0:
        return queue_only(ab, storage_url, tracking_uri)
    check_data(ab)
    check_arms(ab)
    launch = Launch(resolve_storage_url(storage_url), workers, tracking_uri)
    study, parent, queued = prepare(ab, open_storage(launch.storage_url))
    with resumable(study, kept=lambda: f"{counts(study, ab).complete} runs kept"):
        if ab.sequential is not None:
            _run_sequential(study, ab, ab.sequential, launch)
        else:
            c = counts(study, ab)
            print(f"ablation '{ab.name}': {len(ab.arms)} arms x {len(ab.seeds)} seeds = {c.total} runs; "
                  f"{c.complete} already finished, {queued} queued now")
            _run_pairs(study, ab, all_pairs(ab), launch)
    reconcile(study)
    _finish(study, ab, parent, report_dir, tracking_uri)
    return parent


def queue_only(ab: Ablation, storage_url: str | None = None, tracking_uri: str | None = None) -> str:
    """``--workers 0``: the queue, the parent run and every missing (arm, seed) queued; nothing runs here.

    ``ablate worker`` processes anywhere (a Kubernetes worker Job) take the runs; the same command
    with ``--workers 1`` afterwards finds them done and writes the report. Call ``tracking.setup``
    first. Returns the parent run id.

    Raises:
        AblateError: a sequential design (its rounds are decided here, between rounds).
        DataError, SpecError: as ``run_ablation``, before anything is queued.
    """
    if ab.sequential is not None:
        raise AblateError(f"ablation '{ab.name}': --workers 0 queues a fixed design, but this one is sequential "
                          f"(seeds in rounds, decided between rounds by the running command); run it with "
                          f"--workers N, or give --seeds N for a fixed design.")
    check_data(ab)
    check_arms(ab)
    url = resolve_storage_url(storage_url)
    study, parent, queued = prepare(ab, open_storage(url))
    c = counts(study, ab)
    uri = tracking.resolve_tracking_uri(tracking_uri)
    print(f"ablation '{ab.name}': {len(ab.arms)} arms x {len(ab.seeds)} seeds = {c.total} runs; {c.complete} "
          f"finished, {queued} queued now; parent run {parent}")
    print(f"add workers (on any machine that reaches both stores) with:\n  ablate worker --study {study.study_name} "
          f"--storage {redact(url)} --tracking-uri {redact(uri)}")
    print("when they are done, run this command again with --workers 1: it writes the report and ends the parent run")
    return parent


def check_data(ab: Ablation) -> None:
    """Checks every arm's data file from its headers (``ablate.data.loader.check_header``).

    Before the queue, the parent run or a report exist: a missing, corrupt or wrongly shaped
    file is one error here rather than a failure in every trial. (Arm specs were validated when
    the file was loaded.)
    """
    from ablate.data.loader import check_header

    # Each file against the task its arms give (a task: section), else only its layout (the task is inferred).
    files = {(arm.spec.data.path, arm.spec.task) for arm in ab.arms if arm.spec.data.path}
    for path, task in sorted(files, key=lambda f: (f[0], f[1].to_json() if f[1] else "")):
        try:
            check_header(path, task)
        except DataError as e:
            users = [arm.key for arm in ab.arms if arm.spec.data.path == path]
            which = "every arm" if len(users) == len(ab.arms) else f"arm(s) {', '.join(users)[:80]}"
            raise DataError(f"ablation '{ab.name}' ({which}): {e} Nothing was queued.") from None


def check_arms(ab: Ablation) -> None:
    """Runs every arm's build-time checks (``ablate.spec.check_buildable``) before anything is queued.

    The file's validation (names, keys, types, ranges) ran when it was loaded, without
    TensorFlow; a constructor's own checks need the blocks, and a campaign is about to train.
    """
    from ablate.spec import check_buildable

    for arm in ab.arms:
        try:
            check_buildable(arm.spec)
        except SpecError as e:
            raise SpecError(f"ablation '{ab.name}', arm {arm.key}: {e} Nothing was queued.") from None


def _finish(study: optuna.Study, ab: Ablation, parent: str, report_dir: str | None, tracking_uri: str | None) -> None:
    """The report, the dashboard's verdicts, the parent run ended FINISHED, and where to look.

    With no completed run there is nothing to report: the parent ends FAILED and no (empty)
    report is written.
    """
    c = counts(study, ab)
    if not c.complete:
        error = AblateError(f"no run of ablation '{ab.name}' completed ({c.failed} of {c.total} failed); no report "
                            f"written. The failed runs' 'error' tag in MLflow says why; run the same command again "
                            f"to retry them.")
        note_failure(study, error)
        end_parent(study, "FAILED")
        raise error
    out, table = build_report(parent, report_dir)
    print(terminal_table(table))
    for line in summary_lines(table):
        print(line)
    if not table.empty:
        dashboard_note(study, ab, summary_lines(table))
    end_parent(study, "FINISHED", tags={"failed_runs": str(c.failed)} if c.failed else None)
    if c.failed:
        print(f"{c.failed} run(s) failed: they are shown as failed in the report; run again to retry them")
    uri = tracking.resolve_tracking_uri(tracking_uri)
    client = MlflowClient()
    print(f"report: {out}/report.md and {out}/report.html (also on the parent run's artifacts under report/)")
    print(f"MLflow: {tracking.experiment_link(uri, client.get_run(parent).info.experiment_id)}"
          + ("  (start the UI with `ablate ui`)" if not uri.startswith("http") else ""))
    print("  in the runs table: expand the parent run, add the column best_val_miou, group by tag 'variant'")


def _run_pairs(study: optuna.Study, ab: Ablation, pairs: list[Pair], launch: Launch) -> None:
    """Queues the missing ``pairs`` (the queue grows round by round) and runs them."""
    enqueue_missing(study, ab, pairs)
    run_round(study, ARMS, pairs_round(ab, pairs), launch)


def _run_sequential(study: optuna.Study, ab: Ablation, design: SequentialDesign, launch: Launch) -> None:
    """Rounds of seeds: after each look, settled variants stop and the rest get more seeds.

    The decisions are replayed from the finished values alone (``ablate.sequential.decide``), so
    a resumed run takes the same decisions; a look that adds no data (failed runs) ends the loop.
    """
    looks = design.looks()
    print(f"ablation '{ab.name}': {len(ab.arms)} arms, sequential seeds {looks[0]}..{looks[-1]} (rounds at "
          f"{looks}); settled variants stop after each round")
    active, n = ab.variants, looks[0]
    while True:
        arms = [ab.baseline, *active]
        _run_pairs(study, ab, [(a, s) for a in arms for s in ab.seeds[:n]], launch)
        decisions = decide(design, paired_deltas(completed_values(study, ab), ab))
        for arm in active:
            d = decisions[arm.key]
            print(f"  look at {n} seeds: {arm.key}: {d.status} ({d.reason})")
        active = [a for a in ab.variants if decisions[a.key].status == "continue"]
        if active and DESIGNS.get(ab.design).complete_blocks:
            active = ab.variants  # settled cells keep running: every seed stays a complete block
        following = next_seed_count(design, decisions)
        if following is None or following <= n or not active:
            return
        n = following


def paired_deltas(values: dict[str, dict[int, float]], ab: Ablation) -> dict[str, list[float]]:
    """Each variant's per-seed differences to the baseline, in seed order, over the seeds both have."""
    base = values[ab.baseline.key]
    return {a.key: [values[a.key][s] - base[s] for s in ab.seeds if s in values[a.key] and s in base]
            for a in ab.variants}
