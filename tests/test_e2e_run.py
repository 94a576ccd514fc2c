"""End to end: `ablate run` on the real data against a real `mlflow server`, read back with MlflowClient."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
import pytest
from helpers import (
    PRESET,
    TINY_MODEL,
    assert_one_error_line,
    own_lines,
    require_real_data,
    requires_real_data,
    run_cli,
)
from mlflow.tracking import MlflowClient

from ablate import load_all
from ablate.data.loader import file_fingerprint
from ablate.spec import load_spec
from ablate.task import MARS

pytestmark = pytest.mark.slow

PER_EPOCH = ["loss", "val_loss", "val_miou", "learning_rate", "epoch_time",
             *(f"val_iou_{name}" for name in MARS.scored_names)]


def real_overrides(data: Path) -> list[str]:
    return [f"data.path={data}", "data.limit=200", *TINY_MODEL, "train.epochs=1", "tracking.mask_every=1"]


def only_run(client: MlflowClient, experiment: str) -> Any:
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"experiment {experiment} was not created"
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return runs[0]


def artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    out: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        out |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return out


@pytest.fixture(scope="module")
def finished_run(mlflow_uri: str) -> dict[str, Any]:
    data = require_real_data()
    proc = run_cli(["run", str(PRESET), *real_overrides(data), "--tracking-uri", mlflow_uri,
                    "--experiment", "e2e-finished"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(tracking_uri=mlflow_uri)
    return {"proc": proc, "client": client, "run": only_run(client, "e2e-finished"), "data": data}


@requires_real_data
def test_run_finishes_and_prints_its_link(finished_run: dict[str, Any], mlflow_uri: str) -> None:
    run, proc = finished_run["run"], finished_run["proc"]
    assert run.info.status == "FINISHED"
    assert f"run {run.info.run_id} FINISHED: best val mIoU" in proc.stdout
    assert f"{mlflow_uri}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}" in proc.stdout


@requires_real_data
def test_params_are_the_flattened_spec(finished_run: dict[str, Any]) -> None:
    params = finished_run["run"].data.params
    spec = load_spec(PRESET, real_overrides(finished_run["data"]))
    assert spec.flat().items() <= params.items()  # every spec key, as a dotted param
    assert params["model.skip.type"] == "concat"
    assert params["model.filters"] == "4" and params["train.epochs"] == "1" and params["data.limit"] == "200"


@requires_real_data
def test_tags_record_provenance(finished_run: dict[str, Any]) -> None:
    import tensorflow as tf

    tags = finished_run["run"].data.tags
    spec = load_spec(PRESET, real_overrides(finished_run["data"]))
    assert tags["spec_hash"] == spec.spec_hash
    assert tags["data_fingerprint"] == file_fingerprint(finished_run["data"])
    assert tags["seed"] == "0"
    assert tags["tf_version"] == tf.__version__
    assert re.fullmatch(r"(CPU|GPU).+", tags["device"]), tags["device"]
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", tags["git_commit"]), tags["git_commit"]
    assert "error" not in tags


@requires_real_data
def test_per_epoch_metrics_and_summary(finished_run: dict[str, Any]) -> None:
    client, run = finished_run["client"], finished_run["run"]
    for key in PER_EPOCH:
        history = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in history] == [0], key
        assert np.isfinite(history[0].value), key
    values = {key: client.get_metric_history(run.info.run_id, key)[0].value for key in PER_EPOCH}
    assert 0.0 <= values["val_miou"] <= 1.0 and values["loss"] > 0 and values["epoch_time"] > 0
    assert values["learning_rate"] == pytest.approx(1e-3)
    metrics = run.data.metrics
    assert metrics["params"] > 1000 and metrics["train_time_s"] > 0 and metrics["epochs_run"] == 1
    assert 0.0 <= metrics["best_val_miou"] <= 1.0 and metrics["latency_ms_per_image"] > 0


@requires_real_data
def test_artifacts_spec_masks_confusion_and_model(finished_run: dict[str, Any], tmp_path: Path) -> None:
    client, run = finished_run["client"], finished_run["run"]
    run_id = run.info.run_id
    paths = artifact_paths(client, run_id)
    assert {"spec.json", "confusion_matrix.png", "model/model.keras"} <= paths, paths
    masks = sorted(p for p in paths if re.fullmatch(r"images/masks\+step\+\d+\+.*\.png", p))
    steps = [int(p.split("+")[2]) for p in masks]
    assert 0 in steps and len(steps) >= 2, masks  # every epoch (mask_every=1) plus the final grid

    spec_json = json.loads(Path(client.download_artifacts(run_id, "spec.json", str(tmp_path))).read_text())
    assert spec_json == load_spec(PRESET, real_overrides(finished_run["data"])).to_dict()

    grid = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(
        client.download_artifacts(run_id, masks[-1], str(tmp_path))))
    assert grid.ndim == 3 and grid.shape[1] > 3 * 128  # image | truth | prediction side by side

    load_all()  # registers the blocks, as a user does before loading a model of this project
    model = keras.saving.load_model(client.download_artifacts(run_id, "model/model.keras", str(tmp_path)))
    x = np.zeros((2, 64, 128, 1), np.float32)
    probs = model.predict(x, verbose=0)
    assert probs.shape == (2, 64, 128, 5)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-4)
    # The model is saved on a thread while the run's last steps go on: it must be the model that made
    # the run's final predictions (the restored best weights), not a half-written or earlier one.
    with np.load(client.download_artifacts(run_id, "predictions/sample.npz", str(tmp_path))) as sample:
        images, final = sample["images"].astype(np.float32)[..., None] / 255.0, sample["pred"]
    again = np.argmax(model.predict(images, verbose=0), axis=-1)
    assert (again == final).mean() > 0.99  # the images were stored as uint8: a rare pixel may flip


@requires_real_data
def test_validation_predictions_are_what_the_per_image_record_scored(finished_run: dict[str, Any],
                                                                    tmp_path: Path) -> None:
    """predictions/val.npz (kept from the best epoch's validation pass, read by the report's image
    figures) scores, image by image, exactly what per_image.parquet logged."""
    import pandas as pd

    from ablate.data.loader import load_npz
    from ablate.scoring import per_image_iou, per_image_miou

    client, run_id = finished_run["client"], finished_run["run"].info.run_id
    with np.load(client.download_artifacts(run_id, "predictions/val.npz", str(tmp_path))) as logged:
        index, pred = logged["index"], logged["pred"]
    record = pd.read_parquet(client.download_artifacts(run_id, "per_image.parquet", str(tmp_path)))
    assert index.tolist() == record["index"].tolist() and pred.dtype == np.uint8
    truth = load_npz(finished_run["data"], limit=200).masks[index]
    np.testing.assert_allclose(per_image_miou(per_image_iou(truth, pred)), record["miou"], atol=1e-9)
    with np.load(client.download_artifacts(run_id, "predictions/sample.npz", str(tmp_path))) as sample:
        grid = sample["pred"]  # the final grid's images: evenly spaced, the first and last included
    np.testing.assert_array_equal(grid[0], pred[0])
    np.testing.assert_array_equal(grid[-1], pred[-1])


def test_a_failing_model_save_raises_and_leaves_no_files(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    from ablate import tracking

    class Unsavable:
        def save(self, path: Path) -> None:
            raise OSError(f"disk full writing {Path(path).name}")

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(OSError, match="disk full writing model.keras"):
        with tracking.model_saved_alongside(Unsavable()):
            pass
    assert list(tmp_path.iterdir()) == []  # the save's temporary folder is gone


# The real CLI with a fault injected after each epoch's metrics are logged: a failure mid-training
# that no spec validation can move earlier.
INJECT = """
import sys
from ablate import tracking
from ablate.cli import main

logged = tracking.MlflowLogger.on_epoch_end
def on_epoch_end(self, epoch, logs=None):
    logged(self, epoch, logs)
    raise {error}("injected at epoch %d" % (epoch + 1))
tracking.MlflowLogger.on_epoch_end = on_epoch_end
sys.exit(main())
"""


def run_cli_with_fault(error: str, args: list[str]) -> Any:
    import subprocess
    import sys

    from helpers import ROOT

    return subprocess.run([sys.executable, "-c", INJECT.format(error=error), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


@requires_real_data
def test_a_run_that_fails_mid_training_in_the_cli_ends_failed(mlflow_uri: str, tmp_path: Path) -> None:
    data = require_real_data()
    proc = run_cli_with_fault("RuntimeError", ["run", str(PRESET), *real_overrides(data), "train.epochs=2",
                                               "--tracking-uri", mlflow_uri, "--experiment", "e2e-failed-cli"])
    assert proc.returncode == 1
    assert_one_error_line(proc.stderr, r"^ablate: error: RuntimeError: injected at epoch 1 \(rerun with --debug")
    client = MlflowClient(tracking_uri=mlflow_uri)
    run = only_run(client, "e2e-failed-cli")
    assert run.info.status == "FAILED" and run.info.end_time is not None
    assert run.data.tags["error"] == "RuntimeError: injected at epoch 1"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_miou")] == [0]  # logged before it failed
    traceback = Path(client.download_artifacts(run.info.run_id, "error.txt", str(tmp_path))).read_text()
    assert "Traceback" in traceback and "injected at epoch 1" in traceback
    assert "model/model.keras" not in artifact_paths(client, run.info.run_id)


def test_an_interrupted_run_ends_killed(mlflow_uri: str, synth_npz: Path) -> None:
    proc = run_cli_with_fault("KeyboardInterrupt", ["run", str(PRESET), f"data.path={synth_npz}", "data.limit=64",
                                                    *TINY_MODEL, "train.epochs=2", "--tracking-uri", mlflow_uri,
                                                    "--experiment", "e2e-killed"])
    assert proc.returncode == 130
    assert own_lines(proc.stderr) == ["ablate: interrupted"]
    run = only_run(MlflowClient(tracking_uri=mlflow_uri), "e2e-killed")
    assert run.info.status == "KILLED"
    assert run.data.tags["error"] == "interrupted by the user (Ctrl-C)"


def test_an_invalid_spec_fails_before_any_run_starts(mlflow_uri: str) -> None:
    proc = run_cli(["run", str(PRESET), "train.epoch=1", "--tracking-uri", mlflow_uri, "--experiment", "e2e-invalid"])
    assert proc.returncode == 2
    assert_one_error_line(proc.stderr, r"Unknown key 'epoch' in train")
    assert MlflowClient(tracking_uri=mlflow_uri).get_experiment_by_name("e2e-invalid") is None


class Boom(keras.callbacks.Callback):
    """Fails at the end of the first epoch, after that epoch's metrics were logged."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        raise RuntimeError(f"boom at epoch {epoch + 1}")


def test_a_run_that_fails_mid_training_ends_failed(mlflow_uri: str, synth_npz: Path, tmp_path: Path) -> None:
    from ablate import tracking
    from ablate.runner import run_spec

    spec = load_spec(PRESET, [f"data.path={synth_npz}", "data.limit=64", *TINY_MODEL, "train.epochs=2",
                              "tracking.mask_every=1"])
    previous = mlflow.get_tracking_uri()
    tracking.setup(mlflow_uri)
    try:
        with pytest.raises(RuntimeError, match="boom at epoch 1"):
            run_spec(spec, experiment="e2e-failed-mid-training", callbacks=[Boom()], verbose=0)
        assert mlflow.active_run() is None  # the run was ended, not left active
    finally:
        mlflow.set_tracking_uri(previous)
    client = MlflowClient(tracking_uri=mlflow_uri)
    run = only_run(client, "e2e-failed-mid-training")
    assert run.info.status == "FAILED" and run.info.end_time is not None
    assert run.data.tags["error"] == "RuntimeError: boom at epoch 1"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_miou")] == [0]
    traceback = Path(client.download_artifacts(run.info.run_id, "error.txt", str(tmp_path))).read_text()
    assert "Traceback" in traceback and "boom at epoch 1" in traceback
    assert "model/model.keras" not in artifact_paths(client, run.info.run_id)


def test_a_local_sqlite_store_keeps_its_artifacts_beside_it(tmp_path: Path, synth_npz: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The `make demo` path without a server: everything lands next to the database, nothing in the cwd."""
    from ablate import tracking
    from ablate.runner import run_spec

    store, cwd = tmp_path / "store", tmp_path / "cwd"
    store.mkdir()
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    uri = f"sqlite:///{store / 'mlflow.db'}"
    spec = load_spec(PRESET, [f"data.path={synth_npz}", "data.limit=64", *TINY_MODEL, "train.epochs=1"])
    previous = mlflow.get_tracking_uri()
    try:
        tracking.setup(uri)
        outcome = run_spec(spec, experiment="local", verbose=0)
    finally:
        mlflow.set_tracking_uri(previous)
    run = MlflowClient(tracking_uri=uri).get_run(outcome.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith((store / "artifacts").as_uri())
    assert list((store / "artifacts").rglob("model.keras"))
    assert list(cwd.iterdir()) == []
