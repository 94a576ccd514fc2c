"""Hardening (issue 11): one safe-name rule (``ablate.names``) for every name a user gives, checked
where the name enters, before anything is written: ablation, factor and variant names, study
names, spec names, ``--experiment`` and ``export --name``. A refused name is one error line,
exit 2, and leaves nothing behind: no folder outside the project (or inside it), no MLflow
experiment, run or registered model, no Optuna storage.

Everything runs in this process against a temp folder; the export cases use a SQLite store with
one metric-only run (the refusal must come before the model is even downloaded).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
import yaml
from helpers import ROOT, assert_clean_failure, cli_in_process
from mlflow.tracking import MlflowClient

from ablate.errors import SpecError
from ablate.names import check_name, inside

PRESET = str(ROOT / "ablations/presets/unet-baseline.yaml")

UNSAFE = {
    "parent-path": "../../somewhere/x",
    "slash": "a/b",
    "dot-dot": "a..b",
    "leading-dot": ".hidden",
    "space": "my run",
    "quote": "it's",
    "empty": "",
    "too-long": "x" * 101,
    "newline": "a\nb",
    "absolute": "/tmp/x",
}
SAFE = ["skip-types", "unet_baseline", "d4", "v1.2", "A", "x" * 100]


def ids(cases: dict[str, str]) -> list[str]:
    return list(cases)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working folder two levels down, so that `../../somewhere` stays inside tmp_path."""
    work = tmp_path / "project" / "work"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    return work


def nothing_written(tmp_path: Path, *expected: str) -> None:
    """Only the files the test wrote exist under tmp_path: no report, store, queue or escaped folder."""
    found = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert found == sorted(expected), found


@pytest.mark.parametrize("name", SAFE)
def test_safe_names_pass(name: str) -> None:
    assert check_name(name, "Name") == name


@pytest.mark.parametrize("name", list(UNSAFE.values()) + [3, None], ids=[*UNSAFE, "int", "none"])
def test_unsafe_names_are_refused_naming_the_rule(name: object) -> None:
    with pytest.raises(SpecError, match=r"^Name .* is not a safe name; expected 1-100 letters, digits"):
        check_name(name, "Name")


@pytest.mark.parametrize("name", ["../x", "../../x", "a/../../x", "/etc"])
def test_a_path_built_from_a_name_stays_in_its_folder(tmp_path: Path, name: str) -> None:
    with pytest.raises(SpecError, match=r"leads outside the folder"):
        inside(tmp_path / "reports", name, "Ablation name")
    assert inside(tmp_path / "reports", "ok", "Ablation name") == tmp_path / "reports" / "ok"


def ablation_body(name: str = "t", factor: str = "depth", variant: str = "d3") -> dict:
    return {"name": name, "base": PRESET, "seeds": 2, "factors": {factor: {variant: {"depth": 3}}}}


ABLATIONS = {
    **{f"name-{k}": (ablation_body(name=v), r"Ablation file '.*ab\.yaml': name .* is not a safe name")
       for k, v in UNSAFE.items() if k != "empty"},
    "factor": (ablation_body(factor="a/b"), r"Ablation file '.*ab\.yaml': factor 'a/b' is not a safe name"),
    "variant": (ablation_body(variant="x y"), r"factor 'depth', variant 'x y' is not a safe name"),
    "variant-with-equals": (ablation_body(variant="k=v"), r"variant 'k=v' is not a safe name"),
}


@pytest.mark.parametrize("action", ["show", "run"])
@pytest.mark.parametrize("body, pattern", ABLATIONS.values(), ids=list(ABLATIONS))
def test_an_unsafe_ablation_name_writes_nothing(tmp_path: Path, workdir: Path, capsys: pytest.CaptureFixture[str],
                                                action: str, body: dict, pattern: str) -> None:
    (workdir / "ab.yaml").write_text(yaml.safe_dump(body))
    extra = ["--no-store"] if action == "show" else ["--storage", f"sqlite:///{workdir / 'q.db'}",
                                                     "--tracking-uri", f"sqlite:///{workdir / 'm.db'}"]
    code, _, err = cli_in_process(["ablation", action, "ab.yaml", *extra], capsys)
    assert_clean_failure(code, err, pattern)
    nothing_written(tmp_path, "project/work/ab.yaml")


STUDY_NAMES = {k: v for k, v in UNSAFE.items() if k != "empty"}


@pytest.mark.parametrize("action", ["show", "run"])
@pytest.mark.parametrize("name", STUDY_NAMES.values(), ids=list(STUDY_NAMES))
def test_an_unsafe_study_name_writes_nothing(tmp_path: Path, workdir: Path, capsys: pytest.CaptureFixture[str],
                                             action: str, name: str) -> None:
    body = {"name": name, "base": PRESET, "trials": 2,
            "space": {"model.depth": {"type": "categorical", "choices": [2, 3]}}}
    (workdir / "st.yaml").write_text(yaml.safe_dump(body))
    extra = [] if action == "show" else ["--workers", "0", "--storage", f"sqlite:///{workdir / 'q.db'}",
                                         "--tracking-uri", f"sqlite:///{workdir / 'm.db'}"]
    code, _, err = cli_in_process(["study", action, "st.yaml", *extra], capsys)
    assert_clean_failure(code, err, r"Study file '.*st\.yaml': name .* is not a safe name")
    nothing_written(tmp_path, "project/work/st.yaml")


SPEC_NAMES = {k: v for k, v in UNSAFE.items() if k not in ("empty",)}


@pytest.mark.parametrize("command", ["spec", "run"])
@pytest.mark.parametrize("name", SPEC_NAMES.values(), ids=list(SPEC_NAMES))
def test_an_unsafe_spec_name_writes_nothing(tmp_path: Path, workdir: Path, capsys: pytest.CaptureFixture[str],
                                            command: str, name: str) -> None:
    (workdir / "s.yaml").write_text(yaml.safe_dump({"base": PRESET, "name": name}))
    extra = [] if command == "spec" else ["--tracking-uri", f"sqlite:///{workdir / 'm.db'}"]
    code, _, err = cli_in_process([command, "s.yaml", *extra], capsys)
    assert_clean_failure(code, err, r"Spec name .* is not a safe name")
    nothing_written(tmp_path, "project/work/s.yaml")


def test_a_file_stem_that_is_not_a_safe_name_asks_for_a_name(tmp_path: Path, workdir: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "my spec.yaml").write_text("seed: 1\n")  # no name: the file stem names it
    code, _, err = cli_in_process(["spec", "my spec.yaml"], capsys)
    assert_clean_failure(code, err, r"Spec name 'my spec' is not a safe name")
    code, out, _ = cli_in_process(["spec", "my spec.yaml", "name=my-spec"], capsys)
    assert code == 0 and '"name": "my-spec"' in out


@pytest.mark.parametrize("name", ["a/b", "../x", "my runs"])
def test_an_unsafe_experiment_name_writes_nothing(tmp_path: Path, workdir: Path, capsys: pytest.CaptureFixture[str],
                                                  name: str) -> None:
    code, _, err = cli_in_process(["run", PRESET, "--experiment", name,
                                   "--tracking-uri", f"sqlite:///{workdir / 'm.db'}"], capsys)
    assert_clean_failure(code, err, r"--experiment .* is not a safe name")
    nothing_written(tmp_path)


# --- export: refused before any bundle is built or model logged -----------------------------------

@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A SQLite store with one FINISHED metric-only run in 'ok-exp' and one in 'my runs' (MLflow allows
    spaces in experiment names; such a name may be read from, but not become a model's name)."""
    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    client = MlflowClient(uri)
    for experiment in ("ok-exp", "my runs"):
        exp_id = client.create_experiment(experiment, artifact_location=(root / "artifacts").as_uri())
        run = client.create_run(exp_id)
        client.log_metric(run.info.run_id, "best_val_miou", 0.5)
        client.set_terminated(run.info.run_id, "FINISHED")
    yield root, uri
    mlflow.set_tracking_uri(previous)


def nothing_exported(client: MlflowClient, folder: Path) -> None:
    assert client.search_registered_models() == []
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}, [r.info for r in runs]
    assert not (folder / "exports").exists()


EXPORTS = {
    **{f"name-{k}": (["--best-of", "ok-exp", "--name", v], r"--name .* is not a safe name")
       for k, v in UNSAFE.items() if k in ("parent-path", "slash", "space", "dot-dot", "too-long")},
    "default-name": (["--best-of", "my runs"],
                     r"The experiment name 'my runs' cannot name the registered model .* give one with --name"),
}


@pytest.mark.parametrize("argv, pattern", EXPORTS.values(), ids=list(EXPORTS))
def test_an_unsafe_model_name_is_refused_before_anything_is_built(
        store: tuple[Path, str], workdir: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
        pattern: str) -> None:
    root, uri = store
    code, _, err = cli_in_process(["export", *argv, "--tracking-uri", uri], capsys)
    assert_clean_failure(code, err, pattern)
    nothing_exported(MlflowClient(uri), workdir)
    assert list(workdir.iterdir()) == []
