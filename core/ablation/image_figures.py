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
    """One figure: a row per image (image | truth | baseline | variant, or image | truth), titled.

    The panels are laid out in one canvas shown by one axes, not an axes per panel: matplotlib
    drew and saved the 48 axes of a 12-image report in about 1.2 s, the canvas in about 0.3 s.
    Masks are shown at their own pixels (no smoothing that would blend two classes' colours).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from ablate.tracking import legend_entries

    task = record.task
    cols = 4 if rows[0].preds is not None else 2
    dpi, w = 100, rows[0].truth.shape[1]
    scale = _CELL_PX / (w + _GAP_PX)  # screen pixels per image pixel
    title_px, gap_px = math.ceil(_TITLE_PX / scale), math.ceil(_GAP_PX / scale)  # in image pixels
    canvas, origins = _canvas(rows, cols, task, title_px, gap_px)
    top_in, bottom_in = 0.62, 0.42  # two title lines above, the legend below
    width = max(canvas.shape[1] * scale / dpi, 7.0)  # room for the title and legend lines
    height = canvas.shape[0] * scale / dpi + top_in + bottom_in
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((0, bottom_in / height, 1, 1 - (top_in + bottom_in) / height))
    ax.imshow(canvas, interpolation="nearest")
    ax.axis("off")
    for r, row_origins in zip(rows, origins, strict=True):
        titles = [(f"#{r.index} {r.kind} {r.delta:+.3f}", "tab:green" if r.kind == "gain" else "tab:red")]
        if r.preds is not None:
            titles.append(("truth", "black"))
            titles += [(f"{arm} (seed {r.seed}) mIoU {iou:.3f}", "black")
                       for arm, iou in zip((c.baseline, c.variant), r.scores, strict=True)]
        else:
            titles.append((f"truth; seed {r.seed}: {c.baseline} {r.scores[0]:.3f} -> {c.variant} "
                           f"{r.scores[1]:.3f}", "black"))
        for (x, y), (text, colour) in zip(row_origins, titles, strict=True):
            ax.text(x, y - 1, text, fontsize=7, color=colour, va="bottom", ha="left", clip_on=False)
    names = [f"{name} (not scored)" if k < task.num_classes and k not in task.scored_ids else name
             for k, (name, _) in enumerate(legend_entries(task))]
    handles = [Patch(facecolor=(rgb[0] / 255, rgb[1] / 255, rgb[2] / 255), edgecolor="black", label=name)
               for name, (_, rgb) in zip(names, legend_entries(task), strict=True)]
    fig.legend(handles=handles, loc="lower center", ncol=3 if cols == 2 else min(len(handles), 5), fontsize=7,
               frameon=False)
    fig.suptitle(f"`{c.variant}` vs `{c.baseline}`: images it gains most on (green), loses most on (red)\n"
                 "#: image index in the data set; delta: per-image mIoU change, mean over seeds", fontsize=8)
    fig.savefig(path, dpi=dpi, pil_kwargs={"compress_level": 3})  # zlib's level 6 took longer than the drawing
    plt.close(fig)


_CELL_PX = 268  # screen pixels of a panel's width with its gap: a 128-pixel image shown twice its size
_GAP_PX, _TITLE_PX = 12, 24  # screen pixels between panels, and above each panel for its title


def _canvas(rows: list[_Row], cols: int, task: Any, title_px: int,
            gap_px: int) -> tuple[np.ndarray, list[list[tuple[int, int]]]]:
    """(canvas (H, W, 3) uint8 on white, per row the (x, y) in image pixels of each panel's top-left corner)."""
    from ablate.tracking import colourize, display_rgb

    h, w = rows[0].truth.shape[:2]
    cell_h, cell_w = h + title_px + gap_px, w + gap_px
    canvas = np.full((cell_h * len(rows), cell_w * cols, 3), 255, np.uint8)
    origins = []
    for n, r in enumerate(rows):
        panels = [display_rgb(r.image), colourize(r.truth, task)]
        panels += [colourize(p, task) for p in (r.preds or ())]
        row = []
        for k, panel in enumerate(panels):
            x, y = k * cell_w + gap_px // 2, n * cell_h + title_px
            canvas[y:y + h, x:x + w] = panel
            row.append((x, y))
        origins.append(row)
    return canvas, origins
