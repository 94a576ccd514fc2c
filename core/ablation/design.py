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

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ablate import memory
from ablate.domains import show
from ablate.errors import SpecError
from ablate.names import check_name
from ablate.spec import MAX_SEED, Spec, deep_merge, read_yaml, resolve_base, set_dotted, validate
from ablate.yamlio import shown

if TYPE_CHECKING:
    from ablate.sequential import SequentialDesign

BASELINE = "baseline"
_SPEC_SECTIONS = set(Spec.model_fields)


# Every file model: unknown keys, `epochs: true`, `3.5` seeds and nan/inf are errors, not coerced.
_FILE = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]  # NumPy and TensorFlow take seeds in [0, 2**32)


class Budget(BaseModel):
    model_config = _FILE
    epochs: int | None = Field(None, ge=1)
    early_stopping: int | None = Field(None, ge=0)
    data_limit: int | None = Field(None, ge=2)


class SeedRange(BaseModel):
    """``seeds: {min: 3, max: 10}``: run seeds in rounds until every variant is decided."""

    model_config = _FILE
    min: int = Field(3, ge=2)  # fewer than 2 pairs give no variance, so no test at all
    max: int = Field(10, ge=2)
    step: int | None = Field(None, ge=1)  # seeds added per round (None: the sequential module's default)

    @model_validator(mode="after")
    def _ordered(self) -> SeedRange:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must be <= max ({self.max})")
        return self


class AblationFile(BaseModel):
    """The validated content of an ablation YAML file."""

    model_config = _FILE
    name: str
    description: str = ""
    base: str | dict[str, Any]
    design: str = "one-at-a-time"  # a name in ablate.ablation.designs.DESIGNS, checked by expand()
    seeds: int | list[Seed] | SeedRange = 3
    # The smallest change in val mIoU worth detecting: sizes the seeds in `ablate ablation plan`.
    min_effect: float = Field(0.01, gt=0.0, lt=1.0)
    alpha: float = Field(0.05, gt=0.0, lt=0.5)  # family-wise error rate of the verdicts
    test: Literal["paired-t", "permutation"] = "paired-t"  # primary test (see ablate.stats)
    correction: Literal["holm", "bonferroni"] = "holm"  # multiplicity across the variants
    budget: Budget = Budget()
    factors: dict[str, dict[str, dict[str, Any]]]


@dataclass
class Arm:
    """One arm: a variant (or the baseline) with its fully resolved spec (seed excluded).

    ``levels`` maps each factor the arm sets to its level ("baseline" for the base level);
    the designs' analyses read it back from the logged payload.

    Example:
        >>> arm = load_ablation("ablations/skip_x_depth.yaml").arm("skip=add,depth=d4")
        >>> arm.levels, arm.with_seed(1).seed
        ({'skip': 'add', 'depth': 'd4'}, 1)
    """

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
    seeds: list[int]  # every seed an arm may run (a sequential design runs a prefix per arm)
    description: str = ""
    alpha: float = 0.05
    min_effect: float = 0.01
    test: str = "paired-t"
    correction: str = "holm"
    sequential: SequentialDesign | None = None  # None: every arm runs every seed
    screening: bool = False  # run although the plan cannot reach alpha; the report says so

    @property
    def variants(self) -> list[Arm]:
        return [a for a in self.arms if not a.is_baseline]

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


def load_ablation(path: str | Path, seeds: int | list[int] | None = None, overrides: list[str] = (),
                  until_decided: bool = False, max_seeds: int | None = None) -> Ablation:
    """Reads, validates and expands an ablation file into arms.

    ``seeds`` (the CLI's ``--seeds N``) forces a fixed design of N seeds; ``until_decided``
    (``--until-decided [--max-seeds N]``) forces a sequential one, from the file's seed count
    (or ``seeds.min``) up to ``max_seeds`` (or ``seeds.max``, or 10).
    """
    raw = read_yaml(path, "Ablation file")
    try:
        ab = AblationFile.model_validate(raw)
    except ValidationError as e:
        raise SpecError(f"Ablation file '{shown(Path(path))}': {_describe(e)}") from None
    check_names(ab, Path(path))
    def prepared(base: str | dict[str, Any]) -> dict[str, Any]:
        raw = _apply_budget(_base_raw(base, Path(path)), ab.budget, overrides)
        return {**raw, "name": ab.name}

    arms = expand(ab, prepared(ab.base), rebase=prepared)
    for arm in arms:  # before anything is queued: an arm too big for this machine would fail every seed
        try:
            memory.check(arm.spec)
        except SpecError as e:
            raise SpecError(f"Ablation '{ab.name}', arm {arm.key}: {e}") from None
    seed_list, sequential = _seed_plan(ab, seeds, until_decided, max_seeds)
    return Ablation(ab.name, ab.design, arms, seed_list, ab.description, alpha=ab.alpha, min_effect=ab.min_effect,
                    test=ab.test, correction=ab.correction, sequential=sequential)


def check_names(ab: AblationFile, path: Path) -> None:
    """The ablation's, factors' and variants' names follow ``ablate.names``: they become the MLflow
    experiment, the Optuna queue, the report folder and the arm keys (``factor=variant``)."""
    where = f"Ablation file '{shown(path)}'"
    check_name(ab.name, f"{where}: name")
    for factor, variants in ab.factors.items():
        check_name(factor, f"{where}: factor")
        for variant in variants:
            check_name(variant, f"{where}: factor '{factor}', variant")


# The names pydantic gives the members of a union in an error's place (``seeds.int``,
# ``seeds.list[constrained-int].1``): left out of the place a message names.
_UNION_MEMBER = re.compile(r"^(int|float|str|bool|(list|dict|function-\w+)\[.*|[A-Z]\w*)$")


def _describe(e: ValidationError) -> str:
    """One line for a file's first error. A union (``seeds``) reports one error per member; the
    member of the value's own type (a list for a list) says what is wrong, the others only that
    the value is not of their type, so the first error that is not a type mismatch is chosen."""
    errors = e.errors()
    err = next((x for x in errors if not x["type"].endswith("_type")), errors[0])
    loc = ".".join(str(x) for x in err["loc"] if not _UNION_MEMBER.match(str(x)))
    msg = err["msg"].removeprefix("Value error, ")
    return f"invalid '{loc}': {msg} (got {show(err.get('input'))})."


def _seed_plan(ab: AblationFile, seeds: int | list[int] | None, until_decided: bool,
               max_seeds: int | None) -> tuple[list[int], SequentialDesign | None]:
    """The seeds and, for ``seeds: {min, max}`` or ``--until-decided``, the sequential design."""
    if seeds is not None and until_decided:
        raise SpecError("Give either --seeds N (a fixed design) or --until-decided (a sequential one), not both.")
    if max_seeds is not None and not until_decided:
        raise SpecError("--max-seeds only applies with --until-decided.")
    if seeds is not None:
        return _seeds(seeds), None
    file = ab.seeds
    if not until_decided and not isinstance(file, SeedRange):
        return _seeds(file), None
    if isinstance(file, SeedRange):
        low, high, step = file.min, file.max, file.step
    else:
        low, high, step = (len(file) if isinstance(file, list) else file), 10, None
    high = max_seeds if max_seeds is not None else high
    from ablate.sequential import SequentialDesign

    try:
        design = SequentialDesign(min_seeds=low, max_seeds=high, alpha=ab.alpha, min_effect=ab.min_effect,
                                  **({"step": step} if step else {}))
    except ValueError as e:
        raise SpecError(f"Ablation '{ab.name}': sequential seeds: {e}") from None
    first = file if isinstance(file, list) else []
    return (first + [s for s in range(10 * high) if s not in first])[:high], design


def _base_raw(base: str | dict[str, Any], origin: Path) -> dict[str, Any]:
    if isinstance(base, dict):
        return resolve_base(base, origin)
    p = origin.parent / base
    return resolve_base(read_yaml(p if p.exists() else base), p if p.exists() else Path(base))


def _apply_budget(raw: dict[str, Any], budget: Budget, overrides: list[str]) -> dict[str, Any]:
    from ablate.spec import apply_overrides

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
    """The arms of the ablation's design (``ablate.ablation.designs.DESIGNS``), baseline first.

    Empty factors and deltas that change nothing are errors. A one-at-a-time or
    leave-one-out variant may start from another preset (``base: FILE``, relative to the
    ablation file), with the same budget and overrides as the base.
    """
    from ablate.ablation.designs import DESIGNS  # designs.py builds on this module's Arm and _apply

    try:
        design = DESIGNS.build(ab.design)
    except SpecError as e:
        raise SpecError(f"Ablation '{ab.name}': {e}") from None
    return design.expand(ab, base_raw, rebase)
