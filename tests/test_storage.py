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
import sys
import threading
from pathlib import Path

import optuna
import pytest
from optuna.storages._rdb import models
from optuna.trial import TrialState

from ablate.errors import AblateError
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


def test_a_read_only_study_file_is_still_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every SQLite transaction begins with the write lock (``BEGIN IMMEDIATE``); a study file that
    cannot be written (a copy brought home from a cluster, a read-only mount) must still be read.
    SQLite's read-only mode stands in for it (a file's mode bits do not stop root, who runs CI).
    A write fails at once, with SQLite's reason: it is not a lost connection to wait out."""
    from ablate import resilience

    path = tmp_path / "optuna.db"
    study = optuna.create_study(study_name="done", storage=open_storage(f"sqlite:///{path}"))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    before = path.read_bytes()
    copy = optuna.load_study(study_name="done", storage=open_storage(f"sqlite:///file:{path}?mode=ro&uri=true"))
    assert [t.state for t in copy.get_trials()] == [TrialState.COMPLETE] * 2
    assert copy.best_trial.number in (0, 1)
    monkeypatch.setattr(resilience.time, "sleep", lambda s: pytest.fail("a read-only file was retried"))
    with pytest.raises(Exception) as failed:  # noqa: PT011 - Optuna's own wrapper; the reason is its cause
        copy.set_user_attr("x", 1)
    assert "attempt to write a readonly database" in str(failed.value.__cause__ or failed.value.__context__)
    assert path.read_bytes() == before


def test_a_postgresql_storage_without_the_team_extra_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg2", None)  # import psycopg2 now raises ImportError
    with pytest.raises(AblateError, match=r"needs psycopg2, which is not installed: run `pip install 'ablate\[team\]'` "
                       r"\(or `make \.venv/\.installed-team`\)\.$") as caught:
        open_storage("postgresql://user:secret@localhost:5432/optuna")
    assert "\n" not in str(caught.value)
