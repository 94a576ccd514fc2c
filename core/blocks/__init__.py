"""Registered building blocks. Each module is imported by name so registration is explicit."""

from core.blocks import bottlenecks, conv, regularizers, skips, upsample

__all__ = ["bottlenecks", "conv", "regularizers", "skips", "upsample"]
