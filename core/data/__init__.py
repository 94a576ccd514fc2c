"""Segmentation data (the Mars course set and any other task): load and validate, generate, clean, inspect
and import (``ablate data ...``).

Example:
    >>> from ablate.data import generate, write_npz, load_npz, split_indices
    >>> write_npz("data/synth.npz", generate(1000, seed=0, n_test=200))
    >>> data = load_npz("data/synth.npz")  # or load_npz(path, task=task) to check it against a task
    >>> train_idx, val_idx = split_indices(len(data.masks), 0.2, seed=0, groups=data.groups)
"""

from ablate.data.ai4mars import import_ai4mars
from ablate.data.clean import CleanReport, clean_npz, find_outliers
from ablate.data.infer import infer_task
from ablate.data.loader import MarsData, SegData, load_npz, split_indices
from ablate.data.summary import format_summary, inspect_npz
from ablate.data.synth import generate, generate_with_truth, write_npz
from ablate.data.synth_task import generate_task

__all__ = [
    "CleanReport",
    "MarsData",
    "SegData",
    "clean_npz",
    "find_outliers",
    "format_summary",
    "generate",
    "generate_task",
    "generate_with_truth",
    "infer_task",
    "import_ai4mars",
    "inspect_npz",
    "load_npz",
    "split_indices",
    "write_npz",
]
