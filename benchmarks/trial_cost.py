"""Per-trial fixed cost in a worker: a study's tracked trial against a bare Keras fit of the same model.

One process plays one worker. Each repeat runs, in alternating order (so drift in machine load hits
both sides):

- tracked: a study of ``--trials`` one-epoch trials (random sampler over the skip type and the
  learning rate, no pruning) run in this process by ``run_study(workers=1)``, exactly as a worker
  runs them: Optuna's storage (SQLite), sampling, the build checks, the MLflow run with per-epoch
  metrics, the mask grid, confusion matrix and per-image record, the saved model and the trial's
  bookkeeping. A trial's time is its slot in the worker's loop: from the previous trial's
  completion to its own (the first: from its start), so the worker's work between trials (the
  queue's tidy-up, the budget check, sampling) counts too.
- bare: each completed trial's spec, rebuilt from its parameters, trained by ``bare_fit`` (build,
  compile and ``model.fit`` with validation, no callbacks, no tracking) on the same split.

Two figures, each a median over trials (target: <= 1 s):

- paired: trial time - bare time of the same spec. Everything tracking adds, inside ``fit`` too
  (the per-epoch callbacks, the per-image record), but noisy: two fits of one spec differ by
  seconds on a loaded CPU (tracing dominates a one-epoch fit);
- beyond fit: (trial time - its ``keras.Model.fit`` time) - (bare time - its ``fit`` time), what
  a trial costs outside ``model.fit`` (the issue's "beyond fit"), far less noisy.

The study's report and the worker's start-up (imports, opening the stores) are left out: they are
paid once per study or worker, not per trial. Printed, and written to ``benchmarks/results/trial_cost.json``.

Run it with ``make bench`` or::

    .venv/bin/python benchmarks/trial_cost.py --trials 10 --limit 320
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

from common import FIT_S, ROOT, bare_fit, data_file, machine, timed_fits

TARGET_S = 1.0  # the target: a trial costs at most 1 s beyond its training


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--limit", type=int, default=320, help="training pairs loaded (default: %(default)s)")
    p.add_argument("--data", type=Path, default=None, help="course-format .npz (default: the real set if present)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/trial_cost.json")
    return p.parse_args()


def study_plan(folder: Path, data: Path, args: argparse.Namespace, name: str):  # type: ignore[no-untyped-def]
    from ablate.study.files import load_study_file

    body = {"name": name, "base": str(ROOT / "ablations/presets/unet-baseline.yaml"), "trials": args.trials,
            "budget": {"epochs": 1, "early_stopping": 0, "data_limit": args.limit},
            "sampler": {"type": "random", "seed": 0}, "pruner": {"type": "none"},
            "space": {"model.skip.type": {"type": "categorical", "choices": ["concat", "add", "multiply"]},
                      "optimizer.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}}
    path = folder / f"{name}.yaml"
    path.write_text(json.dumps(body))
    return load_study_file(path, [f"data.path={data}", "model.depth=2", "model.filters=8"])


def tracked(folder: Path, data: Path, args: argparse.Namespace, name: str):  # type: ignore[no-untyped-def]
    """Runs the study in this process; returns {trial number: seconds} of its completed trials, the
    study and its plan."""
    from ablate import tracking
    from ablate.study.orchestrate import run_study

    tracking.setup(f"sqlite:///{folder / 'mlflow.db'}")
    plan = study_plan(folder, data, args, name)
    first = len(FIT_S)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        study = run_study(plan, f"sqlite:///{folder / 'optuna.db'}", workers=1, report=False)
    trials = study.get_trials(deepcopy=False)
    if len(FIT_S) - first != len(trials) or any(t.state.name != "COMPLETE" for t in trials):
        sys.exit("trial_cost.py: every trial must complete with one fit (no pruning, no failure); see the study")
    ordered = sorted(trials, key=lambda t: t.number)
    fits = dict(zip((str(t.number) for t in ordered), FIT_S[first:], strict=True))
    seconds, previous = {}, ordered[0].datetime_start
    for t in ordered:  # the worker's loop between trials counts towards the next trial
        seconds[str(t.number)] = (t.datetime_complete - previous).total_seconds()
        previous = t.datetime_complete
    return seconds, fits, study, plan


def bare(study, plan) -> tuple[dict[str, float], dict[str, float]]:  # type: ignore[no-untyped-def]
    """Each completed trial's spec trained by a bare fit on the split a worker would load; returns
    the seconds of each and of its ``model.fit``, by trial number."""
    from ablate.train import load_data

    times, fits, splits = {}, {}, {}
    for t in study.get_trials(deepcopy=False):
        if t.state.name != "COMPLETE":
            continue
        spec = plan.spec_of(t.params)
        key = json.dumps([spec.data.model_dump(), spec.seed], sort_keys=True)
        split = splits.setdefault(key, load_data(spec))  # a worker loads the split once, too
        t0 = time.perf_counter()
        bare_fit(spec, split)
        times[str(t.number)] = time.perf_counter() - t0
        fits[str(t.number)] = FIT_S[-1]
    return times, fits


def summary(values: list[float]) -> dict[str, float]:
    q = statistics.quantiles(values, n=4)
    return {"median": statistics.median(values), "q1": q[0], "q3": q[2]}


def main() -> None:
    args = parse_args()
    timed_fits()
    paired: list[float] = []
    beyond: list[float] = []
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["ABLATE_CACHE"] = str(Path(tmp) / "cache")  # FLOPs counted afresh in this benchmark
        data = data_file(args.data, Path(tmp))
        if not data.exists():
            sys.exit(f"trial_cost.py: the data file {data} is missing; pass --data FILE.npz")
        for r in range(args.repeats):
            folder = Path(tmp) / f"repeat{r}"
            folder.mkdir()
            if r % 2 == 0:  # tracked first; the bare side then re-trains the same specs
                trial_s, trial_fit, study, plan = tracked(folder, data, args, f"cost{r}")
                bare_s, bare_fit_s = bare(study, plan)
            else:  # bare first: the specs of the previous repeat's study (the same seeded sampler)
                bare_s, bare_fit_s = bare(study, plan)
                trial_s, trial_fit, study, plan = tracked(folder, data, args, f"cost{r}")
            numbers = [n for n in trial_s if n in bare_s]
            paired += [trial_s[n] - bare_s[n] for n in numbers]
            beyond += [(trial_s[n] - trial_fit[n]) - (bare_s[n] - bare_fit_s[n]) for n in numbers]
            rows.append({"trial_s": [trial_s[n] for n in numbers], "trial_fit_s": [trial_fit[n] for n in numbers],
                         "bare_s": [bare_s[n] for n in numbers], "bare_fit_s": [bare_fit_s[n] for n in numbers]})
            print(f"repeat {r + 1}/{args.repeats}: {len(numbers)} trials, median trial "
                  f"{statistics.median(rows[-1]['trial_s']):.2f} s, bare {statistics.median(rows[-1]['bare_s']):.2f} s",
                  flush=True)
    result = {"paired_s": summary(paired), "beyond_fit_s": summary(beyond), "target_s": TARGET_S,
              "meets_target": {"paired": statistics.median(paired) <= TARGET_S,
                               "beyond_fit": statistics.median(beyond) <= TARGET_S},
              "per_trial": {"paired_s": paired, "beyond_fit_s": beyond}, "repeats": rows,
              "setup": {"data": data.name, "train_pairs_loaded": args.limit, "trials": args.trials, "epochs": 1,
                        "model": "unet-baseline, depth 2, 8 filters", "storage": "SQLite (Optuna and MLflow)",
                        "tracking": "the preset's: metrics, mask grids, confusion, per-image IoUs, FLOPs, model"},
              "machine": machine()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"machine: {result['machine']['device']}, {result['machine']['cpus']} CPUs; {args.trials} one-epoch trials "
          f"x {args.repeats} repeats, {args.limit} pairs")
    for key in ("paired", "beyond_fit"):
        s = result[f"{key}_s"]
        print(f"per-trial cost, {key.replace('_', ' ')}: {s['median']:.2f} s median "
              f"(IQR {s['q1']:.2f} to {s['q3']:.2f}; target <= {TARGET_S:.0f} s) "
              f"{'met' if result['meets_target'][key] else 'NOT met'}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
