"""deploy/k8s: rendered by kustomize, valid against the Kubernetes schemas, and safe; workers behave as pods.

No cluster runs here. ``kubectl kustomize deploy/k8s`` renders the manifests (CI installs kubectl
if it is missing, .ci/run; elsewhere the rendering tests skip), ``kubernetes-validate`` checks
every object against the bundled schemas of ``K8S_VERSION`` (offline), and ``violations`` checks
the invariants: no literal secret, ClusterIP Services only, one GPU per worker pod, restart
policy OnFailure, an Indexed worker Job, the compose stack's images. Each invariant is shown to
fail on a rendered object mutated to break it. The workers' side runs for real: a toy worker
process writes the heartbeat file that the manifest's probes read (and stops rewriting it when
its trial hangs), a SIGTERM queues its trial's retry that another worker takes, a worker exits 0
when the queue is used up, and ``ablate ablation run --workers 0`` (the campaign Job) only queues.
``make team-demo`` (tests/test_team.py) stands in for a running cluster: the same topology, natively.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from campaign_toy import STUCK
from helpers import ROOT, ablate_command, assert_clean_failure, cli_in_process, in_ci

K8S = ROOT / "deploy/k8s"
K8S_VERSION = "1.32.0"  # the schemas validated against (kubernetes-validate bundles them); Indexed Jobs scale from 1.27
HEARTBEAT = "/tmp/ablate/heartbeat"  # the worker Job's --heartbeat-file
JOBS = ("ablate-campaign", "ablate-worker")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY")
URL_WITH_PASSWORD = re.compile(r"://[^/\s:@]+:[^@\s/]+@")


# --- rendering ------------------------------------------------------------------------------------

def _kubectl() -> str:
    exe = shutil.which("kubectl")
    if exe is None:
        if in_ci():
            pytest.fail("CI=true but kubectl is missing (.ci/run installs Debian's kubernetes-client)", pytrace=False)
        pytest.skip("kubectl is not installed (apt-get install kubernetes-client); CI runs this test")
    return exe


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    """``kubectl kustomize deploy/k8s``, parsed: every object ``kubectl apply -k`` would create."""
    out = subprocess.run([_kubectl(), "kustomize", str(K8S)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def _source_ids() -> list[str]:
    """``Kind/name`` of every object written in deploy/k8s/*.yaml (the rendered set adds the ConfigMaps)."""
    ids = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            ids += [f"{d['kind']}/{d['metadata']['name']}" for d in yaml.safe_load_all(path.read_text()) if d]
    return ids


GENERATED = ["ConfigMap/ablate-config", "ConfigMap/ablate-campaign", "ConfigMap/postgres-init", "ConfigMap/mlflow-auth"]


def find(objects: list[dict[str, Any]], ident: str) -> dict[str, Any]:
    """The rendered object ``Kind/name`` (a generated ConfigMap's name carries a hash suffix)."""
    kind, name = ident.split("/")
    for obj in objects:
        base = obj["metadata"]["name"]
        if obj["kind"] == kind and (base == name or (kind == "ConfigMap" and re.fullmatch(rf"{name}-[a-z0-9]{{10}}",
                                                                                         base))):
            return obj
    raise AssertionError(f"{ident} is not in the rendered manifests")


def test_the_rendering_holds_every_source_object_and_the_generated_config(rendered: list[dict[str, Any]]) -> None:
    ids = sorted(_source_ids() + GENERATED)
    assert len(rendered) == len(ids), [f"{o['kind']}/{o['metadata']['name']}" for o in rendered]
    for ident in ids:
        assert find(rendered, ident)["metadata"]["namespace"] == "ablate", ident


@pytest.mark.parametrize("ident", _source_ids() + GENERATED)
def test_object_validates_against_the_kubernetes_schemas(rendered: list[dict[str, Any]], ident: str) -> None:
    import kubernetes_validate

    kubernetes_validate.validate(find(rendered, ident), K8S_VERSION, strict=True)  # raises with the field's path


def test_schema_validation_rejects_a_broken_object(rendered: list[dict[str, Any]]) -> None:
    """The validation above can fail: a misspelt field and a wrong type are both refused."""
    import kubernetes_validate

    job = copy.deepcopy(find(rendered, "Job/ablate-worker"))
    job["spec"]["paralelism"] = 2
    with pytest.raises(kubernetes_validate.ValidationError, match="paralelism"):
        kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    job = copy.deepcopy(find(rendered, "Job/ablate-worker"))
    job["spec"]["parallelism"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError, match="'two' is not of type 'integer'"):
        kubernetes_validate.validate(job, K8S_VERSION, strict=True)


# --- invariants -------------------------------------------------------------------------------------

def _compose_images() -> dict[str, str]:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    return {name: service["image"] for name, service in services.items()}


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    template = obj.get("spec", {}).get("template")
    return None if template is None else template["spec"]


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    pod = _pod_spec(obj) or {}
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str):
        yield value


def secret_violations(objects: list[dict[str, Any]]) -> list[str]:
    """Literal secrets: a Secret object, a secret-named env value or ConfigMap key, a URL with a password."""
    found = []
    for obj in objects:
        ident = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] == "Secret":
            found.append(f"{ident}: a Secret in the manifests (the user creates ablate-secrets)")
        for container in _containers(obj):
            for env in container.get("env", []):
                if SECRET_NAME.search(env["name"]) and "secretKeyRef" not in env.get("valueFrom", {}):
                    found.append(f"{ident}: env {env['name']} is not read from a Secret")
        if obj["kind"] == "ConfigMap":
            for key, value in obj.get("data", {}).items():
                if SECRET_NAME.search(key) and value:
                    found.append(f"{ident}: key {key} holds a value")
        found += [f"{ident}: a URL with a password" for s in _strings(obj) if URL_WITH_PASSWORD.search(s)]
    return found


def service_violations(objects: list[dict[str, Any]]) -> list[str]:
    return [f"Service/{o['metadata']['name']}: type {o['spec'].get('type', 'ClusterIP')}, not ClusterIP"
            for o in objects if o["kind"] == "Service" and o["spec"].get("type", "ClusterIP") != "ClusterIP"]


def job_violations(objects: list[dict[str, Any]]) -> list[str]:
    """Both Jobs restart OnFailure; the worker Job is Indexed, parallelism == completions, one GPU per container."""
    found = []
    for name in JOBS:
        job = find(objects, f"Job/{name}")
        if _pod_spec(job).get("restartPolicy") != "OnFailure":
            found.append(f"Job/{name}: restartPolicy {_pod_spec(job).get('restartPolicy')}, not OnFailure")
    spec = find(objects, "Job/ablate-worker")["spec"]
    if spec.get("completionMode") != "Indexed":
        found.append(f"Job/ablate-worker: completionMode {spec.get('completionMode')}, not Indexed")
    if spec.get("parallelism") != spec.get("completions"):
        found.append(f"Job/ablate-worker: parallelism {spec.get('parallelism')} != "
                     f"completions {spec.get('completions')}")
    for container in _pod_spec(find(objects, "Job/ablate-worker"))["containers"]:
        gpus = container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
        if str(gpus) != "1":
            found.append(f"Job/ablate-worker: container {container['name']} limits nvidia.com/gpu to {gpus}, not 1")
    return found


def image_violations(objects: list[dict[str, Any]]) -> list[str]:
    """Every container runs the image of its compose service (the Jobs: the worker's)."""
    images = _compose_images()
    expected = {"Job/ablate-campaign": images["worker"], "Job/ablate-worker": images["worker"],
                "Deployment/mlflow": images["mlflow"], "Deployment/dashboard": images["dashboard"],
                "StatefulSet/postgres": images["postgres"]}
    found = []
    for ident, image in expected.items():
        for container in _containers(find(objects, ident)):
            if container["image"] != image:
                found.append(f"{ident}: container {container['name']} runs {container['image']}, not {image}")
    return found


def violations(objects: list[dict[str, Any]]) -> list[str]:
    """Every broken invariant of the rendered manifests, one line each (none is the contract)."""
    return (secret_violations(objects) + service_violations(objects) + job_violations(objects)
            + image_violations(objects))


def test_the_rendered_manifests_keep_every_invariant(rendered: list[dict[str, Any]]) -> None:
    assert violations(rendered) == []


def _env(objects: list[dict[str, Any]], ident: str, container: int = 0) -> list[dict[str, Any]]:
    return _pod_spec(find(objects, ident))["containers"][container]["env"]


def _set_first(entries: list[dict[str, Any]], name: str, **fields: Any) -> None:
    entry = next(e for e in entries if e["name"] == name)
    entry.pop("valueFrom", None)
    entry.update(fields)


MUTATIONS: dict[str, tuple[Callable[[list[dict[str, Any]]], None], str]] = {
    "literal password in env": (
        lambda o: _set_first(_env(o, "Job/ablate-worker"), "PGPASSWORD", value="hunter2"),
        "Job/ablate-worker: env PGPASSWORD is not read from a Secret"),
    "secret key in a ConfigMap": (
        lambda o: find(o, "ConfigMap/ablate-config")["data"].update(MLFLOW_ADMIN_PASSWORD="hunter2"),
        "key MLFLOW_ADMIN_PASSWORD holds a value"),
    "password in a storage URL": (
        lambda o: _set_first(_env(o, "Job/ablate-campaign"), "ABLATE_STORAGE",
                             value="postgresql+psycopg2://ablate:hunter2@postgres:5432/optuna"),
        "Job/ablate-campaign: a URL with a password"),
    "a Secret object": (
        lambda o: o.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ablate-secrets"},
                            "stringData": {"postgres-password": "hunter2"}}),
        "Secret/ablate-secrets: a Secret in the manifests"),
    "a LoadBalancer": (
        lambda o: find(o, "Service/mlflow")["spec"].update(type="LoadBalancer"),
        "Service/mlflow: type LoadBalancer, not ClusterIP"),
    "no GPU limit": (
        lambda o: _pod_spec(find(o, "Job/ablate-worker"))["containers"][0]["resources"]["limits"].clear(),
        "limits nvidia.com/gpu to None, not 1"),
    "restartPolicy Never": (
        lambda o: _pod_spec(find(o, "Job/ablate-worker")).update(restartPolicy="Never"),
        "Job/ablate-worker: restartPolicy Never, not OnFailure"),
    "a campaign that restarts Never": (
        lambda o: _pod_spec(find(o, "Job/ablate-campaign")).update(restartPolicy="Never"),
        "Job/ablate-campaign: restartPolicy Never, not OnFailure"),
    "NonIndexed workers": (
        lambda o: find(o, "Job/ablate-worker")["spec"].update(completionMode="NonIndexed"),
        "completionMode NonIndexed, not Indexed"),
    "parallelism without completions": (
        lambda o: find(o, "Job/ablate-worker")["spec"].update(parallelism=8),
        "parallelism 8 != completions"),
    "another worker image": (
        lambda o: _pod_spec(find(o, "Job/ablate-worker"))["containers"][0].update(image="ablate-worker:dev"),
        "runs ablate-worker:dev, not ablate-worker:latest"),
    "another tracking image": (
        lambda o: _pod_spec(find(o, "Deployment/mlflow"))["containers"][0].update(image="mlflow:latest"),
        "Deployment/mlflow: container mlflow runs mlflow:latest"),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_each_invariant_fails_on_an_object_that_breaks_it(rendered: list[dict[str, Any]], mutation: str) -> None:
    mutate, expected = MUTATIONS[mutation]
    objects = copy.deepcopy(rendered)
    mutate(objects)
    found = violations(objects)
    assert any(expected in line for line in found), found


def test_the_init_script_and_auth_settings_are_the_compose_files(rendered: list[dict[str, Any]]) -> None:
    """Packaged by kustomize from the files docker-compose.yml mounts, not copies that could drift."""
    init = find(rendered, "ConfigMap/postgres-init")["data"]
    assert init == {"01-databases.sh": (ROOT / "deploy/postgres-init/01-databases.sh").read_text()}
    auth = find(rendered, "ConfigMap/mlflow-auth")["data"]
    assert auth == {"basic_auth.ini": (ROOT / "deploy/mlflow-auth/basic_auth.ini").read_text()}
    compose = (ROOT / "docker-compose.yml").read_text()
    assert "./deploy/postgres-init:/docker-entrypoint-initdb.d" in compose
    assert "./deploy/mlflow-auth/basic_auth.ini:/etc/mlflow/basic_auth.ini" in compose
    volumes = {v["name"]: v for v in _pod_spec(find(rendered, "StatefulSet/postgres"))["volumes"]}
    assert volumes["init"]["configMap"]["name"] == find(rendered, "ConfigMap/postgres-init")["metadata"]["name"]


def test_the_worker_command_names_the_heartbeat_its_probes_read(rendered: list[dict[str, Any]]) -> None:
    worker = _pod_spec(find(rendered, "Job/ablate-worker"))["containers"][0]
    command = worker["command"]
    assert command[:2] == ["ablate", "worker"] and command[command.index("--heartbeat-file") + 1] == HEARTBEAT
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert HEARTBEAT in " ".join(worker[probe]["exec"]["command"]), probe
    campaign = " ".join(_pod_spec(find(rendered, "Job/ablate-campaign"))["containers"][0]["command"])
    assert "--workers 0" in campaign


# --- the worker's heartbeat, read by the manifest's own probes --------------------------------------

def probe(rendered: list[dict[str, Any]], name: str, heartbeat: Path, stall_s: int = 2) -> int:
    """Runs the worker Job's probe ``name`` here, on ``heartbeat``; returns its exit status (0: passes)."""
    command = _pod_spec(find(rendered, "Job/ablate-worker"))["containers"][0][name]["exec"]["command"]
    command = [part.replace(HEARTBEAT, str(heartbeat)) for part in command]
    return subprocess.run(command, env={**os.environ, "ABLATE_STALL_S": str(stall_s)}, timeout=30).returncode


@pytest.fixture
def toy_queue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., tuple[Any, str, str]]:
    """``queue(name, *xs)``: a toy campaign on SQLite stores with ``xs`` queued; (study, storage, tracking URI)."""
    import mlflow

    from ablate.campaign import ParentRun, enqueue_missing, ensure_parent, open_queue
    from ablate.storage import open_storage

    storage, uri = f"sqlite:///{tmp_path / 'optuna.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("ABLATE_HEARTBEAT_S", "1")
    monkeypatch.setenv("ABLATE_GRACE_S", "3")
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)

    def queue(name: str, *xs: int) -> tuple[Any, str, str]:
        study = open_queue(name, open_storage(storage), kind="toy")
        ensure_parent(study, ParentRun(name))
        enqueue_missing(study, [{"x": x} for x in xs], key=lambda attrs: attrs.get("x"))
        return study, storage, uri

    yield queue
    mlflow.set_tracking_uri(before)


def start_toy_worker(name: str, storage: str, uri: str, tmp_path: Path, tag: str,
                     heartbeat: Path | None = None) -> subprocess.Popen[str]:
    cmd = [sys.executable, str(ROOT / "tests/campaign_toy.py"), "--study", name, "--storage", storage,
           "--tracking-uri", uri, "--quiet"]
    cmd += ["--heartbeat-file", str(heartbeat)] if heartbeat else []
    env = {**os.environ, "TOY_RELEASE": str(tmp_path / "release"), "ABLATE_HEARTBEAT_S": "1", "ABLATE_GRACE_S": "3"}
    return subprocess.Popen(cmd, env=env, stdout=open(tmp_path / f"{tag}.log", "w"), stderr=subprocess.STDOUT,
                            text=True)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _state_of(study: Any, x: int) -> list[str]:
    return [t.state.name for t in study.get_trials() if t.user_attrs.get("x") == x]


def _running_with_its_run(study: Any, x: int) -> bool:
    """The trial of ``x`` RUNNING and its MLflow run started (a stop from now on ends that run)."""
    return any(t.state.name == "RUNNING" and t.user_attrs.get("mlflow_run_id") for t in study.get_trials()
               if t.user_attrs.get("x") == x)


def test_heartbeat_is_rewritten_while_working_and_goes_stale_when_a_trial_hangs(
        rendered: list[dict[str, Any]], toy_queue: Callable[..., Any], tmp_path: Path) -> None:
    study, storage, uri = toy_queue("beats", 1, 2, STUCK)
    heartbeat = tmp_path / "hb" / "heartbeat"
    assert probe(rendered, "readinessProbe", heartbeat) != 0  # no worker yet: not ready
    worker = start_toy_worker("beats", storage, uri, tmp_path, "worker", heartbeat)
    try:
        wait_until(lambda: _state_of(study, STUCK) == ["RUNNING"], "the stuck trial to start")
        wait_until(lambda: "trial 2" in heartbeat.read_text(), "the stuck trial's beat")
        assert probe(rendered, "startupProbe", heartbeat) == 0
        assert probe(rendered, "readinessProbe", heartbeat) == 0
        assert probe(rendered, "livenessProbe", heartbeat, stall_s=30) == 0  # fresh
        first = heartbeat.stat().st_mtime
        time.sleep(3.5)  # the trial hangs: nothing rewrites the file
        assert heartbeat.stat().st_mtime == first
        assert probe(rendered, "livenessProbe", heartbeat, stall_s=3) != 0  # stale: the kubelet restarts it
        assert probe(rendered, "livenessProbe", heartbeat, stall_s=30) == 0
        (tmp_path / "release").touch()
        assert worker.wait(timeout=60) == 0, (tmp_path / "worker.log").read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
    assert [t.state.name for t in study.get_trials()] == ["COMPLETE"] * 3
    assert not heartbeat.exists()  # gone with the worker: not ready any more


# --- eviction: SIGTERM, a retry another pod takes; a worker exits 0 when the work is done -------------

def test_sigterm_ends_the_run_killed_and_another_worker_takes_the_retry(
        toy_queue: Callable[..., Any], tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from ablate.adapters import retried_from

    study, storage, uri = toy_queue("evicted", STUCK)
    evicted = start_toy_worker("evicted", storage, uri, tmp_path, "evicted")
    try:
        wait_until(lambda: _running_with_its_run(study, STUCK), "the trial's run to start")
        evicted.send_signal(signal.SIGTERM)  # what the kubelet sends a pod it evicts
        assert evicted.wait(timeout=60) == 128 + signal.SIGTERM, (tmp_path / "evicted.log").read_text()
    finally:
        if evicted.poll() is None:
            evicted.kill()
    first, retry = study.get_trials()
    assert (first.state.name, retry.state.name) == ("FAIL", "WAITING")  # queued at once, not after the grace period
    assert retried_from(retry) == first.number and retry.user_attrs["x"] == STUCK
    assert MlflowClient(uri).get_run(first.user_attrs["mlflow_run_id"]).info.status == "KILLED"

    (tmp_path / "release").touch()
    other = start_toy_worker("evicted", storage, uri, tmp_path, "other")
    assert other.wait(timeout=60) == 0, (tmp_path / "other.log").read_text()  # the queue is used up: exit 0
    assert [t.state.name for t in study.get_trials()] == ["FAIL", "COMPLETE"]
    assert "ran 1 trial(s); no queued work left" in (tmp_path / "other.log").read_text()


def test_ctrl_c_fails_the_trial_without_queueing_a_retry(toy_queue: Callable[..., Any], tmp_path: Path) -> None:
    """The user stopping a campaign is not an eviction: the command run again queues it (as before)."""
    study, storage, uri = toy_queue("stopped", STUCK)
    worker = start_toy_worker("stopped", storage, uri, tmp_path, "worker")
    try:
        wait_until(lambda: _state_of(study, STUCK) == ["RUNNING"], "the trial to start")
        worker.send_signal(signal.SIGINT)
        assert worker.wait(timeout=60) == 128 + signal.SIGINT
    finally:
        if worker.poll() is None:
            worker.kill()
    assert [t.state.name for t in study.get_trials()] == ["FAIL"]


def test_a_worker_exits_0_at_once_when_nothing_is_left(toy_queue: Callable[..., Any], tmp_path: Path) -> None:
    study, storage, uri = toy_queue("done", 1, 2)
    first = start_toy_worker("done", storage, uri, tmp_path, "first")
    assert first.wait(timeout=60) == 0, (tmp_path / "first.log").read_text()
    late = start_toy_worker("done", storage, uri, tmp_path, "late")  # a pod restarted after the work was done
    assert late.wait(timeout=60) == 0, (tmp_path / "late.log").read_text()
    assert "ran 0 trial(s)" in (tmp_path / "late.log").read_text()
    assert [t.state.name for t in study.get_trials()] == ["COMPLETE", "COMPLETE"]


def test_an_unwritable_heartbeat_file_is_one_line_before_any_trial(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, _, err = cli_in_process(["worker", "--study", "x", "--storage", f"sqlite:///{tmp_path / 'o.db'}",
                                   "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}",
                                   "--heartbeat-file", str(blocker / "heartbeat")], capsys)
    assert_clean_failure(code, err, r"--heartbeat-file .*/file/heartbeat: cannot write there")


# --- the campaign Job: queue only -----------------------------------------------------------------------

def _ablation(tmp_path: Path, synth_npz: Path, extra: str = "") -> Path:
    path = tmp_path / "k8s.yaml"
    path.write_text(f"name: k8s\nbase: {ROOT / 'ablations/presets/unet-baseline.yaml'}\ndesign: one-at-a-time\n"
                    f"seeds: 3\nbudget: {{epochs: 1}}\nfactors:\n  skip:\n    add: {{skip: {{type: add}}}}\n{extra}")
    return path


def test_ablation_run_with_no_workers_queues_every_run_and_runs_none(
        tmp_path: Path, synth_npz: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import mlflow
    import optuna
    from mlflow.tracking import MlflowClient

    storage, uri = f"sqlite:///{tmp_path / 'optuna.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = ["ablation", "run", str(_ablation(tmp_path, synth_npz)), f"data.path={synth_npz}", "--workers", "0",
            "--storage", storage, "--tracking-uri", uri]
    before = mlflow.get_tracking_uri()
    try:
        code, out, err = cli_in_process(argv, capsys)
        assert code == 0, err
        assert "2 arms x 3 seeds = 6 runs; 0 finished, 6 queued now" in out
        assert "ablate worker --study ablation.k8s --storage" in out
        study = optuna.load_study(study_name="ablation.k8s", storage=storage)
        assert [t.state.name for t in study.get_trials()] == ["WAITING"] * 6
        parent = MlflowClient(uri).get_run(study.user_attrs["mlflow_parent_run_id"])
        assert parent.info.status == "RUNNING" and not MlflowClient(uri).search_runs(
            [parent.info.experiment_id], "tags.`ablate.kind` = 'arm'")
        code, out, _ = cli_in_process(argv, capsys)  # the Job retried: the same parent, nothing queued twice
        assert code == 0 and "0 finished, 0 queued now" in out and len(study.get_trials()) == 6
    finally:
        mlflow.set_tracking_uri(before)


def test_an_ablation_queues_its_runs_before_workers_can_see_its_parent(tmp_path: Path, synth_npz: Path) -> None:
    """A worker Job starts beside the campaign Job: a worker needs the parent run, so once the
    parent is on the study every run must already be queued (or the worker finds nothing and exits 0)."""
    import mlflow
    from optuna.storages import RDBStorage

    from ablate.ablation.design import load_ablation
    from ablate.ablation.runner import prepare
    from ablate.campaign import PARENT

    queued_then: list[int] = []  # trials in the storage when the parent run is set on the study

    class Recording(RDBStorage):  # a real SQLite storage that looks at the queue when the parent is set
        def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
            if key == PARENT:
                queued_then.append(len(self.get_all_trials(study_id, deepcopy=False)))
            super().set_study_user_attr(study_id, key, value)

    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        ab = load_ablation(str(_ablation(tmp_path, synth_npz)), overrides=[f"data.path={synth_npz}"])
        _, _, queued = prepare(ab, Recording(f"sqlite:///{tmp_path / 'optuna.db'}"))
    finally:
        mlflow.set_tracking_uri(before)
    assert queued == 6 and queued_then == [6]


def test_a_sequential_ablation_cannot_be_only_queued(tmp_path: Path, synth_npz: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = _ablation(tmp_path, synth_npz)
    code, _, err = cli_in_process(["ablation", "run", str(path), "--until-decided", "--workers", "0",
                                   "--storage", f"sqlite:///{tmp_path / 'optuna.db'}",
                                   "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"], capsys)
    assert_clean_failure(code, err, r"--workers 0 queues a fixed design, but this one is sequential")
    assert not (tmp_path / "optuna.db").exists()


# --- epochs beat in a real worker ------------------------------------------------------------------------

@pytest.mark.slow
def test_a_training_worker_beats_at_every_epoch(tmp_path: Path, synth_npz: Path) -> None:
    """``ablate worker --heartbeat-file`` on a queued ablation: the file names each epoch as it ends."""
    sys.path.insert(0, str(ROOT))
    from deploy import team_demo as td

    storage, uri = f"sqlite:///{tmp_path / 'optuna.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = td.write_ablation(tmp_path, "beats", seeds=1, epochs=3)
    name = td.queue_ablation(path, [*td.TINY, "data.limit=64", f"data.path={synth_npz}"], storage, uri)
    heartbeat = tmp_path / "heartbeat"
    log = tmp_path / "worker.log"
    worker = subprocess.Popen([*ablate_command(), "worker", "--study", name, "--storage", storage, "--tracking-uri",
                               uri, "--quiet", "--heartbeat-file", str(heartbeat), "--max-trials", "1"],
                              cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    seen: set[str] = set()
    while worker.poll() is None:
        try:
            seen.add(heartbeat.read_text().split(": ", 1)[1].strip())
        except (OSError, IndexError):
            pass
        time.sleep(0.05)
    assert worker.returncode == 0, log.read_text()[-3000:]
    assert {f"epoch {n} of trial 0 done" for n in (1, 2, 3)} <= seen, seen
    assert "trial 0 of ablation.beats started" in seen

