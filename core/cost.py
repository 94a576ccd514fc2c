"""Cost figures for the ablation table: FLOPs per image (from TensorFlow's profiler).

Counting traces and profiles the model: up to a second or two, the same for every run of one
architecture. So a count is cached by the caller's ``key`` (the spec's model section) in this
process, and on disk (``$ABLATE_CACHE``, default ``~/.cache/ablate/flops.json``) for the next
process: an ablation's seeds, and the arms of every later campaign, count once.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from pathlib import Path

import keras
import tensorflow as tf

_COUNTED: dict[str, float] = {}


def cache_file() -> Path:
    return Path(os.environ.get("ABLATE_CACHE") or Path.home() / ".cache/ablate") / "flops.json"


def flops_per_image(model: keras.Model, key: str | None = None) -> float:
    """Floating-point operations of one forward pass on one image (multiply-add = 2).

    Counted by TensorFlow's graph profiler on the traced inference graph; NaN if the
    profiler cannot count this model. With ``key`` (what fixes the architecture), a count is
    cached in this process and on disk.
    """
    if key is None:
        return _count(model)
    digest = hashlib.sha256(f"{key}|{model.input_shape}|{tf.__version__}".encode()).hexdigest()[:16]
    if digest not in _COUNTED:
        _COUNTED.update(_read_cache())
    if digest not in _COUNTED:
        _COUNTED[digest] = _count(model)
        _write_cache(digest, _COUNTED[digest])
    return _COUNTED[digest]


def _read_cache() -> dict[str, float]:
    try:
        data = json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return {k: float(v) for k, v in data.items() if isinstance(v, (int, float))} if isinstance(data, dict) else {}


def _write_cache(digest: str, flops: float) -> None:
    """Adds one count (atomically: a concurrent worker's write is lost at worst, never torn)."""
    if flops != flops:  # NaN: the profiler failed; try again next time
        return
    path = cache_file()
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {**_read_cache(), digest: flops}
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)


def _count(model: keras.Model) -> float:
    """Profiles the traced inference graph as it is: the weights' shapes are all the counter
    needs, so the graph is not frozen first (freezing copied every weight into a constant and took
    over half the time; the counts of every preset were the same to the FLOP)."""
    shape = (1, *model.input_shape[1:])
    fn = tf.function(lambda x: model(x, training=False))
    try:
        graph = fn.get_concrete_function(tf.TensorSpec(shape, tf.float32)).graph
        opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
        opts["output"] = "none"
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            info = tf.compat.v1.profiler.profile(graph=graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op",
                                                 options=opts)
        return float(info.total_float_ops)
    except Exception:  # noqa: BLE001 - cost figures are best effort, never fail a run
        return float("nan")
