"""Where a variant wins, image by image: per-image validation IoU read back from MLflow.

Every finished run logs ``per_image.parquet`` (:func:`ablate.runner.per_image_frame`): one row
per validation image with its index in the loaded data set, its mIoU and each class's IoU. A
seed fixes the split, so in one seed every arm scores the same validation images; pairing the
variant with the baseline by (seed, image) gives one delta per image.

Example:
    >>> from ablate.ablation.collect import collect
    >>> markdown, pngs = image_section(collect("my-ablation"), Path("reports/my-ablation"))
"""

from __future__ import annotations

import math
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from scipy import stats as sps

from ablate.ablation.collect import AblationRecord
from ablate.ablation.design import BASELINE
from ablate.ablation.image_figures import _MISSING, _data_of, _figure_or_note
from ablate.ablation.image_figures import MODEL_ARTIFACT as MODEL_ARTIFACT
from ablate.runner import PER_IMAGE_ARTIFACT

LONG_COLUMNS = ["variant", "seed", "index", "miou"]
CONFIDENCE = 0.95  # of the t interval of the mean per-image delta
DECIMALS = 12  # deltas are rounded so that float noise neither breaks rank ties nor counts as a gain


def per_image_runs(record: AblationRecord) -> pd.DataFrame:
    """Per-image validation IoU of every FINISHED run of an ablation, in long format.

    Columns ``variant, seed, index, miou`` and the per-class ``iou_*`` columns. Runs that
    logged no ``per_image.parquet`` (runs older than the artifact) are skipped: their count
    is in ``frame.attrs["n_skipped"]`` and their ids in ``frame.attrs["skipped_runs"]``.

    Example:
        >>> per = per_image_runs(collect("my-ablation"))
        >>> per.groupby("variant")["miou"].mean()
    """
    runs = record.runs
    ok = runs[runs["status"] == "FINISHED"] if not runs.empty else runs
    frames, skipped = [], []
    for row in ok.itertuples(index=False):
        frame = _read_per_image(str(row.run_id))
        if frame is None:
            skipped.append(str(row.run_id))
            continue
        frames.append(frame.assign(variant=row.variant, seed=int(row.seed)))
    if frames:
        out = pd.concat(frames, ignore_index=True)
        out = out[LONG_COLUMNS + [c for c in out.columns if c.startswith("iou_")]]
    else:
        out = pd.DataFrame(columns=LONG_COLUMNS)
    out.attrs.update(n_skipped=len(skipped), skipped_runs=skipped)
    return out


def _read_per_image(run_id: str) -> pd.DataFrame | None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=PER_IMAGE_ARTIFACT, dst_path=tmp)
            frame = pd.read_parquet(local)
        except _MISSING:
            return None
    return frame if {"index", "miou"} <= set(frame.columns) else None


@dataclass(frozen=True)
class ImageComparison:
    """A variant against the baseline over validation images, paired by (seed, image).

    Each image's delta (variant mIoU - baseline mIoU) is averaged over the seeds in which the
    image is validated in both arms; the statistics below treat those per-image deltas as the
    sample. Images are *not* independent replicates of the training process (seeds are): one
    trained model scores every image, so these numbers answer "does the gain hold across
    images?" (consistency, breadth), not "is it reproducible over training seeds?", which is
    the seed-level comparison's question. A small p here with one seed says the gain is
    spread over images for that one model, nothing about another training run.

    Attributes:
        n_images: images paired in at least one seed; n_pairs: (seed, image) pairs;
            n_seeds: seeds with at least one pair.
        mean_delta, median_delta: over images; ci_low, ci_high: t interval of the mean.
        share_gain, share_loss: share of images whose delta is > 0, < 0.
        p: two-sided Wilcoxon signed-rank p over the per-image deltas (nan: no image).
        top_gains, top_losses: up to k ``(index, delta)``, largest gains / losses first.
        deltas: one row per image: index, delta, baseline, variant (mean mIoUs), n_seeds,
            first_seed (the first seed in which it is paired).

    Example:
        >>> c = image_comparison(per_image_runs(record), "baseline", "skip=add")
        >>> f"{c.share_gain:.0%} of {c.n_images} images gain"
    """

    baseline: str
    variant: str
    n_images: int
    n_pairs: int
    n_seeds: int
    mean_delta: float
    median_delta: float
    ci_low: float
    ci_high: float
    share_gain: float
    share_loss: float
    p: float
    top_gains: tuple[tuple[int, float], ...]
    top_losses: tuple[tuple[int, float], ...]
    deltas: pd.DataFrame = field(compare=False, repr=False)


def image_comparison(per_image: pd.DataFrame, baseline: str, variant: str, k: int = 3) -> ImageComparison:
    """Compares ``variant`` with ``baseline`` image by image (see :class:`ImageComparison`).

    Args:
        per_image: long table with ``variant, seed, index, miou`` (:func:`per_image_runs`).
        baseline, variant: the two arms' keys.
        k: how many most-gaining and most-losing images to name.

    Raises:
        ValueError: a column or an arm is missing, the arms are the same, or k < 0.

    Example:
        >>> c = image_comparison(per, "baseline", "skip=add", k=2)
        >>> c.top_gains  # ((17, 0.21), (4, 0.12))
    """
    missing = [c for c in LONG_COLUMNS if c not in per_image.columns]
    if missing:
        raise ValueError(f"per_image needs columns {LONG_COLUMNS}; missing {missing}.")
    known = sorted(map(str, per_image["variant"].unique()))
    for name in (baseline, variant):
        if name not in known:
            raise ValueError(f"Arm '{name}' has no per-image rows; arms with rows: {', '.join(known) or 'none'}.")
    if baseline == variant:
        raise ValueError(f"Compare two different arms; got '{variant}' twice.")
    if k < 0:
        raise ValueError(f"k must be >= 0; got {k}.")
    cols = ["seed", "index", "miou"]
    b = per_image.loc[per_image["variant"] == baseline, cols]
    v = per_image.loc[per_image["variant"] == variant, cols]
    pairs = v.merge(b, on=["seed", "index"], suffixes=("_v", "_b"))
    pairs = pairs[np.isfinite(pairs["miou_v"].astype(float)) & np.isfinite(pairs["miou_b"].astype(float))]
    pairs = pairs.assign(delta=pairs["miou_v"] - pairs["miou_b"]).sort_values(["index", "seed"])
    deltas = pairs.groupby("index", as_index=False).agg(
        delta=("delta", "mean"), baseline=("miou_b", "mean"), variant=("miou_v", "mean"),
        n_seeds=("seed", "size"), first_seed=("seed", "min"))
    deltas["delta"] = deltas["delta"].round(DECIMALS)
    d = deltas["delta"].to_numpy(dtype=float)
    ci = _t_interval(d)
    gains = deltas[deltas["delta"] > 0].nlargest(k, "delta")
    losses = deltas[deltas["delta"] < 0].nsmallest(k, "delta")
    return ImageComparison(
        baseline, variant, len(d), len(pairs), int(pairs["seed"].nunique()),
        float(d.mean()) if d.size else math.nan, float(np.median(d)) if d.size else math.nan, ci[0], ci[1],
        float(np.mean(d > 0)) if d.size else math.nan, float(np.mean(d < 0)) if d.size else math.nan,
        _wilcoxon(d), _top(gains), _top(losses), deltas.reset_index(drop=True))


def _t_interval(d: np.ndarray) -> tuple[float, float]:
    if d.size < 2:
        return math.nan, math.nan
    se = d.std(ddof=1) / math.sqrt(d.size)
    half = float(sps.t.ppf(0.5 + CONFIDENCE / 2, df=d.size - 1)) * se
    return float(d.mean() - half), float(d.mean() + half)


def _wilcoxon(d: np.ndarray) -> float:
    if d.size == 0:
        return math.nan
    if not np.any(d):
        return 1.0  # no image changed
    return float(sps.wilcoxon(d, alternative="two-sided").pvalue)


def _top(rows: pd.DataFrame) -> tuple[tuple[int, float], ...]:
    return tuple((int(i), float(x)) for i, x in zip(rows["index"], rows["delta"], strict=True))


# --- the report section ------------------------------------------------------------------

INTRO = (
    "Per-image mIoU: the mean IoU over the scored classes present in the image's truth or predicted on its "
    "scored pixels (pixels of the ignore label left out, as in the dataset metric). Each image's delta (variant - "
    "baseline) is paired within a seed (same split) and averaged over the seeds in which the image is "
    "validated. The mean per-image delta weighs every image equally, so it differs from the seed-level mIoU "
    "delta, which pools the pixels of all images. Images are not independent replicates of training "
    "(seeds are): this section says whether a change holds across images (its breadth), not whether it "
    "reproduces over training seeds. "
    "CI: t interval of the mean per-image delta; p: two-sided Wilcoxon signed-rank test over images."
)


def image_section(record: AblationRecord, out_dir: Path, baseline: str = BASELINE,
                  k: int = 3) -> tuple[str, list[str]]:
    """Markdown and one figure per variant: where it wins and loses, image by image.

    Each figure ``images_<variant>.png`` (in ``out_dir``) shows the ``k`` images the variant
    gains most on and the ``k`` it loses most on: image | truth | baseline | variant, the
    predictions those runs logged from their best epoch's validation pass (``predictions/val.npz``;
    first seed in which the image is paired), or, for runs from before it was logged, rebuilt from
    their logged models. Without either it shows image | truth and the deltas; without the data
    file it is skipped with a note. Nothing here raises for a missing artifact or file.

    Returns:
        ``(markdown, png file names)``; ``("", [])`` when no run logged per-image data.

    Example:
        >>> md, pngs = image_section(collect("my-ablation"), Path("reports/my-ablation"))
        >>> pngs  # ['images_skip_add.png']
    """
    per = per_image_runs(record)
    if per.empty:
        return "", []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = ["## Where it wins, image by image", "", INTRO, ""]
    if per.attrs.get("n_skipped"):
        lines += [f"{per.attrs['n_skipped']} finished run(s) logged no per-image data (older runs) "
                  "and are left out.", ""]
    arms = record.payload.get("arms", {})
    if baseline not in set(per["variant"]):
        return "\n".join([*lines, f"The baseline `{baseline}` has no per-image data; nothing to compare.", ""]), []
    files: list[str] = []
    for variant in [a for a in arms if a != baseline and a in set(per["variant"])]:
        lines += [f"### `{variant}` vs `{baseline}`", ""]
        if _data_of(arms, baseline).get("path") != _data_of(arms, variant).get("path"):
            lines += ["The two arms read different data files, so their images cannot be paired.", ""]
            continue
        comparison = image_comparison(per, baseline, variant, k)
        lines += _table(comparison)
        name = _file_name(variant, files)
        written, note = _figure_or_note(record, per, comparison, out_dir / name)
        if written:
            files.append(name)
            lines += [f"![{variant}: the images it gains and loses most on]({name})", ""]
        if note:
            lines += [f"Figure: {note}", ""]
    return "\n".join(lines), files


def _fmt(x: float, signed: bool = True) -> str:
    return "-" if not np.isfinite(x) else (f"{x:+.3f}" if signed else f"{x:.3f}")


def _table(c: ImageComparison) -> list[str]:
    if c.n_images == 0:
        return ["No validation image is scored by both arms in a shared seed.", ""]
    seeds = f"{c.n_seeds} seed{'s' if c.n_seeds != 1 else ''}"
    row = (f"| {c.n_images} ({seeds}, {c.n_pairs} image-seed pairs) | {_fmt(c.mean_delta)} "
           f"[{_fmt(c.ci_low)}, {_fmt(c.ci_high)}] | {c.share_gain:.0%} / {c.share_loss:.0%} "
           f"| {_fmt_p(c.p)} |")
    return ["| images paired | mean per-image delta [95% CI] | images gaining / losing | Wilcoxon p |",
            "|---|---|---|---|", row, "", _sentence(c), ""]


def _sentence(c: ImageComparison) -> str:
    text = (f"`{c.variant}` scores a higher mIoU than `{c.baseline}` on {c.share_gain:.0%} of {c.n_images} "
            f"validation images and a lower one on {c.share_loss:.0%}")
    if np.isfinite(c.p) and c.p < 0.05 and c.median_delta != 0:
        way = "gain" if c.median_delta > 0 else "loss"
        text += f"; the {way} is spread across images rather than carried by a few ({_p_phrase(c.p)})."
    else:
        text += f"; the per-image changes do not lean consistently one way ({_p_phrase(c.p)})."
    if c.n_seeds == 1:
        text += " With one seed this describes one trained model per arm."
    named = [f"most gained: {_names(c.top_gains)}" if c.top_gains else "",
             f"most lost: {_names(c.top_losses)}" if c.top_losses else ""]
    extra = "; ".join(n for n in named if n)
    return text + (f" Images {extra}." if extra else "")


def _fmt_p(p: float) -> str:
    return "-" if not np.isfinite(p) else ("< 0.001" if p < 0.001 else f"{p:.3f}")


def _p_phrase(p: float) -> str:
    text = _fmt_p(p)
    return f"Wilcoxon p {text}" if text.startswith("<") else f"Wilcoxon p = {text}"


def _names(top: tuple[tuple[int, float], ...]) -> str:
    return ", ".join(f"#{i} ({d:+.3f})" for i, d in top)


def _file_name(variant: str, taken: list[str]) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", variant).strip("_.") or "variant"
    name, n = f"images_{safe}.png", 2
    while name in taken:
        name, n = f"images_{safe}-{n}.png", n + 1
    return name
