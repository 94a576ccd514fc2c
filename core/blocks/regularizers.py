"""Regularizers: how the model builder regularizes every block.

A regularizer is not a layer but a policy the builder consults: the kernel regularizer
given to every convolution (``kernel()``), the layer inserted after each encoder/decoder stage
(``after_stage(name)``) and the drop-path rate of residual branches (``drop_path``), which the
builder passes to every block whose constructor takes ``drop_path``.

Example:
    >>> reg = REGULARIZERS.build({"type": "spatial_dropout", "rate": 0.1})
    >>> reg.after_stage("enc0_reg")  # a SpatialDropout2D layer
"""

from __future__ import annotations

from typing import Any

import keras

from ablate.registry import REGULARIZERS


class Regularizer:
    """No regularization (base class: every hook returns nothing)."""

    drop_path: float = 0.0

    def kernel(self) -> Any:
        """The penalty given to every convolution kernel, or None."""
        return None

    def after_stage(self, name: str) -> keras.layers.Layer | None:
        """A layer applied after every encoder/decoder stage (dropout), or None."""
        return None


def _non_negative(name: str, value: float) -> float:
    if float(value) < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}.")
    return float(value)


def _rate(value: float) -> float:
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"rate must be in [0, 1), got {value!r}.")
    return float(value)


@REGULARIZERS.register("none")
class NoRegularizer(Regularizer):
    """No regularization."""


@REGULARIZERS.register("l1")
class L1(Regularizer):
    """L1 penalty (``strength`` * sum |w|) on every convolution kernel: sparse weights."""

    def __init__(self, strength: float = 1e-5) -> None:
        self.strength = _non_negative("strength", strength)

    def kernel(self) -> Any:
        return keras.regularizers.L1(self.strength)


@REGULARIZERS.register("l2")
class L2(Regularizer):
    """L2 penalty on every convolution kernel."""

    def __init__(self, strength: float = 1e-4) -> None:
        self.strength = _non_negative("strength", strength)

    def kernel(self) -> Any:
        return keras.regularizers.L2(self.strength)


@REGULARIZERS.register("elastic")
class ElasticNet(Regularizer):
    """Elastic net (L1 + L2) on every convolution kernel: ``strength`` split by ``l1_ratio``."""

    def __init__(self, strength: float = 1e-4, l1_ratio: float = 0.5) -> None:
        self.strength = _non_negative("strength", strength)
        if not 0.0 <= float(l1_ratio) <= 1.0:
            raise ValueError(f"l1_ratio must be in [0, 1], got {l1_ratio!r}.")
        self.l1_ratio = float(l1_ratio)

    def kernel(self) -> Any:
        return keras.regularizers.L1L2(l1=self.strength * self.l1_ratio, l2=self.strength * (1 - self.l1_ratio))


@REGULARIZERS.register("dropout")
class StageDropout(Regularizer):
    """Dropout of ``rate`` after every encoder and decoder stage."""

    def __init__(self, rate: float = 0.1) -> None:
        self.rate = _rate(rate)

    def after_stage(self, name: str) -> keras.layers.Layer | None:
        return keras.layers.Dropout(self.rate, name=name) if self.rate > 0 else None


@REGULARIZERS.register("spatial_dropout")
class SpatialDropout(Regularizer):
    """Spatial dropout (whole feature maps) of ``rate`` after every encoder and decoder stage."""

    def __init__(self, rate: float = 0.1) -> None:
        self.rate = _rate(rate)

    def after_stage(self, name: str) -> keras.layers.Layer | None:
        return keras.layers.SpatialDropout2D(self.rate, name=name) if self.rate > 0 else None


@REGULARIZERS.register("stochastic_depth")
class StochasticDepth(Regularizer):
    """Stochastic depth: residual branches dropped with probability ``rate`` (blocks with drop_path).

    Applies to blocks that take ``drop_path``: the residual conv block, the SE branch of the se
    conv block and the transformer bottleneck. The double conv block has no residual branch and
    takes no ``drop_path``; a branch where no block would receive the rate is a spec error.
    """

    def __init__(self, rate: float = 0.1) -> None:
        self.rate = _rate(rate)
        self.drop_path = self.rate
