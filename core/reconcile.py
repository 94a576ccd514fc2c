"""Crash consistency between the Optuna queue and MLflow, for ablations and studies.

A SIGKILLed worker leaves its trial RUNNING (until the heartbeat fails it) and its MLflow run
RUNNING (forever). ``reconcile`` fails stale trials (the storage's retry callback re-queues
them) and ends every MLflow run whose trial is no longer running (``core.doctor``).
"""

from __future__ import annotations

import optuna


def reconcile(study: optuna.Study) -> int:
    """Fails stale trials and ends orphaned MLflow runs; returns how many runs it ended."""
    from core.doctor import fail_stale
    from core.doctor import reconcile as end_orphan_runs

    fail_stale(study)
    return end_orphan_runs(study)
