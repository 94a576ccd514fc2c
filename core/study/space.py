"""A study's search space: parameters over dotted spec keys, objectives, sampler and pruner.

The search space lives here and nowhere else: ``StudyDef.spec_for(trial)`` walks the space in
file order, skips parameters whose ``when`` condition does not hold, turns the sampled values
into spec overrides and validates the result with ``ablate.spec``. Model code never sees a trial.
Study files are read and checked by ``ablate.study.files``.

A space in a study file::

    space:
      model.type: {type: categorical, choices: [unet, coarse_fine]}
      model.fusion.type: {type: categorical, choices: [concat, gated], when: {model.type: coarse_fine}}
      model.depth: {type: int, low: 2, high: 4}
      model.regularizer.strength: {type: float, low: 1.0e-6, high: 1.0e-3, log: true}

Setting a block's ``type`` to a new name keeps only the old keys the new block accepts, so
``model.type: coarse_fine`` keeps the U-Net's depth and filters while ``model.bottleneck.type:
transformer`` drops an ASPP's ``rates``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ablate.errors import SpecError
from ablate.spec import Spec, given_task, set_dotted, validate
from ablate.task import MARS, Task

SPEC_SECTIONS = tuple(Spec.model_fields)
# Metrics a study may optimise: the best epoch's validation figures (val_miou, val_iou_<scored class>,
# ``epoch_metrics``) and the cost figures of a run.
COST_METRICS = ("params", "latency_ms_per_image", "flops_per_image", "train_time_s")
_CLASS_METRIC = re.compile(r"^val_iou_[a-z][a-z0-9_]{0,39}$")  # a class name as ablate.task allows it


def is_epoch_metric(metric: str) -> bool:
    """Whether ``metric`` is a per-epoch validation figure: ``val_miou`` or ``val_iou_<class name>``."""
    return metric == "val_miou" or bool(_CLASS_METRIC.match(metric))


def epoch_metrics(task: Task) -> tuple[str, ...]:
    """The per-epoch metrics a run of ``task`` logs: ``val_miou`` and ``val_iou_<name>`` per scored class."""
    return ("val_miou", *(f"val_iou_{name}" for name in task.scored_names))


EPOCH_METRICS = epoch_metrics(MARS)  # the Mars task's, named in messages; a study's own are its task's


MISSING = object()  # what get_dotted returns for an absent key


class Param(BaseModel):
    """One searched spec key: a categorical choice, an int or a float range, maybe conditional.

    ``choices`` is a list of plain values, or a mapping ``label -> value`` whose values may be
    whole blocks or lists (``{ce: {type: ce}, ce_dice: {type: sum, terms: [...]}}``); Optuna
    sees the labels. ``when: {other.key: value or [values]}`` activates the parameter only when
    the spec built so far holds one of those values at ``other.key``.
    """

    # strict: `log: 1` is an error; no nan or inf bounds (Optuna would sample nan, or loop forever).
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    type: Literal["categorical", "int", "float"]
    choices: list[Any] | dict[str, Any] | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = Field(None, gt=0)  # 0 would divide by zero in a grid, and never step in a range
    log: bool = False
    when: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> Param:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty 'choices' list or mapping")
            if any(v is not None for v in (self.low, self.high, self.step)) or self.log:
                raise ValueError("a categorical parameter takes 'choices', not low/high/step/log")
            if isinstance(self.choices, list) and not all(_plain(c) for c in self.choices):
                raise ValueError("list choices must be plain values; give blocks as a mapping label -> block")
            return self
        if self.choices is not None:
            raise ValueError(f"an {self.type} parameter takes low/high (and step or log), not 'choices'")
        if self.low is None or self.high is None:
            raise ValueError(f"an {self.type} parameter needs 'low' and 'high'")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        if self.log and (self.low <= 0 or self.step is not None):
            raise ValueError("a log-scale range needs low > 0 and no 'step'")
        if self.type == "int" and not all(float(v).is_integer() for v in (self.low, self.high, self.step or 1)):
            raise ValueError(f"an int parameter needs integer low/high/step, got {self.low}, {self.high}, {self.step}")
        return self

    def labels(self) -> list[Any]:
        """What Optuna samples: the choice labels, or both ends of a range."""
        if self.type == "categorical":
            return list(self.choices or [])
        if self.type == "int":
            return [int(self.low or 0), int(self.high or 0)]
        return [float(self.low or 0.0), float(self.high or 0.0)]

    def value(self, label: Any) -> Any:
        """The spec value of a sampled label (a mapping's value, or the label itself)."""
        if isinstance(self.choices, dict):
            return copy.deepcopy(self.choices[label])
        return label

    def suggest(self, name: str, trial: Suggester) -> Any:
        if self.type == "categorical":
            return trial.suggest_categorical(name, self.labels())
        if self.type == "int":
            return trial.suggest_int(name, int(self.low or 0), int(self.high or 0), step=int(self.step or 1),
                                     log=self.log)
        return trial.suggest_float(name, float(self.low or 0.0), float(self.high or 0.0), step=self.step,
                                   log=self.log)

    def grid(self, key: str) -> list[Any]:
        """The values a grid search visits (a float range needs a ``step``)."""
        if self.type == "categorical":
            return self.labels()
        if self.type == "float" and self.step is None:
            raise SpecError(f"space key '{key}': a grid search needs a 'step' for a float range (or use tpe/random).")
        low, high, step = float(self.low or 0.0), float(self.high or 0.0), float(self.step or 1)
        values = [low + i * step for i in range(int(math.floor((high - low) / step + 1e-9)) + 1)]
        return [int(v) for v in values] if self.type == "int" else values

    def active(self, raw: Mapping[str, Any]) -> bool:
        return all(get_dotted(raw, key) in as_list(wanted) for key, wanted in self.when.items())


class Objective(BaseModel):
    """One value the study optimises: a run metric and its direction."""

    model_config = ConfigDict(extra="forbid", strict=True)
    metric: str = "val_miou"
    direction: Literal["maximize", "minimize"] = "maximize"

    @model_validator(mode="after")
    def _known(self) -> Objective:
        if self.metric not in COST_METRICS and not is_epoch_metric(self.metric):
            raise ValueError(f"unknown metric '{self.metric}'; expected val_miou, val_iou_<scored class> "
                             f"(Mars: {', '.join(EPOCH_METRICS[1:])}) or one of {', '.join(COST_METRICS)}")
        return self


class Suggester(Protocol):
    """What ``StudyDef`` asks of a trial: ``optuna.Trial``, ``optuna.trial.FixedTrial`` or a stub."""

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...
    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...
    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float: ...


@dataclass
class StudyDef:
    """A resolved study: base spec (budget applied), space, objectives, sampler and pruner.

    Example:
        >>> plan = load_study_file("studies/architecture.yaml", ["data.limit=200"])
        >>> spec, params = plan.spec_for(optuna.trial.FixedTrial({"model.skip.type": "add", ...}))
    """

    name: str
    base: dict[str, Any]
    params: dict[str, Param]
    objectives: list[Objective]
    sampler: dict[str, Any]
    pruner: dict[str, Any]
    n_trials: int
    description: str = ""
    _grid: dict[str, list[Any]] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        """Per-class objectives must name a scored class of the study's task, where the base spec fixes
        one (its ``task:`` section, or Mars for the synthetic default); a task inferred from the data
        file is known only when a trial loads it, and a metric it does not log fails that trial."""
        task = self.task
        if task is None:
            return
        for o in self.objectives:
            if is_epoch_metric(o.metric) and o.metric not in epoch_metrics(task):
                raise SpecError(f"objective metric '{o.metric}' is not logged for this study's task; expected one "
                                f"of {', '.join(epoch_metrics(task) + COST_METRICS)}.")

    @property
    def task(self) -> Task | None:
        """The task the base spec fixes (``ablate.spec.given_task``): None when it is inferred from the data file."""
        return given_task(self.base.get("task"), (self.base.get("data") or {}).get("path"))

    # --- trial -> spec -------------------------------------------------------------------

    def spec_for(self, trial: Suggester) -> tuple[Spec, dict[str, Any]]:
        """Samples the active parameters from ``trial``; returns the validated spec and the labels."""
        raw, labels = copy.deepcopy(self.base), {}
        for key, param in self.params.items():
            if param.active(raw):
                labels[key] = param.suggest(key, trial)
                raw = assign(raw, key, param.value(labels[key]))
        return validate(raw), labels

    def spec_of(self, labels: Mapping[str, Any]) -> Spec:
        """The spec of a finished trial's parameters (``trial.params``)."""
        raw = copy.deepcopy(self.base)
        for key, param in self.params.items():
            if key in labels:
                raw = assign(raw, key, param.value(labels[key]))
        return validate(raw)

    # --- objectives ----------------------------------------------------------------------

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    @property
    def metric_names(self) -> list[str]:
        return [o.metric for o in self.objectives]

    @property
    def report_metric(self) -> str | None:
        """The per-epoch metric reported to the pruner (single-objective studies only)."""
        first = self.objectives[0].metric
        return first if len(self.objectives) == 1 and is_epoch_metric(first) else None

    def values(self, summary: Mapping[str, float]) -> list[float]:
        """The objective values of a finished run's summary (``ablate.runner.summarize``)."""
        keys = [f"best_{m}" if is_epoch_metric(m) else m for m in self.metric_names]
        missing = [k for k in keys if k not in summary]
        if missing:  # a per-class objective of a task inferred from the data, which has no such class
            logged = ", ".join(sorted(k.removeprefix("best_") for k in summary if k.startswith("best_val_")))
            raise SpecError(f"objective metric '{missing[0].removeprefix('best_')}' was not logged by this "
                            f"trial; its task logs {logged}.")
        return [float(summary[k]) for k in keys]

    # --- sampler and pruner ----------------------------------------------------------------

    def make_sampler(self, seed_offset: int = 0) -> Any:
        """A fresh sampler; ``seed_offset`` keeps parallel workers from repeating each other."""
        config = {"seed": 0, **self.sampler}
        if config["seed"] is not None:
            config["seed"] = int(config["seed"]) + seed_offset
        extra = {"search_space": self.grid_space()} if config["type"] == "grid" else {}
        with _constructor_errors("sampler"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TPE's multivariate/group options are 'experimental'
            return SAMPLERS.build(config, **extra)

    def make_pruner(self) -> Any:
        config = dict(self.pruner)
        if config["type"] == "hyperband":
            config.setdefault("max_resource", int(self.base["train"]["epochs"]))  # steps are epochs
        with _constructor_errors("pruner"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the Wilcoxon pruner is 'experimental'
            return PRUNERS.build(config)

    def grid_space(self) -> dict[str, list[Any]]:
        if self._grid is None:
            for key, param in self.params.items():
                if param.when:
                    raise SpecError(f"space key '{key}': the grid sampler cannot search conditional parameters "
                                    f"(it has `when`); use the tpe or random sampler, or drop the condition.")
            self._grid = {key: param.grid(key) for key, param in self.params.items()}
        return self._grid

    # --- storage -------------------------------------------------------------------------

    def payload(self) -> dict[str, Any]:
        """Everything a worker anywhere needs, as JSON (an Optuna study user attribute)."""
        return {"name": self.name, "description": self.description, "base": self.base,
                "space": {k: p.model_dump(exclude_defaults=True) for k, p in self.params.items()},
                "objectives": [o.model_dump() for o in self.objectives], "sampler": self.sampler,
                "pruner": self.pruner, "trials": self.n_trials}

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> StudyDef:
        return cls(payload["name"], payload["base"], {k: Param.model_validate(v) for k, v in payload["space"].items()},
                   [Objective.model_validate(o) for o in payload["objectives"]], dict(payload["sampler"]),
                   dict(payload["pruner"]), int(payload["trials"]), payload.get("description", ""))

    def definition_hash(self) -> str:
        """What makes trials comparable: base spec, space and objectives (not budget or sampler)."""
        d = self.payload()
        blob = json.dumps({k: d[k] for k in ("base", "space", "objectives")}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


@contextmanager
def _constructor_errors(where: str) -> Iterator[None]:
    try:
        yield
    except SpecError as e:
        raise SpecError(f"{where}: {e}") from None
    except (ValueError, TypeError) as e:
        raise SpecError(f"{where}: {e}") from None


# --- spec editing ---------------------------------------------------------------------------

def assign(raw: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of ``raw`` with ``key`` set; a new block ``type`` keeps only the keys it accepts."""
    out = copy.deepcopy(raw)
    parts = key.split(".")
    if parts[-1] == "type" and len(parts) > 1:
        block = get_dotted(out, ".".join(parts[:-1]))
        if isinstance(block, dict) and block.get("type") != value:
            set_dotted(out, ".".join(parts[:-1]), _retyped(block, value, parts[:-1]))
            return out
    set_dotted(out, key, value)
    return out


def get_dotted(raw: Any, key: str) -> Any:
    node = raw
    for part in key.split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, Mapping) and part in node:
            node = node[part]
        else:
            return MISSING
    return node


def _retyped(block: Mapping[str, Any], new_type: Any, path: list[str]) -> dict[str, Any]:
    registry = _registry_for(path)
    if registry is None or new_type not in registry:
        return {"type": new_type}
    accepted = registry.params(new_type)
    return {"type": new_type, **{k: v for k, v in block.items() if k != "type" and k in accepted}}


def _registry_for(path: list[str]) -> Any:
    from ablate.registry import AUGMENTATIONS, LOSSES, MODELS, OPTIMIZERS, SCHEDULES, model_slots

    if len(path) == 1:
        return {"model": MODELS, "loss": LOSSES, "optimizer": OPTIMIZERS, "schedule": SCHEDULES}.get(path[0])
    if path[0] == "augment" and len(path) == 2:
        return AUGMENTATIONS
    if path[0] == "model":
        return model_slots().get(path[-1])  # the branch's slots and the builders' own (fusion, global_branch)
    return None


def _plain(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def as_list(v: Any) -> list[Any]:
    return list(v) if isinstance(v, (list, tuple)) else [v]


# --- samplers and pruners -------------------------------------------------------------------

def _registries() -> tuple[Any, Any]:
    import optuna

    from ablate.registry import Registry

    samplers, pruners = Registry("sampler"), Registry("pruner")
    for name, cls in (("tpe", optuna.samplers.TPESampler), ("random", optuna.samplers.RandomSampler),
                      ("grid", optuna.samplers.GridSampler), ("nsga2", optuna.samplers.NSGAIISampler)):
        samplers.register(name)(cls)
    for name, cls in (("median", optuna.pruners.MedianPruner), ("percentile", optuna.pruners.PercentilePruner),
                      ("hyperband", optuna.pruners.HyperbandPruner),
                      ("successive_halving", optuna.pruners.SuccessiveHalvingPruner),
                      ("wilcoxon", optuna.pruners.WilcoxonPruner), ("threshold", optuna.pruners.ThresholdPruner),
                      ("none", optuna.pruners.NopPruner)):
        pruners.register(name)(cls)
    return samplers, pruners


# Optuna's own samplers and pruners under short names; the file's keys are checked against
# their constructors, so a typo names the sampler and its allowed keys.
SAMPLERS, PRUNERS = _registries()
