"""``ablate export``: selection from MLflow, every format reloads and agrees, the champion alias,
a SavedModel that runs without this project, and a served model that answers over HTTP.

Tiny real runs (filters 4, depth 2, one epoch on 64 synthetic pairs) are tagged like an
ablation's arms and a study's trials; selection edge cases use metric-only runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pytest
from helpers import assert_one_error_line, free_port, run_without_project
from mlflow.tracking import MlflowClient

from ablate import load_all, tracking
from ablate.cli.main import main
from ablate.data.synth import generate
from ablate.errors import AblateError
from ablate.export import ExportError, ExportResult, Selector, export_model, select
from ablate.export import check as chk
from ablate.export.select import pareto_front
from ablate.runner import run_spec
from ablate.spec import validate
from ablate.task import MARS, Task

load_all()  # registers the blocks: a model.keras of this project reloads

FORMATS = {"model.keras", "saved_model[serving_default]", "saved_model[serving_uint8]", "model.tflite",
           "mlflow pyfunc"}


def tiny_spec(data: Path, seed: int) -> dict:
    return {"name": "tiny", "seed": seed, "data": {"path": str(data)},
            "model": {"type": "unet", "depth": 2, "filters": 4},
            "train": {"epochs": 1, "batch_size": 16, "early_stopping": 0}, "tracking": {"mask_every": 0}}


def parent(client: MlflowClient, experiment: str, tags: dict[str, str]) -> str:
    exp_id = tracking.ensure_experiment(experiment)
    run = client.create_run(exp_id, tags=tags, run_name=experiment)
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def fake_child(client: MlflowClient, parent_id: str, tags: dict[str, str], metrics: dict[str, float],
               status: str = "FINISHED", start_time: int | None = None) -> str:
    """A run with tags and metrics but no model: enough for selection."""
    exp_id = client.get_run(parent_id).info.experiment_id
    run = client.create_run(exp_id, start_time=start_time, tags={"mlflow.parentRunId": parent_id, **tags})
    for key, value in metrics.items():
        client.log_metric(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id, status)
    return run.info.run_id


def arm_tags(variant: str, seed: int, factor: str = "skip") -> dict[str, str]:
    return {"ablate.kind": "arm", "ablation": "abl", "factor": factor, "variant": variant, "seed": str(seed),
            "is_baseline": str(variant == "concat").lower()}


@dataclass
class Store:
    """The temp tracking store with a tiny ablation and study, exported once each."""

    uri: str
    client: MlflowClient
    data: Path
    arms: dict[int, str]  # seed -> real run id of variant 'concat'
    trial0: str
    ablation: ExportResult
    study: ExportResult


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    from ablate.data.synth import write_npz

    root = tmp_path_factory.mktemp("export")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # tracking.ensure_experiment puts artifacts under ./mlruns
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        client = MlflowClient()
        data = write_npz(root / "data.npz", generate(64, seed=0, n_test=8))
        abl = parent(client, "abl", {"ablate.kind": "ablation", "ablation": "abl"})
        arms = {seed: run_spec(validate(tiny_spec(data, seed)), "abl", abl, arm_tags("concat", seed), verbose=0).run_id
                for seed in (0, 1)}
        c0, c1 = (client.get_run(arms[s]).data.metrics["best_val_miou"] for s in (0, 1))
        assert c0 > 0, "the tiny model learned nothing: the 'add' arm below cannot be set just under it"
        # a worse variant, but not significantly (deltas c0 and c0 / 100: p ~ 0.5), and a failed run
        # whose metric must not count; 'concat' is exported with force=True
        for seed, value in ((0, 0.0), (1, c1 - c0 / 100)):
            fake_child(client, abl, arm_tags("add", seed), {"best_val_miou": value})
        fake_child(client, abl, arm_tags("add", 2), {"best_val_miou": 0.99}, status="FAILED")
        client.log_text(abl, "| arm | mean |\n|---|---|\n| concat | x |\n", "report/report.md")

        stu = parent(client, "stu", {"ablate.kind": "study", "study": "stu"})
        trial = {"ablate.kind": "trial", "study": "stu"}
        trial0 = run_spec(validate(tiny_spec(data, 2)), "stu", stu, {**trial, "trial_number": "0"}, verbose=0).run_id
        fake_child(client, stu, {**trial, "trial_number": "1"}, {"best_val_miou": 0.99}, status="KILLED")
        fake_child(client, stu, {**trial, "trial_number": "2"}, {}, status="FAILED")
        client.log_text(stu, "Study summary: 3 trials, TPE.\n", "report/summary.md")

        ablation = export_model(Selector(ablation="abl", force=True), out=root / "out-abl", tracking_uri=uri)
        study = export_model(Selector(study="stu"), out=root / "out-stu", refit=True, tracking_uri=uri)
        yield Store(uri, client, data, arms, trial0, ablation, study)
    mlflow.set_tracking_uri(previous)


class Expected:
    """The exported .keras model's probabilities for uint8 images; masks must match up to numerical ties.

    Another process (or TF kernel) may flip the argmax of a pixel whose two best classes are
    within float rounding of each other; the export's own reload check tolerates exactly those.
    """

    def __init__(self, bundle: Path, images: np.ndarray) -> None:
        from ablate.export.formats import keras_probabilities, load_keras

        self.probs = keras_probabilities(load_keras(bundle / "model.keras"),
                                         (images.astype(np.float32) / 255.0)[..., None])

    def check(self, masks: np.ndarray) -> None:
        from ablate.export.check import PROB_ATOL, compare

        result = compare("masks", self.probs, np.asarray(masks), None, PROB_ATOL)
        assert result.ok, result.line()


def expected_masks(bundle: Path, images: np.ndarray) -> Expected:
    return Expected(bundle, images)


# --- the ablation export ---------------------------------------------------------------------

def test_ablation_export_moves_champion_alias_to_new_version(store: Store) -> None:
    res = store.ablation
    version = store.client.get_model_version_by_alias("abl", "champion")
    assert str(version.version) == res.version
    source = store.client.get_run(res.choice.run.info.run_id)
    assert version.tags["source_run_id"] == source.info.run_id
    assert version.tags["spec_hash"] == source.data.tags["spec_hash"]
    assert version.tags["data_fingerprint"] == source.data.tags["data_fingerprint"]
    assert res.choice.run.info.run_id in store.arms.values()  # never the 'add' variant or the failed run
    export_run = store.client.get_run(res.export_run_id)
    assert export_run.info.status == "FINISHED" and export_run.data.tags["ablate.kind"] == "export"


def test_every_format_is_written_and_matches_the_trained_model(store: Store) -> None:
    out = store.ablation.out_dir
    for name in ("model.keras", "saved_model/saved_model.pb", "model.tflite", "spec.json", "model_card.md",
                 "preprocessing.json"):
        assert (out / name).is_file(), name
    checks = {c.name: c for c in store.ablation.checks}
    assert set(checks) == FORMATS
    assert all(c.ok for c in checks.values())
    assert all(c.max_prob_diff <= chk.PROB_ATOL for c in checks.values()
               if c.max_prob_diff is not None and c.name != "model.tflite")
    assert validate(json.loads((out / "spec.json").read_text())).spec_hash == \
        store.client.get_run(store.ablation.choice.run.info.run_id).data.tags["spec_hash"]
    assert not list(out.parent.glob(".out-abl.*")), "the staging folder was left behind"


def test_model_card_and_preprocessing_record_the_choice(store: Store) -> None:
    out = store.ablation.out_dir
    card = (out / "model_card.md").read_text()
    run_id = store.ablation.choice.run.info.run_id
    assert run_id in card and "closest to that mean" in card
    assert "best_val_iou_big_rock" in card and "| concat" in card  # per-class metrics, the variant table
    assert "| concat | x |" in card  # the ablation's own report.md
    assert "## Evidence for the choice: none (exported with --force)" in card
    assert "**The exported variant was NOT significantly better than the runner-up.**" in card
    assert re.search(r"variant 'concat' is NOT significantly better than runner-up 'add' on best_val_miou: "
                     r"delta \+0\.\d{3} mIoU \[95% CI -\d\.\d{3}, \+\d\.\d{3}\], paired t-test p=0\.\d+ over 2 "
                     r"paired seeds \(0, 1\)", card)
    assert "Intended use and limits" in card
    assert "- Classes (5, by label): 0 background, 1 soil, 2 bedrock, 3 sand, 4 big_rock" in card
    assert "mIoU is the mean IoU over the scored classes (soil, bedrock, sand, big_rock)" in card
    prep = json.loads((out / "preprocessing.json").read_text())
    assert Task.model_validate(prep["task"]) == MARS == store.ablation.task  # runs without task.json are Mars
    assert [c["name"] for c in prep["classes"]] == list(MARS.classes)
    assert [tuple(c["colour"]) for c in prep["classes"]] == list(MARS.palette)
    assert [c["scored"] for c in prep["classes"]] == [False, True, True, True, True]
    assert prep["input"]["shape"] == [64, 128, 1] and prep["ignore_label"] == 0


def test_saved_model_runs_in_a_process_that_cannot_import_the_project(store: Store, tmp_path: Path) -> None:
    images = generate(4, seed=5)["training_set"][:, 0]
    np.save(tmp_path / "images.npy", images)
    run_without_project(f"""
import numpy as np, tensorflow as tf
m = tf.saved_model.load({str(store.ablation.out_dir / 'saved_model')!r})
x = np.load('images.npy')
u = m.signatures['serving_uint8'](images=tf.constant(x[..., None]))
f = m.signatures['serving_default'](images=tf.constant(x.astype('float32') / 255))
assert u['probabilities'].shape == (4, 64, 128, 5)
assert 'ablate' not in sys.modules
np.save('masks.npy', u['masks'].numpy()); np.save('masks_f.npy', f['masks'].numpy())
""", tmp_path)
    expected = expected_masks(store.ablation.out_dir, images)
    expected.check(np.load(tmp_path / "masks.npy"))
    expected.check(np.load(tmp_path / "masks_f.npy"))


def test_pyfunc_takes_uint8_and_float_with_or_without_channel(store: Store) -> None:
    model = mlflow.pyfunc.load_model("models:/abl@champion")
    images = generate(3, seed=6)["training_set"][:, 0]
    expected = expected_masks(store.ablation.out_dir, images)
    for batch in (images, images[..., None], images.astype(np.float32) / 255, images.astype(np.float64)):
        out = model.predict(batch)
        assert out.shape == (3, 64, 128) and out.dtype == np.uint8
        expected.check(out)
    with pytest.raises(Exception, match="NaN or inf"):
        model.predict(np.full((1, 64, 128), np.nan))
    with pytest.raises(Exception, match=r"\(N, 64, 128\)"):
        model.predict(np.zeros((1, 32, 32), np.uint8))


@contextlib.contextmanager
def served(model_uri: str, tracking_uri: str, folder: Path, timeout: float = 240) -> Iterator[str]:
    """``mlflow models serve`` on a free loopback port, in its own process group."""
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # uvicorn
    log = open(folder / "serve.log", "w")  # noqa: SIM115 - closed below, after the server ends
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager",
                             "local", "-h", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT,
                            env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while not _pings(url):
            assert proc.poll() is None, (folder / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "model server did not start:\n" + (folder / "serve.log").read_text()
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


def _pings(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/ping", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _post(url: str, payload: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url + "/invocations", data=json.dumps(payload).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_served_champion_answers_a_post_with_masks(store: Store, tmp_path: Path) -> None:
    images = generate(2, seed=7)["training_set"][:, 0]
    expected = expected_masks(store.ablation.out_dir, images)
    with served("models:/abl@champion", store.uri, tmp_path) as url:
        status, body = _post(url, {"inputs": images.tolist()})
        assert status == 200, body
        expected.check(np.asarray(body["predictions"], dtype=np.uint8))
        status, body = _post(url, {"inputs": (images[..., None] / 255.0).tolist()})  # float 0-1, channel axis
        assert status == 200, body
        expected.check(np.asarray(body["predictions"], dtype=np.uint8))
        status, body = _post(url, {"inputs": np.zeros((1, 32, 32)).tolist()})
        assert status == 400 and "64, 128" in json.dumps(body)


# --- the study export (with --refit) -----------------------------------------------------------

def test_study_export_takes_the_best_finished_trial_and_refits_it(store: Store) -> None:
    res = store.study
    assert res.choice.run.info.run_id == store.trial0  # not the pruned trial with 0.99
    refit = store.client.get_run(res.model_run_id)
    assert refit.info.run_id != store.trial0 and refit.info.status == "FINISHED"
    assert refit.data.tags["ablate.kind"] == "refit" and refit.data.tags["refit_of"] == store.trial0
    version = store.client.get_model_version_by_alias("stu", "champion")
    assert str(version.version) == res.version and version.tags["model_run_id"] == refit.info.run_id
    assert version.tags["source_run_id"] == store.trial0
    card = (res.out_dir / "model_card.md").read_text()
    assert "1 pruned" in card and "1 failed" in card and "Refit" in card
    assert "Study summary: 3 trials, TPE." in card
    assert all(c.ok for c in res.checks) and {c.name for c in res.checks} == FORMATS


def test_predict_from_the_registry_matches_the_export_folder(store: Store, tmp_path: Path) -> None:
    from ablate.export import load_predictor, predict_file

    a = predict_file(load_predictor("models:/stu@champion"), store.data, tmp_path / "a.npz")
    b = predict_file(load_predictor(str(store.study.out_dir)), store.data, tmp_path / "b.npz")
    assert a.images == b.images == 8
    np.testing.assert_array_equal(np.load(a.out)["masks"], np.load(b.out)["masks"])


# --- the reload check fails loudly --------------------------------------------------------------

def test_reload_check_fails_when_a_format_differs(store: Store, tmp_path: Path) -> None:
    import shutil

    from ablate.export.formats import load_keras

    bundle = tmp_path / "bundle"
    shutil.copytree(store.ablation.out_dir, bundle)
    other = next(r for r in store.arms.values() if r != store.ablation.choice.run.info.run_id)
    shutil.copyfile(store.client.download_artifacts(other, "model/model.keras", str(tmp_path)), bundle / "model.keras")
    with pytest.raises(ExportError, match=r"Reload check failed.*model\.keras"):
        chk.check_bundle(load_keras(store.ablation.out_dir / "model.keras"), bundle)


# --- selection, on metric-only runs --------------------------------------------------------------

@pytest.fixture
def metrics_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MlflowClient]:
    """An empty tracking store of its own, for metric-only runs (no training, no export)."""
    uri, previous = f"sqlite:///{tmp_path / 'mlflow.db'}", mlflow.get_tracking_uri()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield MlflowClient()
    mlflow.set_tracking_uri(previous)  # the module's `store` may be in use by the next test


def ablation_of(client: MlflowClient, name: str, arms: dict[str, list[float]], baseline: str = "",
                seeds: dict[str, list[int]] | None = None, metric: str = "best_val_miou") -> dict[str, list[str]]:
    """A parent run tagged like ``ablate.ablation.runner.ensure_parent`` and one FINISHED run per (arm, seed)."""
    pid = parent(client, name, {"ablate.kind": "ablation", "ablation": name, "design": "fixed"})
    ids: dict[str, list[str]] = {}
    for variant, values in arms.items():
        tags = {"ablation": name, "arm": f"skip={variant}", "is_baseline": str(variant == baseline).lower()}
        ids[variant] = [fake_child(client, pid, {**arm_tags(variant, s), **tags}, {metric: v})
                        for s, v in zip((seeds or {}).get(variant, range(len(values))), values, strict=True)]
    return ids


REFUSAL_TAIL = (r"; nothing was exported\. Run more seeds \(e\.g\. `ablate ablation run FILE --until-decided`\) "
                r"or pass --force to export anyway\.$")


def test_ablation_selection_takes_the_seed_closest_to_the_best_variant_mean(metrics_client: MlflowClient) -> None:
    client = metrics_client
    runs = ablation_of(client, "sel", {"a": [0.50, 0.53, 0.62], "b": [0.54, 0.55]}, baseline="b")["a"]
    pid = client.get_run(runs[0]).data.tags["mlflow.parentRunId"]
    fake_child(client, pid, {**arm_tags("b", 9), "ablation": "sel"}, {"best_val_miou": 0.99}, status="FAILED")
    choice = select(client, Selector(ablation="sel", force=True))  # a is not shown better than b
    assert choice.run.info.run_id == runs[1]  # mean 0.55: 0.53 is closest, 0.62 is the luckiest
    assert "'a'" in choice.reason and "0.5500" in choice.reason and "luckiest seed (seed 2, 0.6200)" in choice.reason
    assert choice.table.index("| skip | a") < choice.table.index("| skip | b")


def test_ablation_export_refuses_a_winner_indistinguishable_from_the_runner_up(metrics_client: MlflowClient) -> None:
    arms = {"a": [0.70, 0.72, 0.71, 0.69, 0.73], "b": [0.71, 0.70, 0.72, 0.70, 0.71]}  # deltas -1, 2, -1, -1, 2
    ids = ablation_of(metrics_client, "tie", arms, baseline="b")
    with pytest.raises(AblateError, match=r"^Ablation 'tie': variant 'a' is NOT significantly better than runner-up "
                       r"'b' on best_val_miou: delta \+0\.002 mIoU \[95% CI -0\.0\d\d, \+0\.0\d\d\], paired t-test "
                       r"p=0\.\d+ over 5 paired seeds \(0, 1, 2, 3, 4\)" + REFUSAL_TAIL):
        select(metrics_client, Selector(ablation="tie"))
    forced = select(metrics_client, Selector(ablation="tie", force=True))
    assert forced.supported is False and forced.run.info.run_id in ids["a"]
    assert forced.evidence.startswith("Exported with --force, although variant 'a' is NOT significantly better than "
                                      "runner-up 'b' on best_val_miou: delta +0.002 mIoU [95% CI -0.0")
    assert "its mean best_val_miou over 5 seeds (0, 1, 2, 3, 4) is 0.7100" in forced.evidence


def test_ablation_export_states_the_evidence_when_the_winner_is_consistently_better(
        metrics_client: MlflowClient) -> None:
    from ablate.export import card

    arms = {"a": [0.741, 0.729, 0.754, 0.738, 0.745],  # b + 0.021, 0.019, 0.024, 0.018, 0.022
            "b": [0.720, 0.710, 0.730, 0.720, 0.723], "base": [0.70, 0.69, 0.71, 0.70, 0.70]}
    ids = ablation_of(metrics_client, "win", arms, baseline="base")
    choice = select(metrics_client, Selector(ablation="win"))
    assert choice.supported is True and choice.run.info.run_id in ids["a"]
    assert re.match(r"Variant 'a' beat runner-up 'b' by \+0\.021 mIoU \[95% CI \+0\.01\d, \+0\.02\d\], paired t-test "
                    r"p<0\.001 over 5 paired seeds \(0, 1, 2, 3, 4\); its mean best_val_miou over 5 seeds "
                    r"\(0, 1, 2, 3, 4\) is 0\.7414\. Against the baseline 'base': \+0\.041 mIoU", choice.evidence)
    spec = validate(tiny_spec(Path("data.npz"), 0))
    text = card.model_card(card.CardInputs(choice, spec, "win", "1", [], "sqlite:///mlflow.db"))
    assert "## Evidence for the choice\n\nVariant 'a' beat runner-up 'b' by +0.021 mIoU" in text
    assert "NOT significantly" not in text


def test_lower_is_better_metrics_favour_the_lower_mean(metrics_client: MlflowClient) -> None:
    metric = "latency_ms_per_image"
    ablation_of(metrics_client, "fast", {"a": [5.0, 5.1, 4.9], "b": [6.0, 6.2, 6.0]}, metric=metric)
    choice = select(metrics_client, Selector(ablation="fast", metric=metric))
    assert choice.supported and choice.evidence.startswith(f"Variant 'a' beat runner-up 'b' by -1.067 {metric}")


def test_ablation_export_refuses_without_a_runner_up_or_shared_seeds(metrics_client: MlflowClient) -> None:
    ablation_of(metrics_client, "solo", {"a": [0.7, 0.8]})
    with pytest.raises(AblateError, match=r"^Ablation 'solo': variant 'a' is the only arm with FINISHED runs, so "
                       r"there is no runner-up to show that it is better" + REFUSAL_TAIL):
        select(metrics_client, Selector(ablation="solo"))
    assert select(metrics_client, Selector(ablation="solo", force=True)).evidence.startswith(
        "Exported with --force, although variant 'a' is the only arm")
    ablation_of(metrics_client, "apart", {"a": [0.8, 0.8, 0.9], "b": [0.7, 0.7]}, seeds={"b": [3, 4]})
    with pytest.raises(AblateError, match=r"^Ablation 'apart': runner-up 'b' shares no seed with winner 'a' \(seeds "
                       r"3, 4 vs 0, 1, 2\), so the two cannot be compared seed by seed" + REFUSAL_TAIL):
        select(metrics_client, Selector(ablation="apart"))


def test_a_retried_seed_counts_once_and_force_is_for_ablations_only(metrics_client: MlflowClient) -> None:
    ids = ablation_of(metrics_client, "retry", {"a": [0.75, 0.76, 0.74], "b": [0.70, 0.71, 0.70]})
    pid = metrics_client.get_run(ids["a"][0]).data.tags["mlflow.parentRunId"]
    old = metrics_client.get_run(ids["a"][0]).info.start_time - 60_000  # an earlier, superseded try of seed 0
    fake_child(metrics_client, pid, {**arm_tags("a", 0), "ablation": "retry", "arm": "skip=a"},
               {"best_val_miou": 0.10}, start_time=old)
    choice = select(metrics_client, Selector(ablation="retry"))
    assert choice.supported and "over 3 seeds (0, 1, 2) is 0.7500" in choice.evidence
    with pytest.raises(AblateError, match="--force applies to --ablation only"):
        select(metrics_client, Selector(study="retry", force=True))


def test_study_selection_by_trial_number_and_pareto_index(store: Store) -> None:
    client = store.client
    pid = parent(client, "two", {"ablate.kind": "study", "study": "two", "objectives": "best_val_miou,params"})
    trial = lambda n: {"ablate.kind": "trial", "study": "two", "trial_number": str(n)}  # noqa: E731
    points = [(0.60, 900.0), (0.55, 300.0), (0.50, 500.0), (0.40, 100.0)]  # trial 2 is dominated by trial 1
    ids = [fake_child(client, pid, trial(n), {"best_val_miou": m, "params": p}) for n, (m, p) in enumerate(points)]
    fake_child(client, pid, trial(4), {"best_val_miou": 0.9, "params": 1.0}, status="KILLED")
    assert select(client, Selector(study="two")).run.info.run_id == ids[0]
    assert select(client, Selector(study="two", trial=2)).run.info.run_id == ids[2]
    assert select(client, Selector(study="two", pareto_index=1)).run.info.run_id == ids[1]
    finished = [client.get_run(i) for i in ids]
    assert [r.info.run_id for r in pareto_front(finished, "best_val_miou", "params")] == [ids[0], ids[1], ids[3]]
    with pytest.raises(AblateError, match="Trial 4 is KILLED \\(pruned\\)"):
        select(client, Selector(study="two", trial=4))
    with pytest.raises(AblateError, match="out of range.*3 trials"):
        select(client, Selector(study="two", pareto_index=3))
    with pytest.raises(AblateError, match="no trial 7"):
        select(client, Selector(study="two", trial=7))


def test_best_of_skips_parent_runs_and_run_needs_a_finished_run(store: Store) -> None:
    choice = select(store.client, Selector(best_of="abl"))
    assert choice.run.info.run_id in store.arms.values()  # the FAILED 0.99 and the parent are skipped
    failed = fake_child(store.client, parent(store.client, "other", {}), {}, {}, status="FAILED")
    with pytest.raises(AblateError, match="FAILED; only FINISHED runs"):
        select(store.client, Selector(run_id=failed))


def test_export_errors_are_one_clear_line(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--ablation", "nope", "--tracking-uri", store.uri]) == 2
    assert_one_error_line(capsys.readouterr().err, "No MLflow experiment named 'nope'")
    assert main(["export", "--run", "0" * 32, "--tracking-uri", store.uri]) == 2
    assert_one_error_line(capsys.readouterr().err, "Run '0{32}' not found")
    assert main(["export", "--ablation", "abl", "--trial", "1", "--tracking-uri", store.uri]) == 2
    assert_one_error_line(capsys.readouterr().err, "--trial and --pareto-index apply to --study only")
    assert main(["export", "--study", "stu", "--force", "--tracking-uri", store.uri]) == 2
    assert_one_error_line(capsys.readouterr().err, "--force applies to --ablation only")
    no_model = fake_child(store.client, parent(store.client, "nomodel", {}), {}, {"best_val_miou": 0.5})
    assert main(["export", "--run", no_model, "--tracking-uri", store.uri]) == 2
    assert_one_error_line(capsys.readouterr().err, "has no model/model.keras")


def test_cli_refuses_an_unsupported_winner_and_force_exports_it(store: Store, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    args = ["export", "--ablation", "abl", "--name", "abl-cli", "--out", str(tmp_path / "out"),
            "--tracking-uri", store.uri]
    exports_before = len(store.client.search_runs([store.ablation.choice.run.info.experiment_id],
                                                  "tags.`ablate.kind` = 'export'"))
    assert main(args) == 2
    assert_one_error_line(capsys.readouterr().err, r"Ablation 'abl': variant 'concat' is NOT significantly better "
                          r"than runner-up 'add'.*p=0\.\d+ over 2 paired seeds \(0, 1\).*--until-decided.*--force")
    assert not (tmp_path / "out").exists() and not store.client.search_registered_models("name = 'abl-cli'")
    assert len(store.client.search_runs([store.ablation.choice.run.info.experiment_id],
                                        "tags.`ablate.kind` = 'export'")) == exports_before
    assert main([*args, "--force"]) == 0
    assert "evidence: Exported with --force, although variant 'concat' is NOT" in capsys.readouterr().out
    card = (tmp_path / "out" / "model_card.md").read_text()
    assert "**The exported variant was NOT significantly better than the runner-up.**" in card
    assert store.client.get_model_version_by_alias("abl-cli", "champion").tags["source_run_id"] in store.arms.values()


# --- every registered block survives every format -------------------------------------------------

def _block_configs() -> list[dict]:
    """coarse_fine models that together use every conv block, skip, bottleneck, upsampler,
    regularizer and fusion: config k's local branch takes entry 2k, its global branch 2k + 1."""
    from ablate.registry import BOTTLENECKS, CONV_BLOCKS, FUSIONS, REGULARIZERS, SKIPS, UPSAMPLERS

    kinds = {"conv": CONV_BLOCKS, "skip": SKIPS, "bottleneck": BOTTLENECKS, "upsample": UPSAMPLERS,
             "regularizer": REGULARIZERS}
    fusions = FUSIONS.names()
    n = max(len(fusions), *((len(r) + 1) // 2 for r in kinds.values()))

    def blocks(i: int) -> dict:
        return {key: {"type": reg.names()[i % len(reg)]} for key, reg in kinds.items()}

    return [{"type": "coarse_fine", "depth": 2, "filters": 4, **blocks(2 * k),
             "fusion": {"type": fusions[k % len(fusions)]},
             "global_branch": {"type": "unet", "depth": 2, "filters": 4, **blocks(2 * k + 1)}} for k in range(n)]


@pytest.mark.slow
@pytest.mark.parametrize("config", _block_configs(), ids=lambda c: f"fusion-{c['fusion']['type']}")
def test_every_block_exports_to_every_format(config: dict, tmp_path: Path) -> None:
    import keras

    from ablate.export.formats import write_saved_model, write_tflite
    from ablate.models import build_model

    keras.utils.set_random_seed(0)
    model = build_model(config)
    model.save(tmp_path / "model.keras")
    write_saved_model(model, tmp_path / "saved_model")
    write_tflite(model, tmp_path / "model.tflite")
    checks = chk.check_bundle(model, tmp_path)
    assert [c.name for c in checks] == ["model.keras", "saved_model[serving_default]", "saved_model[serving_uint8]",
                                        "model.tflite"]
