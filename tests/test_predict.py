"""``ablate predict``: masks, the submission CSV and overlays for the real test images, streamed;
bad models and bad inputs are one clear error line and leave no output behind.

The model is a tiny untrained U-Net exported to a folder (``model.keras`` + ``saved_model/``):
predicting needs a model of the exported shape, not a good one.
"""

from __future__ import annotations

import tracemalloc
import zipfile
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from helpers import assert_one_error_line, require_real_data, requires_real_data

from ablate import load_all
from ablate.cli.main import main
from ablate.export import load_predictor, predict_file
from ablate.export.formats import write_saved_model
from ablate.export.npzstream import ArrayWriter, iter_rows, open_member
from ablate.models import build_model

load_all()  # registers every block (a saved model of this project reloads)

N_REAL = 100  # the first test images of the real file: enough to span several batches, quick


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle")
    keras.utils.set_random_seed(0)
    model = build_model({"type": "unet", "depth": 2, "filters": 4})
    model.save(out / "model.keras")
    write_saved_model(model, out / "saved_model")
    return out


@pytest.fixture(scope="module")
def real_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first N_REAL test images of the real file, copied into a temp .npz (never into the repo)."""
    with np.load(require_real_data(), allow_pickle=False) as npz:
        images = npz["test_set"][:N_REAL]
    path = tmp_path_factory.mktemp("real") / "real_small.npz"
    np.savez(path, test_set=images)
    return path


def direct_masks(bundle: Path, images: np.ndarray) -> np.ndarray:
    from ablate.export.formats import load_keras

    x = (images.astype(np.float32) / 255.0)[..., None]
    return np.argmax(load_keras(bundle / "model.keras").predict(x, verbose=0), axis=-1).astype(np.uint8)


@requires_real_data
def test_predict_real_test_images_writes_masks_csv_and_overlays(bundle: Path, real_small: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    out, sub, png = tmp_path / "masks.npz", tmp_path / "sub.csv", tmp_path / "png"
    code = main(["predict", "--model", str(bundle), "--data", str(real_small), "--out", str(out),
                 "--submission", str(sub), "--png", str(png), "--batch-size", "32"])
    assert code == 0, capsys.readouterr().err
    assert f"{N_REAL} images" in capsys.readouterr().out
    with np.load(out, allow_pickle=False) as npz:
        assert npz.files == ["masks"]
        masks = npz["masks"]
    assert masks.shape == (N_REAL, 64, 128) and masks.dtype == np.uint8
    assert 0 <= masks.min() and masks.max() <= 4
    with np.load(real_small) as npz:
        np.testing.assert_array_equal(masks, direct_masks(bundle, npz["test_set"]))

    df = pd.read_csv(sub)
    assert list(df.columns) == ["id", *(str(i) for i in range(64 * 128))]
    assert df["id"].tolist() == list(range(N_REAL))
    np.testing.assert_array_equal(df.drop(columns="id").to_numpy().reshape(-1, 64, 128), masks)

    from PIL import Image

    files = sorted(png.glob("*.png"))
    assert len(files) == N_REAL and files[0].name == "000000.png"
    assert np.asarray(Image.open(files[0])).shape == (64, 128, 3)


@requires_real_data
def test_float_channel_and_keras_inputs_give_the_same_masks(bundle: Path, real_small: Path, tmp_path: Path) -> None:
    with np.load(real_small) as npz:
        images = npz["test_set"][:40]
    variants = {"f64": images.astype(np.float64), "chan01": (images / 255.0).astype(np.float32)[..., None]}
    ref = predict_file(load_predictor(str(bundle)), _npz(tmp_path / "u8.npz", test_set=images), tmp_path / "r.npz")
    expected = np.load(ref.out)["masks"]
    for name, arr in variants.items():
        res = predict_file(load_predictor(str(bundle)), _npz(tmp_path / f"{name}.npz", test_set=arr),
                           tmp_path / f"{name}-out.npz", batch_size=16)
        np.testing.assert_array_equal(np.load(res.out)["masks"], expected, err_msg=name)
    keras_out = predict_file(load_predictor(str(bundle / "model.keras")), tmp_path / "u8.npz", tmp_path / "k.npz")
    np.testing.assert_array_equal(np.load(keras_out.out)["masks"], expected)


def test_train_split_predicts_the_training_images(bundle: Path, tmp_path: Path) -> None:
    from ablate.data.synth import generate

    arrays = generate(12, seed=3, n_test=2)
    res = predict_file(load_predictor(str(bundle)), _npz(tmp_path / "d.npz", **arrays), tmp_path / "o.npz",
                       split="train", batch_size=5)
    masks = np.load(res.out)["masks"]
    assert res.images == 12
    np.testing.assert_array_equal(masks, direct_masks(bundle, arrays["training_set"][:, 0]))


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez_compressed(path, **arrays)
    return path


BAD_INPUTS = {
    "wrong shape": ({"test_set": np.zeros((3, 32, 32), np.uint8)}, r"has shape \(3, 32, 32\); expected \(N, 64, 128\)"),
    "nan": ({"test_set": np.where(np.arange(3)[:, None, None] == 1, np.nan, np.ones((3, 64, 128)))},
            r"NaN or inf values \(first at image 1\)"),
    "out of range": ({"test_set": np.full((2, 64, 128), 300.0)}, r"values span \[300, 300\].*expected 0-255"),
    "object array": ({"test_set": np.array([None, 1], dtype=object)}, r"object \(pickled\) array, which is never"),
    "missing split": ({"other": np.zeros((2, 64, 128), np.uint8)}, "has no 'test_set' array"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_inputs_are_one_error_line_and_write_nothing(case: str, bundle: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    arrays, pattern = BAD_INPUTS[case]
    data = tmp_path / "bad.npz"
    np.savez(data, **arrays)  # savez pickles object arrays; predict must refuse to unpickle them
    out = tmp_path / "o.npz"
    assert main(["predict", "--model", str(bundle), "--data", str(data), "--out", str(out),
                 "--submission", str(tmp_path / "s.csv")]) == 2
    assert_one_error_line(capsys.readouterr().err, pattern)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npz"]


@pytest.mark.parametrize(("model", "pattern"), [
    ("no/such/folder", "Model 'no/such/folder' not found: expected an export folder"),
    ("EMPTY", "holds no saved_model/ or model.keras"),
])
def test_bad_model_paths_are_one_error_line(model: str, pattern: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    if model == "EMPTY":
        (tmp_path / "empty").mkdir()
        model = str(tmp_path / "empty")
    data = _npz(tmp_path / "d.npz", test_set=np.zeros((2, 64, 128), np.uint8))
    assert main(["predict", "--model", model, "--data", str(data), "--out", str(tmp_path / "o.npz")]) == 2
    assert_one_error_line(capsys.readouterr().err, pattern)


def test_output_must_be_npz_and_not_the_input(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _npz(tmp_path / "d.npz", test_set=np.zeros((2, 64, 128), np.uint8))
    assert main(["predict", "--model", str(bundle), "--data", str(data), "--out", str(tmp_path / "o.csv")]) == 2
    assert_one_error_line(capsys.readouterr().err, "must end in .npz")
    assert main(["predict", "--model", str(bundle), "--data", str(data), "--out", str(data)]) == 2
    assert_one_error_line(capsys.readouterr().err, "Refusing to overwrite the input file")


def test_a_failure_midway_leaves_no_partial_outputs(tmp_path: Path) -> None:
    data = _npz(tmp_path / "d.npz", test_set=np.zeros((10, 64, 128), np.uint8))
    calls = []

    def flaky(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        if len(calls) == 2:
            raise RuntimeError("model crashed")
        return np.zeros(x.shape[:3], np.uint8)

    with pytest.raises(RuntimeError, match="model crashed"):
        predict_file(flaky, data, tmp_path / "o.npz", submission=tmp_path / "s.csv", png=tmp_path / "png",
                     batch_size=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz"]


def test_streaming_keeps_memory_flat_for_10000_images(tmp_path: Path) -> None:
    n = 10_000  # 82 MB of uint8 images in, 82 MB of masks out: neither may be held at once
    data = tmp_path / "big.npz"
    with zipfile.ZipFile(data, "w", zipfile.ZIP_DEFLATED) as zf, \
            ArrayWriter(zf, "test_set", (n, 64, 128), np.dtype(np.uint8)) as writer:
        for start in range(0, n, 1000):
            writer.write(np.full((1000, 64, 128), start // 1000, np.uint8))
    sizes = []

    def constant(x: np.ndarray) -> np.ndarray:
        sizes.append(len(x))
        return np.ones(x.shape[:3], np.uint8)

    tracemalloc.start()
    try:
        res = predict_file(constant, data, tmp_path / "o.npz", batch_size=256)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert res.images == n and max(sizes) == 256
    assert peak < 40 * 2**20, f"peak {peak / 2**20:.0f} MiB: predictions are not streamed"
    member = open_member(res.out, "masks")
    assert member.shape == (n, 64, 128)
    assert all((rows == 1).all() for _, rows in iter_rows(member, 2000))
