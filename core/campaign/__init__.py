"""One engine for campaigns: a queue of trials, a parent MLflow run, workers, crash reconciliation.

Ablations and studies sit on top of it and hand it what a trial is; it never imports them.

- ``queue``: the Optuna study as a queue (open it, enqueue what is missing, its kind);
- ``kinds``: ``TrialKind`` (how a worker runs a trial), ``Round`` and ``Counts`` (what a round is
  and where it stands), ``tally``;
- ``parent``: the parent run (create or resume, end FINISHED / KILLED / FAILED);
- ``worker``: the worker loop (``ablate worker``, and trials run inline);
- ``liveness``: the worker's heartbeat file, for a platform's liveness and readiness probes;
- ``failfast``: a campaign stopped when its trials fail for a reason that fails every trial;
- ``execute``: a round in this process or in N worker processes, with a progress bar; Ctrl-C;
- ``reconcile``: stale trials failed and re-queued, runs of ended trials ended;
- ``runs``: paginated MLflow run listings.

Every private or unstable Optuna / MLflow / optuna-dashboard API it relies on is in ``ablate.adapters``.

Example:
    >>> study = open_queue("ablation.skips", storage, kind="ablation")
    >>> ensure_parent(study, ParentRun("skips"))
    >>> enqueue_missing(study, pairs, key=pair_key)
    >>> with resumable(study, kept=lambda: "runs kept"):
    ...     run_round(study, ARMS, Round("skips arms", "run", counts=round_counts), Launch(url))
    >>> end_parent(study, "FINISHED")
"""

from ablate.campaign.execute import Launch, resumable, run_inline, run_round, run_workers, worker_env
from ablate.campaign.failfast import TrialsFailed
from ablate.campaign.kinds import Counts, Key, Objective, Round, TrialKind, has_waiting, tally
from ablate.campaign.liveness import Heartbeat
from ablate.campaign.parent import (
    PARENT,
    TRACKING_URI,
    ParentRun,
    end_parent,
    ensure_parent,
    note_failure,
    parent_of,
    require_parent,
)
from ablate.campaign.queue import KIND, enqueue_missing, kind_of, open_queue
from ablate.campaign.reconcile import RUN_ID, Finding, child_tags, reconcile, remember_run, tidy
from ablate.campaign.runs import child_runs, running_runs, search_all
from ablate.campaign.worker import retry_interrupted, select_kind, work, work_on

__all__ = [
    "KIND", "PARENT", "RUN_ID", "TRACKING_URI", "Counts", "Finding", "Heartbeat", "Key", "Launch", "Objective",
    "ParentRun", "Round", "TrialKind", "TrialsFailed", "child_runs", "child_tags", "end_parent", "enqueue_missing",
    "ensure_parent", "has_waiting", "kind_of", "note_failure", "open_queue", "parent_of", "reconcile", "remember_run",
    "require_parent", "resumable", "retry_interrupted", "run_inline", "run_round", "run_workers", "running_runs",
    "search_all", "select_kind", "tally", "tidy", "work", "work_on", "worker_env",
]
