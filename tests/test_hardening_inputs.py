"""Hardening (issue 11): every bad model or ``.npz`` given to ``ablate predict`` / the loader is one
clear error line, exit 2, no traceback, and no output left behind; nothing from a file or a
tracking store is executed, unpickled or decompressed beyond what its header declares.

Models are built here, tiny (a few hundred weights); data is the synthetic fixture or a few
hand-made arrays.
"""

from __future__ import annotations

import os
import time
import tracemalloc
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import keras
import numpy as np
import numpy.lib.format as npy
import pytest
from helpers import assert_clean_failure, cli_in_process

import ablate.models  # noqa: F401  (registers the project's blocks: the good model reloads)
from ablate.data.loader import load_npz
from ablate.models import build_model

BOMB_BYTES = 2**30  # an unused member: 1 GiB of zeros, 4.7 MB compressed


@pytest.fixture(scope="module")
def good_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "model.keras"
    keras.utils.set_random_seed(0)
    build_model({"type": "unet", "depth": 2, "filters": 4}).save(path)
    return path


def predict(capsys: pytest.CaptureFixture[str], model: str | Path, data: Path, out_dir: Path,
            *extra: str) -> tuple[int, str, str]:
    return cli_in_process(["predict", "--model", str(model), "--data", str(data), "--out", str(out_dir / "o.npz"),
                           "--submission", str(out_dir / "s.csv"), "--png", str(out_dir / "png"), *extra], capsys)


def nothing_written(out_dir: Path) -> None:
    assert not out_dir.exists() or list(out_dir.iterdir()) == [], sorted(p.name for p in out_dir.iterdir())


# --- models --------------------------------------------------------------------------------------

def _save(model: keras.Model, path: Path) -> Path:
    model.save(path)
    return path


def _unrelated(p: Path) -> Path:
    return _save(keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(10)]), p)


def _three_classes(p: Path) -> Path:
    return _save(keras.Sequential([keras.Input((64, 128, 1)), keras.layers.Conv2D(3, 1)]), p)


def _lambda(p: Path) -> Path:
    layers = [keras.Input((64, 128, 1)), keras.layers.Lambda(lambda x: x * 2), keras.layers.Conv2D(5, 1)]
    return _save(keras.Sequential(layers), p)


def _bytes(content: bytes) -> Callable[[Path], Path]:
    def make(p: Path) -> Path:
        p.write_bytes(content)
        return p

    return make


def _truncated(p: Path) -> Path:
    whole = _three_classes(p).read_bytes()
    p.write_bytes(whole[: len(whole) // 2])
    return p


def _garbage_weights(p: Path) -> Path:
    src = _three_classes(p.with_name("src.keras"))
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(p, "w") as zout:
        for name in zin.namelist():
            zout.writestr(name, os.urandom(4096) if name.endswith(".h5") else zin.read(name))
    src.unlink()
    return p


def _saved_model_pb(content: bytes | None) -> Callable[[Path], Path]:
    def make(p: Path) -> Path:
        folder = p.with_suffix("") / "saved_model"
        folder.mkdir(parents=True)
        if content is not None:
            (folder / "saved_model.pb").write_bytes(content)
        return folder.parent

    return make


BAD_MODELS = {
    "unrelated model": (_unrelated, r"takes inputs \(None, 32, 32, 3\) and gives \(None, 10\); expected inputs "
                                    r"\(None, 64, 128, 1\) and per-pixel scores \(None, 64, 128, 5\)"),
    "3 classes": (_three_classes, r"gives \(None, 64, 128, 3\); expected .*\(None, 64, 128, 5\)"),
    "lambda layer": (_lambda, r"model\.keras' stores Python code \(e\.g\. a Lambda layer\), which safe mode refuses"),
    "empty file": (_bytes(b""), r"model\.keras' is corrupt or unreadable \(an empty file"),
    "random bytes": (_bytes(os.urandom(3000)), r"model\.keras' is corrupt or unreadable \(not a zip archive"),
    "truncated zip": (_truncated, r"model\.keras' is corrupt or unreadable"),
    "zip without config": (_bytes(b"PK\x05\x06" + bytes(18)), r"zip without config\.json"),
    "garbage weights": (_garbage_weights, r"model\.keras' is corrupt or not a model of this project"),
    "missing file": (lambda p: p, r"Model file '.*model\.keras' not found"),
    "SavedModel without .pb": (_saved_model_pb(None), r"SavedModel folder '.*' is broken: it has no saved_model\.pb"),
    "SavedModel random .pb": (_saved_model_pb(os.urandom(3000)), r"SavedModel '.*' is corrupt or unreadable"),
    "SavedModel empty .pb": (_saved_model_pb(b""), r"SavedModel '.*' is corrupt or unreadable"),
}


@pytest.mark.parametrize("case", BAD_MODELS)
def test_bad_models_are_one_line_and_write_nothing(case: str, synth_npz: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    make, pattern = BAD_MODELS[case]
    model = make(tmp_path / "model.keras")
    out_dir = tmp_path / "out"
    code, out, err = predict(capsys, model, synth_npz, out_dir)
    assert_clean_failure(code, err, pattern)
    assert out == ""
    nothing_written(out_dir)


# --- the tracking store: never run a logged model's code ----------------------------------------

PYFUNC_CODE = '''
import pathlib
import mlflow
from mlflow.pyfunc import PythonModel

pathlib.Path({marker!r}).write_text("this code ran")


class Echo(PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


mlflow.models.set_model(Echo())
'''


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, good_model: Path) -> Iterator[dict[str, str]]:
    """A SQLite tracking store with a code-only pyfunc (``codeonly``) and a Keras export (``good``)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("store")
    previous = mlflow.get_tracking_uri()
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    try:
        client = MlflowClient()
        exp = client.create_experiment("hardening", artifact_location=(folder / "artifacts").as_uri())
        marker = folder / "marker.txt"
        code = folder / "echo_model.py"
        code.write_text(PYFUNC_CODE.format(marker=str(marker)))
        with mlflow.start_run(experiment_id=exp) as run:
            mlflow.pyfunc.log_model(name="model", python_model=str(code), registered_model_name="codeonly",
                                    pip_requirements=["mlflow"])  # no inference: it would load the model
        client.set_registered_model_alias("codeonly", "champion", "1")
        with mlflow.start_run(experiment_id=exp) as good:
            mlflow.log_artifact(str(good_model), "export")
        client.create_registered_model("good")
        client.create_model_version("good", f"runs:/{good.info.run_id}/export", run_id=good.info.run_id)
        client.set_registered_model_alias("good", "champion", "1")
        marker.unlink(missing_ok=True)  # logging may import the code; predicting must not
        yield {"uri": uri, "marker": str(marker), "code_run": run.info.run_id, "good_run": good.info.run_id}
    finally:
        mlflow.set_tracking_uri(previous)


@pytest.mark.parametrize("ref", ["models:/codeonly@champion", "models:/codeonly/1", "runs:/{code_run}/model",
                                 "{code_run}"])
def test_a_code_only_logged_model_is_refused_and_never_run(ref: str, store: dict[str, str], synth_npz: Path,
                                                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "out"
    code, _, err = predict(capsys, ref.format(**store), synth_npz, out_dir, "--tracking-uri", store["uri"])
    assert_clean_failure(code, err, r"has no model\.keras or SavedModel artifact; predict never runs a logged "
                                    r"model's Python code")
    assert not Path(store["marker"]).exists(), "the logged model's code was executed"
    nothing_written(out_dir)


@pytest.mark.parametrize("ref", ["models:/good@champion", "runs:/{good_run}/export/model.keras", "{good_run}"])
def test_a_logged_keras_model_is_found_and_predicts(ref: str, store: dict[str, str], synth_npz: Path,
                                                     tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = predict(capsys, ref.format(**store), synth_npz, tmp_path, "--tracking-uri", store["uri"])
    assert code == 0, err
    assert "8 images" in out
    with np.load(tmp_path / "o.npz", allow_pickle=False) as z:
        assert z["masks"].shape == (8, 64, 128)


@pytest.mark.parametrize(("ref", "pattern"), [
    ("models:/nosuch@champion", r"Could not read 'models:/nosuch@champion' from the tracking store"),
    ("runs:/0123456789abcdef0123456789abcdef/model", r"Could not read 'runs:/0123.*' from the tracking store"),
])
def test_unknown_store_models_are_one_line(ref: str, pattern: str, store: dict[str, str], synth_npz: Path,
                                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = predict(capsys, ref, synth_npz, tmp_path / "out", "--tracking-uri", store["uri"])
    assert_clean_failure(code, err, pattern)
    nothing_written(tmp_path / "out")


# --- .npz files ------------------------------------------------------------------------------------

def _member(zf: zipfile.ZipFile, key: str, shape: tuple[int, ...], data: bytes, dtype: str = "|u1") -> None:
    """A member whose .npy header declares ``shape`` whatever ``data`` holds."""
    with zf.open(f"{key}.npy", "w", force_zip64=True) as fp:
        npy.write_array_header_1_0(fp, {"descr": dtype, "fortran_order": False, "shape": shape})
        fp.write(data)


def _crafted(shape: tuple[int, ...], data: bytes) -> Callable[[Path, str], None]:
    def make(p: Path, key: str) -> None:
        with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as zf:
            _member(zf, key, shape, data)

    return make


def _saved(array: np.ndarray) -> Callable[[Path, str], None]:
    return lambda p, key: np.savez(p, **{key: array})  # savez pickles object arrays; reading must not


def _shape_for(key: str, n: int) -> tuple[int, ...]:
    """``n`` training pairs or ``2 n`` test images: the same number of bytes."""
    return (n, 2, 64, 128) if key == "training_set" else (2 * n, 64, 128)


def _raw(key_bytes: bytes) -> Callable[[Path, str], None]:
    def make(p: Path, key: str) -> None:
        with zipfile.ZipFile(p, "w") as zf:
            zf.writestr(f"{key}.npy", key_bytes)

    return make


BAD_NPZ = {
    # a header declaring 20 GB in a 1 kB file: refused from the header, nothing decompressed
    "declares 20 GB": (lambda p, key: _crafted(_shape_for(key, 1_250_000), bytes(1000))(p, key),
                       r"declares shape \(\d+, .*: 20\.5 GB decompressed, over the 8\.59 GB limit; refused unread"),
    "header vs zip size": (lambda p, key: _crafted(_shape_for(key, 100), bytes(10))(p, key),
                           r"unpacks to \d+ bytes but its header \(shape \(\d+, .*\) implies \d+; the file is corrupt"),
    "object dtype": (_saved(np.array([None, 1], dtype=object)), r"holds an object \(pickled\) array, which is never"),
    "missing key": (lambda p, key: np.savez(p, other=np.zeros(3)), r"has no '(test|training)_set' array \(found keys: "
                                                                     r"\['other'\]\)"),
    "corrupt header": (_raw(b"\x93NUMPY\x01\x00junk"), r"has a corrupt \.npy header"),
    "not a zip": (lambda p, key: p.write_bytes(b"PK\x03\x04 truncated"), r"is not a readable \.npz archive"),
}


@pytest.mark.parametrize("command", ["predict", "data inspect"])
@pytest.mark.parametrize("case", BAD_NPZ)
def test_bad_npz_is_one_line_for_every_reader(case: str, command: str, good_model: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    make, pattern = BAD_NPZ[case]
    data = tmp_path / "in" / "bad.npz"
    data.parent.mkdir()
    make(data, "test_set" if command == "predict" else "training_set")
    out_dir = tmp_path / "out"
    t0 = time.perf_counter()
    if command == "predict":
        code, _, err = predict(capsys, good_model, data, out_dir)
    else:
        code, _, err = cli_in_process(["data", "inspect", str(data)], capsys)
    assert time.perf_counter() - t0 < 10
    assert_clean_failure(code, err, pattern)
    nothing_written(out_dir)


def test_the_size_cap_is_overridable_and_checked(synth_npz: Path, good_model: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABLATE_MAX_ARRAY_BYTES", "1000")  # the synthetic test set is 65 kB
    code, _, err = predict(capsys, good_model, synth_npz, tmp_path / "out")
    assert_clean_failure(code, err, r"'test_set' in .* over the 1e-06 GB limit; refused unread \(raise "
                                    r"ABLATE_MAX_ARRAY_BYTES")
    monkeypatch.setenv("ABLATE_MAX_ARRAY_BYTES", "lots")
    code, _, err = cli_in_process(["data", "inspect", str(synth_npz)], capsys)
    assert_clean_failure(code, err, r"ABLATE_MAX_ARRAY_BYTES='lots' is not a positive whole number of bytes")
    nothing_written(tmp_path / "out")


@pytest.fixture(scope="module")
def bombed(tmp_path_factory: pytest.TempPathFactory, synth_npz: Path) -> Path:
    """The synthetic arrays plus ``junk``: 1 GiB of zeros that nothing reads."""
    path = tmp_path_factory.mktemp("bomb") / "bombed.npz"
    with np.load(synth_npz, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for key, array in arrays.items():
            with zf.open(f"{key}.npy", "w") as fp:
                npy.write_array(fp, array, allow_pickle=False)
        with zf.open("junk.npy", "w", force_zip64=True) as fp:
            npy.write_array_header_1_0(fp, {"descr": "|u1", "fortran_order": False, "shape": (BOMB_BYTES,)})
            for _ in range(BOMB_BYTES // 2**24):
                fp.write(bytes(2**24))
    assert path.stat().st_size < 20 * 2**20
    return path


@pytest.mark.parametrize("reader", ["predict", "load_npz"])
def test_an_unused_huge_member_is_never_decompressed(reader: str, bombed: Path, tmp_path: Path) -> None:
    from ablate.export import predict_file

    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        if reader == "predict":  # the streaming reader, with a stand-in model (Keras is not what is measured)
            result = predict_file(lambda x: np.zeros(x.shape[:3], np.uint8), bombed, tmp_path / "o.npz")
            assert result.images == 8
        else:
            data = load_npz(bombed)
            assert data.images.shape == (160, 64, 128, 1) and data.test_images is not None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 30
    assert peak < 100 * 2**20, f"peak {peak / 2**20:.0f} MiB: the unused member was decompressed"


def test_a_corrupt_stream_midway_leaves_no_outputs(good_model: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "in" / "flipped.npz"
    data.parent.mkdir()
    images = np.random.default_rng(0).integers(0, 256, (8, 64, 128), dtype=np.uint8)
    with zipfile.ZipFile(data, "w", zipfile.ZIP_STORED) as zf:
        with zf.open("test_set.npy", "w") as fp:
            npy.write_array(fp, images)
    raw = bytearray(data.read_bytes())
    at = raw.index(images[-1].tobytes()[:64]) + 100  # inside the last image: a bad CRC at its end
    raw[at] ^= 0xFF
    data.write_bytes(bytes(raw))
    out_dir = tmp_path / "out"
    code, _, err = predict(capsys, good_model, data, out_dir, "--batch-size", "2")
    assert_clean_failure(code, err, r"'test_set' in .* is corrupt near row 6 \(Bad CRC-32")
    nothing_written(out_dir)
