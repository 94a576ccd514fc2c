"""Registered building blocks. Each module is imported by name so registration is explicit."""

from ablate.blocks import base, bottlenecks, conv, fusion, regularizers, skips, transformer, upsample

__all__ = ["base", "bottlenecks", "conv", "fusion", "regularizers", "skips", "transformer", "upsample"]
