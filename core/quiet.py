"""Quiet start-up: TensorFlow's and absl's start-up lines stay out of the user's terminal.

TensorFlow prints C++ lines when it loads ("Could not find cuda drivers", "failed call to
cuInit" on CPU-only machines, "All log messages before absl::InitializeLog()"). Users read them
as failures, and some are written to file descriptor 2 before any log level applies. So
``install()`` (called by ``import ablate``) hooks the import of ``tensorflow``: while it runs,
descriptor 2 goes to a temporary file; afterwards every line that is not start-up chatter is
written back to the real stderr, so nothing else is lost. ``ablate --debug`` (or
``ABLATE_DEBUG=1``) turns the filter off and shows everything.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from types import ModuleType
from typing import Any

# C++ log lines (``I0000 00:00:... file.cc:31] ...``) and absl's pre-initialisation notice.
NOISE = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\)|[IWE]\d{4} [\d:. ]+\d+ \S+:\d+\])")


def debug() -> bool:
    return os.environ.get("ABLATE_DEBUG", "") not in ("", "0")


@contextlib.contextmanager
def filtered_stderr() -> Iterator[None]:
    """Sends descriptor 2 to a temporary file for the block, then replays its non-noise lines."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real descriptor 2 (an embedded interpreter): nothing to filter
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            kept = [line for line in sink.read().decode(errors="replace").splitlines(keepends=True)
                    if not NOISE.match(line)]
            if kept:
                os.write(2, "".join(kept).encode())


class _FilteredLoader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader) -> None:
        self.inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        with filtered_stderr():
            self.inner.exec_module(module)
            _quiet_loggers(module)


def _quiet_loggers(tf: Any) -> None:
    """Python-side notices (retracing, v1 profiler) are not the user's business either."""
    tf.get_logger().setLevel("ERROR")
    with contextlib.suppress(ImportError):
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)


class _QuietTensorFlow(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` like the normal finders do, then wraps its loader in the filter."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name != "tensorflow" or debug():
            return None
        sys.meta_path.remove(self)  # one import of tensorflow per process: the hook's work is done
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _FilteredLoader(spec.loader)
        return spec


def install() -> None:
    """Quiets TensorFlow's start-up if it is not imported yet (idempotent; no-op under --debug)."""
    if debug():
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        return
    # MLflow announces each new SQLite store's schema migration ("Updating database tables").
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    # 3: C++ errors too ("failed call to cuInit" on a CPU-only machine); --debug shows them.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorFlow) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlow())
