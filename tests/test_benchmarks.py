"""The GPU and quality benchmarks' contracts that hold on any machine (their figures need a GPU or hours)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest
from helpers import ROOT


def _benchmark(name: str) -> ModuleType:
    """benchmarks/NAME.py as a module (they are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None or Path("/proc/driver/nvidia/gpus").is_dir(),
                    reason="this machine may have a GPU; the benchmark would measure it")
def test_gpu_benchmark_without_a_gpu_says_so_in_one_line_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu.py"), "--out", str(out)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.strip().splitlines()) == 1 and proc.stdout.startswith("no GPU"), proc.stdout
    assert not out.exists()
    assert seconds < 10, f"{seconds:.1f} s: the GPU check should not import TensorFlow"


def test_quality_benchmark_pairs_recipe_and_plain_unet_by_seed() -> None:
    quality = _benchmark("quality")
    runs = [{"model": "unet-baseline", "seed": 0, "best_val_miou": 0.50},
            {"model": "mars-recipe", "seed": 0, "best_val_miou": 0.55},
            {"model": "mars-recipe", "seed": 1, "best_val_miou": 0.40}]  # seed 1 has no plain U-Net yet
    c = quality.comparison(runs)
    assert c["seeds"] == [0] and c["recipe_minus_plain"] == pytest.approx([0.05])
    assert c["recipe_beat_plain"] is True and "one seed" in c["note"]
    assert quality.comparison(runs[1:]) is None
