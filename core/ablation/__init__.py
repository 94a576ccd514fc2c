"""Ablation studies: designs of named deltas, paired seeds, a resumable queue, a report."""

from ablate.ablation.design import Ablation, Arm, load_ablation

__all__ = ["Ablation", "Arm", "load_ablation"]
