"""Registered model builders: spec['model'] -> keras.Model. Each module is imported by name."""

from typing import Any

import keras

from ablate.models import coarse_fine, unet
from ablate.registry import MODELS

__all__ = ["build_model", "coarse_fine", "unet"]


def build_model(
    model_spec: dict[str, Any], num_classes: int = 5, input_shape: tuple[int, int, int] = (64, 128, 1)
) -> keras.Model:
    """Builds the model a spec's ``model`` section names."""
    return MODELS.build(model_spec, num_classes=num_classes, input_shape=input_shape)
