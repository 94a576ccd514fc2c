"""Export and predict for a task other than Mars: RGB 48x96, 7 classes, ignore label 255 (outside the classes).

A tiny U-Net (filters 4, depth 2, one epoch) is trained on synthetic arrays of that task and
logged as a run with the artifacts ``ablate run`` logs (``model/model.keras``, ``spec.json``,
``task.json``); ``ablate export`` reads the task from the run, writes every format for 48x96x3
images and 7 classes, and the exported model predicts an ``images``/``masks`` file in a fresh
process. The Mars course's submission CSV is refused for it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest
from helpers import assert_one_error_line, run_without_project
from mlflow.tracking import MlflowClient

from ablate import load_all, tracking
from ablate.cli.main import main
from ablate.export import ExportError, ExportResult, Selector, export_model, load_predictor, predict_file
from ablate.export import check as chk
from ablate.export.formats import keras_probabilities, load_keras, tflite_predict
from ablate.models import build_model
from ablate.spec import validate
from ablate.task import MARS, Task

load_all()

TASK = Task(height=48, width=96, channels=3, classes=["void", "grass", "road", "water", "building", "tree", "car"],
            ignore_label=255)
FORMATS = {"model.keras", "saved_model[serving_default]", "saved_model[serving_uint8]", "model.tflite",
           "mlflow pyfunc"}


def task_arrays(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 RGB images (n, 48, 96, 3) and masks (n, 48, 96): class blocks in their palette colour plus noise,
    with a strip of unlabelled (255) pixels."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, TASK.num_classes, (n, TASK.height // 8, TASK.width // 8))
    masks = coarse.repeat(8, axis=1).repeat(8, axis=2).astype(np.uint8)
    images = np.asarray(TASK.palette, np.int16)[masks] + rng.integers(-30, 31, (*masks.shape, 3))
    masks[:, :3] = 255  # unlabelled: not a class, never predicted
    return np.clip(images, 0, 255).astype(np.uint8), masks


def spec_dict(data: Path) -> dict:
    return {"name": "rgb", "seed": 0, "data": {"path": str(data)}, "task": TASK.to_dict(),
            "model": {"type": "unet", "depth": 2, "filters": 4},
            "train": {"epochs": 1, "batch_size": 16, "early_stopping": 0}, "tracking": {"mask_every": 0}}


def log_run(experiment: str, model_file: Path, spec: dict, task_json: str | None, metrics: dict[str, float]) -> str:
    """A FINISHED run holding what a training run logs: model/model.keras, spec.json and task.json."""
    with mlflow.start_run(experiment_id=tracking.ensure_experiment(experiment)) as run:
        mlflow.log_artifact(str(model_file), "model")
        mlflow.log_text(json.dumps(validate(spec).to_dict(), indent=2, sort_keys=True), "spec.json")
        if task_json is not None:
            mlflow.log_text(task_json, "task.json")
        mlflow.log_metrics(metrics)
        mlflow.set_tags({"seed": "0", "data_path": spec["data"]["path"]})
    return run.info.run_id


@dataclass
class Exported:
    uri: str
    root: Path
    data: Path  # images / masks / test_images
    run_id: str
    result: ExportResult


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exported]:
    root = tmp_path_factory.mktemp("task-export")
    uri, previous = f"sqlite:///{root / 'mlflow.db'}", mlflow.get_tracking_uri()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        images, masks = task_arrays(64, seed=0)
        test_images, _ = task_arrays(10, seed=1)
        data = root / "rgb.npz"
        np.savez_compressed(data, images=images, masks=masks, test_images=test_images)

        keras.utils.set_random_seed(0)
        model = build_model({"type": "unet", "depth": 2, "filters": 4}, TASK)
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(ignore_class=255))
        model.fit(images.astype(np.float32) / 255, masks, epochs=1, batch_size=16, verbose=0)
        model.save(root / "model.keras")
        metrics = {"best_val_miou": 0.3, "best_epoch": 1.0, **{f"best_val_iou_{n}": 0.3 for n in TASK.scored_names}}
        run_id = log_run("rgb", root / "model.keras", spec_dict(data), TASK.to_json(), metrics)
        result = export_model(Selector(run_id=run_id), out=root / "out", tracking_uri=uri)
        yield Exported(uri, root, data, run_id, result)
    mlflow.set_tracking_uri(previous)


def agree(probs: np.ndarray, masks: np.ndarray) -> None:
    """Masks equal the reference argmax except at numerical ties (as the export's own check)."""
    result = chk.compare("masks", probs, np.asarray(masks), None, chk.PROB_ATOL)
    assert result.ok, result.line()


def reference(out: Path, images: np.ndarray) -> np.ndarray:
    return keras_probabilities(load_keras(out / "model.keras", TASK), images.astype(np.float32) / 255)


def test_the_export_reads_the_runs_task_and_checks_every_format(exported: Exported) -> None:
    res, out = exported.result, exported.result.out_dir
    assert res.task == TASK
    assert {c.name for c in res.checks} == FORMATS and all(c.ok for c in res.checks)
    for name in ("model.keras", "saved_model/saved_model.pb", "saved_model/assets.extra/task.json", "model.tflite",
                 "task.json", "model_card.md", "preprocessing.json"):
        assert (out / name).is_file(), name
    assert Task.model_validate(json.loads((out / "task.json").read_text())) == TASK
    # one task.json text everywhere: the export's root, the SavedModel's own copy (and a run's artifact)
    texts = {(out / name).read_text() for name in ("task.json", "saved_model/assets.extra/task.json")}
    assert texts == {TASK.file_text()}
    assert chk.check_images(TASK).shape == (chk.CHECK_IMAGES, 48, 96, 3)


def test_every_format_reloads_and_predicts_like_the_trained_model(exported: Exported) -> None:
    import tensorflow as tf

    out = exported.result.out_dir
    images, _ = task_arrays(5, seed=9)
    ref = reference(out, images)
    assert ref.shape == (5, 48, 96, 7)
    loaded = tf.saved_model.load(str(out / "saved_model"))
    for sig, batch in (("serving_uint8", images), ("serving_default", images.astype(np.float32) / 255),
                       ("serving_default", images.astype(np.float32))):  # 0-255 floats are scaled in-graph
        res = loaded.signatures[sig](images=tf.constant(batch))
        assert res["masks"].shape == (5, 48, 96) and res["probabilities"].shape == (5, 48, 96, 7)
        agree(ref, res["masks"].numpy())
    lite = tflite_predict(out / "model.tflite", images.astype(np.float32) / 255)
    assert lite.shape == (5, 48, 96, 7) and np.abs(lite - ref).max() <= chk.TFLITE_ATOL
    pyfunc = mlflow.pyfunc.load_model("models:/rgb@champion")
    masks = pyfunc.predict(images)
    assert masks.shape == (5, 48, 96) and masks.dtype == np.uint8
    agree(ref, masks)
    agree(ref, pyfunc.predict(images.reshape(5, -1)))  # rows of H*W*C pixels, as a DataFrame gives them
    with pytest.raises(Exception, match=r"\(N, 48, 96, 3\) \(RGB\); got \(5, 48, 96\)"):
        pyfunc.predict(images[..., 0])  # grayscale to an RGB model


def test_preprocessing_and_card_carry_the_task(exported: Exported) -> None:
    out = exported.result.out_dir
    prep = json.loads((out / "preprocessing.json").read_text())
    assert Task.model_validate(prep["task"]) == TASK
    assert [c["name"] for c in prep["classes"]] == TASK.classes
    assert [tuple(c["colour"]) for c in prep["classes"]] == list(TASK.palette)
    assert all(c["scored"] for c in prep["classes"])
    assert prep["input"]["shape"] == [48, 96, 3] and "RGB" in prep["input"]["layout"]
    assert prep["ignore_label"] == 255 and prep["scored_classes"] == TASK.classes
    assert "(N, 48, 96, 7)" in prep["output"]["probabilities"]
    card = (out / "model_card.md").read_text()
    assert "- Classes (7, by label): 0 void, 1 grass, 2 road, 3 water, 4 building, 5 tree, 6 car" in card
    assert "48x96 RGB" in card and "label 255 marks unlabelled pixels" in card
    assert all(f"best_val_iou_{n}" in card for n in TASK.classes)
    assert "Mars" not in card and "--submission" not in card


def test_the_saved_model_and_its_task_need_no_project_code(exported: Exported, tmp_path: Path) -> None:
    images, _ = task_arrays(3, seed=4)
    np.save(tmp_path / "images.npy", images)
    saved = exported.result.out_dir / "saved_model"
    run_without_project(f"""
import json
import numpy as np, tensorflow as tf
task = json.load(open({str(saved / 'assets.extra' / 'task.json')!r}))
assert task["classes"][6] == "car" and (task["height"], task["width"], task["channels"]) == (48, 96, 3)
m = tf.saved_model.load({str(saved)!r})
out = m.signatures['serving_uint8'](images=tf.constant(np.load('images.npy')))
assert out['probabilities'].shape == (3, 48, 96, len(task["classes"]))
assert 'ablate' not in sys.modules
np.save('masks.npy', out['masks'].numpy())
""", tmp_path)
    agree(reference(exported.result.out_dir, images), np.load(tmp_path / "masks.npy"))


def test_predict_reads_the_images_layout_and_writes_task_masks_and_overlays(exported: Exported,
                                                                            tmp_path: Path) -> None:
    from PIL import Image

    out = exported.result.out_dir
    predictor = load_predictor(str(out))
    assert predictor.task == TASK
    res = predict_file(predictor, exported.data, tmp_path / "test.npz", png=tmp_path / "png", batch_size=4)
    with np.load(res.out, allow_pickle=False) as npz:
        masks = npz["masks"]
    assert res.images == 10 and masks.shape == (10, 48, 96) and masks.dtype == np.uint8 and masks.max() < 7
    with np.load(exported.data) as npz:
        test_images, train_images = npz["test_images"], npz["images"]
    agree(reference(out, test_images), masks)
    overlay = np.asarray(Image.open(tmp_path / "png" / "000000.png"))
    assert overlay.shape == (48, 96, 3) and len(list((tmp_path / "png").glob("*.png"))) == 10
    colour = np.asarray(TASK.palette, np.float32)[masks[0]]  # every pixel tinted (no class is the ignore label)
    np.testing.assert_allclose(overlay, (0.5 * test_images[0] + 0.5 * colour).round(), atol=1)

    registry = load_predictor("models:/rgb@champion")  # the registered version's export/ in the store
    assert registry.task == TASK
    code = main(["predict", "--model", "models:/rgb@champion", "--data", str(exported.data), "--split", "train",
                 "--out", str(tmp_path / "train.npz"), "--tracking-uri", exported.uri])
    assert code == 0
    train_masks = np.load(tmp_path / "train.npz")["masks"]
    assert train_masks.shape == (64, 48, 96)
    agree(reference(out, train_images), train_masks)


def test_the_submission_csv_is_refused_for_a_task_other_than_mars(exported: Exported, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "work"
    work.mkdir()
    code = main(["predict", "--model", str(exported.result.out_dir), "--data", str(exported.data),
                 "--out", str(work / "o.npz"), "--submission", str(work / "s.csv"), "--png", str(work / "png")])
    assert code == 2
    assert_one_error_line(capsys.readouterr().err, r"--submission writes the Mars course's submission CSV .*this "
                          r"model's task is 48x96x3 with classes void, grass, road, water, building, tree, car")
    assert list(work.iterdir()) == []


def test_images_of_another_layout_are_one_error_line(exported: Exported, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    cases = {"grey.npz": {"test_images": np.zeros((2, 48, 96), np.uint8)},
             "course.npz": {"test_set": np.zeros((2, 64, 128), np.uint8)}}
    for name, arrays in cases.items():
        np.savez(tmp_path / name, **arrays)
        code = main(["predict", "--model", str(exported.result.out_dir), "--data", str(tmp_path / name),
                     "--out", str(tmp_path / "o.npz")])
        assert code == 2
        assert_one_error_line(capsys.readouterr().err, r"has shape \(2, (48, 96|64, 128)\); expected \(N, 48, 96, 3\) "
                              r"RGB images for a model of the task 48x96x3")
    assert not (tmp_path / "o.npz").exists()


def test_a_task_json_that_disagrees_with_the_model_is_one_error_line(exported: Exported, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    wrong = Task(height=48, width=96, channels=3, classes=TASK.classes[:5], ignore_label=255)
    model_file = exported.root / "model.keras"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(exported.root)
        mismatched = log_run("rgb", model_file, spec_dict(exported.data), wrong.to_json(), {"best_val_miou": 0.1})
        untasked = log_run("rgb", model_file, spec_dict(exported.data), None, {"best_val_miou": 0.1})
        for run_id, want in ((mismatched, r"\(None, 48, 96, 5\) \(the task of run \w+, from its task\.json\)"),
                             (untasked, r"\(None, 64, 128, 5\) \(the task of run \w+, which logged no task\.json "
                                        r"\(so the Mars task\)\)")):
            out = tmp_path / run_id
            code = main(["export", "--run", run_id, "--name", f"bad-{run_id[:6]}", "--out", str(out),
                         "--tracking-uri", exported.uri])
            assert code == 2
            assert_one_error_line(capsys.readouterr().err, r"takes inputs \(None, 48, 96, 3\) and gives "
                                  r"\(None, 48, 96, 7\); expected inputs .* and per-pixel scores " + want)
            assert not out.exists()
    assert not MlflowClient(exported.uri).search_registered_models("name LIKE 'bad-%'")
    with pytest.raises(ExportError, match=r"expected inputs \(None, 64, 128, 1\)"):
        load_keras(model_file, MARS)


def test_a_tracked_run_of_the_task_exports_refits_and_predicts_from_the_store(exported: Exported,
                                                                               tmp_path: Path) -> None:
    """The whole path: `ablate run` logs task.json, export reads it (also for a refit), predict by run id."""
    from ablate.data.synth_task import generate_task
    from ablate.runner import run_spec

    data = tmp_path / "gen.npz"
    np.savez_compressed(data, **generate_task(TASK, 48, n_test=4, seed=0))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(exported.root)
        run_id = run_spec(validate(spec_dict(data)), "rgb-tracked", verbose=0).run_id
        result = export_model(Selector(run_id=run_id), out=tmp_path / "out", name="rgb-tracked", refit=True,
                              tracking_uri=exported.uri)
    assert result.task == TASK and result.model_run_id != run_id
    assert {c.name for c in result.checks} == FORMATS and all(c.ok for c in result.checks)
    assert Task.model_validate(json.loads((result.out_dir / "preprocessing.json").read_text())["task"]) == TASK
    by_run = load_predictor(run_id)  # the training run's model/model.keras and its task.json
    assert by_run.task == TASK
    res = predict_file(by_run, data, tmp_path / "masks.npz")
    masks = np.load(res.out)["masks"]
    assert masks.shape == (4, 48, 96) and masks.max() < TASK.num_classes


def test_a_grey_task_without_ignore_label_and_mars_overlays() -> None:
    from ablate.errors import AblateError
    from ablate.export import card
    from ablate.export.predict import check_submission, overlay

    grey = Task(height=32, width=64, channels=1, classes=["sky", "rock", "ice"], ignore_label=None)
    prep = card.preprocessing("m", "1", grey)
    assert prep["ignore_label"] is None and prep["scored_classes"] == ["sky", "rock", "ice"]
    assert prep["input"]["layout"] == "(N, 32, 64) or (N, 32, 64, 1), grayscale"
    assert chk.check_images(grey).shape == (chk.CHECK_IMAGES, 32, 64)
    image, mask = np.full((32, 64, 1), 0.5, np.float32), np.zeros((32, 64), np.uint8)
    assert (overlay(image, mask, grey) != 128).any(axis=-1).all()  # every class is tinted, sky included
    assert (overlay(image[..., 0], mask, MARS) == 128).all()  # Mars: background (the ignore class) is not
    mask[0, 0] = 1
    assert tuple(overlay(image[..., 0], mask, MARS)[0, 0]) == tuple(round(64 + c / 2) for c in MARS.palette[1])
    with pytest.raises(AblateError, match=r"Mars course's submission CSV .* task is 32x64x1 with classes sky, rock"):
        check_submission(grey)
    check_submission(MARS)
