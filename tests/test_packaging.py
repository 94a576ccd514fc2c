"""What the installed package holds: pyproject's hand-written package list, and the copies of the
Mars task in ``pyfunc_model.py``, a file MLflow runs without this project.

Both are kept by hand, so each is pinned here to what it copies: a subpackage added to ``core/``
without being listed would be missing from a wheel (yet importable from the repository), and a
Mars shape or class name changed in ``ablate.task`` alone would serve old models the wrong task.
"""

from __future__ import annotations

import ast
import importlib.util
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
from helpers import ROOT

from ablate.task import MARS

CORE = ROOT / "core"
PYFUNC_FILE = CORE / "export" / "pyfunc_model.py"


def test_pyproject_lists_every_subpackage_of_core() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"ablate": "core"}
    on_disk = {".".join(("ablate", *init.parent.relative_to(CORE).parts)) for init in CORE.rglob("__init__.py")}
    listed = setuptools["packages"]
    assert len(listed) == len(set(listed)), f"pyproject lists a package twice: {sorted(listed)}"
    assert set(listed) == on_disk, (f"pyproject's [tool.setuptools] packages differ from core/: missing "
                                    f"{sorted(on_disk - set(listed))}, not in core/ {sorted(set(listed) - on_disk)}")


def test_every_folder_of_modules_under_core_is_a_package() -> None:
    """A folder of modules without ``__init__.py`` would escape the test above and the wheel."""
    folders = {p.parent for p in CORE.rglob("*.py") if "__pycache__" not in p.parts}
    assert sorted(str(f.relative_to(ROOT)) for f in folders if not (f / "__init__.py").is_file()) == []


@pytest.fixture(scope="module")
def pyfunc() -> ModuleType:
    """``pyfunc_model.py`` loaded by path, as MLflow loads it (not through ``ablate.export``)."""
    spec = importlib.util.spec_from_file_location("pyfunc_model_copy", PYFUNC_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pyfunc_imports_nothing_from_the_project() -> None:
    tree = ast.parse(PYFUNC_FILE.read_text(encoding="utf-8"))
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "." for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0]
    relative = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level > 0]
    assert relative == [] and [n for n in names if n.split(".")[0] in ("ablate", "core")] == []


def test_pyfunc_s_copy_of_the_mars_task_matches_ablate_task(pyfunc: ModuleType, tmp_path: Path) -> None:
    """A model logged before tasks existed (no ``task.json``) is served as ``ablate.task.MARS``."""
    assert pyfunc.DEFAULT_SHAPE == MARS.input_shape
    fallback = pyfunc.read_task({"saved_model": str(tmp_path)})  # no task.json anywhere: the Mars copy
    assert fallback == {"height": MARS.height, "width": MARS.width, "channels": MARS.channels,
                        "classes": list(MARS.classes), "ignore_label": MARS.ignore_label}
