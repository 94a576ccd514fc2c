"""The one YAML reader for everything a user writes: spec, ablation and study files, and overrides.

A plain ``yaml.safe_load`` runs no code, but it still takes input that no spec needs and that
turns into a hang, a crash or a message that echoes megabytes: a 1 KB file of nested aliases
(a "billion laughs") that expands to gigabytes, a thousand-deep ``[[[...]]]`` that raises
``RecursionError``, a binary file, a duplicate key whose second value silently wins. This
reader refuses each of those with a ``SpecError`` that names the file, the line where it can,
what was found and what was expected, and that quotes at most a short excerpt of the input.

The limits are far above what a real spec uses (a few KB, a handful of levels, no aliases),
so they only ever stop input that is not a spec.

Example:
    >>> load_text("lr: 1e-4", "override")
    {'lr': 0.0001}
    >>> load_file(Path("ablations/presets/unet-baseline.yaml"))["name"]
    'unet-baseline'
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode

from ablate.errors import SpecError

MAX_BYTES = 1 << 20  # 1 MiB: the largest shipped file is under 4 KB
MAX_DEPTH = 64  # nesting levels, aliases expanded; a spec nests about 5 deep, Python recursion fails near 330
MAX_ALIASES = 100  # `*name` uses per file: a spec needs none (`base:` shares a spec between files)
MAX_VALUES = 100_000  # values once every alias is expanded: a spec holds a few hundred
MAX_KEY = 120  # characters in a mapping key: keys are names and dotted paths, and messages quote them
MESSAGE_TEXT = 80  # characters of input (a value, a YAML problem) quoted in a message
MERGE = "tag:yaml.org,2002:merge"


class _SpecLoader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-4`` and ``1.0e4`` as floats (YAML 1.2), not strings as YAML 1.1 does,
    and enforces this module's limits while it composes the document (before any value is built).

    ``_levels`` holds, per open collection, ``[values so far, height of the tallest child]``; an
    alias adds the size and height of the node it names, so the limits hold for the expanded
    document although the composed one shares the aliased node.
    """

    source = "<text>"  # the file name the messages give; set per load

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._levels: list[list[int]] = [[0, 0]]
        self._measured: dict[int, tuple[int, int]] = {}  # id(node) -> (values, height), once composed

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        if self.check_event(AliasEvent):
            return self._alias(parent, index)
        self._levels.append([0, 0])
        if len(self._levels) - 1 > MAX_DEPTH:
            self._fail(f"nests deeper than {MAX_DEPTH} levels", self.peek_event().start_mark,
                       "a spec a few levels deep")
        node = super().compose_node(parent, index)
        values, height = self._levels.pop()
        self._measured[id(node)] = (values + 1, height + 1)
        self._count(node, values + 1, height + 1)
        return node

    def _alias(self, parent: Node | None, index: Any) -> Node:
        mark = self.peek_event().start_mark
        self._aliases += 1
        if self._aliases > MAX_ALIASES:
            self._fail(f"uses more than {MAX_ALIASES} aliases (*name)", mark,
                       "few or none; write the values out, or share a spec with `base:`")
        node = super().compose_node(parent, index)
        if id(node) not in self._measured:  # the anchor is still open: the alias names its own ancestor
            self._fail("holds an alias inside its own anchor (a recursive structure)", mark,
                       "a tree of plain values")
        self._count(node, *self._measured[id(node)])
        return node

    def _count(self, node: Node, values: int, height: int) -> None:
        """Adds a finished child to its parent and checks the expanded totals."""
        level = self._levels[-1]
        level[0] += values
        level[1] = max(level[1], height)
        if len(self._levels) - 1 + height > MAX_DEPTH:
            self._fail(f"nests deeper than {MAX_DEPTH} levels once its aliases are expanded", node.start_mark,
                       "a spec a few levels deep")
        if level[0] > MAX_VALUES:
            self._fail(f"expands to more than {MAX_VALUES:,} values (aliases of aliases?)", node.start_mark,
                       "a spec of a few hundred values")

    def compose_mapping_node(self, anchor: str | None) -> MappingNode:
        node = super().compose_mapping_node(anchor)
        first: dict[tuple[str, str], tuple[int, ScalarNode]] = {}
        for i, (key, _) in enumerate(node.value):  # before `<<` merges are flattened: they may be overridden
            if not isinstance(key, ScalarNode) or key.tag == MERGE:
                continue
            if len(key.value) > MAX_KEY:
                self._fail(f"has a key of {len(key.value):,} characters ({excerpt_text(key.value, 40)!r})",
                           key.start_mark, f"keys of at most {MAX_KEY} characters (names and dotted paths)")
            at, earlier = first.setdefault((key.tag, key.value), (i, key))
            if at != i:
                self._fail(f"repeats the key {excerpt_text(key.value, 40)!r} (first at line "
                           f"{earlier.start_mark.line + 1})", key.start_mark,
                           "each key once per mapping; merge the two entries")
        return node

    def _fail(self, problem: str, mark: yaml.Mark | None, expected: str) -> None:
        where = f", line {mark.line + 1}" if mark is not None else ""
        raise SpecError(f"{self.source}{where} {problem}; expected {expected}.")


_SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_text(text: str, source: str = "<text>") -> Any:
    """Parses YAML text under this module's limits; ``source`` names it in messages.

    Raises ``yaml.YAMLError`` for text that is not YAML (the caller words that error, see
    ``yaml_problem``) and ``SpecError`` for YAML that breaks a limit or repeats a key.
    """
    loader = _SpecLoader(text)
    loader.source = source
    try:
        return loader.get_single_data()  # safe: a SafeLoader subclass
    finally:
        loader.dispose()


def load_file(path: str | Path, what: str = "Spec file") -> Any:
    """Reads and parses one YAML file: at most ``MAX_BYTES``, UTF-8, valid YAML, within the limits.

    ``what`` ("Spec file", "Ablation file", ...) starts every message. Returns the parsed
    document (``None`` for an empty file; the caller says what it expected instead).
    """
    p = Path(path)
    source = f"{what} '{shown(p)}'"
    try:
        size = p.stat().st_size
        if size > MAX_BYTES:
            raise SpecError(f"{source} is {size / 2**20:.1f} MiB; expected a YAML file of at most "
                            f"{MAX_BYTES // 2**20} MiB (a spec is a few KB).")
        with p.open("rb") as f:
            data = f.read(MAX_BYTES + 1)  # a file that grew since stat() is still bounded
    except OSError as e:
        raise SpecError(f"{source} cannot be read: {e.strerror or e}; expected a readable YAML file.") from None
    if len(data) > MAX_BYTES:
        raise SpecError(f"{source} is over {MAX_BYTES // 2**20} MiB; expected a YAML file of a few KB.")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(f"{source} is not UTF-8 text: byte 0x{data[e.start]:02x} at offset {e.start} cannot be "
                        f"decoded; expected a YAML file saved as UTF-8.") from None
    try:
        return load_text(text, source)
    except yaml.YAMLError as e:
        raise SpecError(f"{source} is not valid YAML: {yaml_problem(e)}.") from None


def yaml_problem(e: yaml.YAMLError) -> str:
    """PyYAML's problem and position in one short line (its own message spans several lines and may
    quote the offending text at any length)."""
    if isinstance(e, yaml.MarkedYAMLError) and e.problem:
        mark = e.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return excerpt_text(e.problem) + where
    lines = str(e).splitlines()
    return excerpt_text(lines[0] if lines else type(e).__name__)


def excerpt_text(text: str, limit: int = MESSAGE_TEXT) -> str:
    """``text`` on one line, cut to ``limit`` characters (``...`` marks the cut)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def shown(path: Path, limit: int = 100) -> str:
    """A path as messages give it: whole if short, else its last ``limit`` characters."""
    text = str(path)
    return text if len(text) <= limit else "..." + text[-(limit - 3):]
