"""Tracking overhead of a campaign: a small ablation, fully tracked, against a bare Keras loop.

Each repeat runs, in one process and in alternating order (so drift in machine load hits both):

- tracked: ``ablate.ablation.orchestrate.run_ablation`` on a 3-arm x 2-seed ablation of the plain
  U-Net (skip concat / add / none) for 3 epochs on the real data, with everything a user gets:
  the Optuna queue, the parent run, per-epoch metrics, the mask grid every epoch, the final grid,
  the confusion matrix, per-image IoUs, cost figures, the saved ``.keras`` model of every run and
  the report (``report.md``/``report.html`` with its figures), into a new folder's SQLite stores
  (MLflow's and Optuna's), created just before the campaign and timed apart: a user's campaigns go
  into the stores of ``mlruns/``, which their first run created once (MLflow's schema migrations,
  about 2 s here);
- bare: the same six models, compiled the same way (without the per-image record), trained by
  ``model.fit`` on the same split and ``tf.data`` pipelines with validation every epoch, no
  callbacks, no tracking.

The figure is the median over repeats of tracked / bare wall time (target: <= 1.05), also given
with the stores' creation counted in (``ratio_fresh_stores_median``), with the per-run fixed cost
(tracked minus bare, divided by the six runs). Every ``keras.Model.fit`` call is timed too, which
splits that cost in two: inside ``fit`` (the per-epoch callbacks, the per-image record; noisy, as
two fits of one model differ by seconds here) and beyond it (the queue, the runs, figures, FLOPs,
the model, the report; steady), each as a ratio with the other part taken at the bare side's
time. Printed, and written to ``benchmarks/results/campaign.json``.

Run it with ``make bench`` or::

    .venv/bin/python benchmarks/campaign.py --repeats 3 --limit 480
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import FIT_S, REAL_DATA, bare_fit, machine, timed_fits

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.05  # the target: a campaign's tracking costs at most 5% of its training
ARMS = {"concat": "concat", "add": "add", "none": "none"}  # skip type of each arm; concat is the baseline


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--limit", type=int, default=480, help="training pairs loaded (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--data", type=Path, default=None, help="course-format .npz (default: the real set if present)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/campaign.json")
    return p.parse_args()


def ablation_file(folder: Path, data: Path, args: argparse.Namespace) -> Path:
    path = folder / "bench.yaml"
    path.write_text(json.dumps({
        "name": "bench",
        "base": {"base": str(ROOT / "ablations/presets/unet-baseline.yaml"),
                 "data": {"path": str(data), "limit": args.limit},
                 "tracking": {"mask_every": 1, "log_model": True}},
        "design": "one-at-a-time",
        "seeds": list(range(args.seeds)),
        "budget": {"epochs": args.epochs, "early_stopping": 0},
        "factors": {"skip": {name: {"skip": {"type": kind}} for name, kind in ARMS.items() if name != "concat"}},
    }))
    return path


def tracked(file: Path, folder: Path) -> tuple[float, float]:
    """(seconds of the campaign, seconds of creating its two stores just before it)."""
    from mlflow import MlflowClient

    from ablate import tracking
    from ablate.ablation.design import load_ablation
    from ablate.ablation.orchestrate import run_ablation
    from ablate.storage import open_storage

    ab = load_ablation(file)
    storage = f"sqlite:///{folder / 'optuna.db'}"
    t0 = time.perf_counter()
    tracking.setup(f"sqlite:///{folder / 'mlflow.db'}")
    MlflowClient().search_experiments(max_results=1)  # creates the store: its tables and migrations
    open_storage(storage)
    t1 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        run_ablation(ab, storage_url=storage, report_dir=str(folder / "report"))
    return time.perf_counter() - t1, t1 - t0


def bare(file: Path, runs: int | None = None) -> float:
    """The same arms and seeds (the first ``runs`` of them), trained by ``model.fit`` alone (the split
    and pipelines as tracked)."""
    from ablate.ablation.design import load_ablation
    from ablate.train import load_data

    ab = load_ablation(file)
    specs = [arm.spec.model_copy(update={"seed": seed}) for arm in ab.arms for seed in ab.seeds][:runs]
    t0 = time.perf_counter()
    for spec in specs:
        bare_fit(spec, load_data(spec))
    return time.perf_counter() - t0


def main() -> None:
    args = parse_args()
    data = args.data or REAL_DATA
    if not data.exists():
        sys.exit(f"campaign.py: the data file {data} is missing; pass --data FILE.npz")
    runs = len(ARMS) * args.seeds
    times: dict[str, list[float]] = {"tracked": [], "bare": []}
    stores: list[float] = []  # seconds to create the tracked side's two stores
    fits: dict[str, list[float]] = {"tracked": [], "bare": []}  # the seconds of their keras.Model.fit calls
    timed_fits()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["ABLATE_CACHE"] = str(Path(tmp) / "cache")  # FLOPs counted afresh in this benchmark
        file = ablation_file(Path(tmp), data, args)
        bare(file, runs=1)  # warm-up: imports, TensorFlow's first traces, the data file's page cache
        for r in range(args.repeats):
            order = ["tracked", "bare"] if r % 2 == 0 else ["bare", "tracked"]
            for name in order:
                folder = Path(tmp) / f"{name}{r}"
                folder.mkdir()
                first = len(FIT_S)
                if name == "tracked":
                    seconds, created = tracked(file, folder)
                    times[name].append(seconds)
                    stores.append(created)
                else:
                    times[name].append(bare(file))
                fits[name].append(sum(FIT_S[first:]))
            t, b = times["tracked"][-1], times["bare"][-1]
            print(f"repeat {r + 1}/{args.repeats}: tracked {t:.1f} s (+ {stores[-1]:.1f} s creating its stores), "
                  f"bare {b:.1f} s, ratio {t / b:.3f}", flush=True)
    ratios = [t / b for t, b in zip(times["tracked"], times["bare"], strict=True)]
    fresh = [(t + c) / b for t, c, b in zip(times["tracked"], stores, times["bare"], strict=True)]
    fixed = [(t - b) / runs for t, b in zip(times["tracked"], times["bare"], strict=True)]
    pairs = list(zip(times["tracked"], fits["tracked"], times["bare"], fits["bare"], strict=True))
    beyond = [(t - tf + bf) / b for t, tf, b, bf in pairs]  # tracked, with its fits at the bare side's time
    inside = [(b - bf + tf) / b for t, tf, b, bf in pairs]  # bare, with its fits at the tracked side's time

    result = {
        "ratio_median": statistics.median(ratios), "ratios": ratios, "target": TARGET,
        "meets_target": statistics.median(ratios) <= TARGET,
        "ratio_fresh_stores_median": statistics.median(fresh), "ratios_fresh_stores": fresh,
        "store_creation_s": stores,
        "fixed_cost_per_run_s_median": statistics.median(fixed),
        "beyond_fit_ratio_median": statistics.median(beyond), "beyond_fit_ratios": beyond,
        "inside_fit_ratio_median": statistics.median(inside), "inside_fit_ratios": inside,
        "tracked_wall_s": times["tracked"], "bare_wall_s": times["bare"],
        "tracked_fit_s": fits["tracked"], "bare_fit_s": fits["bare"],
        "setup": {"data": data.name, "train_pairs_loaded": args.limit, "arms": list(ARMS), "seeds": args.seeds,
                  "epochs": args.epochs, "runs_per_campaign": runs, "repeats": args.repeats,
                  "tracking": "masks every epoch, final grid, confusion, per-image IoUs, FLOPs, model, report"},
        "machine": machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"machine: {result['machine']['device']}, {result['machine']['cpus']} CPUs; {runs} runs per campaign, "
          f"{args.epochs} epochs, {args.limit} pairs")
    print(f"tracked / bare: {result['ratio_median']:.3f} (target <= {TARGET}) "
          f"{'met' if result['meets_target'] else 'NOT met'}; {result['ratio_fresh_stores_median']:.3f} with the "
          f"stores' creation (once per store, {statistics.median(stores):.1f} s); fixed cost "
          f"{result['fixed_cost_per_run_s_median']:.2f} s per run; beyond fit "
          f"{result['beyond_fit_ratio_median']:.3f}, inside fit {result['inside_fit_ratio_median']:.3f}; "
          f"wrote {args.out}")


if __name__ == "__main__":
    main()
