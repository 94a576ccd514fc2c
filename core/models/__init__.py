"""Registered model builders (``ablate.models.unet.ModelBuilder``): spec['model'] -> keras.Model.
Each module is imported by name."""

from typing import Any

import keras

from ablate.models import coarse_fine, unet
from ablate.models.unet import Shaped, Target
from ablate.registry import MODELS
from ablate.task import MARS

__all__ = ["Target", "build_model", "coarse_fine", "unet"]


def build_model(model_spec: dict[str, Any], task: Shaped = MARS) -> keras.Model:
    """Builds the model a spec's ``model`` section names for ``task``: its classes and input shape.

    ``task`` is a ``Task``, or a ``Target`` for a caller that has only the figures.

    Example:
        >>> model = build_model({"type": "unet", "depth": 2}, task)
        >>> model = build_model({"type": "unet", "depth": 2}, Target(num_classes=3, input_shape=(32, 32, 1)))
    """
    MODELS.validate(model_spec, where="model")
    builder = MODELS.get(MODELS.split(model_spec)[0])()
    return builder.build(model_spec, task)  # type: ignore[no-any-return]
