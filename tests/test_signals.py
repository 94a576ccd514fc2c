"""Stops: every long-running command, stopped by a signal, leaves a clean state (``ablate.signals``).

Each command runs as a separate process in its own session, as docker, Kubernetes or SLURM would
start it; once it is demonstrably mid-run (a run RUNNING in its SQLite tracking store, or its URL
printed) it gets SIGTERM. Then: no MLflow run left RUNNING (KILLED), no Optuna trial RUNNING
(FAIL, so that the same command queues them again), exit status 143, and no worker or server process left. Also: a
server's URL is printed only once it answers, and a non-loopback ``--host`` needs ``--insecure``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    PRESET,
    ROOT,
    TINY_MODEL,
    ablate_command,
    assert_clean_failure,
    cli_in_process,
    free_port,
    own_lines,
    require_team,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; stops are POSIX")

TINY = [*TINY_MODEL, "data.limit=64", "train.batch_size=16", "train.early_stopping=0"]
EPOCHS = "train.epochs=200"  # far more than a test waits for: still training when signalled
START_S = 300  # TensorFlow's import and the first epoch on a loaded 2-core machine
STOP_S = 120


# --- in this process: the policy itself, and the host check ---------------------------------------

def test_sigterm_raises_stopped_once_and_the_exit_code_says_which_signal() -> None:
    from ablate.signals import Stopped, exit_code, stops_as_interrupt

    with pytest.raises(Stopped, match="stopped by SIGTERM") as caught, stops_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
    assert exit_code(caught.value) == 143 and exit_code(KeyboardInterrupt()) == 130
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the previous handler is back


def test_a_repeated_sigterm_does_not_interrupt_the_clean_up() -> None:
    from ablate.signals import Stopped, stops_as_interrupt

    cleaned = False
    with pytest.raises(Stopped), stops_as_interrupt():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # SLURM's and the parent's: the same stop, twice
            time.sleep(0.2)
            cleaned = True
    assert cleaned



class _Plain:
    pass


class _Finalized:
    def __del__(self) -> None:
        _signal_and_wait()


def _signal_and_wait(*_: object) -> None:
    """Signals this process and waits, so that the handler runs here, where Python drops exceptions."""
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(100):  # the handler runs between two of these
        time.sleep(0.001)


@pytest.mark.parametrize("where", ["weakref callback", "__del__"])
def test_a_stop_that_lands_where_python_drops_exceptions_is_delivered_again(
        where: str, capsys: pytest.CaptureFixture[str]) -> None:
    """CI once saw SIGTERM land in SQLAlchemy's weakref callback: "Exception ignored", and the run ran on."""
    import weakref

    from ablate.signals import Stopped, stops_as_interrupt

    previous_hook = sys.unraisablehook
    after_finalizer = False
    with pytest.raises(Stopped, match="SIGTERM"), stops_as_interrupt():
        if where == "__del__":
            _Finalized()  # dropped at once: __del__ runs
        else:
            target = _Plain()
            ref = weakref.ref(target, _signal_and_wait)
            del target
            assert ref() is None
        after_finalizer = True
        time.sleep(5)  # the stop, delivered again, ends this
    assert after_finalizer, "the handler raised outside the finalizer, so the test proved nothing"
    assert sys.unraisablehook is previous_hook
    assert "Exception ignored" not in capsys.readouterr().err


def test_a_stop_while_held_is_raised_when_the_block_ends_or_on_release() -> None:
    from ablate.signals import Stopped, held, released, stops_as_interrupt

    steps = []
    with pytest.raises(Stopped, match="SIGTERM"), stops_as_interrupt():
        with held():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)
            steps.append("held past the signal")
        steps.append("not reached")
    assert steps == ["held past the signal"]

    with pytest.raises(Stopped, match="SIGTERM"), stops_as_interrupt(), held():  # not SIGHUP: ignored under nohup
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)
        with released():  # the noted stop raises on entry
            steps.append("not reached either")
    with pytest.raises(Stopped, match="SIGTERM"), stops_as_interrupt(), held(), released():
        os.kill(os.getpid(), signal.SIGTERM)  # released: raises at once
        time.sleep(5)
    assert steps == ["held past the signal"]
    with held(), released():  # outside stops_as_interrupt: no-ops
        pass

def _wrapped_stop() -> Exception:
    """What TensorFlow's C code made of a SIGTERM in CI: a SystemError from the Stopped, then an AttributeError."""
    from ablate.signals import Stopped

    try:
        try:
            try:
                raise Stopped(signal.SIGTERM)
            except Stopped as stop:
                raise SystemError("<built-in function __import__> returned a result with an exception set") from stop
        except SystemError:
            raise AttributeError("'dict' object has no attribute '_type_spec'")  # noqa: B904 - as TF did
    except AttributeError as e:
        return e


def test_a_stop_wrapped_in_another_error_is_found_and_ends_the_run_killed(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    import mlflow
    from mlflow.tracking import MlflowClient

    from ablate.cli.main import _run
    from ablate.signals import Stopped, stop_in
    from ablate.spec import load_spec
    from ablate.tracking import tracked_run

    wrapped = _wrapped_stop()
    assert isinstance(stop_in(wrapped), Stopped) and stop_in(wrapped).signum == signal.SIGTERM
    assert stop_in(AttributeError("plain")) is None and stop_in(KeyboardInterrupt()) is None

    def fails(_: argparse.Namespace) -> int:
        raise wrapped
    assert _run(argparse.Namespace(func=fails, debug=False)) == 143
    assert capsys.readouterr().err.strip() == "ablate: stopped by SIGTERM"

    uri, previous = new_store(tmp_path), mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        with pytest.raises(Stopped), tracked_run(load_spec(PRESET, []), "wrapped"):
            raise _wrapped_stop()
        run = MlflowClient(uri).search_runs([e.experiment_id for e in MlflowClient(uri).search_experiments()])[0]
    finally:
        mlflow.set_tracking_uri(previous)
    assert (run.info.status, run.data.tags["error"]) == ("KILLED", "stopped by SIGTERM")


def test_a_stop_during_fit_waits_for_the_next_batch(synth_npz: Path) -> None:
    """Held during ``model.fit``: raised before the next batch, in Python, not inside TensorFlow."""
    import traceback

    import keras

    from ablate.signals import Stopped, stops_as_interrupt
    from ablate.spec import load_spec
    from ablate.train import fit

    began: list[int] = []

    class SignalAtBatch2(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            began.append(batch)

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            if batch == 2:
                _signal_and_wait()  # the handler runs in this loop: noted, not raised
                began.append(-1)  # reached: the stop did not land here

    spec = load_spec(PRESET, [f"data.path={synth_npz}", "data.limit=128", *TINY_MODEL, "train.epochs=3",
                              "train.batch_size=8", "augment=[]"])
    with pytest.raises(Stopped) as caught, stops_as_interrupt():
        fit(spec, callbacks=[SignalAtBatch2()], verbose=0)
    assert began == [0, 1, 2, -1], began  # stopped before batch 3 began
    assert traceback.extract_tb(caught.value.__traceback__)[-1].name == "raise_pending"


def test_an_ignored_signal_stays_ignored() -> None:
    from ablate.signals import stops_as_interrupt

    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        with stops_as_interrupt():
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


@pytest.mark.parametrize("command", [["ui"], ["dashboard"]], ids=["ui", "dashboard"])
@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "example.org"])
def test_a_host_beyond_loopback_needs_insecure(command: list[str], host: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli_in_process([*command, "--host", host], capsys)
    assert_clean_failure(code, err, rf"--host {host} would serve .* without authentication.*--insecure")
    assert out == ""


def test_a_port_in_use_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for command in (["ui"], ["dashboard", "--storage", f"sqlite:///{tmp_path / 'optuna.db'}"]):
            if command[0] == "dashboard":
                require_team()
            code, _, err = cli_in_process([*command, "--port", str(port)], capsys)
            assert_clean_failure(code, err, rf"cannot listen on 127\.0\.0\.1:{port} .*choose another --port")


def test_a_server_that_dies_before_answering_is_one_line_with_its_log(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from ablate.errors import AblateError
    from ablate.serve import serve_child

    crash = [sys.executable, "-c", "import sys; print('address already in use, or worse'); sys.exit(3)"]
    with pytest.raises(AblateError, match=r"the server stopped before answering: exit 3; .*address already in use"):
        serve_child(crash, f"http://127.0.0.1:{free_port()}/", tmp_path / "server.log", "the server", "URL")
    assert "URL" not in capsys.readouterr().out  # no URL for a server that never answered


# --- each long-running command, stopped by SIGTERM -------------------------------------------------

class Command:
    """``ablate ARGS`` in its own session, output to files in ``folder``."""

    def __init__(self, args: list[str], folder: Path, name: str) -> None:
        self.out, self.err = folder / f"{name}.out", folder / f"{name}.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen([*ablate_command(), *args], cwd=folder, stdout=out, stderr=err,
                                         env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)

    def wait_for(self, found: Callable[[], Any], what: str, timeout: float = START_S) -> Any:
        deadline = time.monotonic() + timeout
        while not (result := found()):
            assert self.proc.poll() is None, f"exited {self.proc.returncode} before {what}:\n{self.log()}"
            assert time.monotonic() < deadline, f"no {what} after {timeout} s:\n{self.log()}"
            time.sleep(0.5)
        return result

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signals the command's own process (not its group: the command must stop its children)."""
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=STOP_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {STOP_S} s after {signal.Signals(sig).name}:\n{self.log()}")

    def log(self) -> str:
        return (self.out.read_text() + self.err.read_text())[-3000:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


@pytest.fixture
def command(tmp_path: Path) -> Iterator[Callable[[list[str], str], Command]]:
    started: list[Command] = []

    def start(args: list[str], name: str = "cmd") -> Command:
        started.append(Command(args, tmp_path, name))
        return started[-1]

    yield start
    for cmd in started:
        cmd.kill()


def processes_with(text: str) -> list[int]:
    """Live (not zombie) processes whose command line contains ``text``."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    pids.append(int(entry.name))
        except OSError:  # ended meanwhile
            pass
    return pids


def new_store(folder: Path) -> str:
    """A SQLite tracking store, its tables created here: a reader creating them as the command does races it."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri).search_experiments()
    return uri


def runs(uri: str, status: str | None = None) -> list[Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    found = client.search_runs(ids, f"attributes.status = '{status}'" if status else "") if ids else []
    return list(found)


def trial_states(storage: str) -> list[str]:
    import optuna

    names = optuna.study.get_all_study_names(storage)
    return sorted(t.state.name for name in names for t in optuna.load_study(study_name=name, storage=storage).trials)


def assert_stopped_cleanly(cmd: Command, code: int, uri: str) -> None:
    assert code == 143, f"exit {code}:\n{cmd.log()}"
    assert "ablate: stopped by SIGTERM" in own_lines(cmd.err.read_text()), cmd.log()
    assert runs(uri, "RUNNING") == [], "a run left RUNNING"


def test_run_ends_its_run_killed_on_sigterm(command: Callable[..., Command], synth_npz: Path,
                                            tmp_path: Path) -> None:
    uri = new_store(tmp_path)
    cmd = command(["run", str(PRESET), *TINY, EPOCHS, f"data.path={synth_npz}", "--tracking-uri", uri])
    run = cmd.wait_for(lambda: runs(uri, "RUNNING"), "a run RUNNING")[0]
    assert_stopped_cleanly(cmd, cmd.stop(), uri)
    assert [(r.info.run_id, r.info.status, r.data.tags["error"]) for r in runs(uri)] == [
        (run.info.run_id, "KILLED", "stopped by SIGTERM")]


def test_ablation_workers_end_their_runs_killed_and_their_trials_are_retried(
        command: Callable[..., Command], synth_npz: Path, tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from deploy import team_demo as td  # the ablation file of the team tests

    uri, storage = new_store(tmp_path), f"sqlite:///{tmp_path / 'optuna.db'}"
    path = td.write_ablation(tmp_path, "stopped", seeds=1, epochs=200)
    cmd = command(["ablation", "run", str(path), "--screening", *TINY, f"data.path={synth_npz}", "--workers", "2",
                   "--storage", storage, "--tracking-uri", uri])
    cmd.wait_for(lambda: [r for r in runs(uri, "RUNNING") if "ablate.pid" in r.data.tags], "a worker's run RUNNING")
    workers = f"--storage {storage} --quiet"  # in the command line of an `ablate worker`, not of its parent
    assert len(processes_with(workers)) == 2
    assert_stopped_cleanly(cmd, cmd.stop(), uri)
    assert processes_with(workers) == [], "a worker outlived the command"
    assert {r.info.status for r in runs(uri)} == {"KILLED"}  # the parent and every trial's run
    states = trial_states(storage)
    assert "FAIL" in states and set(states) <= {"FAIL", "WAITING"}, states  # failed: queued again on resume
    assert "run the same command again to resume" in cmd.out.read_text()


def test_study_fails_its_trial_for_retry_on_sigterm(command: Callable[..., Command], synth_npz: Path,
                                                   tmp_path: Path) -> None:
    uri, storage = new_store(tmp_path), f"sqlite:///{tmp_path / 'optuna.db'}"
    path = tmp_path / "stopped.yaml"
    path.write_text(f"name: stopped\nbase: {PRESET}\ntrials: 2\n"
                    "space:\n  model.skip.type: {type: categorical, choices: [concat, add]}\n")
    cmd = command(["study", "run", str(path), *TINY, EPOCHS, f"data.path={synth_npz}", "--storage", storage,
                   "--tracking-uri", uri, "--report-dir", str(tmp_path / "report")])
    cmd.wait_for(lambda: [r for r in runs(uri, "RUNNING") if "ablate.pid" in r.data.tags], "a trial's run RUNNING")
    assert_stopped_cleanly(cmd, cmd.stop(), uri)
    assert {r.info.status for r in runs(uri)} == {"KILLED"}
    states = trial_states(storage)
    assert "FAIL" in states and set(states) <= {"FAIL", "WAITING"}, states


# --- servers: the URL once it answers, and nothing left serving ------------------------------------

def _url(line: str) -> str:
    return next(word for word in line.split() if word.startswith("http://")).split("#")[0]


def answers_now(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=5) as resp:  # at once: no retry, no wait
        return resp.status == 200


def port_answers(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_ui_prints_its_url_once_it_answers_and_its_server_stops_with_it(command: Callable[..., Command],
                                                                        sig: int) -> None:
    port = free_port()
    insecure = ["--host", "0.0.0.0", "--insecure"] if sig == signal.SIGKILL else []  # noqa: S104 - the case tested
    cmd = command(["ui", "--port", str(port), *insecure])
    url = _url(cmd.wait_for(lambda: next((ln for ln in cmd.out.read_text().splitlines()
                                          if ln.startswith("MLflow UI: ")), None), "the URL line"))
    assert answers_now(url)
    assert processes_with(f"--port {port}"), "no server process found"
    if insecure:
        assert [ln for ln in own_lines(cmd.err.read_text()) if "warning" in ln] == [
            "ablate: warning: the MLflow UI on 0.0.0.0 has no authentication: anyone who reaches this port can "
            "read and change everything in it."]
    code = cmd.stop(sig)
    assert code == (143 if sig == signal.SIGTERM else -signal.SIGKILL), cmd.log()
    deadline = time.monotonic() + 30  # killed hard, the server's keeper ends it within its grace
    while (processes_with(f"--port {port}") or port_answers(port)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert processes_with(f"--port {port}") == [] and not port_answers(port), "the MLflow server outlived ablate ui"


def test_dashboard_prints_its_url_once_it_answers_and_stops_on_sigterm(command: Callable[..., Command],
                                                                       tmp_path: Path) -> None:
    require_team()
    port = free_port()
    cmd = command(["dashboard", "--storage", f"sqlite:///{tmp_path / 'optuna.db'}", "--port", str(port)])
    url = _url(cmd.wait_for(lambda: next((ln for ln in cmd.out.read_text().splitlines()
                                          if ln.startswith("optuna-dashboard on ")), None), "the URL line"))
    assert answers_now(url)
    code = cmd.stop()
    assert code == 143 and "ablate: stopped by SIGTERM" in own_lines(cmd.err.read_text()), cmd.log()
    assert not port_answers(port)
