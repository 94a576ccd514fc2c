"""The model card (``model_card.md``) and ``preprocessing.json`` of an export.

The card says where the model came from (the run, and why it was chosen), what it was trained
on, how well it did per class, the ablation table or study summary it won, how to load each
file, and what it is not for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ablate.export.check import PROB_ATOL, TFLITE_ATOL, FormatCheck
from ablate.export.formats import layout
from ablate.export.select import Choice, metric_of
from ablate.spec import Spec
from ablate.task import MARS, Task

SCALING = {
    "uint8": "x / 255",
    "float": "kept as is when the batch's maximum is <= 1, else x / 255 (0-255 floats, e.g. the course's float64 file)",
    "valid_range": [0, 255],
}


def preprocessing(model_name: str, version: str | None, task: Task = MARS) -> dict[str, Any]:
    """What a consumer needs to feed the model and read its output; ``task`` is the whole task, as
    ``ablate.task.task_from_dict`` reads it back."""
    h, w, c, k = task.height, task.width, task.channels, task.num_classes
    return {
        "model": model_name,
        "version": version,
        "task": task.to_dict(),
        "input": {"shape": [h, w, c], "layout": layout(task),
                  "dtypes": ["uint8 0-255", "float 0-1"], "scaling": SCALING},
        "output": {"masks": f"(N, {h}, {w}) uint8, argmax of probabilities (labels 0-{k - 1})",
                   "probabilities": f"(N, {h}, {w}, {k}) float32 softmax over classes"},
        "classes": [{"id": i, "name": n, "colour": list(col), "scored": i in task.scored_ids}
                    for i, (n, col) in enumerate(zip(task.classes, task.palette, strict=True))],
        "ignore_label": task.ignore_label,
        "ignore": _ignore_text(task),
        "scored_classes": list(task.scored_names),
        "formats": {
            "model.keras": "Keras 3; `import ablate` first, then keras.saving.load_model(path, safe_mode=True)",
            "saved_model": "tf.saved_model.load(path); signatures serving_default (float images) and serving_uint8 "
                           "(uint8 images), input 'images', outputs 'masks' and 'probabilities'; scaling in-graph",
            "model.tflite": f"one image at a time: float32 (1, {h}, {w}, {c}) already scaled to [0, 1] -> "
                            f"'probabilities' (1, {h}, {w}, {k}); signature serving_default",
            "mlflow": "models:/NAME@champion, pyfunc: images -> masks",
        },
        "tolerances": {"probabilities": PROB_ATOL, "tflite_probabilities": TFLITE_ATOL},
    }


def _ignore_text(task: Task) -> str:
    """What the ignore label means, in one sentence."""
    if task.ignore_label is None:
        return "none: every pixel is scored"
    if task.ignore_is_class:
        return (f"label {task.ignore_label} ({task.classes[task.ignore_label]}) is a class the model predicts, but "
                "pixels labelled with it are not scored")
    return (f"label {task.ignore_label} marks unlabelled pixels in masks: not a class, never predicted, not scored")


@dataclass
class CardInputs:
    """Everything the card reports."""

    choice: Choice
    spec: Spec
    model_name: str
    version: str | None
    checks: list[FormatCheck]
    tracking_uri: str
    refit_run_id: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    task: Task = MARS  # the source run's task.json (runs without one are the Mars task)


def model_card(c: CardInputs) -> str:
    """The model card as markdown."""
    run = c.choice.run
    parts = [
        f"# Model card: {c.model_name}" + (f" v{c.version}" if c.version else ""),
        f"Exported {datetime.now(UTC):%Y-%m-%d %H:%M UTC} by `ablate export`; registered as "
        f"`models:/{c.model_name}@champion`.",
        "## Where it comes from",
        _provenance(c),
        _evidence(c),
        "## Data",
        _data(c),
        "## Validation metrics (source run, best epoch)",
        _metrics(c),
        _results_section(c),
        "## Spec",
        f"spec_hash `{c.spec.spec_hash}`. Rebuild with `ablate.spec.validate(json.load(open('spec.json')))`.",
        "```json\n" + json.dumps(c.spec.to_dict(), indent=2, sort_keys=True) + "\n```",
        "## Files and how to load them",
        _files(c.task),
        "## Reload check",
        "Each format was reloaded from disk and run on a fixed batch of 16 images; all agree with the trained "
        "model (masks identical except at numerical ties, probabilities within the tolerance).\n\n"
        + "\n".join(f"- {ch.line()}" for ch in c.checks),
        "## Intended use and limits",
        _limits(run.data.tags.get("data_path", ""), c.task),
    ]
    return "\n\n".join(p for p in parts if p) + "\n"


def _provenance(c: CardInputs) -> str:
    run = c.choice.run
    tags = run.data.tags
    lines = [
        f"- Selected from: {c.choice.source} `{c.choice.name}` (experiment id {run.info.experiment_id})",
        f"- Source run: `{run.info.run_id}` ({run.info.run_name}), seed {tags.get('seed', '?')}",
        f"- Why this run: {c.choice.reason}",
        f"- Tracking store: `{c.tracking_uri}`",
        f"- Code: commit `{tags.get('git_commit', 'unknown')}` (dirty: {tags.get('git_dirty', 'unknown')}), "
        f"TF {tags.get('tf_version', '?')}, Keras {tags.get('keras_version', '?')}",
    ]
    if c.refit_run_id:
        lines.append(f"- Refit: retrained on train + validation as run `{c.refit_run_id}` with the source run's "
                     "best epoch count; its validation figures are no longer held-out (the figures below are the "
                     "source run's).")
    lines += [f"- {k}: {v}" for k, v in c.extra.items()]
    return "\n".join(lines)


def _evidence(c: CardInputs) -> str:
    """An ablation's winner against its runner-up, paired by seed: the evidence, or plainly its absence."""
    if not c.choice.evidence:
        return ""
    if c.choice.supported:
        return f"## Evidence for the choice\n\n{c.choice.evidence}"
    return ("## Evidence for the choice: none (exported with --force)\n\n"
            f"**The exported variant was NOT significantly better than the runner-up.** {c.choice.evidence}")


def _data(c: CardInputs) -> str:
    tags, d = c.choice.run.data.tags, c.spec.data
    return (f"- File: `{tags.get('data_path', d.path or 'synthetic default')}`, fingerprint "
            f"`{tags.get('data_fingerprint', '?')}` (sha256 prefix)\n"
            f"- Split: {1 - d.val_fraction:.0%} train / {d.val_fraction:.0%} validation by seed {c.spec.seed}"
            f"; limit {d.limit or 'none'}; "
            f"outlier cleaning {'on' if d.clean else 'off'}\n"
            + _task_lines(c.task))


def _task_lines(task: Task) -> str:
    """The task: input layout, classes with labels and colours, ignore label, scored classes."""
    kind = "grayscale" if task.channels == 1 else "RGB"
    classes = ", ".join(f"{i} {n}" for i, n in enumerate(task.classes))
    colours = ", ".join(f"{n} #{r:02x}{g:02x}{b:02x}" for n, (r, g, b) in zip(task.classes, task.palette, strict=True))
    shapes = layout(task).rpartition(",")[0]  # without the trailing ", RGB" / ", grayscale"
    return (f"- Input: {task.height}x{task.width} {kind} images, given as {shapes}\n"
            f"- Classes ({task.num_classes}, by label): {classes}\n"
            f"- Colours (figures, overlays): {colours}\n"
            f"- Ignore label: {_ignore_text(task)}\n"
            f"- Scored classes (mIoU): {', '.join(task.scored_names)}")


def _metrics(c: CardInputs) -> str:
    run = c.choice.run
    rows = ["| metric | value |", "|---|---|"]
    task = c.task
    keys = ["best_val_miou", *(f"best_val_iou_{n}" for n in task.scored_names), "best_epoch", "params",
            "latency_ms_per_image", "train_time_s"]
    for k in keys:
        v = metric_of(run, k)
        if v == v:  # not NaN
            rows.append(f"| {k} | {v:.4f} |" if abs(v) < 1000 else f"| {k} | {v:.0f} |")
    ignored = ("every pixel is scored" if task.ignore_label is None
               else f"pixels labelled {task.ignore_label} are not scored")
    return (f"mIoU is the mean IoU over the scored classes ({', '.join(task.scored_names)}) present in the truth or "
            f"the predictions; {ignored}.\n\n" + "\n".join(rows))


def _results_section(c: CardInputs) -> str:
    ch = c.choice
    if ch.source == "ablation":
        body = ch.table + ("\n\n### The ablation's report\n\n" + ch.report if ch.report else "")
        return f"## The ablation it won: `{ch.name}`\n\n{body}"
    if ch.source == "study":
        body = ch.table + ("\n\n### The study's summary\n\n" + ch.report if ch.report else "")
        return f"## The study it came from: `{ch.name}`\n\n{body}"
    return ""


def _files(task: Task) -> str:
    shape = f"(1, {task.height}, {task.width}, {task.channels})"
    return (
        "| file | what | load with |\n|---|---|---|\n"
        "| `model.keras` | Keras 3 model | `import ablate; keras.saving.load_model('model.keras', safe_mode=True)` |\n"
        "| `saved_model/` | TF SavedModel, raw images in, masks + probabilities out | "
        "`m = tf.saved_model.load('saved_model'); m.signatures['serving_uint8'](images=x)` (no project code) |\n"
        f"| `model.tflite` | TFLite float32, one image {shape} scaled to [0, 1] | "
        "`tf.lite.Interpreter('model.tflite').get_signature_runner()(images=x)` |\n"
        "| `preprocessing.json` | the task, scaling, shapes, class names and colours | `json.load` |\n"
        "| `task.json` | the task (size, channels, classes, ignore label, scored classes) | "
        "`ablate.task.task_from_dict(json.load(f))` |\n"
        "| `spec.json` | the full training spec | `ablate.spec.validate(json.load(f))` |\n\n"
        "From MLflow: `mlflow.pyfunc.load_model('models:/NAME@champion').predict(images)` returns masks; "
        "`mlflow models serve -m models:/NAME@champion --env-manager local` serves them "
        "(`POST /invocations` with `{\"inputs\": images}`). From the command line: "
        "`ablate predict --model DIR --data file.npz --out masks.npz"
        + (" --submission sub.csv" if task.is_mars else "") + "`."
    )


def _limits(data_path: str, task: Task = MARS) -> str:
    synthetic = "synthetic" in data_path
    if not task.is_mars:
        kind = "grayscale" if task.channels == 1 else "RGB"
        return "\n".join([
            f"- For: semantic segmentation of {task.height}x{task.width} {kind} images into the classes "
            f"{', '.join(task.classes)}, as in the training data.",
            f"- Not for: any safety-critical decision; other resolutions or channel counts (resize and convert "
            f"first); classes outside the {task.num_classes} listed.",
            f"- Ignore label: {_ignore_text(task)}; masks carry no claim about unlabelled regions.",
            "- Validation figures come from one random split of one file. Seeds vary: see the table above.",
            *(["- Trained on synthetic images: its figures say nothing about real images."] if synthetic else []),
        ])
    return "\n".join([
        "- For: semantic segmentation of 64x128 grayscale Mars rover terrain images (AI4Mars / course format) "
        "into soil, bedrock, sand and big rock, for research and coursework.",
        "- Not for: rover navigation or any safety-critical decision; other resolutions or colour images "
        "(resize and convert first); classes outside the five listed.",
        "- Class 0 (background/unlabelled) is ignored by the metric; the model may still predict it, and its "
        "masks carry no claim about unlabelled regions.",
        "- Big rock is rare (about 0.5% of labelled pixels in the real data) and is the weakest class; check "
        "its IoU above before relying on it.",
        "- Validation figures come from one random split of one file; on the course data, local validation and "
        "leaderboard scores have differed by 10 points or more. Seeds vary: see the table above.",
        *(["- Trained on synthetic terrain: its figures say nothing about real images."] if synthetic else []),
    ])
