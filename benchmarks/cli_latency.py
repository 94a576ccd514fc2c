"""CLI latency: commands that neither train nor predict, against importing TensorFlow.

Each repeat runs, side by side and in a rotating order (so drift in machine load hits every
command alike):

- ``python -c "import tensorflow"``: the reference, what every command paid before it was lazy;
- ``ablate --help`` and ``ablate spec PRESET``: targets <= 0.25x the reference;
- ``ablate ui`` against a bare ``mlflow server`` on the same store: seconds from launch until
  the page answers (target: within 1.2x).

Medians over repeats are printed and written to ``benchmarks/results/cli_latency.json``.

Run it with ``make bench`` or::

    .venv/bin/python benchmarks/cli_latency.py --repeats 5
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "ablations/presets/unet-baseline.yaml"
ABLATE = [sys.executable, "-m", "ablate.cli"]
TARGET_LIGHT = 0.25  # --help and spec: at most a quarter of TensorFlow's import
TARGET_UI = 1.2  # ablate ui answers within 1.2x the time of a bare mlflow server


def timed(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, capture_output=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return time.perf_counter() - t0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def time_to_answer(cmd: list[str], port: int, cwd: Path, timeout: float = 300) -> float:
    """Seconds from launching a server until http://127.0.0.1:PORT/health answers."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        while not answers(f"http://127.0.0.1:{port}/health"):
            if proc.poll() is not None or time.perf_counter() - t0 > timeout:
                raise RuntimeError(f"{cmd[:4]} did not answer (exit {proc.returncode})")
            time.sleep(0.05)
        return time.perf_counter() - t0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def commands(store: Path) -> dict[str, Callable[[], float]]:
    uri = f"sqlite:///{store / 'mlruns/mlflow.db'}"
    artifacts = (store / "mlruns/artifacts").as_uri()

    def ui() -> float:
        port = free_port()
        return time_to_answer([*ABLATE, "ui", "--port", str(port)], port, store)

    def bare_server() -> float:
        port = free_port()
        return time_to_answer([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
                               "--default-artifact-root", artifacts, "--host", "127.0.0.1", "--port", str(port)],
                              port, store)

    return {
        "import_tensorflow": lambda: timed([sys.executable, "-c", "import tensorflow"], store),
        "ablate_help": lambda: timed([*ABLATE, "--help"], store),
        "ablate_spec": lambda: timed([*ABLATE, "spec", str(PRESET)], store),
        "mlflow_server": bare_server,
        "ablate_ui": ui,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/cli_latency.json")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp)
        (store / "mlruns").mkdir()
        cmds = commands(store)
        cmds["mlflow_server"]()  # creates the store's tables once, outside the timing
        times: dict[str, list[float]] = {name: [] for name in cmds}
        names = list(cmds)
        for r in range(args.repeats):
            order = names[r % len(names):] + names[: r % len(names)]
            for name in order:
                times[name].append(cmds[name]())
            print(f"repeat {r + 1}/{args.repeats}: " + "  ".join(f"{n} {times[n][-1]:.2f}s" for n in names), flush=True)
    med = {name: statistics.median(v) for name, v in times.items()}
    ratios = {
        "help_vs_import_tensorflow": med["ablate_help"] / med["import_tensorflow"],
        "spec_vs_import_tensorflow": med["ablate_spec"] / med["import_tensorflow"],
        "ui_vs_mlflow_server": med["ablate_ui"] / med["mlflow_server"],
    }
    result = {
        "medians_s": med, "times_s": times, "ratios": ratios,
        "targets": {"help_vs_import_tensorflow": TARGET_LIGHT, "spec_vs_import_tensorflow": TARGET_LIGHT,
                    "ui_vs_mlflow_server": TARGET_UI},
        "met": {k: v <= {"ui_vs_mlflow_server": TARGET_UI}.get(k, TARGET_LIGHT) for k, v in ratios.items()},
        "setup": {"repeats": args.repeats, "preset": str(PRESET.relative_to(ROOT))},
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": len(os.sched_getaffinity(0)), "python": platform.python_version()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"machine: {result['machine']['processor']}, {result['machine']['cpus']} CPUs (no GPU needed)")
    for key, value in ratios.items():
        print(f"{key}: {value:.3f} (target <= {result['targets'][key]}) {'met' if result['met'][key] else 'NOT met'}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
