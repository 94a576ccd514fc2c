"""The local SQLite study storage under several worker processes (``ablate.storage``).

Optuna takes a queued trial by reading that it is WAITING and then writing RUNNING. On SQLite,
whose driver starts a transaction only at the first write, two workers can both read WAITING and
both take the trial: it runs twice, with two MLflow runs for one (arm, seed). ``open_storage``
makes every SQLite transaction take the write lock when it begins, so that the read and the write
are one step. The test makes the two reads meet: each storage pauses after its read until the
other has read too (or two seconds pass, as when the other waits for the lock).
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import optuna
import pytest
from optuna.storages._rdb import models
from optuna.trial import TrialState

from ablate.storage import open_storage


def test_two_workers_never_take_one_queued_trial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="race", storage=open_storage(url))
    study.enqueue_trial({}, user_attrs={"x": 1})
    (trial_id,) = [t._trial_id for t in study.get_trials(deepcopy=False)]
    storages = [open_storage(url), open_storage(url)]  # one engine each, as two worker processes have
    meet = threading.Barrier(2, timeout=2)
    find = models.TrialModel.find_or_raise_by_id

    def read_then_wait(trial_id: int, session, for_update: bool = False):  # noqa: ANN001, ANN202
        trial = find(trial_id, session, for_update)
        if for_update:  # Optuna's read before the state change
            with contextlib.suppress(threading.BrokenBarrierError):
                meet.wait()
        return trial

    monkeypatch.setattr(models.TrialModel, "find_or_raise_by_id", read_then_wait)
    took: list[bool] = []
    threads = [threading.Thread(target=lambda s=s: took.append(s.set_trial_state_values(trial_id, TrialState.RUNNING)))
               for s in storages]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(took) == [False, True], took  # one worker took it; the other found it RUNNING
