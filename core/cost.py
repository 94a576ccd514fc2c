"""Cost figures for the ablation table: FLOPs per image (from TensorFlow's profiler)."""

from __future__ import annotations

import contextlib
import io

import keras
import tensorflow as tf


def flops_per_image(model: keras.Model) -> float:
    """Floating-point operations of one forward pass on one image (multiply-add = 2).

    Counted by TensorFlow's graph profiler on the frozen inference graph; NaN if the
    profiler cannot count this model.
    """
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    shape = (1, *model.input_shape[1:])
    fn = tf.function(lambda x: model(x, training=False))
    try:
        concrete = fn.get_concrete_function(tf.TensorSpec(shape, tf.float32))
        frozen = convert_variables_to_constants_v2(concrete)
        opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
        opts["output"] = "none"
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            info = tf.compat.v1.profiler.profile(graph=frozen.graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op",
                                                 options=opts)
        return float(info.total_float_ops)
    except Exception:  # noqa: BLE001 - cost figures are best effort, never fail a run
        return float("nan")
