"""One small registry per component kind.

A block is registered with a decorator and built from a config dict::

    @SKIPS.register("concat")
    class ConcatSkip(keras.layers.Layer): ...

    layer = SKIPS.build({"type": "concat"})

A spec may set exactly the keys the block uses: the constructor's arguments, less the ones the
builder supplies for the whole kind (``supplied``, e.g. ``filters``), less any an entry declares
ignored next to another key (``ignored_with``). A constructor must not accept an argument it
ignores "for a uniform interface": the builder passes optional arguments only to blocks whose
constructor names them (``Registry.takes``, used by ``ablate.models.unet.Branch.block``).

Registering a ``keras.layers.Layer`` (or any class with ``get_config``) also makes it
Keras-serializable under the package ``ablate``, so a saved ``.keras`` model reloads in a
fresh process after ``ablate.load_all()``.

Loading is lazy, so that commands which only read specs start without TensorFlow: the block
modules (which import Keras) are imported by ``load_all()``, which the first ``get`` or ``build``
calls. Until then, checking a spec (names, keys, value types and ranges) reads each entry's
schema from ``core/registry_manifest.json``, a snapshot of the registries written by
``python -m ablate.manifest`` (``make manifest``); ``tests/test_registry.py`` fails when the
snapshot and the code disagree. Once the modules are loaded, the live entries are used.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from ablate.errors import SpecError, excerpt

T = TypeVar("T")

# The modules that register every shipped component (each imports Keras or TensorFlow).
IMPLEMENTATIONS = tuple(f"ablate.{m}" for m in ("augment", "blocks", "losses", "metrics", "models", "optim"))
MANIFEST = Path(__file__).with_name("registry_manifest.json")
_NO_DEFAULT = {"__no_default__": True}  # a default the manifest cannot hold as JSON (an object)


def load_all() -> None:
    """Imports every implementation module, registering all shipped components (and Keras classes).

    Call it before ``keras.saving.load_model`` on a model of this project in a fresh process.
    Cheap after the first call.
    """
    for module in IMPLEMENTATIONS:
        importlib.import_module(module)


def loaded() -> bool:
    """Whether the implementation modules (and so TensorFlow) are imported in this process."""
    import sys

    return all(module in sys.modules for module in IMPLEMENTATIONS)


@dataclass(frozen=True)
class EntrySchema:
    """What a spec may say about one registered component, without importing it.

    Args:
        params: the constructor's named arguments (``**kwargs`` and generic Keras ones left out).
        defaults: each argument's default (``inspect.Parameter.empty`` when it has none).
        nested: arguments whose values are block configs of another registry (by registry key).
        ignored_with: ``{key: other keys}`` the component ignores when ``key`` is set.
        summary: the first line of its docstring.
        required: keys a spec must set (a model's required slots: ``Slot.required``).
        registries: the live registry of each ``nested`` key, where the entry declares its schema
            (a model builder: its slots may come from a registry outside ``ALL_REGISTRIES``); not
            part of the manifest.
    """

    params: frozenset[str]
    defaults: dict[str, Any] = field(default_factory=dict)
    nested: dict[str, str] = field(default_factory=dict)
    ignored_with: dict[str, tuple[str, ...]] = field(default_factory=dict)
    summary: str = ""
    required: frozenset[str] = frozenset()
    registries: Mapping[str, Registry] = field(default_factory=dict, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        out = {
            "params": sorted(self.params),
            "defaults": {k: _json_default(v) for k, v in sorted(self.defaults.items())},
            "nested": dict(sorted(self.nested.items())),
            "ignored_with": {k: list(v) for k, v in sorted(self.ignored_with.items())},
            "summary": self.summary,
        }
        return {**out, "required": sorted(self.required)} if self.required else out  # no shipped entry has one

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> EntrySchema:
        return cls(
            params=frozenset(d["params"]),
            defaults={k: _from_json_default(v) for k, v in d["defaults"].items()},
            nested=dict(d["nested"]),
            ignored_with={k: tuple(v) for k, v in d["ignored_with"].items()},
            summary=d["summary"],
            required=frozenset(d.get("required", ())),
        )


def _json_default(value: Any) -> Any:
    if value is inspect.Parameter.empty:
        return {"__empty__": True}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, (bool, int, float, str)) for v in value):
        return list(value)
    return _NO_DEFAULT


def _from_json_default(value: Any) -> Any:
    if isinstance(value, dict) and value.get("__empty__"):
        return inspect.Parameter.empty
    if isinstance(value, dict) and value.get("__no_default__"):
        return object()  # some object: no scalar rule applies to it
    return value


@runtime_checkable
class DeclaresSchema(Protocol):
    """A registered entry that declares its keys itself (a ``ModelBuilder``, the coarse-fine model's
    ``GlobalUNet``) instead of having them read from its constructor's signature."""

    def entry_schema(self) -> EntrySchema: ...


@cache
def _manifest() -> dict[str, dict[str, Any]]:
    """The snapshot of every registry's schemas (``{registry key: {name: schema json}}``)."""
    try:
        return json.loads(MANIFEST.read_text())  # type: ignore[no-any-return]
    except FileNotFoundError:
        return {}


class Registry:
    """A named collection of buildable components of one kind.

    Args:
        kind: what the components are, used in messages ("skip", "loss").
        supplied: constructor arguments the builder passes to every component of this kind
            (``filters``, ``kernel_regularizer``); a spec may not set them.

    Example:
        >>> LOSSES = Registry("loss", key="losses")
        >>> @LOSSES.register("ce")
        ... class CrossEntropy: ...
        >>> LOSSES.build({"type": "ce"})
    """

    def __init__(self, kind: str, supplied: Iterable[str] = (), key: str = "") -> None:
        self.kind = kind
        self.key = key or kind.replace(" ", "_") + "s"  # its name in ALL_REGISTRIES and the manifest
        self.supplied = tuple(supplied)
        self._entries: dict[str, Callable[..., Any]] = {}
        # Nested block parameters: {component name: {param name: Registry}}; validated recursively.
        self._nested: dict[str, dict[str, Registry]] = {}
        # {component name: {key: keys the component ignores when that key is set (not None)}}.
        self._ignored_with: dict[str, dict[str, tuple[str, ...]]] = {}

    def register(
        self,
        name: str,
        nested: Mapping[str, Registry] | None = None,
        ignored_with: Mapping[str, Iterable[str]] | None = None,
    ) -> Callable[[T], T]:
        """Decorator that adds a class or builder function under ``name``.

        Args:
            name: the short name specs use (``{"type": name}``).
            nested: parameters whose values are themselves block configs of another registry.
            ignored_with: ``{key: other keys}``: when ``key`` is set (not None), the component
                ignores the other keys, so a spec giving both is an error.
        """

        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(
                    f"Duplicate {self.kind} '{name}': already registered by "
                    f"{_qualname(self._entries[name])}, now also by {_qualname(obj)}."
                )
            if inspect.isclass(obj) and hasattr(obj, "get_config"):
                import keras  # only block modules register Keras classes, and they have imported it

                obj = keras.saving.register_keras_serializable(
                    package="ablate", name=f"{self.kind}.{name}"
                )(obj)
            self._entries[name] = obj  # type: ignore[assignment]
            self._nested[name] = dict(nested or {})
            self._ignored_with[name] = {k: tuple(v) for k, v in (ignored_with or {}).items()}
            return obj

        return decorator

    def get(self, name: str) -> Callable[..., Any]:
        """The registered class or function for ``name`` (loading the implementations first);
        unknown names raise with a hint."""
        if name not in self._entries and not loaded():
            load_all()
        if name not in self._entries:
            self._unknown(name)
        return self._entries[name]

    def schema(self, name: str) -> EntrySchema:
        """What a spec may set on ``name``: from the live entry once loaded, else the manifest."""
        if name in self._entries:
            return self._live_schema(name)
        snapshot = _manifest().get(self.key, {})
        if name in snapshot and not loaded():
            return EntrySchema.from_json(snapshot[name])
        self.get(name)  # loads the implementations, or raises for an unknown name
        return self._live_schema(name)

    def _live_schema(self, name: str) -> EntrySchema:
        target = self._entries[name]
        if isinstance(target, DeclaresSchema):  # a class whose classmethod entry_schema declares its keys
            return target.entry_schema()
        doc = inspect.getdoc(target) or ""
        return EntrySchema(
            params=frozenset(_accepted_params(target)),
            defaults={k: v for k, v in _defaults(target).items() if k in _accepted_params(target)},
            nested={k: r.key for k, r in self._nested[name].items()},
            ignored_with=dict(self._ignored_with[name]),
            summary=doc.splitlines()[0] if doc else "",
        )

    def _unknown(self, name: str) -> None:
        known_names = self.names()
        known = ", ".join(known_names) or "(none)"
        close = difflib.get_close_matches(str(name), known_names, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise SpecError(f"Unknown {self.kind} {excerpt(str(name))}. Known: {known}.{hint}")

    def build(self, config: Mapping[str, Any] | str, **extra: Any) -> Any:
        """Builds a component from ``{"type": name, **kwargs}`` (or a bare name).

        ``extra`` keyword arguments are supplied by the caller (e.g. ``filters``) and are
        overridden by nothing: the spec may not set them.
        """
        name, kwargs = self.split(config)
        self.validate(config, reserved=tuple(extra))
        return self.get(name)(**kwargs, **extra)

    def split(self, config: Mapping[str, Any] | str) -> tuple[str, dict[str, Any]]:
        """Splits a config into its type name and keyword arguments."""
        if isinstance(config, str):
            return config, {}
        if not isinstance(config, Mapping) or "type" not in config:
            raise SpecError(
                f"A {self.kind} must be a mapping with a 'type' key (one of: "
                f"{', '.join(self.names())}); got {excerpt(config)}."
            )
        kwargs = dict(config)
        return str(kwargs.pop("type")), kwargs

    def keys(self, name: str) -> list[str]:
        """The keys a spec may set on ``name``: its constructor's arguments less the supplied ones."""
        return sorted(self.params(name) - set(self.supplied))

    def params(self, name: str) -> frozenset[str]:
        """Every named argument of ``name``'s constructor (supplied ones included)."""
        return self.schema(name).params

    def validate(self, config: Mapping[str, Any] | str, where: str = "", reserved: tuple[str, ...] = ()) -> None:
        """Checks the name and every key against the constructor's signature, recursively.

        A key is an error if the constructor does not take it, if the caller or the builder
        supplies it (``reserved``, ``supplied``) or if the block ignores it next to another key
        (``ignored_with``); a required key (``EntrySchema.required``) left out or null is one too.
        Errors name the key, the place, the block type and the allowed keys (or the choices).
        """
        name, kwargs = self.split(config)
        if name not in self:
            self._unknown(name)
        schema = self.schema(name)
        where = where or self.kind
        taken = set(reserved) | set(self.supplied)
        allowed = sorted(schema.params - taken)
        defaults = schema.defaults
        for key, value in kwargs.items():
            if key not in allowed:
                why = ": the builder supplies it" if key in self.supplied else ""
                close = [] if why else difflib.get_close_matches(str(key), allowed, n=1)
                hint = f" Did you mean '{close[0]}'?" if close else ""
                raise SpecError(
                    f"Unknown key {excerpt(str(key))} in {where} (type '{name}'){why}. "
                    f"Allowed keys: {', '.join(allowed) or '(none)'}.{hint}"
                )
            _check_scalar(f"{where}.{key}", value, defaults.get(key, inspect.Parameter.empty))
            sub = (self._nested.get(name, {}).get(key) or schema.registries.get(key)
                   or _VALIDATORS.get(schema.nested.get(key, "")))
            if sub is not None:
                if isinstance(value, list):
                    for i, item in enumerate(value):
                        sub.validate(item, where=f"{where}.{key}[{i}]")
                elif value is not None:
                    sub.validate(value, where=f"{where}.{key}")
        for key in sorted(schema.required):
            if kwargs.get(key) is None:
                raise SpecError(missing(f"{where}.{key}", schema.registries.get(key)
                                        or _VALIDATORS.get(schema.nested.get(key, ""))))
        self._check_ignored(name, schema, kwargs, where)

    def _check_ignored(self, name: str, schema: EntrySchema, kwargs: Mapping[str, Any], where: str) -> None:
        for key, others in schema.ignored_with.items():
            if kwargs.get(key) is None:
                continue
            for other in others:
                if other in kwargs:
                    raise SpecError(
                        f"Key '{other}' in {where} (type '{name}') is ignored when '{key}' is set; "
                        f"remove one of them."
                    )

    def names(self) -> list[str]:
        """Every registered name: the live entries, and the manifest's until the modules load."""
        snapshot = () if loaded() else _manifest().get(self.key, {})
        return sorted(set(self._entries) | set(snapshot))

    def summary(self, name: str) -> str:
        """First line of the docstring of a registered component."""
        return self.schema(name).summary

    def takes(self, config: Mapping[str, Any] | str, arg: str) -> bool:
        """Whether the block ``config`` names accepts ``arg`` (e.g. ``drop_path``), from its schema."""
        return arg in self.params(self.split(config)[0])

    def __contains__(self, name: object) -> bool:
        return name in self._entries or (not loaded() and name in _manifest().get(self.key, {}))

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def snapshot(self) -> dict[str, Any]:
        """Every live entry's schema as JSON (what the manifest holds for this registry)."""
        return {name: self._live_schema(name).to_json() for name in sorted(self._entries)}

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


def missing(where: str, registry: Registry | None) -> str:
    """The message for a required key left out: its place and, for a block, its registry's choices."""
    if registry is None:
        return f"{where}: required; expected a value."
    names = registry.names()
    return (f"{where}: required; expected a block, one of {', '.join(names)} "
            f"(e.g. {{type: {names[0] if names else '...'}}}).")


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', obj)}"


_GENERIC_LAYER_KWARGS = {"name", "dtype", "trainable", "autocast", "input_shape", "input_dim", "activity_regularizer"}


def _defaults(target: Callable[..., Any]) -> dict[str, Any]:
    fn = target.__init__ if inspect.isclass(target) else target  # type: ignore[misc]
    return {p.name: p.default for p in inspect.signature(fn).parameters.values()}


def _check_scalar(where: str, value: Any, default: Any) -> None:
    """A value whose default is a bool must be one too; numbers and named keys are checked by
    ``ablate.domains`` (finite, strict ints, ranges such as ``learning_rate > 0``), from the default
    alone, so that a bad value is refused when the spec is read, not mid-run or never."""
    from ablate.domains import check_keyword, show

    if isinstance(default, bool):
        if value is None:
            return
        if not isinstance(value, bool):
            raise SpecError(f"Invalid value for '{where}': expected true or false (default {default!r}), "
                            f"got {show(value)}.")
        return
    check_keyword(where, value, None if default is inspect.Parameter.empty else default)


def _accepted_params(target: Callable[..., Any]) -> set[str]:
    """Names the constructor accepts by name (``**kwargs`` forwarded to Keras is not counted)."""
    fn = target.__init__ if inspect.isclass(target) else target  # type: ignore[misc]
    sig = inspect.signature(fn)
    names = {
        p.name
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"
    }
    return names - _GENERIC_LAYER_KWARGS


# One registry per component kind. Modules under core/ register into these.
# ``supplied``: what the builders pass (the task's classes and input shape; every block's width and
# kernel penalty, see ablate.models.unet.Branch.block and the coarse-fine fusion).
_WIDTH = ("filters", "kernel_regularizer")
MODELS = Registry("model", supplied=("num_classes", "input_shape"))
CONV_BLOCKS = Registry("conv block", supplied=_WIDTH)
SKIPS = Registry("skip")
BOTTLENECKS = Registry("bottleneck", supplied=_WIDTH)
UPSAMPLERS = Registry("upsampler", supplied=_WIDTH)
REGULARIZERS = Registry("regularizer")
FUSIONS = Registry("fusion", supplied=_WIDTH)
BRANCHES = Registry("branch", key="branches")  # the global branch of the coarse-fine model
DEFAULT_BRANCH = "unet"  # the BRANCHES entry a coarse-fine spec that leaves its global branch out gets
LOSSES = Registry("loss", key="losses")
AUGMENTATIONS = Registry("augmentation")
OPTIMIZERS = Registry("optimizer")
SCHEDULES = Registry("schedule")

ALL_REGISTRIES: dict[str, Registry] = {
    r.key: r
    for r in (MODELS, CONV_BLOCKS, SKIPS, BOTTLENECKS, UPSAMPLERS, REGULARIZERS, FUSIONS, BRANCHES,
              LOSSES, AUGMENTATIONS, OPTIMIZERS, SCHEDULES)
}


class _LossTerms(Registry):
    """Validates one ``{loss: {type: ...}, weight: w}`` term of a ``sum`` loss via ``LOSSES``.

    Not a registry of components: the ``nested`` target of the ``sum`` loss's ``terms``, kept
    here (free of TensorFlow) so that a term's loss is checked when the spec is read.
    """

    def validate(self, config: Mapping[str, Any] | str, where: str = "", reserved: tuple[str, ...] = ()) -> None:
        if not isinstance(config, Mapping) or "loss" not in config or set(config) - {"loss", "weight"}:
            raise SpecError(f"{where} must be a mapping {{loss: {{type: ...}}, weight: w}}; got {excerpt(config)}.")
        weight = config.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise SpecError(f"{where}.weight must be a number; got {excerpt(weight)}.")
        LOSSES.validate(config["loss"], where=f"{where}.loss")


LOSS_TERMS = _LossTerms("loss term", key="loss_terms")

# Every registry a manifest entry's ``nested`` key may name (the component registries, and the
# loss terms' validator).
_VALIDATORS: dict[str, Registry] = {**ALL_REGISTRIES, LOSS_TERMS.key: LOSS_TERMS}


# --- the model schema: one declaration of a U-Net branch's slots ------------------------------
#
# Every U-Net branch (the ``unet`` model, the local and global branches of ``coarse_fine``) is
# configured by the scalars and slots of ``BRANCH``. The builder (``ablate.models.unet``), the
# spec's validation (each builder's ``entry_schema``), the study space, ``ablate blocks`` and the
# tests read this one declaration: a new kind of slot is one ``Slot`` line plus its registry and
# blocks. A slot's ``role`` says where the builder puts its block:

STAGE = "stage"  # the block of every encoder and decoder stage, at the stage's width
AFTER_STAGE = "after_stage"  # a layer after every stage's block, at the stage's width (any number of slots)
BOTTOM = "bottom"  # the bottleneck, on the coarsest map
UP = "up"  # the up-sampling of every decoder step
MERGE = "merge"  # joins the up-sampled feature and the encoder's skipped one
POLICY = "policy"  # built once per branch: kernel penalty, dropout after stages, drop-path rate
ROLES = (STAGE, AFTER_STAGE, BOTTOM, UP, MERGE, POLICY)
SINGLE_ROLES = (STAGE, BOTTOM, UP, MERGE, POLICY)  # exactly one slot each


@dataclass(frozen=True)
class Slot:
    """One block slot of a branch.

    Args:
        key: the spec key (``model.skip``).
        registry: where its blocks are registered.
        role: where the builder puts the block (``STAGE``, ``AFTER_STAGE``, ...).
        default: the block used when the spec leaves the slot out; None: no block.
        required: the spec must set the slot (no default).
    """

    key: str
    registry: Registry
    role: str
    default: Mapping[str, Any] | None = None
    required: bool = False

    def resolve(self, config: Mapping[str, Any], where: str) -> Mapping[str, Any] | str | None:
        """The slot's block config in the branch section ``config`` (at ``where``), default filled in."""
        value = config.get(self.key)
        if value is not None:
            return value  # type: ignore[no-any-return]
        if self.required:  # the validator refuses it first; a global branch the spec leaves out is seen here
            raise SpecError(missing(f"{where}.{self.key}", self.registry))
        return None if self.default is None else dict(self.default)

    def choices(self) -> list[str]:
        """The block names a spec may give this slot."""
        return self.registry.names()

    def describe(self) -> str:
        """One line for ``ablate blocks``: role, default and choices."""
        default = "required" if self.required else f"default {self.default['type']}" if self.default else "optional"
        return f"{self.registry.kind}, {self.role}, {default}: {', '.join(self.choices())}"


class BranchSchema:
    """The scalars and block slots of one U-Net branch (``BRANCH``), and the entry schemas built from them.

    Example:
        >>> BRANCH.slot("skip").choices()
        ['add', 'attention', 'concat', ...]
        >>> with BRANCH.added(Slot("norm", NORMS, AFTER_STAGE)): ...  # a new slot kind, for a test
    """

    def __init__(self, scalars: Mapping[str, Any], slots: Iterable[Slot]) -> None:
        self.scalars = dict(scalars)  # key -> default
        self.slots: tuple[Slot, ...] = ()
        for slot in slots:
            self.add(slot)

    def add(self, slot: Slot) -> None:
        """Declares one more slot (its key new, its role known; one slot per single role)."""
        taken = {s.key for s in self.slots} | set(self.scalars)
        if slot.key in taken:
            raise ValueError(f"Duplicate branch slot '{slot.key}'; taken: {', '.join(sorted(taken))}.")
        if slot.role not in ROLES:
            raise ValueError(f"Slot '{slot.key}' has role '{slot.role}'; expected one of {', '.join(ROLES)}.")
        if slot.role in SINGLE_ROLES and self.at(slot.role):
            raise ValueError(f"Slot '{slot.key}': role '{slot.role}' is taken by '{self.at(slot.role)[0].key}'.")
        if slot.required and slot.default is not None:
            raise ValueError(f"Slot '{slot.key}' is required, so it has no default.")
        self.slots = (*self.slots, slot)

    def remove(self, key: str) -> None:
        self.slots = tuple(s for s in self.slots if s.key != key)

    @contextmanager
    def added(self, slot: Slot) -> Iterator[Slot]:
        """Declares ``slot`` for the duration of a ``with`` block (tests, experiments)."""
        self.add(slot)
        try:
            yield slot
        finally:
            self.remove(slot.key)

    def slot(self, key: str) -> Slot:
        return next(s for s in self.slots if s.key == key)

    def at(self, role: str) -> tuple[Slot, ...]:
        """The slots of ``role``, in declaration order."""
        return tuple(s for s in self.slots if s.role == role)

    def registries(self) -> dict[str, Registry]:
        """Slot key -> the registry of its blocks."""
        return {s.key: s.registry for s in self.slots}

    def entry_schema(self, summary: str, defaults: Mapping[str, Any] | None = None,
                     extra: Mapping[str, tuple[Any, Registry | None]] | None = None) -> EntrySchema:
        """The keys a builder of branches takes: the scalars (``defaults`` override their defaults), every
        slot (default None: the slot's own default), and the builder's ``extra`` keys (``key: (default,
        registry of its blocks or None)``)."""
        extra = dict(extra or {})
        slots = {s.key: (None, s.registry) for s in self.slots}
        keys: dict[str, tuple[Any, Registry | None]] = {
            **{k: (v, None) for k, v in {**self.scalars, **(defaults or {})}.items()}, **slots, **extra}
        nested = {k: r for k, (_, r) in keys.items() if r is not None}
        return EntrySchema(
            params=frozenset(keys),
            defaults={k: d for k, (d, _) in keys.items()},
            nested={k: r.key for k, r in nested.items()},
            summary=summary,
            required=frozenset(s.key for s in self.slots if s.required),
            registries=nested,
        )


BRANCH = BranchSchema(
    scalars={"depth": 3, "filters": 16, "width_mult": 1.0},
    slots=(
        Slot("conv", CONV_BLOCKS, STAGE, default={"type": "double"}),
        Slot("skip", SKIPS, MERGE, default={"type": "concat"}),
        Slot("bottleneck", BOTTLENECKS, BOTTOM, default={"type": "plain"}),
        Slot("upsample", UPSAMPLERS, UP, default={"type": "transpose"}),
        Slot("regularizer", REGULARIZERS, POLICY, default={"type": "none"}),
    ),
)


def model_slots() -> dict[str, Registry]:
    """Every block slot of a model section, by key: the branch's slots and each builder's own
    (``fusion``, ``global_branch``), from the registries' schemas (no TensorFlow)."""
    out: dict[str, Registry] = {}
    for name in MODELS.names():
        schema = MODELS.schema(name)
        for key, registry_key in schema.nested.items():
            registry = schema.registries.get(key) or _VALIDATORS.get(registry_key)
            if registry is not None:
                out.setdefault(key, registry)
    return {**out, **BRANCH.registries()}


def slot_choices() -> dict[str, list[str]]:
    """Slot key -> the block names a model section may put there (the study space's choices)."""
    return {key: registry.names() for key, registry in model_slots().items()}
