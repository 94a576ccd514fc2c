"""ablate: registered blocks, validated specs and tracked runs for image segmentation (Mars by default).

Importing ``ablate`` is cheap: it does not import TensorFlow, so commands that only read specs or
the tracking store start fast. The blocks register when first built (``ablate.registry``), or
explicitly with ``ablate.load_all()``, which a fresh process calls before loading a saved
``.keras`` model of this project::

    import ablate, keras
    ablate.load_all()
    model = keras.saving.load_model("model.keras", safe_mode=True)
"""

import os

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one progress bar (ours) is enough

import warnings  # noqa: E402

warnings.filterwarnings("ignore", message=".*is experimental.*")  # Optuna's heartbeat/retry APIs
warnings.filterwarnings("ignore", message=".*experimental feature.*")
# Blocks create their sublayers in __init__ and Keras restores them on load (tests compare
# predictions after a reload), so Keras's "no build() method" notice on loading is noise.
warnings.filterwarnings("ignore", message=r".*does not have a `build\(\)` method implemented.*")

from ablate import quiet  # noqa: E402
from ablate.registry import ALL_REGISTRIES, load_all  # noqa: E402

quiet.install()  # TensorFlow's start-up lines stay out of the terminal (not under --debug)

__all__ = ["ALL_REGISTRIES", "load_all"]
__version__ = "0.1.0"
