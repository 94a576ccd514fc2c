"""Quality at full scale: the plain U-Net against the Mars recipe on the real data.

Each model is trained at its preset's full budget (``ablations/presets/*.yaml``: its epochs,
early stopping and everything else), untracked (``ablate.train.fit``), once per seed; the order
of the models alternates from seed to seed. Reported per model and seed: the best validation
mIoU, the per-class IoU at that epoch, the best epoch, the epochs run (early stopping may end a
run sooner), the median wall seconds per epoch (``epoch_time``, validation included) and the
weights. Then whether the recipe beat the plain U-Net: the difference of best validation mIoU
(recipe - plain U-Net), per seed and its mean.

The recipe removes the outlier masks before splitting (``data.clean``), so its validation set
differs from the plain U-Net's; the difference is of the two runs as a user gets them.

The result is written after each run (``"complete": false`` until the last), so a long CPU run
that is stopped still leaves figures. Run it with ``make bench-quality`` (hours on a 2-core
CPU) or::

    .venv/bin/python benchmarks/quality.py --models unet-baseline mars-recipe --seeds 0

and for a quick check of the script itself::

    .venv/bin/python benchmarks/quality.py --epochs 1 --limit 64 --out /tmp/quality.json

Writes ``benchmarks/results/quality.json`` with the machine and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = ROOT.parent / "shared/data/mars_ai4mars_64x128.npz"  # benchmark data only, never committed
PRESETS = {name: ROOT / f"ablations/presets/{name}.yaml" for name in ("unet-baseline", "mars-recipe")}
PLAIN, RECIPE = "unet-baseline", "mars-recipe"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", choices=list(PRESETS), default=list(PRESETS))
    p.add_argument("--epochs", type=int, default=None, help="override the presets' epochs (a quick check)")
    p.add_argument("--limit", type=int, default=None, help="training pairs loaded (default: all)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--data", type=Path, default=REAL_DATA, help="course-format .npz (default: the real set)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/quality.json")
    args = p.parse_args()
    if not args.data.exists():
        p.error(f"--data {args.data} does not exist; give the real data set's path")
    return args


def machine() -> dict[str, Any]:
    import keras
    import tensorflow as tf

    smi = shutil.which("nvidia-smi")
    names = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True,
                           timeout=30).stdout.split("\n") if smi else []
    return {"gpus": [n.strip() for n in names if n.strip()], "tf_gpus": len(tf.config.list_physical_devices("GPU")),
            "processor": platform.processor() or platform.machine(), "cpus": len(os.sched_getaffinity(0)),
            "platform": platform.platform(), "tf": tf.__version__, "keras": keras.__version__,
            "python": platform.python_version()}


def train(model: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """One untracked run at the preset's budget; its best-epoch figures."""
    import keras

    from ablate.spec import load_spec
    from ablate.train import fit, load_data

    overrides = [f"data.path={args.data}", f"seed={seed}"]
    overrides += [f"train.epochs={args.epochs}"] if args.epochs else []
    overrides += [f"data.limit={args.limit}"] if args.limit else []
    spec = load_spec(PRESETS[model], overrides)
    keras.backend.clear_session()
    t0 = time.perf_counter()
    split = load_data(spec)
    result = fit(spec, split, verbose=2)  # one line per epoch: a long run shows where it is
    return {"model": model, "seed": seed, "best_val_miou": result.best["val_miou"],
            "val_iou": {k.removeprefix("val_iou_"): v for k, v in result.best.items() if k.startswith("val_iou_")},
            "best_epoch": result.best_epoch + 1, "epochs_run": result.epochs_run, "epochs_budget": spec.train.epochs,
            "early_stopping": spec.train.early_stopping,
            "epoch_time_median_s": statistics.median(result.history["epoch_time"]),
            "train_seconds": result.train_seconds, "wall_seconds": time.perf_counter() - t0, "params": result.params,
            "train_pairs": len(split.x_train), "val_pairs": len(split.x_val)}


def comparison(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Recipe minus plain U-Net best val mIoU, paired by seed; None until a seed has both."""
    by = {(r["model"], r["seed"]): r["best_val_miou"] for r in runs}
    seeds = sorted(s for m, s in by if m == RECIPE and (PLAIN, s) in by)
    if not seeds:
        return None
    diffs = [by[(RECIPE, s)] - by[(PLAIN, s)] for s in seeds]
    return {"seeds": seeds, "recipe_minus_plain": diffs, "mean_difference": statistics.fmean(diffs),
            "recipe_beat_plain": statistics.fmean(diffs) > 0,
            "note": "best val mIoU; the recipe's validation set leaves out the outlier masks (data.clean)"
            + ("; one seed: a single paired difference, not a test" if len(seeds) == 1 else "")}


def models_summary(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    out = {}
    for model in dict.fromkeys(r["model"] for r in runs):
        mine = [r for r in runs if r["model"] == model]
        out[model] = {"seeds": len(mine), "best_val_miou_mean": statistics.fmean(r["best_val_miou"] for r in mine),
                      "epoch_time_median_s": statistics.median(r["epoch_time_median_s"] for r in mine)}
    return out


def write(args: argparse.Namespace, result: dict[str, Any]) -> None:
    result["models"] = models_summary(result["runs"])
    result["comparison"] = comparison(result["runs"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


def main() -> int:
    args = parse_args()
    from ablate import load_all

    load_all()
    result: dict[str, Any] = {
        "complete": False,
        "setup": {"models": args.models, "seeds": args.seeds, "data": args.data.name, "limit": args.limit,
                  "epochs": args.epochs or "preset", "tracked": False},
        "machine": machine(), "runs": []}
    m = result["machine"]
    print(f"machine: {', '.join(m['gpus']) or 'no GPU'}; {m['processor']}, {m['cpus']} CPUs; TF {m['tf']}", flush=True)
    print(f"setup: {' '.join(args.models)} on {args.data.name} (limit {args.limit}), seeds {args.seeds}, "
          f"epochs {args.epochs or 'as in the presets'}", flush=True)
    for i, seed in enumerate(args.seeds):
        for model in args.models if i % 2 == 0 else args.models[::-1]:
            run = train(model, seed, args)
            result["runs"].append(run)
            write(args, result)
            print(f"  {model:<13} seed {seed}: best val mIoU {run['best_val_miou']:.4f} at epoch {run['best_epoch']}"
                  f"/{run['epochs_run']} run; {run['epoch_time_median_s']:.1f} s/epoch; "
                  + " ".join(f"{k} {v:.3f}" for k, v in run["val_iou"].items()), flush=True)
    result["complete"] = True
    write(args, result)
    summary(result, args.out)
    return 0


def summary(result: dict[str, Any], out: Path) -> None:
    for model, s in result["models"].items():
        print(f"{model}: best val mIoU {s['best_val_miou_mean']:.4f} (mean of {s['seeds']} seed(s)), "
              f"{s['epoch_time_median_s']:.1f} s/epoch")
    c = result["comparison"]
    if c is not None:
        verdict = "beat" if c["recipe_beat_plain"] else "did NOT beat"
        print(f"the recipe {verdict} the plain U-Net: recipe - plain best val mIoU {c['mean_difference']:+.4f} "
              f"(seeds {c['seeds']}; {c['note']})")
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
