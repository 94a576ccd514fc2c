"""Registry contract: registration, lookup with suggestions, building and key validation."""

from __future__ import annotations

import re
from typing import Any

import keras
import pytest

from ablate import load_all
from ablate.cli.main import main
from ablate.errors import SpecError
from ablate.registry import (
    ALL_REGISTRIES,
    BRANCH,
    BRANCHES,
    MODELS,
    OPTIMIZERS,
    SKIPS,
    DeclaresSchema,
    EntrySchema,
    Registry,
)

load_all()  # registers every block (a saved model of this project reloads)


class Widget:
    """A buildable thing with two knobs."""

    def __init__(self, size: int = 1, colour: str = "red") -> None:
        self.size, self.colour = size, colour


class Sized:
    """A thing whose ``filters`` the caller supplies."""

    def __init__(self, filters: int, scale: float = 1.0) -> None:
        self.filters, self.scale = filters, scale


@pytest.fixture
def widgets() -> Registry:
    reg = Registry("widget")
    reg.register("plain")(Widget)
    reg.register("sized")(Sized)
    reg.register("plaid")(Widget)
    return reg


class Declared:
    """A thing that declares its keys itself; its constructor takes anything."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs

    @classmethod
    def entry_schema(cls) -> EntrySchema:
        return EntrySchema(params=frozenset({"knob"}), defaults={"knob": 2}, summary="declared")


def test_an_entry_that_declares_its_schema_is_read_through_the_protocol(widgets: Registry) -> None:
    widgets.register("declared")(Declared)
    assert isinstance(Declared, DeclaresSchema) and not isinstance(Widget, DeclaresSchema)
    assert widgets.schema("declared") == Declared.entry_schema()  # not the constructor's **kwargs
    widgets.validate({"type": "declared", "knob": 3})
    with pytest.raises(SpecError, match=r"Invalid value for 'widget\.knob': expected an integer \(default 2\)"):
        widgets.validate({"type": "declared", "knob": "x"})
    assert all(isinstance(MODELS.get(n), DeclaresSchema) for n in MODELS.names())
    assert all(isinstance(BRANCHES.get(n), DeclaresSchema) for n in BRANCHES.names())


def test_duplicate_name_raises_and_keeps_the_first(widgets: Registry) -> None:
    with pytest.raises(ValueError, match=r"Duplicate widget 'plain': already registered by .*Widget"):
        widgets.register("plain")(Sized)
    assert widgets.get("plain") is Widget


def test_duplicate_name_in_a_real_registry_raises() -> None:
    before = SKIPS.get("concat")
    with pytest.raises(ValueError, match=r"Duplicate skip 'concat'"):
        SKIPS.register("concat")(Widget)
    assert SKIPS.get("concat") is before


def test_unknown_name_lists_known_names_and_closest_match(widgets: Registry) -> None:
    message = r"^Unknown widget 'plian'\. Known: plaid, plain, sized\. Did you mean 'plain'\?$"
    with pytest.raises(SpecError, match=message):
        widgets.get("plian")


def test_unknown_name_without_a_close_match_has_no_hint(widgets: Registry) -> None:
    with pytest.raises(SpecError, match=r"Known: plaid, plain, sized\.$"):
        widgets.build({"type": "zzzzzz"})


def test_unknown_skip_suggests_the_closest_real_block() -> None:
    known = re.escape(", ".join(SKIPS.names()))
    with pytest.raises(SpecError, match=rf"^Unknown skip 'concatt'\. Known: {known}\. Did you mean 'concat'\?$"):
        SKIPS.build({"type": "concatt"})


def test_build_from_type_and_kwargs(widgets: Registry) -> None:
    w = widgets.build({"type": "plain", "size": 3, "colour": "blue"})
    assert isinstance(w, Widget) and (w.size, w.colour) == (3, "blue")
    assert isinstance(widgets.build("plain"), Widget)  # a bare name means the defaults


def test_build_does_not_mutate_the_config(widgets: Registry) -> None:
    config = {"type": "plain", "size": 2}
    widgets.build(config)
    assert config == {"type": "plain", "size": 2}


def test_caller_supplies_reserved_arguments(widgets: Registry) -> None:
    s = widgets.build({"type": "sized", "scale": 0.5}, filters=8)
    assert (s.filters, s.scale) == (8, 0.5)
    with pytest.raises(SpecError, match=r"Unknown key 'filters' in widget \(type 'sized'\)\. Allowed keys: scale\."):
        widgets.build({"type": "sized", "filters": 3}, filters=8)


def test_unknown_key_names_the_key_and_the_block(widgets: Registry) -> None:
    message = r"^Unknown key 'sise' in widget \(type 'plain'\)\. Allowed keys: colour, size\. Did you mean 'size'\?$"
    with pytest.raises(SpecError, match=message):
        widgets.build({"type": "plain", "sise": 3})


def test_config_without_type_is_an_error(widgets: Registry) -> None:
    message = r"A widget must be a mapping with a 'type' key \(one of: plaid, plain, sized\)"
    with pytest.raises(SpecError, match=message):
        widgets.build({"size": 3})


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"type": "unet", "skip": {"type": "concat", "axis": 1}},
         r"Unknown key 'axis' in model\.skip \(type 'concat'\)"),
        ({"type": "unet", "bottleneck": {"type": "se_da", "ratioo": 4}},
         r"Unknown key 'ratioo' in model\.bottleneck \(type 'se_da'\)"),
        ({"type": "unet", "skip": {"type": "ad"}}, r"Unknown skip 'ad'\. Known: .*Did you mean 'add'\?"),
        ({"type": "unet", "filter": 8}, r"Unknown key 'filter' in model \(type 'unet'\)\. Allowed keys: .*filters"),
    ],
)
def test_nested_blocks_are_validated_with_their_path(config: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        MODELS.validate(config, where="model")


def test_nested_lists_are_validated_item_by_item() -> None:
    inner = Registry("part")
    inner.register("a")(Widget)
    outer = Registry("thing")

    def thing(parts: list[dict[str, Any]] | None = None) -> list[Any]:
        return [inner.build(p) for p in parts or []]

    outer.register("t", nested={"parts": inner})(thing)
    outer.validate({"type": "t", "parts": [{"type": "a"}, {"type": "a", "size": 2}]}, where="x")
    with pytest.raises(SpecError, match=r"Unknown key 'bad' in x\.parts\[1\] \(type 'a'\)"):
        outer.validate({"type": "t", "parts": [{"type": "a"}, {"type": "a", "bad": 2}]}, where="x")


def test_registered_layer_is_keras_serializable() -> None:
    reg = Registry("testlayer")

    @reg.register("scale2")
    class Scale2(keras.layers.Layer):
        """Doubles its input."""

        def call(self, x: Any) -> Any:
            return x * 2

    assert keras.saving.get_registered_name(Scale2) == "ablate>testlayer.scale2"
    assert keras.saving.get_registered_object("ablate>testlayer.scale2") is Scale2


def test_every_registry_is_listed_and_non_empty_where_the_foundation_needs_it() -> None:
    for kind in ("models", "conv_blocks", "skips", "bottlenecks", "upsamplers", "regularizers", "losses",
                 "augmentations", "optimizers", "schedules"):
        assert len(ALL_REGISTRIES[kind]) > 0, f"registry {kind} is empty"
    assert {"concat", "add", "multiply"} <= set(SKIPS.names())


def test_ablate_blocks_lists_every_registry_with_one_line_per_block(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["blocks"]) == 0
    out = capsys.readouterr().out.splitlines()
    sections: dict[str, list[str]] = {}
    current = None
    for line in out:
        if not line.startswith(" "):
            current = line.rstrip(":")
            sections[current] = []
        else:
            assert current is not None, line
            sections[current].append(line)
    assert list(sections) == [*ALL_REGISTRIES, "slots"]
    slots = {line.split()[0]: line for line in sections.pop("slots")}
    assert list(slots) == [slot.key for slot in BRANCH.slots]
    for slot in BRANCH.slots:  # the registry, the default block and every choice
        assert slot.registry.kind in slots[slot.key] and slots[slot.key].endswith(", ".join(slot.choices()))
        assert f"default {slot.default['type']}" in slots[slot.key]
    for kind, registry in ALL_REGISTRIES.items():
        names = [line.split()[0] for line in sections[kind]]
        assert names == registry.names(), kind
        for line, name in zip(sections[kind], names, strict=True):
            summary = line.strip()[len(name):].strip()
            assert summary, f"{kind} '{name}' has no docstring summary to list"
            assert summary == registry.summary(name)


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_optimizer_declares_its_default_learning_rate(name: str) -> None:
    """compile_model reads an optimizer's own default rate from its schema (no signature of its own)."""
    default = OPTIMIZERS.schema(name).defaults["learning_rate"]
    assert isinstance(default, float) and default > 0
    assert OPTIMIZERS.get(name)().learning_rate.numpy() == pytest.approx(default)
