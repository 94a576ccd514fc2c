"""The design registry, the base class every design extends, and helpers their analyses share.

The designs themselves live in :mod:`ablate.ablation.designs` (one-at-a-time, leave-one-out) and
:mod:`ablate.ablation.factorial`; import ``DESIGNS`` from ``ablate.ablation.designs``, which registers
them all.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ablate.ablation.design import BASELINE, AblationFile, Arm
from ablate.errors import SpecError
from ablate.registry import Registry
from ablate.spec import Spec, validate
from ablate.stats import OK_STATUS, verdict

DESIGNS = Registry("design")

Rebase = Callable[[str], dict[str, Any]] | None


@dataclass
class DesignAnalysis:
    """What a design adds to the report beyond the per-arm table.

    Attributes:
        table: one row per effect the design estimates (empty when it adds none).
        markdown: a section for report.md, "" when there is nothing to add.
        sentences: plain-language lines, one per effect or caveat.

    Example:
        >>> DesignAnalysis().sentences
        []
    """

    table: pd.DataFrame = field(default_factory=pd.DataFrame)
    markdown: str = ""
    sentences: list[str] = field(default_factory=list)


class Design:
    """Base of every design: the baseline arm, the variant arms, checks and an analysis.

    Subclasses set ``name``, implement ``variants`` and override ``analyse`` when the design
    supports more than the per-arm comparison with the baseline.

    Example:
        >>> @DESIGNS.register("pairs")  # doctest: +SKIP
        ... class Pairs(Design):
        ...     name = "pairs"
        ...     def variants(self, ab, base_raw, rebase): ...
    """

    name: ClassVar[str] = ""
    # Sequential seeds: True keeps every arm running while any is undecided, so each seed is a
    # complete block (a factorial model needs every cell per seed); False stops settled arms.
    complete_blocks: ClassVar[bool] = False

    def expand(self, ab: AblationFile, base_raw: dict[str, Any], rebase: Rebase = None) -> list[Arm]:
        """The baseline arm first, then the variants; empty factors and no-op deltas are errors."""
        if not ab.factors:
            raise SpecError(f"Ablation '{ab.name}' has no factors; expected at least one factor with variants.")
        for factor, variants in ab.factors.items():
            if not variants:
                raise SpecError(f"Factor '{factor}' of ablation '{ab.name}' has no variants; "
                                f"give it at least one, e.g. '{factor}: {{name: {{key: value}}}}'.")
        arms = [self.baseline(ab, validate(base_raw)), *self.variants(ab, base_raw, rebase)]
        _check_distinct(arms)
        return arms

    def baseline(self, ab: AblationFile, spec: Spec) -> Arm:
        """The baseline arm: the base spec unchanged."""
        return Arm(BASELINE, "", BASELINE, True, spec)

    def variants(self, ab: AblationFile, base_raw: dict[str, Any], rebase: Rebase) -> list[Arm]:
        """The non-baseline arms."""
        raise NotImplementedError(f"Design '{self.name}' must implement variants().")

    def analyse(self, runs: pd.DataFrame, payload: dict[str, Any], metric: str = "val_miou",
                alpha: float = 0.05) -> DesignAnalysis:
        """Nothing beyond the per-arm table; subclasses add their own effects."""
        finished(runs, metric)
        verdict((0.0, 0.0), math.nan, alpha)  # validates alpha
        return DesignAnalysis()


def finished(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The FINISHED runs with a finite ``metric``; one per (variant, seed) or a ValueError."""
    if not isinstance(runs, pd.DataFrame):
        raise TypeError(f"runs must be a pandas DataFrame, got {type(runs).__name__}.")
    missing = [c for c in ("variant", "seed", "status", metric) if c not in runs.columns]
    if missing:
        raise ValueError(f"runs lacks column(s) {missing}; it has {list(runs.columns)}.")
    ok = runs[(runs["status"] == OK_STATUS) & np.isfinite(runs[metric].to_numpy(float))]
    repeats = ok[ok.duplicated(["variant", "seed"], keep=False)]
    if not repeats.empty:
        pairs = sorted({f"{v}/{s}" for v, s in zip(repeats["variant"], repeats["seed"], strict=True)})
        raise ValueError(f"Each arm may have one {OK_STATUS} run per seed; repeated arm/seed: {pairs}.")
    return ok


def _check_distinct(arms: Sequence[Arm]) -> None:
    seen: dict[str, str] = {}
    for arm in arms:
        h = arm.spec.spec_hash
        if h in seen:
            raise SpecError(
                f"Variant '{arm.key}' changes nothing relative to '{seen[h]}' (same resolved spec); "
                f"give it a delta that differs from the base."
            )
        seen[h] = arm.key


def signed(x: float) -> str:
    """``+0.031``, or ``n/a`` for nan."""
    return "n/a" if not np.isfinite(x) else f"{x:+.3f}"


def pvalue(p: float) -> str:
    """``0.012``, ``<0.001``, or ``n/a`` for nan."""
    return "n/a" if not np.isfinite(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")
