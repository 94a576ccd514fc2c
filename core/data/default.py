"""The embedded default dataset: synthetic Mars terrain, generated once on first use."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_N = 1200  # enough pairs for a meaningful demo ablation on a laptop CPU
DEFAULT_TEST = 200
DEFAULT_SEED = 0


def default_data_path() -> Path:
    """``$ABLATE_DATA`` or ``data/synthetic_mars.npz``; generated if it does not exist yet."""
    path = Path(os.environ.get("ABLATE_DATA", "data/synthetic_mars.npz"))
    if not path.exists():
        from core.data.synth import generate, write_npz

        print(f"Generating the default synthetic data set at {path} ({DEFAULT_N} pairs)...")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_npz(path, generate(DEFAULT_N, DEFAULT_SEED, n_test=DEFAULT_TEST))
    return path
