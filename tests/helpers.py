"""Shared test helpers: the real data file, the CLI as a subprocess, a real MLflow server.

Fixtures built on these live in ``tests/conftest.py``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "ablations/presets/unet-baseline.yaml"
TINY_MODEL = ["model.filters=4", "model.depth=2"]  # a few thousand weights: seconds per epoch on a CPU


def real_data_path() -> Path:
    """The real AI4Mars-derived set next to the project (``../shared/data``)."""
    return Path(__file__).parents[1].parent / "shared/data/mars_ai4mars_64x128.npz"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require_postgres() -> None:
    """Skips (with the reason) when the local PostgreSQL is unreachable; under CI=true that fails."""
    sys.path.insert(0, str(ROOT))
    from deploy import team_demo as td  # the native topology's own check

    reason = td.pg_unavailable()
    if reason and in_ci():
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    if reason:
        pytest.skip(f"{reason}; CI runs this test")



def require_team() -> None:
    """Skips (with the reason) when the team extra is not installed (``make setup`` alone); under CI=true that fails."""
    import importlib.util

    if importlib.util.find_spec("optuna_dashboard") is None:
        reason = "the team extra (optuna-dashboard) is not installed: pip install -e '.[team]', or make test"
        if in_ci():
            pytest.fail(f"CI=true but {reason}", pytrace=False)
        pytest.skip(reason)

requires_real_data = pytest.mark.skipif(
    not real_data_path().exists() and not in_ci(),
    reason=f"real data file {real_data_path()} is absent (it is present in CI, where this test never skips)",
)


def require_real_data() -> Path:
    """The real data path; in CI a missing file is a failure, not a skip."""
    path = real_data_path()
    if not path.exists():
        pytest.fail(f"CI=true but the real data file {path} is missing", pytrace=False)
    return path


# --- the CLI as a separate process -------------------------------------------------------

# TensorFlow 2.21 writes these C++ start-up lines before absl logging is initialised;
# TF_CPP_MIN_LOG_LEVEL does not silence them. They are not the CLI's output.
_TF_NOISE = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\)|[IWE]\d{4} [\d:. ]+\d+ \S+:\d+\])")


def ablate_command() -> list[str]:
    """The installed ``ablate`` console script next to this interpreter, else its equivalent."""
    script = Path(sys.executable).with_name("ablate")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from ablate.cli import main; sys.exit(main())"]


def run_cli(args: Sequence[str], cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Runs ``ablate ARGS`` in a separate process and captures its output."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([*ablate_command(), *args], cwd=cwd or ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def own_lines(stderr: str) -> list[str]:
    """Non-empty stderr lines, without TensorFlow's unsilenceable start-up chatter."""
    return [line for line in stderr.splitlines() if line.strip() and not _TF_NOISE.match(line)]


def assert_one_error_line(stderr: str, pattern: str) -> str:
    """Checks stderr holds exactly one line of our own, an ``ablate: error:`` matching ``pattern``."""
    lines = own_lines(stderr)
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, f"expected one error line, got {len(lines)}:\n" + "\n".join(lines)
    assert lines[0].startswith("ablate: error: "), lines[0]
    assert re.search(pattern, lines[0]), f"{pattern!r} not in {lines[0]!r}"
    return lines[0]


# --- a real MLflow tracking server -------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(uri + "/health", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def mlflow_server(folder: Path, startup_timeout: float = 180.0) -> Iterator[str]:
    """Starts ``mlflow server`` on a free loopback port over SQLite in ``folder``; yields its URI.

    The server runs in its own process group so that its workers end with it.
    """
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "mlflow", "server",
           "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
           "--artifacts-destination", str(folder / "artifacts"),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           # Our own client keeps connections alive; do not wait for it to hang up when stopping.
           "--uvicorn-opts", "--timeout-graceful-shutdown 2"]
    log = open(folder / "server.log", "w")  # noqa: SIM115 - closed below, after the server ends
    # No background job runner: it starts seven huey consumer processes for GenAI features we do not use.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        deadline = time.monotonic() + startup_timeout
        while not _healthy(uri):
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {proc.returncode}:\n{_tail(folder / 'server.log')}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server not healthy after {startup_timeout:.0f} s:\n"
                                   f"{_tail(folder / 'server.log')}")
            time.sleep(0.5)
        yield uri
    finally:
        _stop(proc)
        log.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Ends the process group we started (the server and its workers): politely, then firmly."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):  # stragglers, or a server that ignored SIGTERM
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def _tail(path: Path, n: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


# --- the hardening contract: one line, non-zero exit, no traceback ------------------------

MAX_ERROR_LINE = 400  # characters: a message quotes a bounded excerpt, never the whole input


def assert_clean_failure(code: int, stderr: str, pattern: str, exit_code: int = 2) -> str:
    """The CLI's promise for bad input: the exit code, one ``ablate: error:`` line matching
    ``pattern`` and shorter than ``MAX_ERROR_LINE``, and no traceback. Returns the line."""
    assert code == exit_code, f"exit {code}, expected {exit_code}; stderr:\n{stderr[-2000:]}"
    line = assert_one_error_line(stderr, pattern)
    assert len(line) < MAX_ERROR_LINE, f"error line of {len(line)} characters: {line[:200]}..."
    return line


def cli_in_process(argv: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Runs ``ablate ARGV`` in this process (no interpreter start-up): (exit code, stdout, stderr)."""
    from ablate.cli.main import main

    capsys.readouterr()
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse's own errors exit 2
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


# --- a process that cannot import the project ------------------------------------------------

_NO_PROJECT = """
import sys
sys.path.append({site!r})
try:
    import ablate
except ImportError:
    pass
else:
    raise SystemExit("ablate is importable: the check is not clean")
"""


def run_without_project(code: str, cwd: Path) -> None:
    """Runs ``code`` in an isolated Python (``-I -S``) that sees the installed numpy and TensorFlow but not
    this project (the editable install's .pth files are not read); fails the test unless it exits 0."""
    import sysconfig

    site = sysconfig.get_paths()["purelib"]
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", _NO_PROJECT.format(site=site) + code], cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
