"""The campaign engine on its own: a toy trial (``x ** 2``), a SQLite queue, a SQLite MLflow store.

No model is trained: the engine is tested for what ablations and studies rely on: a queue that
grows between rounds, counts per key set, failed trials queued again, the parent run's
statuses, a crashed worker's trial failed, re-queued and run again, worker processes, listings
that read every page, and that the engine imports nothing that uses it.
"""

from __future__ import annotations

import ast
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import optuna
import pytest
from campaign_toy import TOY
from helpers import ROOT
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState, create_trial

from ablate.adapters import PARENT_TAG, retried_from, trial_id
from ablate.campaign import (
    Counts,
    Launch,
    ParentRun,
    Round,
    TrialKind,
    child_runs,
    child_tags,
    end_parent,
    enqueue_missing,
    ensure_parent,
    open_queue,
    resumable,
    run_round,
    running_runs,
    select_kind,
    tally,
    work,
)
from ablate.errors import AblateError


def key(attrs):  # noqa: ANN001, ANN201 - a trial's key: the number it squares
    return attrs.get("x")


def items(*xs: int) -> list[dict[str, int]]:
    return [{"x": x} for x in xs]


def toy_round(xs: list[int]) -> Round:
    return Round("toy", "trial", counts=lambda study: tally(study.get_trials(), key=key, wanted=set(xs)),
                 describe=lambda t: f"x={t.user_attrs.get('x')}: {t.state.name.lower()}")


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One SQLite MLflow store for the module (creating one takes seconds); each test its own experiment."""
    before = mlflow.get_tracking_uri()
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(before)


@pytest.fixture
def storage_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    from ablate import storage

    monkeypatch.setattr(storage, "HEARTBEAT_S", 1)  # what ABLATE_HEARTBEAT_S=1 sets in a new process
    monkeypatch.setattr(storage, "GRACE_S", 2)
    return f"sqlite:///{tmp_path / 'optuna.db'}"


def toy_campaign(storage_url: str, name: str) -> tuple[optuna.Study, str]:
    from ablate.storage import open_storage

    study = open_queue(name, open_storage(storage_url), kind="toy")
    return study, ensure_parent(study, ParentRun(name, tags={"toy": name}, params={"n": 3},
                                                 files={"toy.json": '{"x": "squared"}'}))


# --- counting -----------------------------------------------------------------------------------

def _trial(state: TrialState, x: int) -> optuna.trial.FrozenTrial:
    value = float(x * x) if state == TrialState.COMPLETE else None
    return create_trial(state=state, value=value, user_attrs={"x": x}, params={}, distributions={})


def test_tally_counts_each_key_once_in_its_most_advanced_state() -> None:
    trials = [_trial(TrialState.FAIL, 1), _trial(TrialState.COMPLETE, 1),  # retried and finished
              _trial(TrialState.FAIL, 2), _trial(TrialState.WAITING, 2),  # retried, queued
              _trial(TrialState.FAIL, 3), _trial(TrialState.RUNNING, 4), _trial(TrialState.COMPLETE, 5)]
    c = tally(trials, key=key, wanted={1, 2, 3, 4, 6})
    assert c == Counts(total=5, complete=1, failed=1, running=1, waiting=1)
    assert (c.done, c.claimed) == (2, 4)
    assert tally(trials, key=key).total == 5  # no wanted set: every key seen
    assert tally(trials, key=key, total=10) == Counts(total=10, complete=2, failed=1, running=1, waiting=1)


# --- the queue ------------------------------------------------------------------------------------

def test_queue_grows_between_rounds_and_runs_only_what_is_missing(storage_url: str, tracking_uri: str,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    study, parent = toy_campaign(storage_url, "grow")
    launch = Launch(storage_url)
    assert enqueue_missing(study, items(1, 2), key) == 2
    assert enqueue_missing(study, items(1, 2), key) == 0  # queued already
    run_round(study, TOY, toy_round([1, 2]), launch)
    assert enqueue_missing(study, items(1, 2, 3, 4), key) == 2  # the second round adds two
    run_round(study, TOY, toy_round([1, 2, 3, 4]), launch)

    trials = study.get_trials()
    assert sorted((t.user_attrs["x"], t.value) for t in trials) == [(1, 1.0), (2, 4.0), (3, 9.0), (4, 16.0)]
    assert toy_round([1, 2]).counts(study) == Counts(total=2, complete=2)
    assert toy_round([1, 2, 3, 4, 5]).counts(study) == Counts(total=5, complete=4)
    assert "  x=3: complete" in capsys.readouterr().out  # one line per finished trial, above the bar

    client = MlflowClient()
    children = child_runs(client, client.get_run(parent))
    assert sorted(int(r.data.tags["optuna_trial"]) for r in children) == [0, 1, 2, 3]
    assert {r.info.status for r in children} == {"FINISHED"}
    assert {t.user_attrs["mlflow_run_id"] for t in trials} == {r.info.run_id for r in children}


def test_a_name_taken_by_another_kind_is_an_error(storage_url: str, tracking_uri: str) -> None:
    from ablate.storage import open_storage

    study, _ = toy_campaign(storage_url, "kinds")
    with pytest.raises(AblateError, match=r"'kinds' in this storage is not a ablation \(it is a toy\)"):
        open_queue("kinds", open_storage(storage_url), kind="ablation")
    with pytest.raises(AblateError, match=r"holds trials of kind 'toy'; this worker runs only: ablation, study"):
        select_kind(study, [TrialKind("ablation", TOY.objective), TrialKind("study", TOY.objective)])
    assert select_kind(study, [TOY]) is TOY


def test_a_failed_trial_is_counted_then_queued_again(storage_url: str, tracking_uri: str) -> None:
    study, parent = toy_campaign(storage_url, "failing")
    enqueue_missing(study, items(-1, 2), key)
    run_round(study, TOY, toy_round([-1, 2]), Launch(storage_url))
    assert toy_round([-1, 2]).counts(study) == Counts(total=2, complete=1, failed=1)
    assert enqueue_missing(study, items(-1, 2), key) == 1  # the failed one, for the next invocation
    assert toy_round([-1, 2]).counts(study).waiting == 1
    failed = next(r for r in child_runs(MlflowClient(), MlflowClient().get_run(parent)) if r.info.status != "FINISHED")
    assert failed.info.status == "FAILED"


def test_a_trial_that_finds_the_queue_empty_is_pruned_not_failed(storage_url: str, tracking_uri: str) -> None:
    study, _ = toy_campaign(storage_url, "empty")
    racing = TrialKind("toy", TOY.objective, has_work=lambda st: not st.trials)  # as if the last one was taken
    assert work(study, racing) == 1
    (trial,) = study.get_trials()
    assert trial.state == TrialState.PRUNED and trial.user_attrs == {"empty": True}
    assert toy_round([1]).counts(study) == Counts(total=1)



@pytest.mark.skipif(not hasattr(signal, "SIGTERM") or sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("step", ["set_trial_state_values", "set_trial_state_values_after_objective"])
def test_a_stop_while_optuna_starts_or_ends_a_trial_never_leaves_it_running(
        storage_url: str, tracking_uri: str, step: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM between Optuna marking a queued trial RUNNING and calling the objective (or while it
    records the trial's end) is held until the objective (or the worker's loop) can take it."""
    from ablate.signals import Stopped

    study, _ = toy_campaign(storage_url, f"held-{step[-9:]}")
    enqueue_missing(study, items(1, 2), key)
    storage, original = study._storage, study._storage.set_trial_state_values
    wanted = TrialState.RUNNING if step == "set_trial_state_values" else TrialState.COMPLETE

    def signalled(trial_id: int, state: TrialState, values=None) -> bool:  # noqa: ANN001
        done = original(trial_id, state, values)
        if state == wanted:
            os.kill(os.getpid(), signal.SIGTERM)  # the stop arrives inside Optuna's step
            time.sleep(0.1)
        return done

    monkeypatch.setattr(storage, "set_trial_state_values", signalled)
    with pytest.raises(Stopped):
        work(study, TOY)
    states = sorted(t.state.name for t in study.get_trials(deepcopy=False))
    if wanted == TrialState.RUNNING:  # failed inside the objective, and its retry queued (SIGTERM: the platform)
        assert states == ["FAIL", "WAITING", "WAITING"], states
    else:  # the first trial completed; the stop is raised before the next one starts
        assert states == ["COMPLETE", "WAITING"], states
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL

@pytest.mark.skipif(not hasattr(signal, "SIGTERM") or sys.platform == "win32", reason="POSIX signals")
def test_a_stop_that_c_code_wrapped_in_another_error_stops_the_worker(storage_url: str, tracking_uri: str) -> None:
    """A SIGTERM turned by TensorFlow into an AttributeError is a stop, not a failed trial to go on from."""
    from ablate.signals import Stopped, stops_as_interrupt

    def wrapped_stop(trial: optuna.Trial) -> float:
        try:
            raise Stopped(signal.SIGTERM)
        except Stopped:
            raise AttributeError("'dict' object has no attribute '_type_spec'")  # noqa: B904 - as TF did

    study, _ = toy_campaign(storage_url, "wrapped")
    enqueue_missing(study, items(1, 2), key)
    with pytest.raises(Stopped), stops_as_interrupt():
        work(study, TrialKind("toy", lambda study, verbose: wrapped_stop))
    states = sorted(t.state.name for t in study.get_trials(deepcopy=False))
    assert states == ["FAIL", "WAITING", "WAITING"], states  # the first failed for retry, the second never began


# --- the parent run -----------------------------------------------------------------------------

def test_parent_run_is_created_once_resumed_and_ended(storage_url: str, tracking_uri: str) -> None:
    study, parent = toy_campaign(storage_url, "parent")
    client = MlflowClient()
    run = client.get_run(parent)
    assert run.info.status == "RUNNING" and run.info.run_name == "parent"
    assert {"ablate.kind": "toy", "optuna_study": "parent", "toy": "parent"}.items() <= run.data.tags.items()
    assert run.data.params == {"n": "3"}
    assert [a.path for a in client.list_artifacts(parent)] == ["toy.json"]

    assert end_parent(study, "FINISHED", metrics={"trials_complete": 2}, tags={"best": "x=2"})
    run = client.get_run(parent)
    assert run.info.status == "FINISHED" and run.data.metrics == {"trials_complete": 2.0}
    assert run.data.tags["best"] == "x=2"
    assert not end_parent(study, "KILLED")  # only a RUNNING parent is ended
    with pytest.raises(AblateError, match="FINISHED, KILLED or FAILED, not 'DONE'"):
        end_parent(study, "DONE")

    _, resumed = toy_campaign(storage_url, "parent")  # a second invocation
    assert resumed == parent and client.get_run(parent).info.status == "RUNNING"


def test_ctrl_c_ends_the_parent_killed_and_an_error_failed(storage_url: str, tracking_uri: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    study, parent = toy_campaign(storage_url, "interrupted")
    enqueue_missing(study, items(1, 99, 3), key)
    with pytest.raises(KeyboardInterrupt), resumable(study, kept=lambda: "1 trials kept"):
        run_round(study, TOY, toy_round([1, 99, 3]), Launch(storage_url))
    client = MlflowClient()
    assert client.get_run(parent).info.status == "KILLED"
    assert "interrupted: run the same command again to resume (1 trials kept)" in capsys.readouterr().out
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]

    study, parent = toy_campaign(storage_url, "interrupted")  # resumed: RUNNING again
    with pytest.raises(RuntimeError, match="boom"), resumable(study, kept=lambda: ""):
        raise RuntimeError("boom")
    assert client.get_run(parent).info.status == "FAILED"


# --- crashes ------------------------------------------------------------------------------------

def test_a_trial_left_running_by_a_dead_worker_is_failed_requeued_and_run_again(storage_url: str,
                                                                                 tracking_uri: str) -> None:
    from ablate.storage import open_storage

    storage = open_storage(storage_url)
    study, parent = toy_campaign(storage_url, "crash")
    enqueue_missing(study, items(5), key)
    trial = study.ask()  # a worker takes the queued trial ...
    storage.record_heartbeat(trial_id(trial))  # ... beats once, opens its run, and is killed
    client = MlflowClient()
    experiment = client.get_run(parent).info.experiment_id
    dead = client.create_run(experiment, tags={PARENT_TAG: parent, **child_tags(trial)}).info.run_id
    time.sleep(3.5)  # past the grace period (SQLite's clock counts whole seconds)

    run_round(study, TOY, toy_round([5]), Launch(storage_url))
    first, retry = study.get_trials()
    assert (first.state, retry.state, retry.value) == (TrialState.FAIL, TrialState.COMPLETE, 25.0)
    assert retried_from(retry) == first.number and retry.user_attrs["x"] == 5
    assert client.get_run(dead).info.status == "KILLED"  # ended by reconciliation
    assert {r.info.status for r in child_runs(client, client.get_run(parent))} == {"KILLED", "FINISHED"}
    assert parent in {r.info.run_id for r in running_runs(client)}  # the campaign's own run goes on
    assert toy_round([5]).counts(study) == Counts(total=1, complete=1)


# --- worker processes -----------------------------------------------------------------------------

@pytest.mark.slow
def test_worker_processes_share_the_queue(storage_url: str, tracking_uri: str) -> None:
    import os

    study, parent = toy_campaign(storage_url, "workers")
    enqueue_missing(study, items(*range(6)), key)
    command = (sys.executable, str(ROOT / "tests/campaign_toy.py"))
    run_round(study, TOY, toy_round(list(range(6))), Launch(storage_url, workers=2, tracking_uri=tracking_uri,
                                                              command=command))
    trials = [t for t in study.get_trials() if not t.user_attrs.get("empty")]  # a worker may find none left
    assert sorted(t.value for t in trials) == [float(x * x) for x in range(6)]
    assert os.getpid() not in {t.user_attrs["pid"] for t in trials}  # all taken by the worker processes
    assert len(child_runs(MlflowClient(), MlflowClient().get_run(parent))) == 6


def test_launch_needs_a_worker() -> None:
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        Launch("sqlite://", workers=0)


# --- listings and layering ------------------------------------------------------------------------

def test_child_runs_reads_every_page(tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from ablate.campaign import runs

    monkeypatch.setattr(runs, "PAGE", 2)
    client = MlflowClient()
    experiment = client.create_experiment("pages")
    parent = client.create_run(experiment)
    for _ in range(5):
        client.create_run(experiment, tags={PARENT_TAG: parent.info.run_id})
    client.create_run(experiment)  # not a child
    assert len(child_runs(client, parent)) == 5
    assert len(runs.search_all(client, [experiment])) == 7


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    return names | {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}


@pytest.mark.parametrize("path", sorted((ROOT / "core/campaign").glob("*.py")) + [ROOT / "core/adapters.py"],
                         ids=lambda p: p.name)
def test_the_engine_imports_nothing_that_uses_it(path: Path) -> None:
    users = ("ablate.ablation", "ablate.study", "ablate.export", "ablate.cli", "ablate.doctor")
    assert not [m for m in _imports(path) if m.startswith(users)], f"{path.name} imports a user of the engine"

