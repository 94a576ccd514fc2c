"""The task a model is built for: the input size, and the checks that depend on it.

Kept free of TensorFlow, so that a spec's depth is checked against the input size when the
spec is read (``ablate spec``), not only when its model is built.
"""

from __future__ import annotations

from typing import Any

from ablate.errors import SpecError

INPUT_SHAPE = (64, 128, 1)  # the course's Mars terrain tiles: height, width, channels
MAX_DEPTH = 5  # 64 / 2**5 = 2 rows at the bottleneck: the most a 64x128 input allows


def check_depth(depth: Any, height: int = INPUT_SHAPE[0], width: int = INPUT_SHAPE[1],
                where: str = "model.depth") -> None:
    """Raises a SpecError unless ``depth`` down-samplings fit a ``height`` x ``width`` input."""
    if isinstance(depth, bool) or not isinstance(depth, int):
        raise SpecError(f"{where} must be an integer from 1 to {MAX_DEPTH}, got {depth!r}.")
    if not 1 <= depth <= MAX_DEPTH or height % 2**depth or width % 2**depth:
        raise SpecError(
            f"{where}={depth} is not possible for a {height}x{width} input; expected 1-{MAX_DEPTH} "
            f"down-samplings that divide the input size."
        )
