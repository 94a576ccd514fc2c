"""ablate: registered blocks, validated specs and tracked runs for Mars terrain segmentation.

Importing ``core`` registers every block (explicitly, module by module), so a saved
``.keras`` model of this project reloads after ``import core``.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out of the CLI

from core import augment, blocks, losses, metrics, models, optim  # noqa: E402  (registration)
from core.registry import ALL_REGISTRIES  # noqa: E402

__all__ = ["ALL_REGISTRIES", "augment", "blocks", "losses", "metrics", "models", "optim"]
__version__ = "0.1.0"
