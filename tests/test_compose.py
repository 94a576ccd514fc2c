"""docker-compose.yml: valid, loopback-only, secrets only from .env, a scalable GPU worker.

No Docker engine runs here: Debian's ``docker-compose`` parses, interpolates and validates the
file without one (``docker-compose config``). CI installs it (.ci/run); elsewhere the test skips.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml
from helpers import ROOT, in_ci

COMPOSE = ROOT / "docker-compose.yml"
SERVICES = {"postgres", "mlflow", "dashboard", "worker"}
TEST_PASSWORD = "test-placeholder-7f3a"


def _compose_cli() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        if in_ci():
            pytest.fail("CI=true but docker-compose is missing (.ci/run installs Debian's docker-compose)")
        pytest.skip("docker-compose is not installed (apt-get install docker-compose); CI runs this test")
    return exe


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``docker-compose config`` over a .env made from .env.example, parsed."""
    exe = _compose_cli()
    env_file = tmp_path_factory.mktemp("compose") / ".env"
    env_file.write_text((ROOT / ".env.example").read_text().replace("CHANGE-ME", TEST_PASSWORD))
    out = subprocess.run([exe, "--env-file", str(env_file), "-f", str(COMPOSE), "config"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def test_compose_has_the_four_services(config: dict[str, Any]) -> None:
    assert set(config["services"]) == SERVICES


def _published(ports: list[Any]) -> list[tuple[str, str]]:
    """(host ip, published port) of each port entry, short or long syntax."""
    out = []
    for p in ports:
        if isinstance(p, dict):
            out.append((str(p.get("host_ip", "")), str(p.get("published", ""))))
        else:
            parts = str(p).split(":")
            out.append((parts[0] if len(parts) == 3 else "", parts[-2] if len(parts) >= 2 else ""))
    return out


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_published_ports_bind_loopback_only(config: dict[str, Any], service: str) -> None:
    for host_ip, port in _published(config["services"][service].get("ports", [])):
        assert host_ip == "127.0.0.1", f"{service} publishes port {port} on {host_ip or 'every interface'}"


def test_worker_is_scalable_and_reserves_a_gpu(config: dict[str, Any]) -> None:
    worker = config["services"]["worker"]
    assert "container_name" not in worker and not worker.get("ports"), "a fixed name or port prevents --scale"
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d.get("capabilities", []) for d in devices), devices
    command = " ".join(worker["command"])
    assert command.startswith("ablate worker --study ") and "--storage postgresql+psycopg2://" in command


def test_servers_use_postgres_and_named_volumes(config: dict[str, Any]) -> None:
    services, volumes = config["services"], set(config.get("volumes", {}))
    postgres = services["postgres"]
    assert postgres["healthcheck"]["test"] and any(v.split(":")[0] in volumes for v in postgres["volumes"])
    mlflow = " ".join(services["mlflow"]["command"])
    assert re.search(r"--backend-store-uri postgresql\+psycopg2://\S+/mlflow", mlflow), mlflow
    destination = re.search(r"--artifacts-destination (\S+)", mlflow).group(1)
    assert any(v.split(":")[0] in volumes and v.split(":")[1] == destination for v in services["mlflow"]["volumes"])
    assert "optuna" in " ".join(services["dashboard"]["command"])
    init = (ROOT / "deploy/postgres-init/01-databases.sh").read_text()
    assert re.search(r"for db in .*\bmlflow\b.*\boptuna\b", init), init


def test_no_password_is_written_in_the_yaml(config: dict[str, Any]) -> None:
    """Secrets are ``${VAR}`` references to .env; once filled in they reach only environment values."""
    raw = yaml.safe_load(COMPOSE.read_text())
    for name, service in raw["services"].items():
        env = service.get("environment", {})
        for key, value in (env.items() if isinstance(env, dict) else (e.split("=", 1) for e in env)):
            if re.search(r"PASSWORD|SECRET|TOKEN|_KEY", key):
                assert re.fullmatch(r"\$\{[A-Z_]+(:[-?][^}]*)?\}", str(value)), f"{name}.{key} = {value!r}"
    for name, service in config["services"].items():
        outside_env = yaml.safe_dump({k: v for k, v in service.items() if k != "environment"})
        assert TEST_PASSWORD not in outside_env, f"the password reaches {name} outside its environment"
        assert not re.search(r"://[^/\s:@]+:[^@\s]+@", outside_env), f"a URL with a password in {name}"


def test_env_example_has_placeholders_and_env_is_ignored() -> None:
    example = (ROOT / ".env.example").read_text()
    required = set(re.findall(r"\$\{([A-Z_]+):\?", COMPOSE.read_text()))
    for var in required:
        assert re.search(rf"^{var}=", example, re.M), f"{var} is required by docker-compose.yml but not in .env.example"
    for line in example.splitlines():
        if re.match(r"^[A-Z_]*(PASSWORD|SECRET)[A-Z_]*=.", line):
            assert line.endswith("=CHANGE-ME"), f"not a placeholder: {line}"
    assert re.search(r"^\.env$", (ROOT / ".gitignore").read_text(), re.M)


def test_worker_image_is_tensorflow_gpu_within_the_project_range() -> None:
    from packaging.requirements import Requirement

    dockerfile = (ROOT / "Dockerfile").read_text()
    version = re.search(r"^FROM tensorflow/tensorflow:([\d.]+)-gpu AS worker$", dockerfile, re.M).group(1)
    deps = yaml.safe_load(_pyproject_deps())
    tf = next(Requirement(d) for d in deps if d.startswith("tensorflow"))
    assert tf.specifier.contains(version), f"base image TensorFlow {version} is outside {tf.specifier}"
    assert re.search(r"^RUN pip install '\.\[team\]' ", dockerfile, re.M)  # the worker needs the PostgreSQL driver


def _pyproject_deps() -> str:
    import tomllib

    return yaml.safe_dump(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
