"""The experiment spec: the single source of truth for one training run.

A spec is loaded from YAML, patched with ``key=value`` dotted overrides, validated once
(types by pydantic, block names and their keys against the registries) and then drives
data loading, model building, training and tracking. ``Spec.identity()`` (what changes
training, with the data's content fingerprint in place of its path) gives a stable ``spec_hash``.

Example:
    >>> spec = load_spec("ablations/presets/unet-baseline.yaml", ["train.epochs=3"])
    >>> spec.train.epochs
    3
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ablate.errors import SpecError, excerpt, validation_error
from ablate.names import check_name
from ablate.task import MARS, Task, check_depth, task_from_dict
from ablate.yamlio import MAX_KEY, _SpecLoader, excerpt_text, load_file, load_text, shown  # noqa: F401 - _SpecLoader: re-exported

Block = dict[str, Any]  # {"type": registry name, **kwargs}
MAX_SEED = 2**32 - 1  # the largest seed NumPy's generators accept


class _Strict(BaseModel):
    # strict: `epochs: true` or `epochs: 3.5` is an error, not 1 or 3; no nan or inf anywhere.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True, allow_inf_nan=False)


class DataSpec(_Strict):
    # None means the embedded synthetic default (generated on first use, see ablate.data.default).
    path: str | None = None
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)  # the course split: 80/20
    limit: int | None = Field(None, ge=2)  # first N training pairs, for quick runs
    clean: bool = False  # drop the shared-outlier masks before splitting


class TrainSpec(_Strict):
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(32, ge=1)
    # Stop after this many epochs without a better val mIoU; 0 disables early stopping.
    early_stopping: int = Field(8, ge=0)
    mixed_precision: bool = False  # mixed_float16: a GPU switch, slower on CPU
    jit_compile: bool = False  # XLA: a GPU switch, compile time dominates short CPU runs
    shuffle_buffer: int = Field(1024, ge=1)


class TrackingSpec(_Strict):
    mask_every: int = Field(5, ge=0)  # log the mask grid every N epochs (0: only at the end)
    mask_images: int = Field(6, ge=1, le=16)  # fixed validation images shown in the grid
    log_model: bool = True


class Spec(_Strict):
    """A validated experiment spec."""

    name: str = "run"
    seed: int = Field(0, ge=0, le=MAX_SEED)  # NumPy and TensorFlow take seeds in [0, 2**32)
    # The task (ablate.task): input size and channels, classes, ignore label, scored classes. None: the
    # Mars task for the embedded default and course-layout files, else inferred from the data's file.
    task: Task | None = None
    data: DataSpec = DataSpec()
    model: Block = {"type": "unet"}
    loss: Block = {"type": "ce"}
    optimizer: Block = {"type": "adamw"}
    schedule: Block = {"type": "plateau"}
    train: TrainSpec = TrainSpec()
    augment: list[Block] = []
    tracking: TrackingSpec = TrackingSpec()

    @field_validator("model", "loss", "optimizer", "schedule")
    @classmethod
    def _has_type(cls, v: Block) -> Block:
        if "type" not in v:
            raise ValueError("needs a 'type' key naming a registered block")
        return v

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def canonical_json(self) -> str:
        """Sorted-key compact JSON: equal specs give equal strings."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def identity(self) -> dict[str, Any]:
        """What identifies the run: exactly the dict ``spec_hash`` hashes.

        Every section that changes training (seed, data, model, loss, optimizer, schedule, train,
        augment), with ``data.path`` replaced by ``data.fingerprint``, the identity of the data's
        content (``ablate.data.loader.data_identity``): the same file copied elsewhere is the same
        data, and a file rewritten at the same path is not. Left out: ``name`` and ``tracking``,
        which change what is logged, not what is trained, and ``task.colours``, which changes only
        figures. ``data.path: null`` (the synthetic default) is identified by its generator
        (``ablate.data.default.default_data_identity``); a missing file by ``missing:<absolute
        path>`` (the loader raises when a run loads it).

        Example:
            >>> spec.identity()["data"]
            {'val_fraction': 0.2, 'limit': None, 'clean': False, 'fingerprint': '3f0c2b9a1d7e5c44'}
        """
        out = self.to_dict()
        for key in _NOT_IDENTITY:
            out.pop(key)
        out.pop("task")
        trained = self.task.model_copy(update={"colours": None}) if self.task is not None else None  # colours: figures
        if trained is not None and trained != MARS:
            out["task"] = trained.to_dict()  # the Mars default, stated or not, keeps the hashes of specs before tasks
        data = out["data"]
        data["fingerprint"] = data_fingerprint(data.pop("path"))
        return out

    @property
    def spec_hash(self) -> str:
        """Stable 12-hex-digit hash of ``identity()``: the id of a run and of an ablation arm."""
        blob = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def flat(self) -> dict[str, str]:
        """Flattened ``dotted.key -> value`` params for MLflow (``task.*`` only when the spec sets one)."""
        out = self.to_dict()
        if self.task is None:
            out.pop("task")
        return flatten(out)

    def given_task(self) -> Task | None:
        """The task this spec fixes before any data is read (:func:`given_task`)."""
        return given_task(self.task, self.data.path)


# Sections that do not change training: a run's name and what it logs.
_NOT_IDENTITY = ("name", "tracking")


def data_fingerprint(path: str | None) -> str:
    """The identity of a spec's data: the content fingerprint of ``path``, or of the default set."""
    if path is None:
        from ablate.data.default import default_data_identity

        return default_data_identity()
    from ablate.data.loader import data_identity

    return data_identity(path)


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            for i, item in enumerate(value):
                out.update(flatten(item, f"{name}.{i}."))
            out[name] = ",".join(str(v.get("type", "?")) for v in value)
        else:
            out[name] = json.dumps(value) if isinstance(value, (list, type(None))) else str(value)
    return out


def parse_value(text: str) -> Any:
    """Parses an override's value as YAML (``3`` -> int, ``[a, b]`` -> list, ``null``); text that is
    not YAML stays a string. The reader's limits apply (see ``ablate.yamlio``)."""
    try:
        return load_text(text, f"Override value {excerpt(text, 40)}")
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Returns a copy of ``raw`` with ``a.b.c=value`` overrides applied."""
    out = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise SpecError(f"Override {excerpt(item)} is not of the form key=value (e.g. train.epochs=3).")
        key, _, text = item.partition("=")
        if len(key) > MAX_KEY:
            raise SpecError(f"Override key {excerpt(key)} is {len(key)} characters long; expected a dotted key "
                            f"of at most {MAX_KEY} (e.g. train.epochs).")
        set_dotted(out, key.strip(), parse_value(text))
    return out


def set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node: Any = d
    for part in parts[:-1]:
        if isinstance(node, list):
            node = node[_list_index(part, key)]
            continue
        if part not in node or node[part] is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, (dict, list)):
            raise SpecError(f"Override '{key}': '{part}' is a value, not a section.")
    if isinstance(node, list):
        node[_list_index(parts[-1], key)] = value
    elif isinstance(value, dict) and parts[-1] in node and isinstance(node[parts[-1]], dict) and "type" in value:
        node[parts[-1]] = value  # a new block replaces the old one, keys and all
    else:
        node[parts[-1]] = value


def _list_index(part: str, key: str) -> int:
    if not part.isdigit():
        raise SpecError(f"Override '{key}': '{part}' should be a list index.")
    return int(part)


def deep_merge(base: Mapping[str, Any], delta: Mapping[str, Any]) -> dict[str, Any]:
    """Merges ``delta`` into a copy of ``base``. A block with a new ``type`` replaces the old
    block whole (its old kwargs would not fit the new constructor)."""
    out = copy.deepcopy(dict(base))
    for key, value in delta.items():
        old = out.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            if "type" in value and value.get("type") != old.get("type"):
                out[key] = copy.deepcopy(dict(value))
            else:
                out[key] = deep_merge(old, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# What each kind of file looks like, for the messages that say what was expected.
_EXAMPLES = {"Spec file": "ablations/presets/unet-baseline.yaml", "Ablation file": "ablations/skip_connections.yaml",
             "Study file": "studies/architecture.yaml"}
MAX_BASE_CHAIN = 8  # files in one `base:` chain (the presets use at most 4)


def read_yaml(path: str | Path, what: str = "Spec file") -> dict[str, Any]:
    """Reads a YAML file that holds a mapping, through ``ablate.yamlio`` (size, encoding, duplicate keys,
    aliases, depth). An empty file is an error, not the default spec: it is almost always a mistake.
    ``what`` ("Spec file", "Ablation file", "Study file") starts every message."""
    p = Path(path)
    example = _EXAMPLES.get(what, _EXAMPLES["Spec file"])
    if not p.is_file():
        raise SpecError(f"{what} '{shown(p)}' not found; expected a YAML file (see {example}).")
    raw = load_file(p, what)
    if raw is None:
        raise SpecError(f"{what} '{shown(p)}' is empty; expected a YAML mapping of keys like {example}.")
    if not isinstance(raw, dict):
        raise SpecError(f"{what} '{shown(p)}' must hold a mapping at the top level, got {type(raw).__name__}; "
                        f"expected keys like {example}.")
    return raw


def resolve_base(raw: dict[str, Any], origin: Path | None, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Resolves ``base: other.yaml`` (relative to the file, else to the working folder) by merging
    onto that file, and that file's own ``base:`` in turn. ``chain`` holds the files read so far:
    a file that comes back (a.yaml -> b.yaml -> a.yaml) or a chain over ``MAX_BASE_CHAIN`` files
    is a SpecError naming the chain, instead of a RecursionError."""
    if "base" not in raw:
        return raw
    raw = dict(raw)
    base_ref = raw.pop("base")
    if not isinstance(base_ref, str) or not base_ref.strip():
        where = f"Spec file '{shown(origin)}'" if origin is not None else "The spec"
        raise SpecError(f"{where}: 'base' must name a spec file (e.g. base: unet-baseline.yaml), "
                        f"got {excerpt(base_ref)}.")
    base_path = Path(base_ref)
    if origin is not None and not base_path.is_absolute():
        candidate = origin.parent / base_path
        base_path = candidate if candidate.exists() else Path(base_ref)
    chain = (*(chain or ((origin,) if origin is not None else ())), base_path)
    _check_chain(chain)
    base_raw = resolve_base(read_yaml(base_path), base_path, chain)
    return deep_merge(base_raw, raw)


def _check_chain(chain: tuple[Path, ...]) -> None:
    resolved = [p.resolve() for p in chain]
    text = excerpt_text(" -> ".join(excerpt_text(p.name, 40) for p in chain), 200)
    if resolved[-1] in resolved[:-1]:
        raise SpecError(f"The `base:` chain {text} is a cycle; expected each file once, the last without `base:`.")
    if len(chain) > MAX_BASE_CHAIN:
        raise SpecError(f"The `base:` chain {text} is longer than {MAX_BASE_CHAIN} files; "
                        f"expected a short chain (merge some of its files).")


def load_spec(source: str | Path | Mapping[str, Any], overrides: Iterable[str] = ()) -> Spec:
    """Loads, overrides and validates a spec from a YAML file or a mapping."""
    if isinstance(source, Mapping):
        raw = resolve_base(dict(source), None)
    else:
        raw = resolve_base(read_yaml(source), Path(source))
        raw.setdefault("name", Path(source).stem)
    return validate(apply_overrides(raw, overrides))


def validate(raw: Mapping[str, Any]) -> Spec:
    """Validates types (pydantic) and block names/keys (registries)."""
    try:
        spec = Spec.model_validate(dict(raw))
    except ValidationError as e:
        raise validation_error(e, Spec) from None
    check_name(spec.name, "Spec name")  # it names MLflow runs, and experiments in ablations and studies
    _validate_blocks(spec)
    return spec


def _validate_blocks(spec: Spec) -> None:
    """Names, keys and value types of every block, from the registries' schemas (no TensorFlow).

    The model section's keys and slots are its builder's ``entry_schema`` (``ablate.registry.BRANCH``
    and the builder's own keys), read from the manifest until TensorFlow is loaded. A builder's own
    checks, which need its blocks, are ``check_buildable``'s.
    """
    from ablate import registry as R

    R.MODELS.validate(spec.model, where="model")  # num_classes and input_shape: supplied by the task
    schema = R.MODELS.schema(spec.model["type"])
    task = spec.given_task()  # None: the data's file decides the size, checked when the model is built
    if "depth" in schema.params and task is not None:  # down-samplings must divide the input size
        check_depth(spec.model.get("depth", schema.defaults.get("depth")), task.height, task.width)
    R.LOSSES.validate(spec.loss, where="loss")
    R.OPTIMIZERS.validate(spec.optimizer, where="optimizer")
    R.SCHEDULES.validate(spec.schedule, where="schedule")
    for i, aug in enumerate(spec.augment):
        R.AUGMENTATIONS.validate(aug, where=f"augment[{i}]")
        if task is None:
            continue  # the data file's task: the run checks these once the file is read (Policy)
        if aug["type"] == "copy_paste":  # the class it pastes, by name: one of the task's scored classes
            name = aug.get("class_name", R.AUGMENTATIONS.schema("copy_paste").defaults.get("class_name"))
            task.scored_class_id(name, where=f"augment[{i}].class_name")
        elif aug["type"] == "cutout":
            task.require_ignore_label("cutout", where=f"augment[{i}] (cutout)")


def given_task(task: Task | Mapping[str, Any] | None, data_path: str | None) -> Task | None:
    """The task a spec fixes before any data is read, from its ``task`` section and ``data.path``:
    that section, or the Mars task for the embedded synthetic default; None when it is to be
    inferred from ``data.path``'s file. A raw section (a study's base spec) is validated."""
    if task is not None:
        return task_from_dict(task)
    return MARS if data_path is None else None


def check_buildable(spec: Spec, task: Task | None = None) -> None:
    """The model builder's own spec-time checks for ``task``, which instantiate its blocks (this imports
    TensorFlow).

    ``validate`` checks what the registries' schemas can say without TensorFlow (names, keys,
    types, ranges), so ``ablate spec`` and ``ablation plan`` start fast. A constructor's own
    checks (``rates: [0]`` for an ASPP, a drop-path rate no block takes) and the sizes (every
    branch's depth against its input, the coarse-fine global branch at its down-sampled size) need
    the builder (``ModelBuilder.check``): every command that trains calls this before its first run
    (``run_spec``, and campaigns for every arm before queueing), and ``ablate spec --build`` on
    demand. Raises a SpecError naming the key. ``task`` None: :func:`checking_task`.

    A model section that passed for a task is remembered for this process (a campaign checks every
    arm before queueing and each run checks again: one check per architecture and task is enough).
    """
    from ablate import registry as R

    task = task or checking_task(spec)
    slots = ",".join(f"{s.key}:{s.role}:{s.required}" for s in R.BRANCH.slots)  # a slot declared since: check again
    key = (json.dumps(spec.model, sort_keys=True, default=str), task.to_json(), slots)
    if key in _BUILDABLE:
        return
    R.MODELS.get(spec.model["type"])().check(spec.model, task)
    _BUILDABLE.add(key)


_BUILDABLE: set[tuple[str, str, str]] = set()  # (model section, task, slots) that passed check_buildable here


def checking_task(spec: Spec) -> Task:
    """The task that checks ``spec``'s model before its data is read: ``spec.given_task()``, else the
    size and channels of its data file's images, read from the file's array headers.

    Those are all the builder's checks and the memory estimate need (depth against the size, the
    global branch at its down-sampled size); the classes are known once the masks are read, so the
    task stands in with two, and a run checks again with its loaded data's task. Checking against
    the Mars task instead refused a depth that fits a 256x256 file, and pruned every trial of a
    study on it.

    Raises:
        DataError: the data file is missing, unreadable or not a data file (the loader's line).
    """
    given = spec.given_task()
    if given is not None:
        return given
    from ablate.data.loader import header_shape

    height, width, channels = header_shape(spec.data.path)  # type: ignore[arg-type]  # given_task: a path
    if (height, width, channels) == MARS.input_shape:
        return MARS
    return Task(height=height, width=width, channels=channels, classes=["class_0", "class_1"], ignore_label=None)
