"""GPU speed: training images/s for fp32, mixed precision and XLA, and trials per hour per GPU.

Needs an NVIDIA GPU. It is looked for without importing TensorFlow (``nvidia-smi -L``, else
``/proc/driver/nvidia/gpus``), then confirmed with ``tf.config.list_physical_devices("GPU")``.
Without one the script says so in one line and exits 0, writing nothing (a result measured on
a GPU stays as it is). Two parts, each result written as soon as it is measured, so a run
stopped by a time limit keeps its figures:

- trials per hour: 1, then 2 processes sharing the GPU (``TF_FORCE_GPU_ALLOW_GROWTH=true`` so
  both fit), each running ``--trials`` short untracked trials of the plain U-Net one after
  another (``--tracked``: into a temporary SQLite store per process). Per hour over the wall
  time from spawn to the last exit, and over the trials themselves (first trial start to last
  trial end, which leaves out each process's TensorFlow start-up).
- throughput: per batch size and model (the plain U-Net and the Mars recipe presets), one
  untracked ``ablate.train.fit`` of ``--epochs`` epochs per switch: fp32,
  ``train.mixed_precision=true``, ``train.jit_compile=true`` (XLA) and both, in a rotating order.
  Images/s is training pairs over the median training time of the epochs after the first
  (validation excluded, the device synchronised). The first epoch traces the graphs, compiles
  XLA and fills the dataset cache: what it takes beyond a steady epoch is ``compile_s``. Batch
  sizes go in the given order; a group (model, batch size) not started within ``--max-minutes``
  of launch is listed as skipped, so the ratios are always of complete groups.

A switch or trial process that fails (out of memory, say) is recorded with its error and the
rest still run. A GPU the driver lists but TensorFlow cannot see is an error (exit 1).

The default budget is meant to fit in about 8 minutes on an H200. Run it with ``make bench-gpu`` or::

    .venv/bin/python benchmarks/gpu.py --epochs 3 --batch-sizes 32 128 --trials 2 --trial-epochs 3

``--allow-cpu`` measures on the CPU anyway, for smoke tests of this script (tiny budgets only)::

    .venv/bin/python benchmarks/gpu.py --allow-cpu --epochs 2 --limit 64 --batch-sizes 16 \\
        --trials 1 --trial-epochs 1 --set model.filters=4 model.depth=2 --out /tmp/gpu.json

Writes ``benchmarks/results/gpu.json`` and prints the setup, the machine and the ratios.
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
import tempfile
import time
from pathlib import Path
from typing import Any

from common import data_file

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")  # the trial processes share the GPU with this one

ROOT = Path(__file__).resolve().parents[1]
PRESETS = {name: ROOT / f"ablations/presets/{name}.yaml" for name in ("unet-baseline", "mars-recipe")}
TRIAL_PRESET = "unet-baseline"  # a study trial is a variant of the plain U-Net
SWITCHES = {  # name -> spec overrides
    "fp32": [],
    "mixed": ["train.mixed_precision=true"],
    "xla": ["train.jit_compile=true"],
    "mixed+xla": ["train.mixed_precision=true", "train.jit_compile=true"],
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", choices=list(PRESETS), default=list(PRESETS))
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[32, 128])
    p.add_argument("--epochs", type=int, default=3, help="epochs per switch, the first dropped (default: %(default)s)")
    p.add_argument("--trials", type=int, default=2, help="trials per process (default: %(default)s)")
    p.add_argument("--trial-epochs", type=int, default=3)
    p.add_argument("--tracked", action="store_true", help="track the trials (a temporary SQLite store per process)")
    p.add_argument("--limit", type=int, default=None, help="training pairs loaded (default: all)")
    p.add_argument("--data", type=Path, default=None, help="course-format .npz (default: the real set if present)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra spec overrides for every run")
    # ~2 min for the last group started leaves the whole run within ~8 min on an H200
    p.add_argument("--max-minutes", type=float, default=6.0, help="start no throughput group after this (default: "
                   "%(default)s min from launch)")
    p.add_argument("--allow-cpu", action="store_true", help="measure without a GPU (smoke tests of this script)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/gpu.json")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)  # a trial process (internal)
    args = p.parse_args()
    if args.epochs < 2:
        p.error(f"--epochs must be at least 2 (the first epoch is dropped); got {args.epochs}")
    return args


# --- finding the GPU --------------------------------------------------------------------------

def nvidia_gpus() -> list[str]:
    """GPU models from ``nvidia-smi -L``, else the driver's /proc entries; no TensorFlow import."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        names = [line.split(":", 1)[1].split("(UUID")[0].strip() for line in out.splitlines() if line.startswith("GPU")]
        if names:
            return names
    proc = Path("/proc/driver/nvidia/gpus")
    if not proc.is_dir():
        return []
    infos = [(d / "information").read_text(errors="replace") for d in sorted(proc.iterdir())]
    return [next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("Model:")), "NVIDIA GPU")
            for info in infos]


def machine(names: list[str]) -> dict[str, Any]:
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    build = tf.sysconfig.get_build_info()
    return {"gpus": names, "tf_gpus": [tf.config.experimental.get_device_details(g) for g in gpus],
            "cuda": build.get("cuda_version"), "cudnn": build.get("cudnn_version"),
            "tf": tf.__version__, "keras": keras.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "cpus": len(os.sched_getaffinity(0))}


# --- throughput -------------------------------------------------------------------------------

def train_clock() -> Any:
    """A callback timing each epoch's training steps: epoch start to the start of validation."""
    import keras

    class TrainClock(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self._t0 = time.perf_counter()

        def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
            keras.ops.convert_to_numpy(self.model.optimizer.iterations)  # waits for the last step on the device
            self.seconds.append(time.perf_counter() - self._t0)

    return TrainClock()


def peak_memory_gib(reset: bool = False) -> float | None:
    """This process's peak GPU memory since the last reset (None without a GPU or the statistic)."""
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        return None
    try:
        if reset:
            tf.config.experimental.reset_memory_stats("GPU:0")
            return None
        return float(tf.config.experimental.get_memory_info("GPU:0")["peak"]) / 2**30
    except (ValueError, RuntimeError):  # an allocator without statistics: the figure is optional
        return None


def measure(spec: Any, split: Any) -> dict[str, Any]:
    """One untracked fit; its steady-state images/s and what the first epoch took beyond that."""
    import keras

    from ablate.train import fit

    keras.backend.clear_session()
    peak_memory_gib(reset=True)
    clock = train_clock()
    t0 = time.perf_counter()
    result = fit(spec, split, callbacks=[clock], verbose=0)
    steady = statistics.median(clock.seconds[1:])
    return {"train_pairs": len(split.x_train), "epoch_train_s": clock.seconds,
            "images_per_s": len(split.x_train) / steady, "compile_s": clock.seconds[0] - steady,
            "fit_wall_s": time.perf_counter() - t0, "epoch_time_s": result.history["epoch_time"],
            "final_loss": result.history["loss"][-1], "peak_memory_gib": peak_memory_gib()}


def throughput_group(model: str, batch: int, order: list[str], base: list[str]) -> dict[str, dict[str, Any]]:
    from ablate.spec import load_spec
    from ablate.train import load_data

    specs = {s: load_spec(PRESETS[model], [*base, f"train.batch_size={batch}", *SWITCHES[s]]) for s in order}
    split = load_data(specs[order[0]])  # the switches do not change the data
    rows = {}
    for switch in order:
        try:
            rows[switch] = r = measure(specs[switch], split)
        except Exception as e:  # noqa: BLE001  one failing switch (e.g. out of memory) must not lose the others
            rows[switch] = {"error": f"{type(e).__name__}: {e}"[:500]}
            print(f"  {model:<13} batch {batch:>4} {switch:<9}: FAILED {rows[switch]['error'][:200]}", flush=True)
            continue
        print(f"  {model:<13} batch {batch:>4} {switch:<9}: {r['images_per_s']:8.0f} img/s, "
              f"compile {r['compile_s']:6.1f} s, fit {r['fit_wall_s']:6.1f} s", flush=True)
    return {s: rows[s] for s in SWITCHES if s in rows}


def ratios(group: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Images/s of each switch over fp32's (switches that failed are left out)."""
    if "images_per_s" not in group.get("fp32", {}):
        return {}
    fp32 = group["fp32"]["images_per_s"]
    done = [s for s in SWITCHES if s != "fp32" and "images_per_s" in group.get(s, {})]
    return {f"{s}/fp32": group[s]["images_per_s"] / fp32 for s in done}


# --- trials per hour --------------------------------------------------------------------------

def child(args: argparse.Namespace) -> int:
    """A trial process: ``--trials`` trials one after another; prints one JSON line of their times."""
    from ablate import load_all
    from ablate.spec import load_spec
    from ablate.train import fit, load_data

    load_all()
    base = [f"data.path={args.data}", f"train.epochs={args.trial_epochs}", "train.early_stopping=0", *args.set]
    if args.limit:
        base.append(f"data.limit={args.limit}")
    if args.tracked:
        from ablate import tracking
        from ablate.runner import run_spec

        tracking.setup(f"sqlite:///{tempfile.mkdtemp(prefix='ablate-gpu-')}/mlflow.db")
    trials = []
    for i in range(args.trials):
        spec = load_spec(PRESETS[TRIAL_PRESET], [*base, f"seed={100 * args.child + i}"])
        start = time.time()
        split = load_data(spec)
        if args.tracked:
            run_spec(spec, experiment="gpu-bench", split=split, verbose=0)
        else:
            fit(spec, split, verbose=0)
        trials.append({"start": start, "end": time.time()})
    print(json.dumps(trials))
    return 0


def concurrent_trials(args: argparse.Namespace, processes: int) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--data", str(args.data), "--trials", str(args.trials),
           "--trial-epochs", str(args.trial_epochs), *(["--limit", str(args.limit)] if args.limit else []),
           *(["--tracked"] if args.tracked else []), *(["--set", *args.set] if args.set else [])]
    first_gpu = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]  # all processes share one GPU
    env = {**os.environ, "TF_FORCE_GPU_ALLOW_GROWTH": "true", "CUDA_VISIBLE_DEVICES": first_gpu,
           "PYTHONPATH": str(ROOT)}
    t0 = time.time()
    procs = [subprocess.Popen([*cmd, "--child", str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env, cwd=ROOT) for i in range(processes)]
    outs = [p.communicate() for p in procs]
    wall = time.time() - t0
    for p, (_, err) in zip(procs, outs, strict=True):
        if p.returncode:
            raise RuntimeError(f"a trial process exited {p.returncode}:\n{err[-2000:]}")
    trials = [t for out, _ in outs for t in json.loads(out.strip().splitlines()[-1])]
    span = max(t["end"] for t in trials) - min(t["start"] for t in trials)
    return {"processes": processes, "trials": len(trials), "wall_s": wall, "trials_span_s": span,
            "trial_s": [t["end"] - t["start"] for t in trials], "per_hour_wall": len(trials) * 3600 / wall,
            "per_hour_trials": len(trials) * 3600 / span}


# --- the run ----------------------------------------------------------------------------------

def gpu_or_reason(args: argparse.Namespace) -> tuple[list[str], str | None]:
    """The GPUs found, and why nothing will be measured (None: measure)."""
    names = nvidia_gpus()
    if not names and not args.allow_cpu:
        return [], ("no GPU: nvidia-smi -L lists none and /proc/driver/nvidia/gpus is absent; "
                    f"nothing measured, {args.out.name} left as it is")
    import tensorflow as tf

    if names and not tf.config.list_physical_devices("GPU") and not args.allow_cpu:
        return names, f"the driver lists {', '.join(names)} but TensorFlow sees no GPU (CUDA libraries?)"
    return names, None


def writable(out: Path, on_gpu: bool) -> bool:
    """False where a CPU run (``--allow-cpu``) would overwrite a result measured on a GPU."""
    previous = json.loads(out.read_text()) if out.exists() else {}
    if not on_gpu and previous.get("machine", {}).get("tf_gpus"):
        print(f"note: {out} holds a GPU result; this CPU run is not written there", flush=True)
        return False
    return True


def writer(out: Path | None, result: dict[str, Any]) -> Any:
    """Writes the result (again) after each measurement; nothing where ``out`` is None."""

    def write() -> None:
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=2) + "\n")

    return write


def trials_part(args: argparse.Namespace, result: dict[str, Any], write: Any) -> None:
    tph = result["trials_per_hour"]
    for n in ("1", "2"):
        try:
            tph[n] = concurrent_trials(args, int(n))
        except RuntimeError as e:  # a trial process failed: recorded, and the throughput is still measured
            tph[n] = {"error": str(e)[-2000:]}
            print(f"  {n} trial process(es): FAILED {str(e)[-300:]}", flush=True)
            continue
        print(f"  {n} trial process(es): {tph[n]['per_hour_trials']:7.0f} trials/h over the trials, "
              f"{tph[n]['per_hour_wall']:7.0f} over the wall time ({tph[n]['wall_s']:.0f} s)", flush=True)
        write()
    if all("per_hour_trials" in tph[n] for n in ("1", "2")):
        tph["ratio_2_vs_1"] = tph["2"]["per_hour_trials"] / tph["1"]["per_hour_trials"]


def throughput_part(args: argparse.Namespace, result: dict[str, Any], write: Any, deadline: float) -> None:
    base = [f"data.path={args.data}", f"train.epochs={args.epochs}", "train.early_stopping=0", *args.set]
    base += [f"data.limit={args.limit}"] if args.limit else []
    groups = [(m, b) for b in args.batch_sizes for m in args.models]
    for g, (model, batch) in enumerate(groups):
        key = f"{model}/batch{batch}"
        if time.monotonic() > deadline:
            result["skipped"].append(key)
            continue
        order = list(SWITCHES)[g % len(SWITCHES):] + list(SWITCHES)[: g % len(SWITCHES)]
        result["throughput"][key] = throughput_group(model, batch, order, base)
        result["ratios"][key] = ratios(result["throughput"][key])
        write()


def run(args: argparse.Namespace, names: list[str], deadline: float) -> tuple[dict[str, Any], Path | None]:
    """Both parts; the result and where it was written (None: not written)."""
    from ablate import load_all

    load_all()
    result: dict[str, Any] = {
        "complete": False, "setup": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                                     if k not in ("child", "out")},
        "machine": machine(names), "trials_per_hour": {}, "throughput": {}, "ratios": {}, "skipped": []}
    out = args.out if writable(args.out, bool(result["machine"]["tf_gpus"])) else None
    write = writer(out, result)
    print(f"machine: {', '.join(names) or 'no GPU'}; TF {result['machine']['tf']}, "
          f"CUDA {result['machine']['cuda']}, {result['machine']['cpus']} CPUs", flush=True)
    print(f"setup: data {args.data.name} (limit {args.limit}); models {' '.join(args.models)}; batch sizes "
          f"{args.batch_sizes}; {args.epochs} epochs per switch; trials: {TRIAL_PRESET}, {args.trial_epochs} epochs, "
          f"{args.trials} per process{', tracked' if args.tracked else ''}; extra overrides {args.set}", flush=True)
    trials_part(args, result, write)
    throughput_part(args, result, write, deadline)
    result["complete"] = not result["skipped"]
    write()
    return result, out


def summary(result: dict[str, Any], out: Path | None) -> None:
    if "ratio_2_vs_1" in result["trials_per_hour"]:
        print(f"trials/h with 2 processes sharing the GPU vs 1 (over the trials): "
              f"{result['trials_per_hour']['ratio_2_vs_1']:.2f}x")
    for key, r in result["ratios"].items():
        if not r:
            print(f"{key}: fp32 failed, no ratios")
            continue
        fp32 = result["throughput"][key]["fp32"]["images_per_s"]
        print(f"{key}: fp32 {fp32:.0f} img/s; " + ", ".join(f"{k} {v:.2f}x" for k, v in r.items()))
    if result["skipped"]:
        print(f"skipped (past --max-minutes): {', '.join(result['skipped'])}")
    print(f"wrote {out}" if out else "nothing written")


def main() -> int:
    args = parse_args()
    deadline = time.monotonic() + 60 * args.max_minutes  # from launch: the whole run fits the budget
    if args.child is not None:
        return child(args)
    names, reason = gpu_or_reason(args)
    if reason:
        print(reason)
        return 0 if not names else 1
    with tempfile.TemporaryDirectory(prefix="ablate-gpu-") as tmp:
        args.data = data_file(args.data, Path(tmp), args.limit or 1200)
        result, out = run(args, names, deadline)
    summary(result, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
