"""Tracking overhead: a fully tracked ``ablate run`` against a bare ``model.fit``.

Both arms train the same model on the same data for the same epochs, in one process,
interleaved (the order alternates each repeat, so drift in machine load hits both arms):

- tracked: ``ablate.runner.run_spec`` with everything a user gets from ``ablate run``: params,
  ``spec.json``, provenance tags, per-epoch metrics, the mask grid every epoch
  (``tracking.mask_every=1``), the final grid, the confusion matrix, cost figures and the saved
  ``.keras`` model, into a temporary SQLite MLflow store. Timed from the call to its return.
- bare: the same compiled model and ``tf.data`` pipeline, ``model.fit`` with no callbacks.

The figure is the median over repeats of tracked / bare wall time (target: <= 1.05). It is
printed and written to ``benchmarks/results/overhead.json`` with the process CPU-time ratio
beside it: on a shared machine other jobs inflate wall times at random, CPU time much less.

Run it with ``make bench`` or::

    .venv/bin/python benchmarks/overhead.py --repeats 3 --epochs 3 --limit 400
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import bare_fit, data_file

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "ablations/presets/unet-baseline.yaml"
TARGET = 1.05  # the target: full tracking costs at most 5% of the training time


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3, help="timed runs per arm (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--limit", type=int, default=400, help="training pairs loaded (default: %(default)s)")
    p.add_argument("--filters", type=int, default=16)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--data", type=Path, default=None, help="course-format .npz (default: the real set if present)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/overhead.json")
    return p.parse_args()


class Timer:
    """Wall and process CPU seconds of a block."""

    def __enter__(self) -> Timer:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall0, time.process_time() - self.cpu0


def tracked_run(spec, split) -> None:  # type: ignore[no-untyped-def]
    """A fully tracked run, model logging included (what ``ablate run`` does after loading the data)."""
    from ablate.runner import run_spec

    run_spec(spec, experiment="overhead", split=split, verbose=0)


def timed(fn, spec, split) -> Timer:  # type: ignore[no-untyped-def]
    with Timer() as t:
        fn(spec, split)
    return t


def main() -> int:
    args = parse_args()
    import keras
    import mlflow
    import tensorflow as tf

    from ablate import tracking
    from ablate.spec import load_spec
    from ablate.train import load_data

    with tempfile.TemporaryDirectory(prefix="ablate-bench-") as tmp_name:
        tmp = Path(tmp_name)
        data = data_file(args.data, Path(tmp), args.limit)
        overrides = [f"data.path={data}", f"data.limit={args.limit}", f"model.filters={args.filters}",
                     f"model.depth={args.depth}", f"train.epochs={args.epochs}", "train.early_stopping=0",
                     "tracking.mask_every=1", "tracking.log_model=true"]
        spec = load_spec(PRESET, overrides)
        split = load_data(spec)
        tracking.setup(f"sqlite:///{tmp / 'mlflow.db'}")
        tracking.ensure_experiment("overhead")  # creating the store is set-up, not per-run overhead
        print(f"data {data.name}: {len(split.x_train)} train / {len(split.x_val)} val pairs; "
              f"filters {args.filters}, depth {args.depth}, {args.epochs} epochs; {args.repeats} repeats per arm",
              flush=True)

        warm = load_spec(PRESET, [*overrides, "train.epochs=1"])
        print(f"warm-up (untimed): bare {timed(bare_fit, warm, split).wall:.1f} s, "
              f"tracked {timed(tracked_run, warm, split).wall:.1f} s", flush=True)

        times: dict[str, list[Timer]] = {"bare": [], "tracked": []}
        for r in range(args.repeats):
            arms = [("bare", bare_fit), ("tracked", tracked_run)]
            for name, fn in arms if r % 2 == 0 else arms[::-1]:
                t = timed(fn, spec, split)
                times[name].append(t)
                print(f"repeat {r + 1}/{args.repeats}: {name:<7} wall {t.wall:7.2f} s  cpu {t.cpu:7.2f} s", flush=True)
        runs = mlflow.search_runs(experiment_names=["overhead"])
        if set(runs["status"]) != {"FINISHED"}:
            raise RuntimeError(f"tracked runs did not all finish: {runs['status'].tolist()}")

    bare, tracked = times["bare"], times["tracked"]
    ratios = [t.wall / b.wall for t, b in zip(tracked, bare, strict=True)]
    cpu_ratios = [t.cpu / b.cpu for t, b in zip(tracked, bare, strict=True)]
    result = {
        "ratio_median": statistics.median(ratios),
        "cpu_ratio_median": statistics.median(cpu_ratios),
        "ratios": ratios,
        "cpu_ratios": cpu_ratios,
        "tracked_wall_s": [t.wall for t in tracked],
        "bare_wall_s": [b.wall for b in bare],
        "tracked_cpu_s": [t.cpu for t in tracked],
        "bare_cpu_s": [b.cpu for b in bare],
        "target": TARGET,
        "meets_target": statistics.median(ratios) <= TARGET,
        # Wall and CPU ratios that disagree mean other jobs shared the machine: the CPU ratio is the firmer one.
        "noisy": abs(statistics.median(ratios) - statistics.median(cpu_ratios)) > 0.03
        or max(ratios) - min(ratios) > 0.1,
        "setup": {"data": data.name, "train_pairs": len(split.x_train), "val_pairs": len(split.x_val),
                  "filters": args.filters, "depth": args.depth, "epochs": args.epochs, "repeats": args.repeats,
                  "batch_size": spec.train.batch_size, "mask_every": 1, "log_model": True},
        "environment": {"tf": tf.__version__, "keras": keras.__version__, "mlflow": mlflow.__version__,
                        "python": platform.python_version(), "device": tracking.device_name(),
                        "cpu_count": os.cpu_count()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"median tracked/bare wall-time ratio: {result['ratio_median']:.3f} "
          f"(target <= {TARGET}: {'met' if result['meets_target'] else 'NOT met'}); "
          f"CPU-time ratio {result['cpu_ratio_median']:.3f}; median wall "
          f"{statistics.median(result['tracked_wall_s']):.1f} s vs {statistics.median(result['bare_wall_s']):.1f} s; "
          f"wrote {args.out}")
    if result["noisy"]:
        print("note: wall times varied with other load on this machine; the CPU-time ratio is the firmer figure")
    return 0


if __name__ == "__main__":
    sys.exit(main())
