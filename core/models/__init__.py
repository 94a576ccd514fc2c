"""Registered model builders (``ablate.models.unet.ModelBuilder``): spec['model'] -> keras.Model.
Each module is imported by name."""

from typing import Any

import keras

from ablate.models import coarse_fine, unet
from ablate.models.unet import Target
from ablate.registry import MODELS

__all__ = ["build_model", "coarse_fine", "unet"]


def build_model(
    model_spec: dict[str, Any], num_classes: int = 5, input_shape: tuple[int, int, int] = (64, 128, 1)
) -> keras.Model:
    """Builds the model a spec's ``model`` section names, for ``num_classes`` outputs on ``input_shape``
    inputs (a task's ``num_classes`` and ``input_shape``)."""
    MODELS.validate(model_spec, where="model")
    builder = MODELS.get(MODELS.split(model_spec)[0])()
    return builder.build(model_spec, Target(int(num_classes), tuple(input_shape)))  # type: ignore[arg-type]
