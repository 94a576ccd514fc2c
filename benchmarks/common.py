"""What the benchmarks share: the data they run on, the machine they report, a bare Keras fit.

Each benchmark is a script run from the project root (``python benchmarks/NAME.py``); Python puts
this folder on ``sys.path``, so ``from common import ...`` works without a package.
"""

from __future__ import annotations

import math
import os
import platform
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = ROOT.parent / "shared/data/mars_ai4mars_64x128.npz"  # benchmark data only, never committed


def data_file(given: Path | None, tmp: Path, n: int = 1200) -> Path:
    """The given file, else the real set, else a synthetic set of ``n`` pairs written under ``tmp``."""
    if given is not None:
        return given
    if REAL_DATA.exists():
        return REAL_DATA
    from ablate.data.synth import generate, write_npz

    path = tmp / "synthetic.npz"
    write_npz(path, generate(n, seed=0))
    return path


def machine() -> dict[str, Any]:
    """The machine a figure was measured on: its device (CPU model or GPU), cores and versions."""
    from ablate import tracking

    return {"device": tracking.device_name(), "processor": platform.processor() or platform.machine(),
            "cpus": len(os.sched_getaffinity(0)), "platform": platform.platform(),
            "python": platform.python_version()}


def bare_fit(spec: Any, split: Any, record: bool = False) -> None:
    """Builds and compiles the spec's model and runs ``model.fit`` on the split's ``tf.data`` pipelines
    (validation every epoch): what a user's own Keras loop does, with no callbacks and no tracking."""
    from ablate.augment import Policy
    from ablate.pipeline import eval_dataset, train_dataset
    from ablate.train import compile_model, set_seed

    set_seed(spec.seed)
    bs = spec.train.batch_size
    model, _ = compile_model(spec, split, max(1, math.ceil(len(split.x_train) / bs)), record=record)
    train = train_dataset(split.x_train, split.y_train, bs, spec.seed, Policy(spec.augment), spec.train.shuffle_buffer)
    model.fit(train, validation_data=eval_dataset(split.x_val, split.y_val, bs), epochs=spec.train.epochs,
              verbose=0, shuffle=False)


FIT_S: list[float] = []  # every keras.Model.fit call's seconds, in call order (see timed_fits)


def timed_fits() -> None:
    """Records the wall time of every ``keras.Model.fit`` call of this process in ``FIT_S``."""
    import keras

    fit = keras.Model.fit

    def timed(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        try:
            return fit(self, *args, **kwargs)
        finally:
            FIT_S.append(time.perf_counter() - t0)

    keras.Model.fit = timed
