"""Hardening (issue 11, item 2): a value outside its domain is one clear error line, exit 2, no
traceback, and nothing left behind, whether it comes from a spec field, a block keyword, an
ablation or study file, a CLI option, or a model too big for the machine.

Validation cases run the CLI in this process (no TensorFlow needed); the memory refusal runs
``ablate run`` on the synthetic fixture against a SQLite MLflow store in ``tmp_path``.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from helpers import PRESET, ROOT, TINY_MODEL, assert_clean_failure, cli_in_process

from ablate import memory
from ablate.domains import DOMAINS
from ablate.errors import AblateError
from ablate.registry import ALL_REGISTRIES
from ablate.spec import load_spec

PRESETS = sorted((ROOT / "ablations/presets").glob("*.yaml"))
ABLATIONS = sorted((ROOT / "ablations").glob("*.yaml"))


@pytest.fixture
def limit_24gb(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 24 GB machine, whatever this one has free."""
    monkeypatch.setenv(memory.LIMIT_ENV, "24")


# --- spec fields (pydantic) -------------------------------------------------------------

SPEC_FIELDS = [
    ("train.epochs=true", r"'train\.epochs'.*integer.*True"),
    ("train.epochs=3.5", r"'train\.epochs'.*integer.*3\.5"),
    ("train.epochs=three", r"'train\.epochs'.*integer.*'three'"),
    ("train.batch_size=0", r"'train\.batch_size'.*greater than or equal to 1"),
    ("train.mixed_precision=1", r"'train\.mixed_precision'.*boolean"),
    ("seed=-1", r"'seed'.*greater than or equal to 0.*-1"),
    ("seed=4294967296", r"'seed'.*less than or equal to 4294967295"),
    ("seed=2.5", r"'seed'.*integer"),
    ("data.val_fraction=.nan", r"'data\.val_fraction'.*finite"),
    ("data.val_fraction=.inf", r"'data\.val_fraction'.*finite"),
    ("data.limit=true", r"'data\.limit'.*integer"),
    ("tracking.mask_every=-1", r"'tracking\.mask_every'.*greater than or equal to 0"),
]


@pytest.mark.parametrize("override,pattern", SPEC_FIELDS, ids=[c[0] for c in SPEC_FIELDS])
def test_spec_field_out_of_domain(override: str, pattern: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli_in_process(["spec", str(PRESET), override], capsys)
    assert_clean_failure(code, err, pattern)
    assert out == ""


# --- block keywords (ablate.domains through the registries) --------------------------------

BLOCK_KEYS = [
    ("optimizer.learning_rate=-1", r"'optimizer\.learning_rate'.*> 0.*got -1"),
    ("optimizer.learning_rate=0", r"'optimizer\.learning_rate'.*> 0.*got 0"),
    ("optimizer.learning_rate=.nan", r"'optimizer\.learning_rate'.*finite.*nan"),
    ("optimizer.learning_rate=.inf", r"'optimizer\.learning_rate'.*finite.*inf"),
    ("optimizer.learning_rate=fast", r"'optimizer\.learning_rate'.*finite number.*'fast'"),
    ("optimizer.weight_decay=-0.1", r"'optimizer\.weight_decay'.*>= 0"),
    ("optimizer.clipnorm=0", r"'optimizer\.clipnorm'.*> 0"),  # default None: the domain still applies
    ("optimizer={type: sgd, momentum: 1.0}", r"'optimizer\.momentum'.*\[0, 1\)"),
    ("schedule.factor=1.5", r"'schedule\.factor'.*\(0, 1\)"),
    ("schedule.patience=2.5", r"'schedule\.patience'.*integer.*2\.5"),
    ("schedule.patience=true", r"'schedule\.patience'.*integer.*True"),
    ("schedule={type: cosine, min_lr_ratio: 2}", r"'schedule\.min_lr_ratio'.*\[0, 1\]"),
    ("model.filters=3.5", r"'model\.filters'.*integer.*3\.5"),
    ("model.filters=0", r"'model\.filters'.*>= 1"),
    ("model.depth=true", r"'model\.depth'.*integer.*True"),
    ("model.width_mult=0", r"'model\.width_mult'.*> 0"),
    ("model.bottleneck={type: aspp, rates: [1, -2]}", r"'model\.bottleneck\.rates\[1\]'.*>= 1.*-2"),
    ("model.regularizer={type: dropout, rate: 1.0}", r"'model\.regularizer\.rate'.*\[0, 1\)"),
    ("model.regularizer={type: l2, strength: -1.0e-4}", r"'model\.regularizer\.strength'.*>= 0"),
    ("loss={type: focal, gamma: -1}", r"'loss\.gamma'.*>= 0"),
    ("augment.0.p=1.5", r"'augment\[0\]\.p'.*\[0, 1\]"),
    ("augment.0.p=.nan", r"'augment\[0\]\.p'.*finite"),
    ("loss.ignore_background=1", r"'loss\.ignore_background'.*true or false"),
]


@pytest.mark.parametrize("override,pattern", BLOCK_KEYS, ids=[c[0] for c in BLOCK_KEYS])
def test_block_keyword_out_of_domain(override: str, pattern: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli_in_process(["spec", str(PRESET), override], capsys)
    assert_clean_failure(code, err, pattern)
    assert out == ""


def test_domains_name_real_keys_and_admit_every_default() -> None:
    """The table is declared once for all blocks: each key exists somewhere, and no shipped
    default lies outside its own domain (which would refuse a spec that leaves it alone)."""
    keys: set[str] = set()
    for registry in ALL_REGISTRIES.values():
        for name in registry.names():
            schema = registry.schema(name)
            keys |= schema.params
            for key, default in schema.defaults.items():
                domain = DOMAINS.get(key)
                if domain is None or not isinstance(default, (int, float, list, tuple)):
                    continue
                for value in default if isinstance(default, (list, tuple)) else [default]:
                    assert value in domain, f"{registry.kind} '{name}': default {key}={default!r} not {domain.text()}"
    assert set(DOMAINS) <= keys, f"DOMAINS names keys no block takes: {sorted(set(DOMAINS) - keys)}"


# --- ablation and study files --------------------------------------------------------------

def _ablation(tmp_path: Path, **changes: object) -> Path:
    body = {"name": "bad", "base": str(PRESET), "seeds": 3,
            "factors": {"skip": {"add": {"skip": {"type": "add"}}}}, **changes}
    path = tmp_path / "ablation.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


ABLATION_CASES = [
    ({"seeds": -1}, r"seeds must be >= 1"),
    ({"seeds": [0, -1]}, r"'seeds.*greater than or equal to 0"),
    ({"seeds": [0, 4294967296]}, r"'seeds.*less than or equal to 4294967295"),
    ({"seeds": 2.5}, r"'seeds'.*valid"),
    ({"seeds": True}, r"'seeds'.*valid"),
    ({"seeds": {"min": 5, "max": 3}}, r"min \(5\) must be <= max \(3\)"),
    ({"seeds": {"min": 3, "max": 6, "step": 0}}, r"'seeds.*step'.*greater than or equal to 1"),
    ({"budget": {"epochs": True}}, r"'budget\.epochs'.*integer"),
    ({"budget": {"epochs": 2.5}}, r"'budget\.epochs'.*integer"),
    ({"min_effect": math.nan}, r"'min_effect'"),
    ({"alpha": math.inf}, r"'alpha'"),
    ({"design": "factorial", "factors": {"skip": {"add": {"skip": {"type": "add"}}}, "depth": {}}},
     r"Factor 'depth'.*no variants"),
    ({"factors": {"lr": {"neg": {"optimizer": {"learning_rate": -0.001}}}}},
     r"variant lr=neg.*'optimizer\.learning_rate'.*> 0"),
]


@pytest.mark.parametrize("changes,pattern", ABLATION_CASES, ids=[str(c[0])[:40] for c in ABLATION_CASES])
def test_ablation_file_out_of_domain(changes: dict, pattern: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli_in_process(["ablation", "show", str(_ablation(tmp_path, **changes)), "--no-store"], capsys)
    assert_clean_failure(code, err, pattern)


def _study(tmp_path: Path, **changes: object) -> Path:
    body = {"name": "bad", "base": str(PRESET), "trials": 4,
            "space": {"model.depth": {"type": "int", "low": 2, "high": 3}}, **changes}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


STUDY_CASES = [
    ({"trials": 2.5}, r"'trials'.*integer"),
    ({"trials": True}, r"'trials'.*integer"),
    ({"space": {"model.depth": {"type": "int", "low": 2, "high": 4, "step": 0}}},
     r"'model\.depth'.*step.*greater than 0"),
    ({"space": {"optimizer.learning_rate": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "step": 0.0}}},
     r"step.*greater than 0"),
    ({"space": {"optimizer.learning_rate": {"type": "float", "low": math.nan, "high": 1.0}}}, r"finite"),
    ({"space": {"optimizer.learning_rate": {"type": "float", "low": 1.0e-4, "high": math.inf}}}, r"finite"),
    ({"space": {"model.depth": {"type": "int", "low": 4, "high": 2}}}, r"low \(4\.0\) must be <= high \(2\.0\)"),
    ({"space": {"optimizer.learning_rate": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": 1}}},
     r"log.*boolean"),
    ({"space": {"optimizer.learning_rate": {"type": "float", "low": -1.0, "high": 1.0e-2}}},
     r"'optimizer\.learning_rate'.*> 0"),
]


@pytest.mark.parametrize("changes,pattern", STUDY_CASES, ids=[str(c[0])[:40] for c in STUDY_CASES])
def test_study_file_out_of_domain(changes: dict, pattern: str, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli_in_process(["study", "show", str(_study(tmp_path, **changes))], capsys)
    assert_clean_failure(code, err, pattern)


# --- CLI numeric options --------------------------------------------------------------------

CLI_CASES = [
    (["study", "run", "{study}", "--timeout", "nan"], r"--timeout: expected a finite number > 0, got 'nan'"),
    (["study", "run", "{study}", "--timeout", "inf"], r"--timeout: expected a finite number > 0"),
    (["study", "run", "{study}", "--timeout", "0"], r"--timeout: expected a finite number > 0"),
    (["study", "run", "{study}", "--trials", "0"], r"--trials: expected a whole number >= 1, got 0"),
    (["study", "run", "{study}", "--trials", "2.5"], r"--trials: expected a whole number >= 1, got '2\.5'"),
    (["study", "run", "{study}", "--workers", "-1"], r"--workers: expected a whole number >= 0"),
    (["study", "run", "{study}", "--workers", "100000"], r"--workers: 100000 worker processes.*at most \d+"),
    (["ablation", "run", "{ablation}", "--workers", "-1"], r"--workers: expected a whole number >= 0"),
    (["ablation", "run", "{ablation}", "--seeds", "0"], r"--seeds: expected a whole number >= 1"),
    (["ablation", "plan", "{ablation}", "--until-decided", "--max-seeds", "-2"], r"--max-seeds: expected"),
    (["worker", "--study", "x", "--max-trials", "0"], r"--max-trials: expected a whole number >= 1"),
    (["data", "synth", "--out", "{out}", "--n", "0"], r"--n: expected a whole number >= 1"),
    (["data", "synth", "--out", "{out}", "--n-test", "-1"], r"--n-test: expected a whole number >= 0"),
    (["data", "synth", "--out", "{out}", "--seed", "-1"], r"--seed: expected a seed from 0 to 4294967295"),
    (["ui", "--port", "0"], r"--port: expected a port from 1 to 65535, got 0"),
    (["dashboard", "--port", "70000"], r"--port: expected a port from 1 to 65535"),
    (["export", "--study", "x", "--trial", "-1"], r"--trial: expected a whole number >= 0"),
    (["predict", "--model", "m", "--data", "d.npz", "--out", "{out}", "--batch-size", "0"],
     r"--batch-size: expected a whole number >= 1"),
]


@pytest.mark.parametrize("argv,pattern", CLI_CASES, ids=[" ".join(c[0][:2] + c[0][-2:]) for c in CLI_CASES])
def test_cli_numeric_option_out_of_domain(argv: list[str], pattern: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Refused by argparse before anything runs: no study storage, no MLflow store, no output."""
    paths = {"study": str(_study(tmp_path)), "ablation": str(_ablation(tmp_path)), "out": str(tmp_path / "o.npz")}
    stores = ["--storage", f"sqlite:///{tmp_path / 'optuna.db'}",
              "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    argv = [a.format(**paths) for a in argv] + (stores if argv[1] == "run" else [])
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = cli_in_process(argv, capsys)
    assert_clean_failure(code, err, pattern)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no optuna.db, mlflow.db or o.npz


# --- workers ---------------------------------------------------------------------------------

def test_worker_bound_follows_cores_and_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(memory.LIMIT_ENV, "1000")
    cores = memory.max_workers()
    assert cores >= 1
    monkeypatch.setenv(memory.LIMIT_ENV, "1.5")  # one worker's worth of memory: one worker
    assert memory.max_workers() == 1
    memory.check_workers(1)
    with pytest.raises(AblateError, match=r"^2 worker processes .* at most 1 \(\d+ CPU cores; 1\.5 GB set in "
                                          r"ABLATE_MEMORY_LIMIT_GB, about 1\.0 GB per TensorFlow worker\)"):
        memory.check_workers(2)


# --- memory --------------------------------------------------------------------------------

ESTIMATED = [
    ["model.filters=4", "model.depth=2"],
    ["model.filters=8", "model.depth=3", "model.bottleneck={type: se_da}"],
    ["model.filters=4", "model.depth=4", "model.conv={type: residual, kernel_size: 5}"],
    ["model.filters=4", "model.depth=2", "model.skip={type: add}", "model.upsample={type: bilinear}"],
    ["model={type: coarse_fine, filters: 4, depth: 2, global_branch: {type: unet, filters: 4, depth: 3}, "
     "fusion: {type: cross_scale}}"],
]


@pytest.mark.parametrize("overrides", ESTIMATED, ids=lambda o: " ".join(o)[:60])
def test_estimate_counts_parameters_within_a_sane_factor(overrides: list[str]) -> None:
    """The estimate's parameters lie between 1x and 2.5x a built model's: conservative, not wild."""
    from ablate.models import build_model

    spec = load_spec(PRESET, overrides)
    real = build_model(spec.model).count_params()
    assert 1.0 <= memory.parameters(spec) / real <= 2.5, (memory.parameters(spec), real)


def test_input_size_matches_the_models() -> None:
    from ablate.task import INPUT_SHAPE

    assert memory.INPUT_HW == INPUT_SHAPE[:2]


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_presets_fit_a_24gb_machine(path: Path, limit_24gb: None) -> None:
    spec = load_spec(path)
    memory.check(spec)
    assert memory.estimate(spec) < 8 * memory.GB  # far below: the refusal is for absurd specs only


@pytest.mark.parametrize("path", ABLATIONS, ids=lambda p: p.stem)
def test_shipped_ablations_fit_a_24gb_machine(path: Path, limit_24gb: None) -> None:
    from ablate.ablation.design import load_ablation

    load_ablation(path)  # checks every arm's memory


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite MLflow store for the refusals (creating one costs seconds); it must stay empty."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.mark.parametrize("override", ["model.filters=4096", "model.depth=5 model.filters=1024",
                                      "train.batch_size=100000"])
def test_run_refuses_a_model_too_big_before_any_mlflow_run(override: str, synth_npz: Path, store_uri: str,
                                                           limit_24gb: None,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    uri = store_uri
    argv = ["run", str(PRESET), f"data.path={synth_npz}", "train.epochs=1", *override.split(), "--tracking-uri", uri]
    code, _, err = cli_in_process(argv, capsys)
    assert_clean_failure(code, err, r"needs about [\d,.]+ GB to train .* over the 24\.0 GB set in "
                                    r"ABLATE_MEMORY_LIMIT_GB; set ABLATE_MEMORY_LIMIT_GB or reduce model\.filters")
    import mlflow

    client = mlflow.MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert client.search_runs(experiments) == [] if experiments else True  # no run at all, so none RUNNING


def test_ablation_refuses_an_arm_too_big_before_queueing(tmp_path: Path, limit_24gb: None,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = _ablation(tmp_path, factors={"width": {"huge": {"filters": 4096}}})
    code, _, err = cli_in_process(["ablation", "show", str(path), "--no-store"], capsys)
    assert_clean_failure(code, err, r"Ablation 'bad', arm width=huge: The model needs about")


def test_study_refuses_a_choice_too_big(tmp_path: Path, limit_24gb: None, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    _study(tmp_path, space={"model.filters": {"type": "categorical", "choices": [8, 4096]}})
    monkeypatch.chdir(tmp_path)  # a short path, as a user gives it: the line quotes it
    code, _, err = cli_in_process(["study", "show", "study.yaml"], capsys)
    assert_clean_failure(code, err, r"space key 'model\.filters'=4096 gives an invalid spec: .*needs about")


@pytest.mark.parametrize("value", ["abc", "0", "-4", "nan", "inf"])
def test_bad_memory_limit_is_one_line(value: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(memory.LIMIT_ENV, value)
    path = _ablation(tmp_path)
    code, _, err = cli_in_process(["ablation", "show", str(path), "--no-store"], capsys)
    assert_clean_failure(code, err, r"ABLATE_MEMORY_LIMIT_GB=.* is not a number of gigabytes > 0")


def test_tiny_model_is_never_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(memory.LIMIT_ENV, "2")  # a small laptop: the test suite's models still fit
    memory.check(load_spec(PRESET, [*TINY_MODEL, "train.batch_size=8"]))
