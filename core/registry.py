"""One small registry per component kind.

A block is registered with a decorator and built from a config dict::

    @SKIPS.register("concat")
    class ConcatSkip(keras.layers.Layer): ...

    layer = SKIPS.build({"type": "concat"})

A spec may set exactly the keys the block uses: the constructor's arguments, less the ones the
builder supplies for the whole kind (``supplied``, e.g. ``filters``), less any an entry declares
ignored next to another key (``ignored_with``). A constructor must not accept an argument it
ignores "for a uniform interface": the builder passes optional arguments only to blocks whose
constructor names them (see ``core.models.unet.takes``).

Registering a ``keras.layers.Layer`` (or any class with ``get_config``) also makes it
Keras-serializable under the package ``ablate``, so a saved ``.keras`` model reloads in a
fresh process after ``import core``.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import keras

from core.errors import SpecError

T = TypeVar("T")


class Registry:
    """A named collection of buildable components of one kind.

    Args:
        kind: what the components are, used in messages ("skip", "loss").
        supplied: constructor arguments the builder passes to every component of this kind
            (``filters``, ``kernel_regularizer``); a spec may not set them.

    Example:
        >>> LOSSES = Registry("loss")
        >>> @LOSSES.register("ce")
        ... class CrossEntropy: ...
        >>> LOSSES.build({"type": "ce"})
    """

    def __init__(self, kind: str, supplied: Iterable[str] = ()) -> None:
        self.kind = kind
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
                obj = keras.saving.register_keras_serializable(
                    package="ablate", name=f"{self.kind}.{name}"
                )(obj)
            self._entries[name] = obj  # type: ignore[assignment]
            self._nested[name] = dict(nested or {})
            self._ignored_with[name] = {k: tuple(v) for k, v in (ignored_with or {}).items()}
            return obj

        return decorator

    def get(self, name: str) -> Callable[..., Any]:
        """The registered class or function for ``name``; unknown names raise with a hint."""
        if name not in self._entries:
            known = ", ".join(sorted(self._entries)) or "(none)"
            close = difflib.get_close_matches(str(name), list(self._entries), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise SpecError(f"Unknown {self.kind} '{name}'. Known: {known}.{hint}")
        return self._entries[name]

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
                f"{', '.join(sorted(self._entries))}); got {config!r}."
            )
        kwargs = dict(config)
        return str(kwargs.pop("type")), kwargs

    def keys(self, name: str) -> list[str]:
        """The keys a spec may set on ``name``: its constructor's arguments less the supplied ones."""
        return sorted(_accepted_params(self.get(name)) - set(self.supplied))

    def validate(self, config: Mapping[str, Any] | str, where: str = "", reserved: tuple[str, ...] = ()) -> None:
        """Checks the name and every key against the constructor's signature, recursively.

        A key is an error if the constructor does not take it, if the caller or the builder
        supplies it (``reserved``, ``supplied``) or if the block ignores it next to another key
        (``ignored_with``). Errors name the key, the place, the block type and the allowed keys.
        """
        name, kwargs = self.split(config)
        target = self.get(name)
        where = where or self.kind
        taken = set(reserved) | set(self.supplied)
        allowed = sorted(_accepted_params(target) - taken)
        defaults = _defaults(target)
        for key, value in kwargs.items():
            if key not in allowed:
                why = ": the builder supplies it" if key in self.supplied else ""
                raise SpecError(
                    f"Unknown key '{key}' in {where} (type '{name}'){why}. "
                    f"Allowed keys: {', '.join(allowed) or '(none)'}."
                )
            _check_scalar(f"{where}.{key}", value, defaults.get(key, inspect.Parameter.empty))
            sub = self._nested[name].get(key)
            if sub is not None:
                if isinstance(value, list):
                    for i, item in enumerate(value):
                        sub.validate(item, where=f"{where}.{key}[{i}]")
                elif value is not None:
                    sub.validate(value, where=f"{where}.{key}")
        self._check_ignored(name, kwargs, where)

    def _check_ignored(self, name: str, kwargs: Mapping[str, Any], where: str) -> None:
        for key, others in self._ignored_with[name].items():
            if kwargs.get(key) is None:
                continue
            for other in others:
                if other in kwargs:
                    raise SpecError(
                        f"Key '{other}' in {where} (type '{name}') is ignored when '{key}' is set; "
                        f"remove one of them."
                    )

    def names(self) -> list[str]:
        return sorted(self._entries)

    def summary(self, name: str) -> str:
        """First line of the docstring of a registered component."""
        doc = inspect.getdoc(self._entries[name]) or ""
        return doc.splitlines()[0] if doc else ""

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', obj)}"


_GENERIC_LAYER_KWARGS = {"name", "dtype", "trainable", "autocast", "input_shape", "input_dim", "activity_regularizer"}


def _defaults(target: Callable[..., Any]) -> dict[str, Any]:
    fn = target.__init__ if inspect.isclass(target) else target  # type: ignore[misc]
    return {p.name: p.default for p in inspect.signature(fn).parameters.values()}


def _check_scalar(where: str, value: Any, default: Any) -> None:
    """A value whose default is a number or a bool must be one too (``learning_rate=fast`` is caught here)."""
    if value is None or default is None or default is inspect.Parameter.empty:
        return
    if isinstance(default, bool):
        ok = isinstance(value, bool)
        expected = "true or false"
    elif isinstance(default, (int, float)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        expected = "a number"
    else:
        return
    if not ok:
        raise SpecError(f"Invalid value for '{where}': expected {expected} (default {default!r}), got {value!r}.")


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
# kernel penalty, see core.models.unet.Branch.block and the coarse-fine fusion).
_WIDTH = ("filters", "kernel_regularizer")
MODELS = Registry("model", supplied=("num_classes", "input_shape"))
CONV_BLOCKS = Registry("conv block", supplied=_WIDTH)
SKIPS = Registry("skip")
BOTTLENECKS = Registry("bottleneck", supplied=_WIDTH)
UPSAMPLERS = Registry("upsampler", supplied=_WIDTH)
REGULARIZERS = Registry("regularizer")
FUSIONS = Registry("fusion", supplied=_WIDTH)
BRANCHES = Registry("branch")  # the global branch of the coarse-fine model
LOSSES = Registry("loss")
AUGMENTATIONS = Registry("augmentation")
OPTIMIZERS = Registry("optimizer")
SCHEDULES = Registry("schedule")

ALL_REGISTRIES: dict[str, Registry] = {
    "models": MODELS,
    "conv_blocks": CONV_BLOCKS,
    "skips": SKIPS,
    "bottlenecks": BOTTLENECKS,
    "upsamplers": UPSAMPLERS,
    "regularizers": REGULARIZERS,
    "fusions": FUSIONS,
    "branches": BRANCHES,
    "losses": LOSSES,
    "augmentations": AUGMENTATIONS,
    "optimizers": OPTIMIZERS,
    "schedules": SCHEDULES,
}
