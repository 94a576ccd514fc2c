"""Study files: read, validate and resolve a study YAML into a ``StudyDef``.

Besides the file's own schema, every key of the space is checked against the base spec: each
choice (and both ends of each range) is validated in a combination where it is active, and,
for small spaces, every combination is. An invalid study file is a ``SpecError`` naming the
key, the value and the other keys it was combined with.

Example:
    >>> plan = load_study_file("studies/architecture.yaml", ["data.limit=500"], trials=10)
    >>> plan.n_trials
    10
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ablate import memory
from ablate.ablation.design import Budget
from ablate.errors import SpecError, excerpt
from ablate.names import check_name
from ablate.spec import apply_overrides, deep_merge, read_yaml, resolve_base, set_dotted, validate
from ablate.study.space import (
    MISSING,
    PRUNERS,
    SAMPLERS,
    SPEC_SECTIONS,
    Objective,
    Param,
    StudyDef,
    as_list,
    assign,
    epoch_metrics,
    get_dotted,
)
from ablate.yamlio import excerpt_text, shown

EXHAUSTIVE_LIMIT = 256  # spaces with at most this many corner combinations are validated in full


class StudyFile(BaseModel):
    """The validated content of a study YAML file (before the base spec is resolved)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)  # `trials: 2.5` is an error
    name: str  # the Optuna study, MLflow experiment and report folder: checked by ablate.names.check_name
    description: str = ""
    base: str | dict[str, Any]
    trials: int = Field(20, ge=1)  # the trial budget: finished trials, over all workers
    budget: Budget = Field(default_factory=Budget)  # the per-trial budget: epochs, early stopping, data
    objectives: list[Objective] = Field(default_factory=lambda: [Objective()], min_length=1, max_length=2)
    sampler: dict[str, Any] = Field(default_factory=lambda: {"type": "tpe"})
    pruner: dict[str, Any] | None = None  # None: median for one objective, none for two
    space: dict[str, Param] = Field(min_length=1)


def load_study_file(path: str | Path, overrides: list[str] | tuple[str, ...] = (),
                    trials: int | None = None) -> StudyDef:
    """Reads, validates and resolves a study file; ``overrides`` patch the base spec."""
    raw = read_yaml(path, "Study file")
    try:
        sf = StudyFile.model_validate(raw)
    except ValidationError as e:
        raise SpecError(f"Study file '{shown(Path(path))}': {_describe(e)}") from None
    check_name(sf.name, f"Study file '{shown(Path(path))}': name")
    base = _base_raw(sf.base, Path(path))
    base = apply_overrides(_with_budget(base, sf.budget), overrides)
    base["name"] = sf.name
    try:
        plan = build(sf, base, trials)
    except SpecError as e:
        raise SpecError(f"Study file '{shown(Path(path))}': {e}") from None
    return plan


def build(sf: StudyFile, base: dict[str, Any], trials: int | None = None) -> StudyDef:
    """Checks keys, conditions, objectives, sampler, pruner and every reachable choice."""
    try:
        base = validate(base).to_dict()
    except SpecError as e:
        raise SpecError(f"base spec: {e}") from None
    for i, key in enumerate(sf.space):
        _check_key(key, list(sf.space)[:i], sf.space, base)
    pruner = sf.pruner or {"type": "median" if len(sf.objectives) == 1 else "none"}
    plan = StudyDef(sf.name, base, dict(sf.space), list(sf.objectives), _component(sf.sampler, "sampler"),
                    _component(pruner, "pruner"), trials or sf.trials, sf.description)
    if len(plan.objectives) > 1 and plan.pruner["type"] != "none":
        raise SpecError(f"pruner '{plan.pruner['type']}': Optuna cannot prune a multi-objective study; "
                        f"set pruner: {{type: none}}.")
    if plan.pruner["type"] != "none" and plan.report_metric is None:
        task = plan.task  # None: the data file's, whose classes are not read yet
        named = ", ".join(epoch_metrics(task)) if task is not None else "val_miou or val_iou_<scored class>"
        raise SpecError(f"pruner '{plan.pruner['type']}': pruning needs a per-epoch objective "
                        f"({named}); got '{plan.objectives[0].metric}'.")
    plan.make_sampler()
    plan.make_pruner()
    if plan.sampler["type"] == "grid":
        size = math.prod(len(v) for v in plan.grid_space().values())
        plan.n_trials = min(plan.n_trials, size)
    check_space(plan)
    return plan


def check_space(plan: StudyDef) -> int:
    """Validates a spec for every choice of every parameter (and, for small spaces, every
    combination); returns how many specs it checked. An invalid one raises naming its keys."""
    checked = 0
    for key, param in plan.params.items():
        for label in param.labels():
            labels = _find_active(plan, key, label)  # the keys up to this one: an error is this key's
            if labels is None:
                raise SpecError(f"space key '{key}' is never active: no choices of the keys in its `when` "
                                f"({_fmt(param.when)}) satisfy it.")
            _validate_labels(plan, labels, f"space key '{key}'={excerpt(label)}", key)
            checked += 1
    combos = list(itertools.islice(_all_combinations(plan), EXHAUSTIVE_LIMIT + 1))
    if len(combos) <= EXHAUSTIVE_LIMIT:
        for labels in combos:
            _validate_labels(plan, labels, "the combination")
            checked += 1
    return checked


def _validate_labels(plan: StudyDef, labels: dict[str, Any], what: str, key: str | None = None) -> None:
    try:
        memory.check(plan.spec_of(labels))  # too big for this machine is as invalid as a bad key
    except SpecError as e:
        others = {k: v for k, v in labels.items() if k != key}
        context = f" (with {_fmt(others)})" if others else ""
        raise SpecError(f"{what}{context} gives an invalid spec: {e} Narrow the space or add a `when:` "
                        f"condition.") from None


def _walk(plan: StudyDef, keys: list[str], raw: dict[str, Any], chosen: dict[str, Any],
          branch: set[str] | None = None) -> Iterator[dict[str, Any]]:
    """Combinations of the labels of active parameters, depth first in file order. Only keys in
    ``branch`` (all when None) take every label; the others take their first."""
    if not keys:
        yield chosen
        return
    key, rest = keys[0], keys[1:]
    param = plan.params[key]
    if not param.active(raw):
        yield from _walk(plan, rest, raw, chosen, branch)
        return
    labels = param.labels() if branch is None or key in branch else param.labels()[:1]
    for label in labels:
        yield from _walk(plan, rest, assign(raw, key, param.value(label)), {**chosen, key: label}, branch)


def _all_combinations(plan: StudyDef) -> Iterator[dict[str, Any]]:
    return _walk(plan, list(plan.params), copy.deepcopy(plan.base), {})


def _find_active(plan: StudyDef, key: str, label: Any) -> dict[str, Any] | None:
    """Labels of ``key`` and the keys before it with which ``key`` is active and takes ``label``
    (None if it never is). Keys that do not decide its condition take their first label."""
    keys = list(plan.params)
    before = keys[:keys.index(key)]
    deciding = _conditions_of(plan, key)
    branch = {k for k in before if any(_overlaps(k, c) for c in deciding)}
    for chosen in _walk(plan, before, copy.deepcopy(plan.base), {}, branch):
        raw = copy.deepcopy(plan.base)
        for k, lab in chosen.items():
            raw = assign(raw, k, plan.params[k].value(lab))
        if plan.params[key].active(raw):
            return {**chosen, key: label}
    return None


def _conditions_of(plan: StudyDef, key: str) -> set[str]:
    """The keys that decide, directly or through other conditions, whether ``key`` is active."""
    found: set[str] = set()
    todo = list(plan.params[key].when)
    while todo:
        cond = todo.pop()
        if cond in found:
            continue
        found.add(cond)
        for k, param in plan.params.items():
            if _overlaps(k, cond):
                todo.extend(param.when)
    return found


def _overlaps(a: str, b: str) -> bool:
    """Whether setting key ``a`` can change the value at key ``b`` (same, parent or child key)."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def _check_key(key: str, earlier: list[str], space: Mapping[str, Param], base: dict[str, Any]) -> None:
    head = key.split(".")[0]
    if head not in SPEC_SECTIONS:
        raise SpecError(f"space key '{key}': a key must start with a spec section "
                        f"({', '.join(SPEC_SECTIONS)}); did you mean 'model.{key}'?")
    for cond, wanted in space[key].when.items():
        if cond in earlier:
            labels = [space[cond].value(lab) if space[cond].type == "categorical" else lab
                      for lab in space[cond].labels()]
            bad = [w for w in as_list(wanted) if w not in labels and space[cond].type == "categorical"]
            if bad:
                raise SpecError(f"space key '{key}': `when` value {excerpt(bad[0])} is not a choice of '{cond}' "
                                f"({', '.join(map(str, space[cond].labels()))}).")
        elif get_dotted(base, cond) is MISSING and not any(_overlaps(k, cond) for k in earlier):
            raise SpecError(f"space key '{key}': `when` names '{cond}', which is neither set by an earlier "
                            f"space key nor a key of the base spec.")


def _component(config: Mapping[str, Any], kind: str) -> dict[str, Any]:
    registry = SAMPLERS if kind == "sampler" else PRUNERS
    name, _ = registry.split(dict(config))
    registry.get(name)  # unknown names raise with the known ones
    return dict(config)


def _describe(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = [str(x) for x in err["loc"]]
    msg = err["msg"].removeprefix("Value error, ")
    if loc[:1] == ["space"] and len(loc) > 1:
        rest = f" field '{'.'.join(loc[2:])}'" if len(loc) > 2 else ""
        return f"space key '{loc[1]}'{rest}: {msg}."
    if err["type"] == "extra_forbidden":
        return f"unknown key '{'.'.join(loc)}'; expected {', '.join(StudyFile.model_fields)}."
    return f"invalid '{'.'.join(loc)}': {msg} (got {excerpt(err.get('input'))})."


def _with_budget(raw: dict[str, Any], budget: Budget) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    for key, value in (("train.epochs", budget.epochs), ("train.early_stopping", budget.early_stopping),
                       ("data.limit", budget.data_limit)):
        if value is not None:
            set_dotted(delta, key, value)
    return deep_merge(raw, delta)


def _base_raw(base: str | dict[str, Any], origin: Path) -> dict[str, Any]:
    if isinstance(base, dict):
        return resolve_base(base, origin)
    p = origin.parent / base
    return resolve_base(read_yaml(p if p.exists() else base), p if p.exists() else Path(base))


def _fmt(d: Mapping[str, Any]) -> str:
    return excerpt_text(", ".join(f"{k}={excerpt(v, 40)}" for k, v in d.items()), 160)
