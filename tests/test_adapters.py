"""Pins the private and unstable library APIs that ``ablate.adapters`` holds.

Each installed version must lie in the range the adapters were written for, and each private
attribute or function must still exist and do what the project uses it for. A failure here
after an upgrade names the entry of ``core/adapters.py`` to look at again.
"""

from __future__ import annotations

import importlib.metadata
import re
import time
import warnings
from pathlib import Path

import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient
from mlflow.utils import mlflow_tags
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState, create_trial
from packaging.version import Version

from ablate import adapters


@pytest.mark.parametrize("package", sorted(adapters.TESTED))
def test_installed_version_is_in_the_range_the_adapters_were_written_for(package: str) -> None:
    low, high = adapters.TESTED[package]
    installed = Version(importlib.metadata.version(package))
    assert Version(low) <= installed < Version(high), (
        f"{package} {installed} is outside [{low}, {high}): check every entry of core/adapters.py against it, "
        f"then widen TESTED")


# --- Optuna ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", adapters.RDB_CALLS)
def test_every_storage_call_that_resilience_retries_exists_and_is_wrapped(name: str) -> None:
    from ablate.resilience import ReconnectingRDBStorage

    original = getattr(RDBStorage, name, None)
    assert callable(original), f"RDBStorage.{name} is gone"
    assert getattr(ReconnectingRDBStorage, name).__wrapped__ is original


def _heartbeat_storage(tmp_path: Path) -> RDBStorage:
    return RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}", heartbeat_interval=1, grace_period=1,
                      heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3))


def test_trial_id_stale_trials_and_their_retries(tmp_path: Path) -> None:
    storage = _heartbeat_storage(tmp_path)
    study = optuna.create_study(study_name="pins", storage=storage)
    silent = study.ask()  # never beats: liveness unknown, never stale
    beaten = study.ask()
    study_id = storage.get_study_id_from_name("pins")
    assert adapters.trial_id(beaten) == storage.get_trial_id_from_study_id_trial_number(study_id, beaten.number)
    assert adapters.trial_id(study.trials[1]) == adapters.trial_id(beaten)  # a FrozenTrial has it too
    storage.record_heartbeat(adapters.trial_id(beaten))
    assert adapters.stale_trial_numbers(study, storage) == set()
    time.sleep(2.2)  # past the grace period
    assert adapters.stale_trial_numbers(study, storage) == {beaten.number}

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the adapter silences the experimental warning
        adapters.fail_stale(study)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.RUNNING, TrialState.FAIL, TrialState.WAITING]
    assert adapters.retried_from(trials[2]) == beaten.number and adapters.retried_from(trials[1]) is None
    assert adapters.retry_history(trials[2]) == [beaten.number] and adapters.retry_history(trials[0]) == []
    assert silent.number == 0


def test_retry_readers_read_the_system_attributes_the_callback_writes() -> None:
    retry = create_trial(state=TrialState.WAITING, system_attrs={"failed_trial": 1, "retry_history": [1, 4]})
    assert adapters.retried_from(retry) == 1 and adapters.retry_history(retry) == [1, 4]


def test_a_storage_without_heartbeats_tells_no_stale_trials(tmp_path: Path) -> None:
    for storage in (optuna.storages.InMemoryStorage(), RDBStorage(f"sqlite:///{tmp_path / 'plain.db'}")):
        study = optuna.create_study(storage=storage)
        study.ask()
        assert adapters.stale_trial_numbers(study, storage) is None


def test_metric_names_are_set_without_an_experimental_warning() -> None:
    study = optuna.create_study()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        adapters.set_metric_names(study, ["val_mIoU of one (arm, seed)"])
    assert study.metric_names == ["val_mIoU of one (arm, seed)"]


# --- optuna-dashboard ----------------------------------------------------------------------------

def test_notes_on_a_study_and_on_a_live_trial_round_trip(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'notes.db'}")
    long = "\n".join(f"- variant {i} vs baseline: no evidence of a difference" for i in range(100))  # > 2045 chars
    adapters.save_note(study, long)
    adapters.save_note(study, long + "\nrevised")  # a second version replaces the first
    assert adapters.get_note(study) == long + "\nrevised"

    def objective(trial: optuna.Trial) -> float:
        adapters.save_note(trial, "arm skip=add, seed 1")
        assert adapters.get_note(trial) == "arm skip=add, seed 1"
        return 0.5

    study.optimize(objective, n_trials=1)
    assert study.trials[0].state == TrialState.COMPLETE  # the assertion inside did not fail the trial
    assert adapters.get_note(study) == long + "\nrevised"  # a trial's note is not the study's


# --- MLflow --------------------------------------------------------------------------------------

def test_system_tags_are_the_ones_mlflow_reads() -> None:
    assert adapters.NOTE_TAG == mlflow_tags.MLFLOW_RUN_NOTE
    assert adapters.PARENT_TAG == mlflow_tags.MLFLOW_PARENT_RUN_ID
    assert adapters.RUN_NAME_TAG == mlflow_tags.MLFLOW_RUN_NAME
    assert adapters.LOGGED_IMAGES_TAG == mlflow_tags.MLFLOW_LOGGED_IMAGES


def _shape(name: str) -> str:
    return re.sub(r"\+timestamp\+\d+\+[0-9a-f-]{36}", "+timestamp+T+UUID", name)


def test_image_files_are_named_and_sized_as_mlflow_logs_them(tmp_path: Path) -> None:
    image = (np.arange(64 * 128 * 3) % 255).astype(np.uint8).reshape(64, 128, 3)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("images", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    client.log_image(run_id, image, key="masks/val", step=3, synchronous=True)
    theirs = sorted(Path(a.path).name for a in client.list_artifacts(run_id, "images"))

    folder = tmp_path / "ours"
    folder.mkdir()
    ours = sorted(adapters.image_files(image, "masks/val", 3, folder))
    assert [_shape(n) for n in ours] == [_shape(n) for n in theirs]
    assert ours[0].startswith("masks~val+step+3+timestamp+")
    from PIL import Image

    for mine, logged in zip(ours, theirs, strict=True):  # the compressed copy, then the full image
        local = client.download_artifacts(run_id, f"images/{logged}", str(tmp_path / "dl"))
        assert Image.open(folder / mine).size == Image.open(local).size
    assert client.get_run(run_id).data.tags.get(adapters.LOGGED_IMAGES_TAG) is not None
