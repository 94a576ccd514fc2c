"""Ablation files: a base spec, factors of named deltas, a design, and paired seeds.

Example ``ablations/skip_connections.yaml``::

    name: skip_connections
    base: presets/unet-baseline.yaml
    design: one-at-a-time
    seeds: 3
    budget: {epochs: 10, early_stopping: 4, data_limit: 2000}
    factors:
      skip:
        add: {skip: {type: add}}
        none: {skip: {type: none}}

A delta is merged onto the base spec; keys of the model section may be written without the
``model.`` prefix and dotted keys are accepted (``model.depth: 4``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.errors import SpecError
from core.spec import Spec, deep_merge, read_yaml, resolve_base, set_dotted, validate

BASELINE = "baseline"
_SPEC_SECTIONS = set(Spec.model_fields)


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid")
    epochs: int | None = Field(None, ge=1)
    early_stopping: int | None = Field(None, ge=0)
    data_limit: int | None = Field(None, ge=2)


class AblationFile(BaseModel):
    """The validated content of an ablation YAML file."""

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    base: str | dict[str, Any]
    design: Literal["one-at-a-time", "leave-one-out", "factorial"] = "one-at-a-time"
    seeds: int | list[int] = 3
    budget: Budget = Budget()
    factors: dict[str, dict[str, dict[str, Any]]]


@dataclass
class Arm:
    """One arm: a variant (or the baseline) with its fully resolved spec (seed excluded)."""

    key: str  # unique, e.g. "skip=add" or "baseline"
    factor: str
    variant: str
    is_baseline: bool
    spec: Spec
    levels: dict[str, str] = field(default_factory=dict)

    def with_seed(self, seed: int) -> Spec:
        return self.spec.model_copy(update={"seed": seed}, deep=True)


@dataclass
class Ablation:
    """An expanded ablation: arms and seeds, ready to queue."""

    name: str
    design: str
    arms: list[Arm]
    seeds: list[int]
    description: str = ""

    @property
    def baseline(self) -> Arm:
        return next(a for a in self.arms if a.is_baseline)

    def arm(self, key: str) -> Arm:
        for a in self.arms:
            if a.key == key:
                return a
        raise SpecError(f"Unknown arm '{key}' in ablation '{self.name}'.")


def normalise_delta(delta: dict[str, Any]) -> dict[str, Any]:
    """Turns dotted keys and model-section shorthand into a nested spec delta."""
    out: dict[str, Any] = {}
    for key, value in delta.items():
        path = key if key.split(".")[0] in _SPEC_SECTIONS else f"model.{key}"
        nested: dict[str, Any] = {}
        set_dotted(nested, path, value)
        out = deep_merge(out, nested)
    return out


def _apply(base_raw: dict[str, Any], delta: dict[str, Any], where: str,
           rebase: Callable[[str], dict[str, Any]] | None = None) -> Spec:
    """The arm's spec: ``delta`` merged onto the base, or onto another preset named by ``base:``."""
    try:
        delta = dict(delta)
        if "base" in delta:
            if rebase is None:
                raise SpecError("'base' is not allowed in this design")
            base_raw = rebase(str(delta.pop("base")))
        return validate(deep_merge(base_raw, normalise_delta(delta)))
    except SpecError as e:
        raise SpecError(f"{where}: {e}") from None


def load_ablation(path: str | Path, seeds: int | list[int] | None = None, overrides: list[str] = ()) -> Ablation:
    """Reads, validates and expands an ablation file into arms."""
    raw = read_yaml(path)
    try:
        ab = AblationFile.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise SpecError(f"Ablation file '{path}': invalid '{loc}': {err['msg']}.") from None
    def prepared(base: str | dict[str, Any]) -> dict[str, Any]:
        raw = _apply_budget(_base_raw(base, Path(path)), ab.budget, overrides)
        return {**raw, "name": ab.name}

    seed_list = _seeds(seeds if seeds is not None else ab.seeds)
    arms = expand(ab, prepared(ab.base), rebase=prepared)
    return Ablation(ab.name, ab.design, arms, seed_list, ab.description)


def _base_raw(base: str | dict[str, Any], origin: Path) -> dict[str, Any]:
    if isinstance(base, dict):
        return resolve_base(base, origin)
    p = origin.parent / base
    return resolve_base(read_yaml(p if p.exists() else base), p if p.exists() else Path(base))


def _apply_budget(raw: dict[str, Any], budget: Budget, overrides: list[str]) -> dict[str, Any]:
    from core.spec import apply_overrides

    delta: dict[str, Any] = {}
    if budget.epochs is not None:
        set_dotted(delta, "train.epochs", budget.epochs)
    if budget.early_stopping is not None:
        set_dotted(delta, "train.early_stopping", budget.early_stopping)
    if budget.data_limit is not None:
        set_dotted(delta, "data.limit", budget.data_limit)
    return apply_overrides(deep_merge(raw, delta), overrides)


def _seeds(seeds: int | list[int]) -> list[int]:
    if isinstance(seeds, int):
        if seeds < 1:
            raise SpecError(f"seeds must be >= 1 (or a list of seeds), got {seeds}.")
        return list(range(seeds))
    if not seeds or len(set(seeds)) != len(seeds):
        raise SpecError(f"seeds must be a non-empty list of distinct integers, got {seeds}.")
    return list(seeds)


def expand(ab: AblationFile, base_raw: dict[str, Any],
           rebase: Callable[[str], dict[str, Any]] | None = None) -> list[Arm]:
    """The arms of the design; deltas that change nothing are errors.

    A one-at-a-time or leave-one-out variant may start from another preset (``base: FILE``,
    relative to the ablation file), with the same budget and overrides as the base.
    """
    if not ab.factors:
        raise SpecError(f"Ablation '{ab.name}' has no factors; expected at least one factor with variants.")
    base = validate(base_raw)
    baseline = Arm(BASELINE, "", BASELINE, True, base)
    arms = [baseline]
    if ab.design == "factorial":
        levels = {f: [BASELINE, *variants] for f, variants in ab.factors.items()}
        for combo in itertools.product(*levels.values()):
            chosen = dict(zip(levels, combo, strict=True))
            changed = {f: v for f, v in chosen.items() if v != BASELINE}
            if not changed:
                continue
            delta: dict[str, Any] = {}
            for f, v in changed.items():
                delta = deep_merge(delta, normalise_delta(ab.factors[f][v]))
            key = ",".join(f"{f}={v}" for f, v in chosen.items())
            arms.append(Arm(key, "+".join(changed), key, False, _apply(base_raw, delta, f"arm {key}"), chosen))
    else:
        for factor, variants in ab.factors.items():
            if not variants:
                raise SpecError(f"Factor '{factor}' has no variants.")
            for variant, delta in variants.items():
                key = f"{factor}={variant}"
                label = f"without {factor}" if ab.design == "leave-one-out" else variant
                arms.append(Arm(key, factor, label, False, _apply(base_raw, delta, f"variant {key}", rebase),
                                {factor: variant}))
    seen: dict[str, str] = {base.spec_hash: BASELINE}
    for arm in arms[1:]:
        h = arm.spec.spec_hash
        if h in seen:
            raise SpecError(
                f"Variant '{arm.key}' changes nothing relative to '{seen[h]}' (same resolved spec); "
                f"give it a delta that differs from the base."
            )
        seen[h] = arm.key
    return arms
