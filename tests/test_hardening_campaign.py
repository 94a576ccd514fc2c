"""Campaigns (``ablate ablation run``, ``ablate study run``) with bad input or trials that cannot succeed.

The promise (issue 11): bad data or a bad arm is one ``ablate: error:`` line, exit 2, before any
parent run, Optuna study or report exists; trials that fail for a reason that fails every trial
stop the campaign after one or two of them, end the parent run FAILED with the reason, leave
nothing RUNNING and write no (empty) report; a worker process that cannot start stops those
already started. Everything runs in this process on tiny specs; no model trains to the end.
"""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pytest
import yaml
from campaign_toy import TOY
from helpers import ROOT, TINY_MODEL, assert_clean_failure, cli_in_process
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from ablate.errors import AblateError

PRESET = str(ROOT / "ablations/presets/unet-baseline.yaml")
TINY = [*TINY_MODEL, "tracking.mask_every=0", "train.batch_size=16", "augment=[]"]
_names = itertools.count()


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One SQLite MLflow store for the module (creating one takes seconds); each case its own experiment."""
    before = mlflow.get_tracking_uri()
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()  # creates the tables now: MLflow logs that on stderr
    yield uri
    mlflow.set_tracking_uri(before)


@pytest.fixture
def stores(tmp_path: Path, tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The CLI's stores, through the environment it reads: MLflow (shared) and an Optuna file per test."""
    monkeypatch.chdir(tmp_path)  # default report folders land here
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    monkeypatch.setenv("ABLATE_STORAGE", f"sqlite:///{tmp_path / 'optuna.db'}")
    return {"mlflow": tracking_uri, "optuna": str(tmp_path / "optuna.db"), "reports": str(tmp_path / "reports")}


def unique(kind: str) -> str:
    return f"{kind}{next(_names)}"


# --- campaign files and data files ------------------------------------------------------

def ablation_file(tmp_path: Path, name: str, bad_arm: bool = False) -> Path:
    """2 arms x 2 seeds of one epoch on a few pairs; ``bad_arm``: a factorial cell names an unknown skip."""
    factors = {"skip": {"add": {"skip": {"type": "add"}}}}
    if bad_arm:
        factors = {"skip": {"add": {"skip": {"type": "add"}}, "typo": {"skip": {"type": "concatt"}}},
                   "depth": {"d1": {"depth": 1}}}
    body = {"name": name, "base": PRESET, "design": "factorial" if bad_arm else "one-at-a-time", "seeds": 2,
            "budget": {"epochs": 1, "early_stopping": 0, "data_limit": 32}, "factors": factors}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def study_file(tmp_path: Path, name: str, bad_arm: bool = False) -> Path:
    """3 trials of one epoch on a few pairs; ``bad_arm``: one choice names an unknown skip."""
    choices = ["concat", "concatt" if bad_arm else "add"]
    body = {"name": name, "base": PRESET, "trials": 3, "sampler": {"type": "random", "seed": 0},
            "pruner": {"type": "none"}, "budget": {"epochs": 1, "early_stopping": 0, "data_limit": 32},
            "space": {"model.skip.type": {"type": "categorical", "choices": choices}}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def argv(kind: str, path: Path, data: Path, *extra: str) -> list[str]:
    return [kind, "run", str(path), *TINY, f"data.path={data}", *extra]


def bad_data(tmp_path: Path, synth_npz: Path, case: str) -> Path:
    """A data file that fails the header check (the cases of the validation tests)."""
    path = tmp_path / f"{case}.npz"
    if case == "wrong_layout":
        np.savez(path, images=np.zeros((4, 64, 128), np.uint8))
    elif case == "corrupt":
        blob = synth_npz.read_bytes()
        path.write_bytes(blob[: len(blob) // 2])  # truncated: no zip directory
    return path  # "missing": never written


def bad_labels(tmp_path: Path) -> Path:
    """Passes the header check (right keys, shapes, dtypes) but fails when loaded: mask label 9."""
    pairs = np.zeros((40, 2, 64, 128), np.uint8)
    pairs[:, 1, 0, 0] = 9
    path = tmp_path / "labels.npz"
    np.savez(path, training_set=pairs)
    return path


# --- what must (not) be left behind -----------------------------------------------------

def runs_of(experiment: str) -> list[mlflow.entities.Run]:
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id])


def study_names(db: str) -> list[str]:
    if not Path(db).exists():
        return []
    return [s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{db}")]


def trials_of(db: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}").get_trials()


def assert_nothing_created(stores: dict[str, str], name: str, queue: str) -> None:
    mlflow.set_tracking_uri(stores["mlflow"])
    assert runs_of(name) == [], "a parent or trial run was created"
    assert queue not in study_names(stores["optuna"]), "an Optuna study was created"
    assert not Path(stores["reports"]).exists(), "a report was written"


def assert_failed_cleanly(stores: dict[str, str], name: str, queue: str, reason: str) -> list[optuna.trial.FrozenTrial]:
    """Parent FAILED with the reason; no run and no trial RUNNING; no report. Returns the trials."""
    mlflow.set_tracking_uri(stores["mlflow"])
    runs = runs_of(name)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FAILED"
    assert reason in parent.data.tags["ablate.failure"] and reason in parent.data.tags["mlflow.note.content"]
    assert not [r for r in runs if r.info.status == "RUNNING"], "a run was left RUNNING"
    trials = trials_of(stores["optuna"], queue)
    assert not [t for t in trials if t.state == TrialState.RUNNING], "a trial was left RUNNING"
    assert not Path(stores["reports"]).exists(), "an (empty) report was written"
    return trials


# --- bad input: one line before anything exists -----------------------------------------

KINDS = {"ablation": (ablation_file, lambda name: f"ablation.{name}"), "study": (study_file, lambda name: name)}
DATA_CASES = {"missing": r"not found", "wrong_layout": r"no 'training_set' array .*found keys: \['images'\]",
              "corrupt": r"not a readable \.npz archive or is truncated"}


@pytest.mark.parametrize("case", [*DATA_CASES, "bad_arm"])
@pytest.mark.parametrize("kind", KINDS)
def test_bad_data_or_arm_is_one_line_before_any_run_or_study(kind, case, tmp_path, synth_npz, stores, capsys):
    write, queue = KINDS[kind]
    name = unique(kind)
    path = write(tmp_path, name, bad_arm=case == "bad_arm")
    data = synth_npz if case == "bad_arm" else bad_data(tmp_path, synth_npz, case)
    code, _, err = cli_in_process(argv(kind, path, data), capsys)
    pattern = r"Unknown skip 'concatt'" if case == "bad_arm" else rf"{kind} '{name}'.*{DATA_CASES[case]}"
    assert_clean_failure(code, err, pattern)
    assert_nothing_created(stores, name, queue(name))


# --- trials that cannot succeed: stop after one or two ----------------------------------

def _crash(*args, **kwargs):
    raise RuntimeError("injected training failure")


@pytest.mark.parametrize("cause", ["bad_labels", "same_error"])
@pytest.mark.parametrize("kind", KINDS)
def test_trials_that_all_fail_stop_the_campaign_failed(kind, cause, tmp_path, synth_npz, stores, capsys,
                                                       monkeypatch):
    write, queue = KINDS[kind]
    name = unique(kind)
    data, extra = synth_npz, ()
    if cause == "bad_labels":
        data = bad_labels(tmp_path)  # a DataError in the first trial: every trial would fail the same way
        # The spec names the Mars task, so label 9 is an error; without a task the file's labels would
        # define one (10 classes, inferred), and the campaign would train.
        extra = ("task={height: 64, width: 128}",)
    else:
        monkeypatch.setattr("ablate.runner.fit", _crash)  # not an input error, but the first two fail alike
    code, out, err = cli_in_process(argv(kind, write(tmp_path, name), data, *extra), capsys)

    reason = ("DataError: Masks in 'training_set' hold labels [9]" if cause == "bad_labels"
              else "RuntimeError: injected training")
    line = assert_clean_failure(code, err, rf"stopped '{queue(name)}': .*failed with {re.escape(reason)}")
    assert "first 2 trials failed the same way" in line or cause == "bad_labels"
    trials = assert_failed_cleanly(stores, name, queue(name), reason)
    attempted = [t for t in trials if t.state == TrialState.FAIL]
    assert len(attempted) == (1 if cause == "bad_labels" else 2)
    assert all(t.user_attrs["ablate.error"].startswith(reason) for t in attempted)
    assert "Traceback" in attempted[0].user_attrs["ablate.traceback"]  # kept on the trial, not printed
    children = [r for r in runs_of(name) if "mlflow.parentRunId" in r.data.tags]
    if cause == "same_error":  # the failure happened inside each trial's MLflow run: FAILED, traceback logged
        assert [r.info.status for r in children] == ["FAILED", "FAILED"]
        assert all("injected" in r.data.tags["error"] for r in children)
    else:  # the data failed to load before a trial's run started
        assert children == []
    assert f"({reason}" in out  # the trial's one line, on stdout


def test_a_failure_between_trials_that_differ_does_not_stop_early():
    """Only the first K trials failing alike stop a campaign: a success in between keeps it going."""
    from ablate.campaign.failfast import Watch

    outcomes = iter([RuntimeError("a"), 1.0, RuntimeError("a"), RuntimeError("a")])

    def objective(trial):
        result = next(outcomes)
        if isinstance(result, Exception):
            raise result
        return result

    study = optuna.create_study()
    watch = Watch(objective)
    verdicts = []
    for _ in range(4):
        study.optimize(watch, n_trials=1, catch=(Exception,))
        verdicts.append(watch.verdict())
    assert verdicts == [None, None, None, None]


def test_the_optuna_logger_that_failfast_quiets_is_still_there():
    from optuna.study import _optimize

    from ablate.adapters import OPTIMIZE_LOGGER

    assert _optimize._logger.name == OPTIMIZE_LOGGER


# --- worker processes that cannot start --------------------------------------------------

class _StartsOnce:
    """``subprocess.Popen`` whose first call starts a long-sleeping process and later calls fail."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []
        self.popen = subprocess.Popen  # the real one: the patch replaces the module's attribute

    def __call__(self, cmd, **kwargs):  # noqa: ANN001, ANN204
        if self.started:
            raise FileNotFoundError(2, "No such file or directory", cmd[0])
        self.started.append(self.popen([sys.executable, "-c", "import time; time.sleep(300)"]))
        return self.started[-1]


def test_worker_that_cannot_start_stops_the_started_ones_and_fails_the_parent(tmp_path, tracking_uri, monkeypatch):
    from ablate.campaign import (
        Launch,
        ParentRun,
        Round,
        enqueue_missing,
        ensure_parent,
        open_queue,
        resumable,
        run_round,
        tally,
    )
    from ablate.storage import open_storage

    mlflow.set_tracking_uri(tracking_uri)
    name, storage = unique("toy"), f"sqlite:///{tmp_path / 'optuna.db'}"
    study = open_queue(name, open_storage(storage), kind="toy")
    ensure_parent(study, ParentRun(name))
    enqueue_missing(study, [{"x": x} for x in range(3)], key=lambda attrs: attrs.get("x"))
    popen = _StartsOnce()
    monkeypatch.setattr("ablate.campaign.execute.subprocess.Popen", popen)

    round_ = Round(name, "trial", counts=lambda st: tally(st.get_trials(), total=3))
    with pytest.raises(AblateError, match=r"cannot start worker process 2 of 2 .*No such file or directory"), \
            resumable(study, kept=lambda: "nothing"):
        run_round(study, TOY, round_, Launch(storage, workers=2, tracking_uri=tracking_uri,
                                             command=["/nonexistent/ablate-worker"]))
    assert len(popen.started) == 1 and popen.started[0].poll() is not None, "the started worker was orphaned"
    parent = MlflowClient().get_run(study.user_attrs["mlflow_parent_run_id"])
    assert parent.info.status == "FAILED" and "cannot start worker" in parent.data.tags["ablate.failure"]
    assert [t.state for t in study.get_trials()] == [TrialState.WAITING] * 3  # nothing ran, nothing RUNNING


def test_cli_with_workers_that_cannot_start_is_one_line(tmp_path, synth_npz, stores, capsys, monkeypatch):
    def cannot_start(cmd, **kwargs):  # noqa: ANN001, ANN202
        raise PermissionError(13, "Permission denied", cmd[0])

    monkeypatch.setattr("ablate.campaign.execute.subprocess.Popen", cannot_start)
    name = unique("ablation")
    code, _, err = cli_in_process(argv("ablation", ablation_file(tmp_path, name), synth_npz, "--workers", "2"),
                                  capsys)
    assert_clean_failure(code, err, r"cannot start worker process 1 of 2 .*Permission denied")
    trials = assert_failed_cleanly(stores, name, f"ablation.{name}", "cannot start worker process 1 of 2")
    assert {t.state for t in trials} == {TrialState.WAITING}
