"""Hardening (issue 11): every bad YAML file a user gives (a spec, an ablation, a study, or a file
they name with ``base:``) is one clear error line, exit 2, no traceback, and fast.

Every case runs through the three commands that read such files, in this process:
``ablate spec FILE``, ``ablate ablation show FILE`` and ``ablate study show FILE``. Nothing here
trains or touches a tracking store (``--no-store``), so the whole file takes seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from helpers import ROOT, assert_clean_failure, cli_in_process

from ablate.errors import SpecError, excerpt
from ablate.yamlio import MAX_ALIASES, MAX_BYTES, MAX_DEPTH, load_text

PRESET = str(ROOT / "ablations/presets/unet-baseline.yaml")
# A valid file of each kind whose base is ``BASE`` (the case's spec), so a bad base reaches all three.
BASE = "b1.yaml"
ABLATION = {"name": "t", "base": BASE, "seeds": 2, "factors": {"depth": {"d3": {"depth": 3}}}}
STUDY = {"name": "t", "base": BASE, "trials": 2,
         "space": {"model.depth": {"type": "categorical", "choices": [2, 3]}}}
COMMANDS = {
    "spec": (["spec"], {"base": BASE}),
    "ablation": (["ablation", "show", "--no-store"], ABLATION),
    "study": (["study", "show"], STUDY),
}


def billion_laughs(levels: int = 9) -> str:
    """About 1 KB of YAML whose nine levels of nine aliases expand to 9**9 (387 million) strings."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def nested(depth: int) -> str:
    return "model: " + "[" * depth + "]" * depth + "\n"


# (id, the file's bytes, what the line says after "Spec file '.../"). The command is given this file.
TOP_FILE = [
    ("empty", b"", r"x\.yaml' is empty; expected a YAML mapping of keys like"),
    ("only-comments", b"# nothing here\n", r"x\.yaml' is empty; expected"),
    ("duplicate-key", b"name: t\nseed: 1\nseed: 2\n",
     r"x\.yaml', line 3 repeats the key 'seed' \(first at line 2\); expected each key once"),
    ("duplicate-key-in-flow", b"name: t\nmodel: {type: unet, depth: 2, depth: 3}\n",
     r"x\.yaml', line 2 repeats the key 'depth' \(first at line 2\)"),
    ("alias-bomb", billion_laughs().encode(), r"x\.yaml', line \d+ expands to more than 100,000 values"),
    ("many-aliases", ("a: &a 1\nb: [" + ", ".join(["*a"] * (MAX_ALIASES + 1)) + "]\n").encode(),
     rf"x\.yaml', line 2 uses more than {MAX_ALIASES} aliases"),
    ("recursive-alias", b"a: &a [1, *a]\n", r"x\.yaml', line 1 holds an alias inside its own anchor"),
    ("deep-nesting", nested(1000).encode(), rf"x\.yaml', line 1 nests deeper than {MAX_DEPTH} levels"),
    ("deep-through-aliases", (f"a: &a {nested(40)[7:]}b: [[[[[[[[[[[[[[[[[[[[[[[[[[[[*a]]]]]]]]]]]]]]]]]]]]]]]]]]]]\n"
                              ).encode(),
     rf"x\.yaml', line \d+ nests deeper than {MAX_DEPTH} levels once its aliases are expanded"),
    ("not-utf8", b"name: t\nseed: \xff\xfe\n",
     r"x\.yaml' is not UTF-8 text: byte 0xff at offset 14 cannot be decoded; expected .* UTF-8"),
    ("too-large", b"name: t\ndescription: " + b"a" * MAX_BYTES + b"\n",
     r"x\.yaml' is 1\.0 MiB; expected a YAML file of at most 1 MiB"),
    ("invalid-yaml", b"name: t\nmodel: [\n", r"x\.yaml' is not valid YAML: .* at line 3, column 1"),
    ("undefined-alias", b"name: *" + b"a" * 5000 + b"\n",
     r"x\.yaml' is not valid YAML: found undefined alias 'a+\.\.\. at line 1"),
    ("long-key", b"name: t\n" + b"k" * 500 + b": 1\n", r"x\.yaml', line 2 has a key of 500 characters"),
    ("not-a-mapping", b"- a\n- b\n", r"x\.yaml' must hold a mapping at the top level, got list"),
    ("binary", b"PK\x03\x04\x14\x00\x00\x00\x08\x00\xb4\x8c", r"x\.yaml' is not UTF-8 text: byte 0xb4 at offset 10"),
]


@pytest.fixture(scope="module", autouse=True)
def _imported() -> None:
    """The commands' modules, imported once: the time limit below is for reading a file."""
    import ablate.ablation.plan  # noqa: F401
    import ablate.study.files  # noqa: F401


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("content, pattern", [c[1:] for c in TOP_FILE], ids=[c[0] for c in TOP_FILE])
def test_a_bad_yaml_file_is_one_short_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str,
                                           content: bytes, pattern: str) -> None:
    path = tmp_path / "x.yaml"
    path.write_bytes(content)
    start = time.monotonic()
    code, out, err = cli_in_process([*COMMANDS[command][0], str(path)], capsys)
    assert time.monotonic() - start < 5, "a bad file must be refused quickly"
    assert_clean_failure(code, err, rf"(Spec|Ablation|Study) file '[^']*{pattern}")
    assert out == ""


def _chain(tmp_path: Path, n: int, back_to: int | None) -> None:
    """b1.yaml -> b2.yaml -> ... -> bn.yaml, the last naming b{back_to}.yaml (or the preset)."""
    for i in range(1, n + 1):
        target = f"b{i + 1}.yaml" if i < n else (f"b{back_to}.yaml" if back_to else PRESET)
        (tmp_path / f"b{i}.yaml").write_text(f"base: {target}\n")


BASES: list[tuple[str, Callable[[Path], None], str]] = [
    ("cycle", lambda p: _chain(p, 2, back_to=1), r"The `base:` chain .*b1\.yaml -> b2\.yaml -> b1\.yaml is a cycle"),
    ("self", lambda p: _chain(p, 1, back_to=1), r"The `base:` chain .*b1\.yaml -> b1\.yaml is a cycle"),
    ("too-long", lambda p: _chain(p, 12, back_to=None), r"The `base:` chain .*b1\.yaml -> .* is longer than 8 files"),
    ("not-a-file-name", lambda p: (p / BASE).write_text("base: [1, 2]\n"),
     r"Spec file '.*b1\.yaml': 'base' must name a spec file .*got \[1, 2\]"),
    ("bad-yaml-in-base", lambda p: (p / BASE).write_text("seed: 1\nseed: 2\n"),
     r"Spec file '.*b1\.yaml', line 2 repeats the key 'seed'"),
    ("empty-base", lambda p: (p / BASE).write_text(""), r"Spec file '.*b1\.yaml' is empty"),
]


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("make, pattern", [c[1:] for c in BASES], ids=[c[0] for c in BASES])
def test_a_bad_base_chain_is_one_short_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str,
                                            make: Callable[[Path], None], pattern: str) -> None:
    make(tmp_path)
    argv, body = COMMANDS[command]
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump(body))
    code, _, err = cli_in_process([*argv, str(path)], capsys)
    assert_clean_failure(code, err, pattern)


LONG = "z" * 5000
# Values echoed by a message are cut to an excerpt, whichever check refuses them.
LONG_VALUES = [
    ("spec", {"base": PRESET, "train": {"epochs": LONG}}, r"Invalid value for 'train\.epochs'.*got 'z+\.\.\.z+'\)"),
    ("spec", {"base": PRESET, "model": {"type": LONG}}, r"Unknown model 'z+\.\.\.z+'\. Known: "),
    ("spec", {"base": PRESET, "model": {"type": "unet", "skip": LONG}}, r"Unknown skip 'z+\.\.\.z+'\. Known: "),
    ("study", {**STUDY, "base": PRESET, "trials": LONG}, r"Study file .*invalid 'trials'.*got 'z+\.\.\.z+'\)"),
    ("ablation", {**ABLATION, "base": PRESET, "factors": {"depth": {"d3": {"depth": LONG}}}},
     r"Invalid value for 'model\.depth'.*'z+\.\.\."),
]


@pytest.mark.parametrize("command, body, pattern", LONG_VALUES)
def test_a_long_value_is_quoted_as_an_excerpt(tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str,
                                              body: dict, pattern: str) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump(body))
    code, _, err = cli_in_process([*COMMANDS[command][0], str(path)], capsys)
    assert_clean_failure(code, err, pattern)


@pytest.mark.parametrize("argv, pattern", [
    (["spec", PRESET, "x" * 5000], r"Override 'x+\.\.\.x+' is not of the form key=value"),
    (["spec", PRESET, "k" * 5000 + "=1"], r"Override key 'k+\.\.\.k+' is 5000 characters long"),
    (["spec", PRESET, "model.depth=" + nested(200)[7:]], r"Override value .* nests deeper than 64 levels"),
    (["spec", PRESET, "model={type: unet, type: unet}"], r"Override value .* repeats the key 'type'"),
])
def test_a_bad_override_is_one_short_line(capsys: pytest.CaptureFixture[str], argv: list[str], pattern: str) -> None:
    code, _, err = cli_in_process(argv, capsys)
    assert_clean_failure(code, err, pattern)


def test_the_reader_keeps_what_specs_use() -> None:
    """Floats in exponent form, `<<` merges that override a merged key, and a few aliases still load."""
    text = "lr: 1e-4\nd: &d {a: 1, b: 2}\ne:\n  <<: *d\n  b: 3\nf: [*d, *d]\n"
    assert load_text(text) == {"lr": 1e-4, "d": {"a": 1, "b": 2}, "e": {"a": 1, "b": 3},
                               "f": [{"a": 1, "b": 2}, {"a": 1, "b": 2}]}


def test_a_duplicate_key_is_refused_in_the_api_too() -> None:
    with pytest.raises(SpecError, match=r"<text>, line 2 repeats the key 'a'"):
        load_text("a: 1\na: 2\n")


def test_excerpt_is_bounded_for_any_value() -> None:
    bomb: list = ["lol"] * 9
    for _ in range(30):  # 9**31 strings if printed in full
        bomb = [bomb] * 9
    for value in (LONG, bomb, {LONG: LONG}, b"\x00" * 10_000):
        assert len(excerpt(value)) <= 80
    assert excerpt("concat") == "'concat'"
