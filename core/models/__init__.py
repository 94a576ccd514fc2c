"""Registered model builders (``ablate.models.unet.ModelBuilder``): spec['model'] -> keras.Model.
Each module is imported by name."""

from typing import Any

import keras

from ablate.models import coarse_fine, unet
from ablate.models.unet import Shaped, Target
from ablate.registry import MODELS
from ablate.task import MARS

__all__ = ["build_model", "coarse_fine", "unet"]


def build_model(model_spec: dict[str, Any], task: Shaped = MARS, *, num_classes: int | None = None,
                input_shape: tuple[int, int, int] | None = None) -> keras.Model:
    """Builds the model a spec's ``model`` section names for ``task``: its classes and input shape.

    ``num_classes`` and ``input_shape``, where given, replace the task's (for callers that name the
    figures rather than a task).

    Example:
        >>> model = build_model({"type": "unet", "depth": 2}, task)
    """
    if num_classes is not None or input_shape is not None:
        task = Target(int(num_classes if num_classes is not None else task.num_classes),
                      tuple(input_shape if input_shape is not None else task.input_shape))  # type: ignore[arg-type]
    MODELS.validate(model_spec, where="model")
    builder = MODELS.get(MODELS.split(model_spec)[0])()
    return builder.build(model_spec, task)  # type: ignore[no-any-return]
