"""Input-pipeline throughput against the training step's, on this machine, one run.

The pipeline (seeded shuffle + the full augmentation policy of ``seed-final`` + batching) must
deliver at least ``TARGET`` times the images per second that a training step of the same
preset consumes at the same batch size, so input is never the bottleneck. Not a test: timings
depend on the machine and its load.

Run it from the project root:

    .venv/bin/python benchmarks/input_pipeline.py [--preset ablations/presets/seed-final.yaml]

Writes ``benchmarks/results/input_pipeline.json`` and prints it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TARGET = 5.0  # pipeline images/s over training images/s
REAL_DATA = ROOT.parent / "shared" / "data" / "mars_ai4mars_64x128.npz"  # benchmark data only, never committed
PRESET = ROOT / "ablations" / "presets" / "seed-final.yaml"
FALLBACK_PRESET = ROOT / "ablations" / "presets" / "unet-baseline.yaml"
# Every augmentation family at once: a stress reference beside the preset's own policy (and the
# policy used when seed-final.yaml does not exist).
FULL_POLICY = [
    {"type": "hflip", "p": 0.5},
    {"type": "zoom", "p": 0.3},
    {"type": "rotate", "p": 0.3},
    {"type": "shift", "p": 0.3},
    {"type": "cutout", "p": 0.3},
    {"type": "elastic", "p": 0.2},
    {"type": "brightness_contrast", "p": 0.5},
    {"type": "copy_paste", "p": 0.3},
]


def load_images(limit: int) -> tuple[Any, Any, str]:
    """The real data when present, else the embedded synthetic default."""
    from ablate.data.default import default_data_path
    from ablate.data.loader import load_npz

    path = REAL_DATA if REAL_DATA.is_file() else Path(default_data_path())
    data = load_npz(str(path), limit=limit)
    return data.images, data.masks, str(path)


def pipeline_rate(images: Any, masks: Any, augment: list[dict[str, Any]], batch_size: int,
                  seconds: float) -> tuple[float, int]:
    """Images/s the training dataset yields (after one warm-up pass over a few batches)."""
    from ablate.augment import Policy
    from ablate.pipeline import train_dataset

    ds = train_dataset(images, masks, batch_size, seed=0, policy=Policy(augment)).repeat()
    it = iter(ds)
    for _ in range(20):  # warm-up: tracing, the cache fill, autotuning
        next(it)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        next(it)
        n += 1
    return n * batch_size / (time.perf_counter() - t0), n


def train_rate(spec: Any, images: Any, masks: Any, steps: int) -> tuple[float, int]:
    """Images/s of ``train_on_batch`` on one fixed batch (after warm-up), the spec's model and loss."""
    from ablate.train import Split, compile_model, set_seed

    bs = spec.train.batch_size
    set_seed(spec.seed)
    split = Split(images, masks, images[:bs], masks[:bs], "benchmark", "benchmark")
    model, _ = compile_model(spec, split, steps_per_epoch=math.ceil(len(images) / bs))
    x, y = images[:bs], masks[:bs]
    for _ in range(3):  # warm-up: tracing and graph optimisation
        model.train_on_batch(x, y)
    t0 = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return steps * bs / (time.perf_counter() - t0), steps


def device_name() -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
    return f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default=str(PRESET if PRESET.is_file() else FALLBACK_PRESET))
    parser.add_argument("--images", type=int, default=2048, help="training images to load")
    parser.add_argument("--seconds", type=float, default=8.0, help="timed duration of each pipeline")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "input_pipeline.json"))
    args = parser.parse_args()

    import tensorflow as tf

    from ablate.spec import load_spec

    spec = load_spec(args.preset)
    from_preset = Path(args.preset).resolve() == PRESET.resolve()
    augment = spec.augment if from_preset else FULL_POLICY
    images, masks, data_path = load_images(args.images)
    bs = spec.train.batch_size
    pipe, batches = pipeline_rate(images, masks, augment, bs, args.seconds)
    full, _ = pipeline_rate(images, masks, FULL_POLICY, bs, args.seconds)
    train, steps = train_rate(spec, images, masks, args.steps)
    result = {
        "pipeline_images_per_s": round(pipe, 1),
        "train_images_per_s": round(train, 1),
        "ratio": round(pipe / train, 2),
        "target": TARGET,
        "meets_target": pipe / train >= TARGET,
        "full_policy_images_per_s": round(full, 1),
        "full_policy_ratio": round(full / train, 2),
        "batch_size": bs,
        "preset": str(Path(args.preset).resolve().relative_to(ROOT)),
        "model": spec.model["type"],
        "policy": [a["type"] for a in augment],
        "policy_source": "preset" if from_preset else "full policy (seed-final.yaml not found)",
        "full_policy": [a["type"] for a in FULL_POLICY],
        "data": Path(data_path).name,
        "images": len(images),
        "pipeline_batches_timed": batches,
        "train_steps_timed": steps,
        "device": device_name(),
        "tensorflow": tf.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
