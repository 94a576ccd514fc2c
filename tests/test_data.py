"""Tests of ablate.data: loader validation, splits, synthetic data, cleaning, inspect, AI4Mars import."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import pytest

import ablate.data as data_pkg
from ablate.data import (
    clean_npz,
    find_outliers,
    format_summary,
    generate,
    generate_with_truth,
    import_ai4mars,
    inspect_npz,
    load_npz,
    split_indices,
    write_npz,
)
from ablate.errors import DataError
from ablate.task import MARS

REAL = Path(__file__).parents[1].parent / "shared/data/mars_ai4mars_64x128.npz"
README_SHARES = {0: 0.435, 1: 0.208, 2: 0.282, 3: 0.071, 4: 0.0049}


@cache
def _synth(n: int, seed: int, n_test: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    return generate_with_truth(n, seed, n_test)


def _train(n: int = 6) -> np.ndarray:
    return _synth(120, 1)[0]["training_set"][:n].copy()


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# ---------------------------------------------------------------- loader


def test_exports() -> None:
    for name in data_pkg.__all__:
        assert hasattr(data_pkg, name), name


def test_uint8_and_float64_load_to_same_arrays(tmp_path: Path) -> None:
    train = _train()
    np.savez(tmp_path / "u8.npz", training_set=train, test_set=train[:, 0])
    np.savez(tmp_path / "f64.npz", training_set=train.astype(np.float64), test_set=train[:, 0].astype(np.float64))
    np.savez(tmp_path / "unit.npz", training_set=np.stack([train[:, 0] / 255.0, train[:, 1].astype(float)], 1))
    a, b, c = (load_npz(tmp_path / f) for f in ("u8.npz", "f64.npz", "unit.npz"))
    assert a.images.shape == (6, 64, 128, 1) and a.images.dtype == np.float32
    assert a.masks.shape == (6, 64, 128) and a.masks.dtype == np.uint8
    assert a.test_images is not None and a.test_images.shape == (6, 64, 128, 1)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.masks, b.masks)
    assert np.array_equal(a.test_images, b.test_images)
    np.testing.assert_allclose(c.images, a.images, atol=1e-6)
    assert np.array_equal(c.masks, a.masks) and c.test_images is None
    assert 0.0 <= a.images.min() and a.images.max() <= 1.0
    expected = hashlib.sha256((tmp_path / "u8.npz").read_bytes()).hexdigest()[:16]
    assert a.fingerprint == expected and a.path.endswith("u8.npz") and a.groups is None


def test_limit(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", training_set=_train(), groups=np.arange(6))
    data = load_npz(tmp_path / "d.npz", limit=4)
    assert len(data.images) == len(data.masks) == 4 and data.groups is not None and len(data.groups) == 4
    with pytest.raises(DataError, match="limit must be a positive integer"):
        load_npz(tmp_path / "d.npz", limit=0)


def _bad_files() -> list[tuple[str, Callable[[Path], None], str]]:
    good = _train(4)

    def save(**arrays: np.ndarray) -> Callable[[Path], None]:
        return lambda p: np.savez(p, **arrays)

    def with_mask_value(value: float) -> np.ndarray:
        arr = good.astype(np.float64)
        arr[1, 1, 3, 5] = value
        return arr

    def with_image_value(value: float) -> np.ndarray:
        arr = good.astype(np.float64)
        arr[2, 0, 7, 9] = value
        return arr

    def truncated(p: Path) -> None:
        np.savez(p, training_set=good)
        p.write_bytes(p.read_bytes()[:2000])

    objects = np.empty(4, dtype=object)
    objects[:] = [good[i] for i in range(4)]
    return [
        ("text file", lambda p: p.write_text("not numpy"), "not a readable .npz archive"),
        ("truncated", truncated, "not a readable .npz archive or is truncated"),
        (
            "npy not npz",
            lambda p: np.save(p.with_suffix(".npy"), good) or p.with_suffix(".npy").rename(p),
            "single .npy",
        ),
        ("missing key", save(images=good), r"no 'training_set' array \(found keys: \['images'\]\)"),
        ("wrong rank", save(training_set=good[:, 0]), r"shape \(4, 64, 128\); expected \(N, 2, 64, 128\)"),
        ("wrong size", save(training_set=good[..., :64]), r"shape \(4, 2, 64, 64\); expected \(N, 2, 64, 128\)"),
        ("empty", save(training_set=good[:0]), "is empty"),
        ("labels out of range", save(training_set=with_mask_value(7)), r"labels \[7\] outside 0-4"),
        ("negative label", save(training_set=with_mask_value(-1)), r"labels \[-1\] outside 0-4"),
        ("non-integral mask", save(training_set=with_mask_value(1.5)), "non-integral"),
        ("nan image", save(training_set=with_image_value(np.nan)), r"NaN or inf values \(first at index 2\)"),
        ("inf image", save(training_set=with_image_value(np.inf)), "NaN or inf"),
        ("negative image", save(training_set=with_image_value(-3)), r"span \[-3, .*expected 0-255"),
        ("image above 255", save(training_set=with_image_value(300)), r"span \[.*, 300\]; expected 0-255"),
        ("object array", save(training_set=objects), r"object \(pickled\) array"),
        ("bad test_set", save(training_set=good, test_set=good[:, 0, :32]), r"'test_set' has shape \(4, 32, 128\)"),
        ("bad groups", save(training_set=good, groups=np.arange(3)), r"'groups' has shape \(3,\)"),
    ]


# Files that are well-formed data for some other task: an error against the Mars task only.
OTHER_TASK = {"wrong size": (64, 64, 5), "labels out of range": (64, 128, 8)}


@pytest.mark.parametrize("given", ["mars", "inferred"])
@pytest.mark.parametrize(("make", "match"), [c[1:] for c in _bad_files()], ids=[c[0] for c in _bad_files()])
def test_bad_inputs_raise_clear_errors(tmp_path: Path, make: Callable[[Path], None], match: str, given: str,
                                       request: pytest.FixtureRequest) -> None:
    path = tmp_path / "bad.npz"
    make(path)
    before = _files(tmp_path)
    case = request.node.callspec.id.split("-", 1)[0]
    if given == "inferred" and case in OTHER_TASK:
        h, w, k = OTHER_TASK[case]
        data = load_npz(path)
        assert (data.task.height, data.task.width, data.task.num_classes) == (h, w, k)
        assert not data.task.is_mars and data.task.ignore_label is None
    else:
        if given == "inferred" and case == "negative label":
            match = r"labels \[-1\] outside 0-255; expected integer labels"
        with pytest.raises(DataError, match=match):
            load_npz(path, task=MARS if given == "mars" else None)
    assert _files(tmp_path) == before


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_npz(tmp_path / "nope.npz")
    assert _files(tmp_path) == set()


# ---------------------------------------------------------------- splits


def test_split_deterministic_disjoint_sorted() -> None:
    train, val = split_indices(100, 0.2, seed=3)
    again = split_indices(100, 0.2, seed=3)
    assert np.array_equal(train, again[0]) and np.array_equal(val, again[1])
    assert len(val) == 20 and np.array_equal(np.sort(np.concatenate([train, val])), np.arange(100))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    assert not np.array_equal(val, split_indices(100, 0.2, seed=4)[1])
    assert [len(p) for p in split_indices(2, 0.01)] == [1, 1]
    assert [len(p) for p in split_indices(1)] == [1, 0]


def test_split_keeps_groups_together() -> None:
    groups = np.repeat(np.arange(50), 2)
    train, val = split_indices(100, 0.2, seed=0, groups=groups)
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(100))
    assert not set(groups[train]) & set(groups[val]) and len(val) == 20


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 0}, "n >= 1"),
        ({"n": 10, "val_fraction": 1.0}, r"val_fraction must be in \(0, 1\)"),
        ({"n": 10, "groups": np.zeros(9)}, r"groups has shape \(9,\)"),
        ({"n": 4, "groups": np.zeros(4)}, "one group"),
    ],
)
def test_split_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(DataError, match=match):
        split_indices(**kwargs)


# ---------------------------------------------------------------- synthetic data


def test_synth_shape_dtype_determinism() -> None:
    arrays, outliers = _synth(120, 1, 10)
    train = arrays["training_set"]
    assert train.shape == (120, 2, 64, 128) and train.dtype == np.uint8
    assert arrays["test_set"].shape == (10, 64, 128) and arrays["test_set"].dtype == np.uint8
    assert train[:, 1].max() <= 4 and len(outliers) == 3
    again = generate(120, 1, 10)
    assert all(np.array_equal(arrays[k], again[k]) for k in arrays)
    assert not np.array_equal(train, generate(120, 2)["training_set"])
    with pytest.raises(DataError, match="n must be an integer >= 1"):
        generate(0, 1)


def test_synth_class_shares_and_speed() -> None:
    start = time.perf_counter()
    masks = generate(1000, 7)["training_set"][:, 1]
    assert time.perf_counter() - start < 10.0  # ~1.5 s on one core; loose for shared CI machines
    shares = np.bincount(masks.ravel(), minlength=5) / masks.size
    bounds = [(0.30, 0.55), (0.14, 0.32), (0.18, 0.38), (0.04, 0.14), (0.002, 0.02)]
    for k, (lo, hi) in enumerate(bounds):
        assert lo < shares[k] < hi, (k, shares[k])
    has_rock = (masks == 4).any(axis=(1, 2)).mean()
    assert 0.03 < has_rock < 0.3
    assert ((masks == masks[:, :1, :1]).all(axis=(1, 2))).sum() > 20  # some single-class masks


def test_synth_brightness_does_not_separate_classes() -> None:
    train = _synth(120, 1)[0]["training_set"]
    means = [train[:, 0][train[:, 1] == k].mean() for k in (1, 2, 3)]
    stds = [train[:, 0][train[:, 1] == k].std() for k in (1, 2, 3)]
    assert max(means) - min(means) < min(stds)


def test_write_npz_atomic_and_suffix(tmp_path: Path) -> None:
    arrays = _synth(120, 1, 10)[0]
    out = write_npz(tmp_path / "sub" / "s.npz", arrays)
    assert load_npz(out).images.shape == (120, 64, 128, 1)
    with pytest.raises(DataError, match=r"must end in \.npz"):
        write_npz(tmp_path / "s.txt", arrays)
    assert _files(tmp_path) == {"sub", "sub/s.npz"}


# ---------------------------------------------------------------- cleaning


def test_find_outliers_on_synthetic_data() -> None:
    arrays, truth = _synth(400, 5)
    train = arrays["training_set"]
    report = find_outliers(train[:, 1], ignore_label=0, images=train[:, 0])
    assert report.removed == truth.tolist()
    kept = [g for g in report.groups if not g["outlier"]]
    assert any(g["classes"] == [0] for g in kept)  # all-background masks are kept
    assert any(len(g["classes"]) == 1 and g["classes"] != [0] for g in kept)  # single-class masks too
    assert sum(g["outlier"] for g in report.groups) == 1


def test_identical_masks_on_near_duplicate_images_are_kept() -> None:
    arrays, truth = _synth(120, 1)
    base = arrays["training_set"][0, 0].astype(np.int16)
    images = np.stack([np.clip(base + d, 0, 255) for d in (0, 1, -1, 2)]).astype(np.uint8)
    masks = np.repeat(arrays["training_set"][truth[0], 1][None], 4, axis=0)
    report = find_outliers(masks, ignore_label=0, images=images)
    assert report.removed == [] and "near-duplicates" in report.groups[0]["reason"]
    assert find_outliers(masks, ignore_label=0).removed == [0, 1, 2, 3]  # without images every image counts as distinct
    with pytest.raises(DataError, match="min_group must be an integer >= 2"):
        find_outliers(masks, min_group=1, ignore_label=0)


def test_clean_npz_writes_cleaned_file_and_report(tmp_path: Path) -> None:
    arrays, truth = _synth(400, 5)
    src = write_npz(tmp_path / "in.npz", {**arrays, "test_set": arrays["training_set"][:7, 0]})
    report = clean_npz(src, tmp_path / "out.npz", tmp_path / "report.json")
    assert report.removed == truth.tolist()
    with np.load(tmp_path / "out.npz") as out:
        keep = np.setdiff1d(np.arange(400), truth)
        assert np.array_equal(out["training_set"], arrays["training_set"][keep])
        assert np.array_equal(out["test_set"], arrays["training_set"][:7, 0])
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["removed"] == truth.tolist() and saved["kept"] == 400 - len(truth)
    assert saved["input"] == str(src) and saved["groups"]
    assert _files(tmp_path) == {"in.npz", "out.npz", "report.json"}


def test_clean_npz_refuses_and_writes_nothing(tmp_path: Path) -> None:
    src = write_npz(tmp_path / "in.npz", _synth(120, 1)[0])
    with pytest.raises(DataError, match="Refusing to overwrite the input"):
        clean_npz(src, src, tmp_path / "r.json")
    with pytest.raises(DataError, match="Refusing to overwrite the input"):
        clean_npz(src, tmp_path / "o.npz", src)
    (tmp_path / "bad.npz").write_text("junk")
    with pytest.raises(DataError, match="not a readable .npz archive"):
        clean_npz(tmp_path / "bad.npz", tmp_path / "o.npz", tmp_path / "r.json")
    assert _files(tmp_path) == {"in.npz", "bad.npz"}


# ---------------------------------------------------------------- inspect


def test_inspect_synthetic(tmp_path: Path) -> None:
    src = write_npz(tmp_path / "s.npz", _synth(120, 1, 10)[0])
    info = inspect_npz(src)
    assert info["arrays"]["training_set"] == {"shape": [120, 2, 64, 128], "dtype": "uint8"}
    assert info["n_train"] == 120 and info["n_test"] == 10 and info["outliers"] == 3
    assert abs(sum(info["class_shares"].values()) - 1.0) < 1e-9
    json.dumps(info)
    text = format_summary(info)
    assert "class pixel shares" in text and "OUTLIER" in text


@pytest.mark.skipif(not REAL.is_file(), reason=f"real data file not found at {REAL}")
def test_real_file_loads_and_matches_readme() -> None:
    info = inspect_npz(REAL)
    assert info["n_train"] == 7200 and info["n_test"] == 4800
    for k, share in README_SHARES.items():
        assert abs(info["class_shares"][str(k)] - share) < 0.002, (k, info["class_shares"])
    flagged = [g for g in info["largest_groups"] if g["outlier"]]
    assert info["outliers"] == 110 and [g["size"] for g in flagged] == [110]
    assert any(g["classes"] == [0] and not g["outlier"] for g in info["largest_groups"])


# ---------------------------------------------------------------- AI4Mars import


def _fake_ai4mars(root: Path, bad_value: int | None = None) -> None:
    from PIL import Image

    (root / "images" / "edr").mkdir(parents=True)
    (root / "images" / "mxy").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "test").mkdir(parents=True)
    label = np.full((256, 256), 255, dtype=np.uint8)
    label[128:, :128], label[128:, 128:], label[:128, 128:] = 0, 1, 2
    label[200:, 200:] = 3 if bad_value is None else bad_value
    rng = np.random.default_rng(0)
    for stem, folder, name in (("A", "train", "A.png"), ("B", "test", "B_merged.png")):
        Image.fromarray(rng.integers(0, 256, (256, 256), dtype=np.uint8)).save(root / "images" / "edr" / f"{stem}.JPG")
        Image.fromarray(label).save(root / "labels" / folder / name)
    Image.fromarray(np.zeros((256, 256), np.uint8)).save(root / "images" / "edr" / "C.JPG")  # unlabelled image
    Image.fromarray(np.zeros((256, 256), np.uint8)).save(root / "images" / "mxy" / "A_MXY.png")  # rover mask


def test_import_ai4mars(tmp_path: Path) -> None:
    _fake_ai4mars(tmp_path / "msl")
    summary = import_ai4mars(tmp_path / "msl", tmp_path / "out.npz", seed=0)
    assert summary["sources"] == 2 and summary["pairs"] == 4 and summary["unpaired_images"] == 2
    data = load_npz(tmp_path / "out.npz")
    assert data.images.shape == (4, 64, 128, 1) and data.groups is not None
    assert data.groups.tolist() == [0, 0, 1, 1]
    top, bottom = data.masks[0], data.masks[1]
    assert (top[:, :64] == 0).all() and (top[:, 64:] == 3).all()  # 255 -> 0, 2 -> 3
    assert (bottom[:, :64] == 1).all() and (bottom[:, 64:100] == 2).all() and (bottom[-1, -1] == 4)
    train, val = split_indices(4, 0.5, seed=0, groups=data.groups)
    assert not set(data.groups[train]) & set(data.groups[val])


def test_import_ai4mars_errors_write_nothing(tmp_path: Path) -> None:
    _fake_ai4mars(tmp_path / "msl", bad_value=7)
    with pytest.raises(DataError, match=r"holds values \[7\]; expected AI4Mars labels 0-3 and 255"):
        import_ai4mars(tmp_path / "msl", tmp_path / "out.npz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="No image/label pairs"):
        import_ai4mars(tmp_path / "empty", tmp_path / "out.npz")
    with pytest.raises(DataError, match="not found"):
        import_ai4mars(tmp_path / "missing", tmp_path / "out.npz")
    assert not any(p.suffix in {".npz", ".tmp"} for p in tmp_path.rglob("*"))
