"""Mars terrain data: load and validate, generate, clean, inspect and import (``ablate data ...``).

Example:
    >>> from ablate.data import generate, write_npz, load_npz, split_indices
    >>> write_npz("data/synth.npz", generate(1000, seed=0, n_test=200))
    >>> data = load_npz("data/synth.npz")
    >>> train_idx, val_idx = split_indices(len(data.masks), 0.2, seed=0, groups=data.groups)
"""

from ablate.data.ai4mars import import_ai4mars
from ablate.data.clean import CleanReport, clean_npz, find_outliers
from ablate.data.loader import MarsData, load_npz, split_indices
from ablate.data.summary import format_summary, inspect_npz
from ablate.data.synth import generate, generate_with_truth, write_npz

__all__ = [
    "CleanReport",
    "MarsData",
    "clean_npz",
    "find_outliers",
    "format_summary",
    "generate",
    "generate_with_truth",
    "import_ai4mars",
    "inspect_npz",
    "load_npz",
    "split_indices",
    "write_npz",
]
