"""Fixtures shared by the test suite (plain helpers are in tests/helpers.py)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import mlflow_server

# Caches a run keeps between processes (FLOPs per architecture, ablate.cost) stay out of $HOME.
if "ABLATE_CACHE" not in os.environ:
    os.environ["ABLATE_CACHE"] = tempfile.mkdtemp(prefix="ablate-test-cache-")
    atexit.register(shutil.rmtree, os.environ["ABLATE_CACHE"], True)  # the suite's own folder, removed after it


@pytest.fixture(scope="session")
def synth_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic data set in the course format: 160 training pairs, 8 test images."""
    from ablate.data.synth import generate, write_npz

    path = tmp_path_factory.mktemp("data") / "synth.npz"
    write_npz(path, generate(160, seed=0, n_test=8))
    return path


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` (SQLite backend, proxied artifacts) on a free loopback port."""
    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as uri:
        yield uri
