"""Per-image validation IoU: the metric, the run artifact, the image-by-image comparison and section."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from helpers import PRESET, TINY_MODEL
from mlflow.tracking import MlflowClient
from scipy import stats as sps

from ablate.ablation.collect import AblationRecord
from ablate.ablation.images import image_comparison, image_section, per_image_runs
from ablate.metrics import confusion_matrix, iou_from_confusion, per_image_iou, per_image_miou
from ablate.runner import PER_IMAGE_ARTIFACT
from ablate.train import Split

# --- per_image_iou: known answers ----------------------------------------------------------

TRUTH = np.array([
    [[1, 1, 2, 0], [3, 3, 0, 0]],  # soil, bedrock, sand; unlabelled pixels predicted 4, 1, 0
    [[0, 0, 0, 0], [0, 0, 0, 0]],  # nothing labelled
    [[4, 4, 4, 4], [1, 1, 1, 1]],
    [[1, 1, 1, 1], [1, 1, 1, 1]],  # soil only, half predicted as sand
])
PRED = np.array([
    [[1, 2, 2, 4], [3, 0, 1, 0]],
    [[1, 2, 3, 4], [1, 2, 3, 4]],
    [[4, 4, 1, 1], [1, 1, 1, 1]],
    [[1, 1, 1, 1], [3, 3, 3, 3]],
])
NAN = math.nan
EXPECTED = np.array([
    # soil: tp 1 / (2 true + 1 predicted on labelled - 1); bedrock 1 / (1 + 2 - 1); sand 1 / (2 + 1 - 1);
    # big rock: only predicted on an unlabelled pixel, which is not scored -> absent
    [0.5, 0.5, 0.5, NAN],
    [NAN, NAN, NAN, NAN],  # predictions on unlabelled pixels only
    [4 / 6, NAN, NAN, 2 / 4],  # soil 4 / (4 + 6 - 4); big rock 2 / (4 + 2 - 2)
    [4 / 8, NAN, 0.0, NAN],  # sand predicted but absent from the truth: IoU 0, it counts
])


def test_per_image_iou_matches_hand_computed_values() -> None:
    np.testing.assert_allclose(per_image_iou(TRUTH, PRED), EXPECTED)
    np.testing.assert_allclose(per_image_miou(EXPECTED), [0.5, NAN, (4 / 6 + 0.5) / 2, 0.25])


def test_per_image_iou_of_one_image_is_the_dataset_metric_of_that_image() -> None:
    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 5, (6, 8, 8)), rng.integers(0, 5, (6, 8, 8))
    ious = per_image_iou(t, p)
    for i in range(len(t)):
        miou, per_class = iou_from_confusion(confusion_matrix(t[i], p[i]))
        np.testing.assert_allclose(ious[i], list(per_class.values()))
        assert per_image_miou(ious)[i] == pytest.approx(miou)


def test_per_image_iou_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="one shape"):
        per_image_iou(TRUTH, PRED[:2])
    with pytest.raises(ValueError, match=r"y_pred labels must be in \[0, 5\); got 0..7"):
        per_image_iou(TRUTH, np.where(PRED == 4, 7, PRED))


def test_split_val_index_defaults_to_positions_and_must_match() -> None:
    x, y = np.zeros((3, 2, 2, 1)), np.zeros((3, 2, 2))
    assert Split(x, y, x, y, "f", "p").val_index.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="one index per validation image"):
        Split(x, y, x, y, "f", "p", np.array([0, 1]))


# --- image_comparison on a planted long table ----------------------------------------------

def planted() -> pd.DataFrame:
    """Image i gains (i - 4) / 100 in every seed; seed 0 scores images 0-9, seed 1 images 5-14."""
    rows = []
    for seed, images in ((0, range(0, 10)), (1, range(5, 15))):
        for i in images:
            base = 0.3 + 0.02 * i + 0.1 * seed
            rows += [("baseline", seed, i, base), ("v", seed, i, base + (i - 4) / 100)]
    rows += [("baseline", 0, 99, NAN), ("v", 0, 99, NAN),  # no labelled pixels: not comparable
             ("v", 2, 3, 0.9)]  # a seed the baseline lacks: unpaired
    return pd.DataFrame(rows, columns=["variant", "seed", "index", "miou"])


def test_image_comparison_recovers_planted_gains() -> None:
    c = image_comparison(planted(), "baseline", "v", k=2)
    d = (np.arange(15) - 4) / 100
    assert (c.n_images, c.n_pairs, c.n_seeds) == (15, 20, 2)
    assert c.mean_delta == pytest.approx(0.03)
    assert (c.share_gain, c.share_loss) == (pytest.approx(10 / 15), pytest.approx(4 / 15))
    assert [i for i, _ in c.top_gains] == [14, 13] and [i for i, _ in c.top_losses] == [0, 1]
    np.testing.assert_allclose([x for _, x in c.top_gains + c.top_losses], [0.10, 0.09, -0.04, -0.03])
    low, high = sps.t.interval(0.95, 14, loc=d.mean(), scale=sps.sem(d))
    assert (c.ci_low, c.ci_high) == (pytest.approx(low), pytest.approx(high))
    assert c.p == pytest.approx(sps.wilcoxon(d).pvalue)
    assert c.deltas.set_index("index").loc[7, "n_seeds"] == 2


def test_image_delta_is_the_mean_over_the_seeds_it_appears_in() -> None:
    per = pd.DataFrame([("b", 0, 1, 0.5), ("v", 0, 1, 0.7), ("b", 1, 1, 0.5), ("v", 1, 1, 0.4)],
                       columns=["variant", "seed", "index", "miou"])
    c = image_comparison(per, "b", "v")
    assert c.n_images == 1 and c.mean_delta == pytest.approx(0.05)
    assert math.isnan(c.ci_low)  # one image: no interval


def test_image_comparison_names_a_missing_arm() -> None:
    with pytest.raises(ValueError, match="Arm 'nope' has no per-image rows; arms with rows: baseline, v"):
        image_comparison(planted(), "baseline", "nope")


# --- a real tracked run, read back ---------------------------------------------------------

DATA = ["data.limit=120", *TINY_MODEL, "train.epochs=1", "train.batch_size=16", "tracking.mask_every=0"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local SQLite tracking store, made the current one for this module."""
    from ablate import tracking

    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    tracking.setup(uri)
    yield uri
    mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="module")
def arms(store: str, synth_npz: Path) -> dict[str, Any]:
    """Two tiny trained arms (seed 0) and one finished run from before per-image data existed."""
    from ablate.runner import run_spec
    from ablate.spec import load_spec

    out: dict[str, Any] = {}
    for key, extra in (("baseline", []), ("filters=8", ["model.filters=8"])):
        spec = load_spec(PRESET, [f"data.path={synth_npz}", *DATA, *extra])
        out[key] = {"spec": spec, "outcome": run_spec(spec, experiment="per-image", verbose=0)}
    client = MlflowClient()
    old = client.create_run(client.get_experiment_by_name("per-image").experiment_id)
    client.set_terminated(old.info.run_id, "FINISHED")
    out["old"] = old.info.run_id
    return out


def record_of(runs: list[tuple[str, int, str]], specs: dict[str, dict[str, Any]]) -> AblationRecord:
    frame = pd.DataFrame([{"variant": v, "seed": s, "status": "FINISHED", "run_id": r} for v, s, r in runs])
    payload = {"name": "t", "seeds": sorted({s for _, s, _ in runs}),
               "arms": {k: {"spec": spec} for k, spec in specs.items()}}
    return AblationRecord("parent", "0", payload, frame)


def test_a_run_logs_one_row_per_validation_image(arms: dict[str, Any], tmp_path: Path) -> None:
    from ablate.train import load_data, predict_masks

    spec, outcome = arms["baseline"]["spec"], arms["baseline"]["outcome"]
    local = mlflow.artifacts.download_artifacts(run_id=outcome.run_id, artifact_path=PER_IMAGE_ARTIFACT,
                                                dst_path=str(tmp_path))
    frame = pd.read_parquet(local)
    split = load_data(spec)
    assert list(frame.columns) == ["index", "miou", "iou_soil", "iou_bedrock", "iou_sand", "iou_big_rock"]
    assert frame["index"].tolist() == split.val_index.tolist() and len(frame) == len(split.x_val) == 24
    pred = predict_masks(outcome.result.model, split.x_val)
    np.testing.assert_allclose(frame["miou"], per_image_miou(per_image_iou(split.y_val, pred)))


def test_val_index_points_into_the_loaded_data_also_after_cleaning(synth_npz: Path) -> None:
    from ablate.data.loader import load_npz
    from ablate.spec import load_spec
    from ablate.train import load_data

    data = load_npz(synth_npz, limit=120)
    for clean in ("false", "true"):
        split = load_data(load_spec(PRESET, [f"data.path={synth_npz}", "data.limit=120", f"data.clean={clean}"]))
        np.testing.assert_array_equal(split.x_val, data.images[split.val_index])
        np.testing.assert_array_equal(split.y_val, data.masks[split.val_index])


def test_image_section_end_to_end(arms: dict[str, Any], tmp_path: Path) -> None:
    runs = [("baseline", 0, arms["baseline"]["outcome"].run_id), ("filters=8", 0, arms["filters=8"]["outcome"].run_id),
            ("filters=8", 1, arms["old"])]
    record = record_of(runs, {k: arms[k]["spec"].to_dict() for k in ("baseline", "filters=8")})
    per = per_image_runs(record)
    assert per.attrs["n_skipped"] == 1 and per.attrs["skipped_runs"] == [arms["old"]]
    assert len(per) == 2 * 24 and list(per.columns[:4]) == ["variant", "seed", "index", "miou"]
    md, files = image_section(record, tmp_path, k=2)
    assert files == ["images_filters_8.png"] and (tmp_path / files[0]).stat().st_size > 10_000
    assert "### `filters=8` vs `baseline`" in md and "| 24 (1 seed, 24 image-seed pairs) |" in md
    assert "1 finished run(s) logged no per-image data" in md and "Figure:" not in md


def test_image_section_degrades_without_models_or_data(store: str, synth_npz: Path, tmp_path: Path) -> None:
    """Runs that logged per-image data but no model: image and truth only; no data file: a note."""
    client = MlflowClient()
    exp = client.get_experiment_by_name("per-image") or client.get_experiment(client.create_experiment("per-image"))
    runs = []
    for arm, gain in (("baseline", 0.0), ("v", 0.1)):
        run = client.create_run(exp.experiment_id)
        frame = pd.DataFrame({"index": [3, 8, 40, 41], "miou": [0.5, 0.5 + gain, 0.5 - gain, 0.5]})
        frame.to_parquet(tmp_path / PER_IMAGE_ARTIFACT)
        client.log_artifact(run.info.run_id, str(tmp_path / PER_IMAGE_ARTIFACT))
        client.set_terminated(run.info.run_id, "FINISHED")
        runs.append((arm, 0, run.info.run_id))
    spec = {"data": {"path": str(synth_npz), "limit": None}}
    md, files = image_section(record_of(runs, {"baseline": spec, "v": spec}), tmp_path / "ok")
    assert files == ["images_v.png"] and (tmp_path / "ok/images_v.png").exists()
    assert "image and truth only: no model logged for `baseline` seed 0" in md
    assert "| 4 (1 seed, 4 image-seed pairs) | +0.000 [" in md and "25% / 25%" in md

    gone = {"data": {"path": str(tmp_path / "gone.npz"), "limit": None}}
    md, files = image_section(record_of(runs, {"baseline": gone, "v": gone}), tmp_path / "gone")
    assert files == [] and "Figure: skipped: the data file is not available here" in md


def test_image_section_is_empty_without_per_image_data(arms: dict[str, Any], tmp_path: Path) -> None:
    record = record_of([("baseline", 0, arms["old"])], {"baseline": {}})
    assert image_section(record, tmp_path) == ("", [])


def test_the_best_epochs_validation_pass_gives_what_a_prediction_pass_gives(synth_npz: Path) -> None:
    """The run's confusion matrix and per-image IoUs come from the validation pass that chose the
    best epoch (no second pass): they must equal predicting again with the restored weights."""
    from ablate.runner import _prediction_pass, summarize
    from ablate.spec import load_spec
    from ablate.train import fit, load_data

    spec = load_spec(PRESET, [*TINY_MODEL, f"data.path={synth_npz}", "data.limit=96", "train.epochs=2",
                              "train.batch_size=16", "train.early_stopping=0", "optimizer.learning_rate=0.01"])
    split = load_data(spec)
    result = fit(spec, split, verbose=0)
    recorded = result.extras["confusions"]
    predicted, _ = _prediction_pass(result.model, split)
    assert recorded.shape == predicted.shape == (len(split.x_val), 5, 5)
    assert recorded.sum() == split.y_val.size  # every pixel of every validation image, once
    differing = np.abs(recorded - predicted).sum() / 2  # a pixel predicted differently moves two cells
    assert differing <= 1e-4 * split.y_val.size, f"{differing} pixels differ"  # batch-size rounding at most
    summary = summarize(result.model, split, result)
    assert summary["best_val_miou"] == pytest.approx(result.best["val_miou"], abs=1e-3)  # the metric's own figure
    assert math.isfinite(summary["latency_ms_per_image"]) and summary["latency_ms_per_image"] > 0


def test_image_figures_read_the_logged_validation_masks_not_the_models(arms: dict[str, Any], tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A run logs its best epoch's validation masks (predictions/val.npz): the report shows and scores
    them without reloading any model, and they score what the run logged image by image (no drift note)."""
    from ablate.ablation import image_figures

    image_figures._logged_masks.cache_clear()
    monkeypatch.setattr(image_figures, "_load_model", lambda run_id: pytest.fail("a model was reloaded"))
    runs = [("baseline", 0, arms["baseline"]["outcome"].run_id), ("filters=8", 0, arms["filters=8"]["outcome"].run_id)]
    record = record_of(runs, {k: arms[k]["spec"].to_dict() for k in ("baseline", "filters=8")})
    md, files = image_section(record, tmp_path, k=2)
    assert files == ["images_filters_8.png"] and (tmp_path / files[0]).stat().st_size > 10_000
    assert "image and truth only" not in md and "score differently" not in md and "skipped" not in md


@pytest.mark.parametrize(("shape", "with_preds"), [((64, 128), True), ((64, 128), False), ((24, 40), True)])
def test_image_figure_canvas_shows_each_panel_at_its_own_pixels(shape: tuple[int, int], with_preds: bool,
                                                                 tmp_path: Path) -> None:
    """The figure's one canvas holds every row's image, truth and predictions, unsmoothed, where the
    titles are placed; and the figure is written."""
    from types import SimpleNamespace

    from ablate.ablation import image_figures
    from ablate.task import MARS
    from ablate.tracking import colourize, display_rgb

    rng = np.random.default_rng(3)
    rows = []
    for n in range(3):
        truth = rng.integers(0, 5, shape).astype(np.uint8)
        preds = (truth, ((truth + 1) % 5).astype(np.uint8)) if with_preds else None
        rows.append(image_figures._Row(n, 0.1 * n, "gain", 0, rng.random((*shape, 1)), truth, preds, (0.5, 0.4)))
    canvas, origins = image_figures._canvas(rows, 4 if with_preds else 2, MARS, title_px=5, gap_px=3)
    h, w = shape
    for row, corners in zip(rows, origins, strict=True):
        panels = [display_rgb(row.image), colourize(row.truth, MARS), *[colourize(p, MARS) for p in row.preds or ()]]
        assert len(corners) == len(panels)
        for (x, y), panel in zip(corners, panels, strict=True):
            np.testing.assert_array_equal(canvas[y:y + h, x:x + w], panel)
            assert (canvas[y - 5:y, x:x + w] == 255).all()  # the title's band is blank
    path = tmp_path / "figure.png"
    image_figures._plot(rows, SimpleNamespace(baseline="a", variant="b"), path, SimpleNamespace(task=MARS))
    assert path.stat().st_size > 5_000
