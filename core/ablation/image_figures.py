"""The figure of the image-by-image section: model reload, prediction, matplotlib panels, fallbacks.

:func:`ablate.ablation.images.image_section` calls :func:`_figure_or_note` once per variant; it
never raises, so a missing model, data file or plotting backend only leaves a note in the report.
"""

from __future__ import annotations

import functools
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import pandas as pd

from ablate.ablation.collect import AblationRecord
from ablate.errors import AblateError
from ablate.scoring import per_image_iou, per_image_miou

if TYPE_CHECKING:
    from ablate.ablation.images import ImageComparison

MODEL_ARTIFACT = "model/model.keras"
_MISSING = (mlflow.exceptions.MlflowException, OSError, AblateError, ValueError)  # artifact/file absent or bad


def _data_of(arms: dict[str, Any], key: str) -> dict[str, Any]:
    return dict((arms.get(key) or {}).get("spec", {}).get("data") or {})


def _figure_or_note(record: AblationRecord, per: pd.DataFrame, c: ImageComparison, path: Path) -> tuple[bool, str]:
    """(written, note): the note says what the figure lacks, or why there is none."""
    try:
        return _write_figure(record, per, c, path)
    except Exception as e:  # noqa: BLE001 - a figure must never break the report
        first = str(e).splitlines()[0] if str(e) else ""
        return False, f"skipped ({type(e).__name__}: {first})."


# --- the figure ----------------------------------------------------------------------------

def _write_figure(record: AblationRecord, per: pd.DataFrame, c: ImageComparison, path: Path) -> tuple[bool, str]:
    chosen = [(i, d, "gain") for i, d in c.top_gains] + [(i, d, "loss") for i, d in c.top_losses]
    if not chosen:
        return False, "none: no image changed."
    first_seed = {int(i): int(s) for i, s in zip(c.deltas["index"], c.deltas["first_seed"], strict=True)}
    seeds = sorted({first_seed[i] for i, _, _ in chosen})
    base_run = _run_id(record, c.baseline, seeds[0])
    data, why = _load_data(record, c.baseline, base_run)
    if data is None:
        return False, f"skipped: {why}."
    index = np.array([i for i, _, _ in chosen])
    if index.max() >= len(data.images):
        return False, f"skipped: the data file holds {len(data.images)} images, the runs scored image #{index.max()}."
    preds, note = _predictions(record, c, [(int(i), first_seed[int(i)]) for i in index], data.images)
    rows, drift = [], False
    for n, (i, d, kind) in enumerate(chosen):
        seed = first_seed[i]
        logged = per[(per["seed"] == seed) & (per["index"] == i)].set_index("variant")["miou"]
        scores = (float(logged.get(c.baseline, math.nan)), float(logged.get(c.variant, math.nan)))
        pair = preds[n] if preds else None
        if pair is not None:  # score what is shown; it should be what the run logged
            shown = per_image_miou(per_image_iou(np.stack([data.masks[i]] * 2), np.stack(pair), task=record.task))
            drift |= not np.allclose(shown, scores, atol=1e-6, equal_nan=True)
            scores = (float(shown[0]), float(shown[1]))
        rows.append(_Row(i, d, kind, seed, data.images[i], data.masks[i], pair, scores))
    _plot(rows, c, path, record)
    if drift:
        note = "the rebuilt predictions score differently from what the runs logged (titles show the rebuilt ones)."
    return True, note


@dataclass
class _Row:
    index: int
    delta: float
    kind: str
    seed: int
    image: np.ndarray  # (H, W, C) in [0, 1]
    truth: np.ndarray
    preds: tuple[np.ndarray, np.ndarray] | None  # (baseline, variant)
    scores: tuple[float, float]  # per-image mIoU of (baseline, variant)


def _run_id(record: AblationRecord, arm: str, seed: int) -> str | None:
    runs = record.runs
    match = runs[(runs["variant"] == arm) & (runs["seed"] == seed) & (runs["status"] == "FINISHED")]
    return None if match.empty else str(match.iloc[0]["run_id"])


def _load_data(record: AblationRecord, arm: str, run_id: str | None) -> tuple[Any, str]:
    """The arm's data file as loaded by its runs (same limit), checked against the run's fingerprint.

    Read through ``ablate.train.shared_data``: when the runs trained in this process, their loaded
    data set is reused, not read again.
    """
    from ablate.train import shared_data

    spec_data = _data_of(record.payload.get("arms", {}), arm)
    tags = mlflow.tracking.MlflowClient().get_run(run_id).data.tags if run_id else {}
    candidates = [p for p in (spec_data.get("path"), tags.get("data_path")) if p]
    if not candidates:
        return None, "the spec names no data file and the run recorded none"
    for path in dict.fromkeys(candidates):
        if not Path(path).is_file():
            continue
        try:
            data = shared_data(path, spec_data.get("limit"), record.task)
        except _MISSING:
            continue
        if tags.get("data_fingerprint") not in (None, data.fingerprint):
            return None, f"the data file {path} changed since the runs (fingerprint differs)"
        return data, ""
    return None, f"the data file is not available here ({', '.join(map(str, candidates))})"


def _predictions(record: AblationRecord, c: ImageComparison, wanted: list[tuple[int, int]],
                 images: np.ndarray) -> tuple[list[tuple[np.ndarray, np.ndarray]] | None, str]:
    """Baseline and variant masks of each (index, seed): those the runs logged from their best
    epoch's validation pass (``predictions/val.npz``), else predicted by the runs' logged models;
    or a note."""
    import keras

    out: dict[tuple[str, int, int], np.ndarray] = {}
    for arm in (c.baseline, c.variant):
        for seed in sorted({s for _, s in wanted}):
            index = [i for i, s in wanted if s == seed]
            run_id = _run_id(record, arm, seed)
            logged = _logged_masks(run_id) if run_id else {}
            if all(i in logged for i in index):
                out.update({(arm, seed, i): logged[i] for i in index})
                continue
            model = _load_model(run_id) if run_id else None
            if model is None:
                return None, f"image and truth only: no model logged for `{arm}` seed {seed}."
            # A few images: one eager call, no predict function to trace for each loaded model.
            probs = keras.ops.convert_to_numpy(model(images[index], training=False))
            for i, mask in zip(index, np.argmax(probs, axis=-1).astype(np.uint8), strict=True):
                out[(arm, seed, i)] = mask
    return [(out[(c.baseline, s, i)], out[(c.variant, s, i)]) for i, s in wanted], ""


@functools.lru_cache(maxsize=16)  # the baseline's runs serve every comparison of a report
def _logged_masks(run_id: str) -> dict[int, np.ndarray]:
    """{index in the loaded data: predicted mask} a run logged for its validation images, or {}."""
    from ablate.data.npz import read_arrays
    from ablate.tracking import VALIDATION_ARTIFACT

    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=VALIDATION_ARTIFACT, dst_path=tmp)
            arrays = read_arrays(local, ("index", "pred"))
        except _MISSING:
            return {}
    index, pred = arrays["index"], arrays["pred"]
    if index.ndim != 1 or pred.ndim != 3 or len(index) != len(pred):
        return {}
    return {int(i): m for i, m in zip(index, pred, strict=True)}


@functools.lru_cache(maxsize=8)  # the baseline's model serves every comparison of a report
def _load_model(run_id: str) -> Any:
    from ablate.export.formats import load_keras

    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=MODEL_ARTIFACT, dst_path=tmp)
            return load_keras(local)
        except _MISSING:
            return None


def _plot(rows: list[_Row], c: ImageComparison, path: Path, record: AblationRecord) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from ablate.tracking import colourize, display_rgb, legend_entries

    task = record.task

    full = rows[0].preds is not None
    cols = 4 if full else 2
    width = max(2.7 * cols, 7.0)
    row_height = width / cols / 2 + 0.4  # images are twice as wide as high, plus a title line
    fig, axes = plt.subplots(len(rows), cols, figsize=(width, row_height * len(rows) + 1.0), squeeze=False)
    for r, ax in zip(rows, axes, strict=True):
        ax[0].imshow(display_rgb(r.image))
        ax[1].imshow(colourize(r.truth, task))
        ax[0].set_title(f"#{r.index} {r.kind} {r.delta:+.3f}", fontsize=7,
                        color="tab:green" if r.kind == "gain" else "tab:red")
        if r.preds is not None:
            ax[1].set_title("truth", fontsize=7)
            for j, (arm, pred, iou) in enumerate(zip((c.baseline, c.variant), r.preds, r.scores, strict=True)):
                ax[2 + j].imshow(colourize(pred, task))
                ax[2 + j].set_title(f"{arm} (seed {r.seed}) mIoU {iou:.3f}", fontsize=7)
        else:
            ax[1].set_title(f"truth; seed {r.seed}: {c.baseline} {r.scores[0]:.3f} -> "
                            f"{c.variant} {r.scores[1]:.3f}", fontsize=7)
        for a in ax:
            a.axis("off")
    names = [f"{name} (not scored)" if k < task.num_classes and k not in task.scored_ids else name
             for k, (name, _) in enumerate(legend_entries(task))]
    handles = [Patch(facecolor=(rgb[0] / 255, rgb[1] / 255, rgb[2] / 255), edgecolor="black", label=name)
               for name, (_, rgb) in zip(names, legend_entries(task), strict=True)]
    fig.legend(handles=handles, loc="lower center", ncol=3 if cols == 2 else min(len(handles), 5), fontsize=7,
               frameon=False)
    fig.suptitle(f"`{c.variant}` vs `{c.baseline}`: images it gains most on (green), loses most on (red)\n"
                 "#: image index in the data set; delta: per-image mIoU change, mean over seeds", fontsize=8)
    # Fixed margins in inches instead of tight_layout (which took seconds for these many axes):
    # two title lines on top, the legend below, one title line above each image.
    height = fig.get_figheight()
    top, bottom, gap = 1 - 0.62 / height, 0.42 / height, 0.3
    axis = (height * (top - bottom) - gap * (len(rows) - 1)) / len(rows)
    fig.subplots_adjust(left=0.01, right=0.99, top=top, bottom=bottom, wspace=0.04, hspace=gap / axis)
    fig.savefig(path, dpi=100)
    plt.close(fig)
