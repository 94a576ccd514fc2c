"""Start-up: commands that neither train nor predict import no TensorFlow, and TensorFlow's
start-up lines stay out of the terminal (``ablate.quiet``) unless ``--debug`` is given."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers import PRESET, ROOT

from ablate import manifest, quiet
from ablate.registry import MANIFEST

# Each is a command a user runs to read or check something; none may pay TensorFlow's start-up.
LIGHT_COMMANDS = [
    ["--help"],
    ["spec", str(PRESET), "model.skip.type=add"],
    ["blocks"],
    ["ablation", "plan", "ablations/demo.yaml", "--no-store"],
    ["study", "show", "studies/architecture.yaml"],
    ["run", "--help"],
]

PROBE = """
import sys
from ablate.cli.main import main
for argv in {commands!r}:
    try:
        main(argv)
    except SystemExit:
        pass
heavy = [m for m in ("tensorflow", "keras") if m in sys.modules]
print("HEAVY=" + ",".join(heavy))
"""


def _python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def test_the_registry_manifest_matches_the_code() -> None:
    assert MANIFEST.read_text() == manifest.current(), "run `python -m ablate.manifest` (make manifest)"


def test_commands_that_only_read_import_no_tensorflow() -> None:
    result = _python(PROBE.format(commands=LIGHT_COMMANDS))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "HEAVY=\n" in result.stdout, f"TensorFlow was imported: {result.stdout.splitlines()[-1]}"


def test_a_spec_checked_without_tensorflow_gives_the_same_errors() -> None:
    code = f"""
import sys
from ablate.spec import load_spec
from ablate.errors import SpecError
for o in ('model.skip.type=concatt', 'model.bogus=1', 'model.depth=9', 'loss.type=dicee',
          'loss={{type: sum, terms: [{{loss: {{type: dise}}}}]}}', 'loss={{type: sum, terms: [{{type: ce}}]}}'):
    try:
        load_spec({str(PRESET)!r}, [o])
    except SpecError as e:
        print(e)
print('HEAVY=' + str('tensorflow' in sys.modules))
"""
    result = _python(code)
    lines = result.stdout.splitlines()
    assert lines[-1] == "HEAVY=False"
    assert "Unknown skip 'concatt'" in lines[0] and "Did you mean 'concat'?" in lines[0]
    assert lines[1].startswith("Unknown key 'bogus' in model (type 'unet')")
    assert "model.depth=9 is not possible for a 64x128 input" in lines[2]
    assert "Unknown loss 'dicee'" in lines[3]
    assert "Unknown loss 'dise'" in lines[4] and "Did you mean 'dice'?" in lines[4]  # inside a sum's terms
    assert lines[5].startswith("loss.terms[0] must be a mapping {loss: {type: ...}, weight: w}")


def test_tensorflow_start_up_is_silent_unless_debugging() -> None:
    quiet_run = _python("import ablate, tensorflow as tf; tf.constant(1) + 1")
    loud_run = _python("import ablate, tensorflow", env={"ABLATE_DEBUG": "1"})
    assert quiet_run.returncode == 0 and loud_run.returncode == 0
    assert quiet_run.stderr == "", f"start-up noise on stderr:\n{quiet_run.stderr}"
    assert loud_run.stderr.strip() != "", "--debug should let TensorFlow's own start-up lines through"


def test_the_filter_keeps_every_line_that_is_not_start_up_chatter(capfd: pytest.CaptureFixture[str]) -> None:
    with quiet.filtered_stderr():
        os.write(2, b"I0000 00:00:1796213672.947561    8244 cudart_stub.cc:31] Could not find cuda drivers\n")
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
        os.write(2, b"a real problem\n")
        os.write(2, b"E0000 00:00:1796213681.373558    8244 cuda_platform.cc:52] failed call to cuInit\n")
    assert capfd.readouterr().err == "a real problem\n"


def test_the_package_imports_as_ablate_from_anywhere_without_tensorflow(tmp_path) -> None:  # noqa: ANN001
    """Installed from core/ under the name `ablate` (package-dir): outside the repository, `import ablate`
    works, pulls no TensorFlow, and walking every module of the package never imports a `core`."""
    code = """
import importlib, importlib.metadata as md, pkgutil, sys
import ablate
assert ablate.__file__.endswith("core/__init__.py"), ablate.__file__
light = not any(m in sys.modules for m in ("tensorflow", "keras"))
for info in pkgutil.walk_packages(ablate.__path__, "ablate."):
    if not info.name.endswith("__main__"):
        importlib.import_module(info.name)
print("LIGHT", light, "CORE", "core" in sys.modules, "EPS", [e.value for e in md.entry_points(group="console_scripts")
                                                          if e.name == "ablate"])
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "LIGHT True CORE False EPS ['ablate.cli:main']" in result.stdout, result.stdout
