"""Security: loopback by default, credentials never logged, safe model and array loading.

The leak test runs a whole ablation with a storage URL that carries a password and with MLflow
login credentials (against MLflow's basic-auth app when Flask-WTF is installed), then searches
the process output, every run's params and tags, and every artifact for both secrets.
"""

from __future__ import annotations

import argparse
import re
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ROOT, in_ci, run_cli

sys.path.insert(0, str(ROOT))
from deploy import team_demo as td  # noqa: E402 - the native topology, shared with `make team-demo`

CORE = ROOT / "core"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def core_sources() -> list[tuple[Path, str]]:
    return [(p, p.read_text()) for p in sorted(CORE.rglob("*.py"))]


# --- servers bind to loopback unless asked --------------------------------------------------------

def test_every_host_option_defaults_to_loopback() -> None:
    from ablate.cli.main import build_parser

    def walk(parser: argparse.ArgumentParser) -> Iterator[tuple[str, object]]:
        for action in parser._actions:
            if action.dest == "host":
                yield parser.prog, action.default
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from walk(sub)

    hosts = list(walk(build_parser()))
    assert hosts, "no --host option found (ablate ui has one)"
    for prog, default in hosts:
        assert default in LOOPBACK, f"`{prog} --host` defaults to {default!r}"


def test_no_code_binds_every_interface() -> None:
    offenders = [f"{p.relative_to(ROOT)}:{text[:m.start()].count(chr(10)) + 1}"
                 for p, text in core_sources() for m in re.finditer(r"0\.0\.0\.0|host\s*=\s*[\"']::[\"']", text)]
    assert offenders == [], f"binds every interface by default: {offenders}"


# --- nothing executes code while loading ------------------------------------------------------------

UNSAFE = {
    r"safe_mode\s*=\s*False": "Keras models load with safe_mode=True",
    r"enable_unsafe_deserialization": "Keras unsafe deserialization",
    r"allow_pickle\s*=\s*True": "arrays load without pickle",
    r"^\s*(import|from)\s+(pickle|cloudpickle|dill|joblib)\b": "no pickle-based loading",
    r"\b(pickle|cloudpickle|dill|joblib|torch)\.loads?\(": "no pickle-based loading",
    r"yaml\.(unsafe_load|load_all)\(|Loader\s*=\s*yaml\.(Loader|FullLoader|UnsafeLoader)": "YAML with a safe loader",
}


@pytest.mark.parametrize("pattern", sorted(UNSAFE))
def test_no_unsafe_loading_in_core(pattern: str) -> None:
    hits = [f"{p.relative_to(ROOT)}:{text[:m.start()].count(chr(10)) + 1}"
            for p, text in core_sources() for m in re.finditer(pattern, text, re.M)]
    assert hits == [], f"{UNSAFE[pattern]}: {hits}"


def test_keras_model_loads_name_safe_mode() -> None:
    calls = [(p, m) for p, text in core_sources()
             for m in re.finditer(r"keras\.(saving|models)\.load_model\(([^)]*)\)", text)]
    for path, m in calls:
        assert "safe_mode=True" in m.group(2), f"{path.relative_to(ROOT)}: {m.group(0)} (say safe_mode=True)"


def test_passwords_are_redacted_in_messages() -> None:
    from ablate.errors import AblateError
    from ablate.resilience import redact_text
    from ablate.storage import open_storage, redact

    assert redact("postgresql+psycopg2://ablate:s3cr3t@db:5432/optuna") == "postgresql+psycopg2://ablate:***@db:5432/optuna"
    assert "s3cr3t" not in redact_text("could not reach http://u:s3cr3t@h:5000/api and postgresql://a:s3cr3t@b/c")
    with pytest.raises(AblateError, match=r"ablate:\*\*\*@127\.0\.0\.1:1/optuna") as err:
        open_storage("postgresql+psycopg2://ablate:s3cr3t@127.0.0.1:1/optuna")
    assert "s3cr3t" not in str(err.value)


# --- credentials never reach MLflow or the output ------------------------------------------------------

def _auth_available() -> bool:
    try:
        import flask_wtf  # noqa: F401 - MLflow's basic-auth app needs it (the mlflow[auth] extra)
    except ImportError:
        return False
    return True


@pytest.mark.slow
def test_credentials_never_reach_runs_artifacts_or_output(synth_npz: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    reason = td.pg_unavailable()
    if reason:
        if in_ci():
            pytest.fail(f"CI=true but {reason}", pytrace=False)
        pytest.skip(f"{reason}; CI runs this test")
    db_secret, login_secret = f"dbpw-{secrets.token_hex(8)}", f"loginpw-{secrets.token_hex(8)}"
    auth = _auth_available()
    server_env = {"MLFLOW_AUTH_ADMIN_PASSWORD": login_secret, "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
                  "MLFLOW_AUTH_CONFIG_PATH": str(_auth_ini(tmp_path))}
    login = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": login_secret}
    with td.database(f"ablate_test_security_{secrets.token_hex(4)}") as storage, \
            td.MlflowServer(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "mlflow", env=server_env,
                            app_name="basic-auth" if auth else None) as server:
        if auth:
            assert _status(server.uri + "/api/2.0/mlflow/experiments/search?max_results=1") == 401
        secret_storage = td.pg_url(storage.rsplit("/", 1)[1], password=db_secret)  # trust auth ignores it
        path = td.write_ablation(tmp_path, "leak", seeds=1, epochs=1)
        out = run_cli(["ablation", "run", str(path), "--screening", *td.TINY, f"data.path={synth_npz}",
                       "--storage", secret_storage,
                       "--tracking-uri", server.uri, "--report-dir", str(tmp_path / "report")], env=login)
        assert out.returncode == 0, out.stderr[-3000:]
        for key, value in login.items():
            monkeypatch.setenv(key, value)
        haystack = {"stdout": out.stdout, "stderr": out.stderr, **_everything_logged(server.uri, tmp_path)}
        haystack.update({str(p): p.read_text(errors="replace")
                         for p in (tmp_path / "report").rglob("*") if p.is_file()})
        from ablate.cli.main import main  # `ablate doctor` prints both URLs: redacted

        previous = mlflow.get_tracking_uri()
        try:
            assert main(["doctor", "--storage", secret_storage, "--tracking-uri", server.uri]) in (0, 1)
        finally:
            mlflow.set_tracking_uri(previous)
        haystack["doctor"] = capsys.readouterr().out
    assert "***" in haystack["doctor"]
    assert len(haystack) > 10, sorted(haystack)  # outputs, run data and artifacts were searched
    for where, text in haystack.items():
        for secret in (db_secret, login_secret):
            assert secret not in text, f"a password appears in {where}"
    if not auth:
        pytest.skip("checked without login (Flask-WTF missing: pip install 'mlflow[auth]' to test basic-auth)")


def _auth_ini(folder: Path) -> Path:
    ini = folder / "basic_auth.ini"
    ini.write_text(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{folder / 'auth.db'}\n"
                   "admin_username = admin\nauth_cache_ttl_seconds = 60\n"  # a password hash per request is slow
                   "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    return ini


def _status(url: str) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def _everything_logged(uri: str, folder: Path) -> dict[str, str]:
    """Params, tags and every downloaded artifact of every run on the server, as text."""
    from mlflow.tracking import MlflowClient

    found: dict[str, str] = {}
    client = MlflowClient(uri)
    for exp in client.search_experiments():
        found[f"experiment {exp.name} tags"] = repr(exp.tags)
        for run in client.search_runs([exp.experiment_id]):
            rid = run.info.run_id
            found[f"run {rid} params"] = repr(run.data.params)
            found[f"run {rid} tags"] = repr(run.data.tags)
            (folder / "downloads" / rid).mkdir(parents=True)
            local = Path(client.download_artifacts(rid, "", str(folder / "downloads" / rid)))
            for f in local.rglob("*"):
                if f.is_file():
                    found[f"run {rid} artifact {f.relative_to(local)}"] = f.read_bytes().decode("latin-1")
    return found
