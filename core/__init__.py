"""ablate: registered blocks, validated specs and tracked runs for Mars terrain segmentation.

Importing ``core`` registers every block (explicitly, module by module), so a saved
``.keras`` model of this project reloads after ``import core``.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out of the CLI
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one progress bar (ours) is enough

import warnings  # noqa: E402

warnings.filterwarnings("ignore", message=".*is experimental.*")  # Optuna's heartbeat/retry APIs
warnings.filterwarnings("ignore", message=".*experimental feature.*")
# Blocks create their sublayers in __init__ and Keras restores them on load (tests compare
# predictions after a reload), so Keras's "no build() method" notice on loading is noise.
warnings.filterwarnings("ignore", message=r".*does not have a `build\(\)` method implemented.*")

import tensorflow as _tf  # noqa: E402

from core import augment, blocks, losses, metrics, models, optim  # noqa: E402  (registration)
from core.registry import ALL_REGISTRIES  # noqa: E402

_tf.get_logger().setLevel("ERROR")  # retracing and v1-profiler notices are not the user's business

__all__ = ["ALL_REGISTRIES", "augment", "blocks", "losses", "metrics", "models", "optim"]
__version__ = "0.1.0"
