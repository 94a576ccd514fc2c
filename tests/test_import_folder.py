"""``ablate data import-folder`` (issue 13): image and mask files written by Pillow -> an images/masks .npz."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_clean_failure, cli_in_process
from PIL import Image

from ablate.data import load_npz
from ablate.data.folder import import_folder, parse_size
from ablate.data.labelmap import parse_label_map
from ablate.errors import DataError

H, W = 24, 40
COLOURS = {(0, 0, 0): 0, (0, 160, 0): 1, (200, 200, 0): 2, (255, 255, 255): 255}


def _mask(i: int) -> np.ndarray:
    """Labels 0-2 in blocks (shifted per image) and a corner of 255."""
    m = np.zeros((H, W), np.uint8)
    m[: H // 2, (i * 3) % W :] = 1
    m[H // 2 :, : W // 2] = 2
    m[:4, :4] = 255
    return m


def _image(i: int, rgb: bool) -> np.ndarray:
    rng = np.random.default_rng(i)
    return rng.integers(0, 256, (H, W, 3) if rgb else (H, W), dtype=np.uint8)


def _folders(root: Path, n: int = 3, rgb: bool = False, image_ext: str = "png", mask_mode: str = "L") -> Path:
    (root / "img").mkdir(parents=True)
    (root / "msk").mkdir()
    for i in range(n):
        Image.fromarray(_image(i, rgb)).save(root / "img" / f"p{i}.{image_ext}")
        m = _mask(i)
        if mask_mode == "P":  # indices with a colourful palette: the indices are the labels
            img = Image.frombytes("P", (W, H), m.tobytes())
            img.putpalette([v for k in range(256) for v in ((k * 37) % 256, (k * 91) % 256, (k * 13) % 256)])
        elif mask_mode == "RGB":
            lut = {v: c for c, v in COLOURS.items()}
            img = Image.fromarray(np.array([[lut[v] for v in row] for row in m], np.uint8))
        else:
            img = Image.fromarray(m)
        img.save(root / "msk" / f"p{i}.png")
    return root


def _written(root: Path) -> set[str]:
    return {p.name for p in root.rglob("*") if p.suffix in (".npz", ".tmp")}


@pytest.mark.parametrize("ext", ["png", "tif", "jpg"])
def test_grey_round_trip(tmp_path: Path, ext: str) -> None:
    root = _folders(tmp_path, image_ext=ext)
    result = import_folder(root / "img", root / "msk", tmp_path / "out.npz")
    data = load_npz(tmp_path / "out.npz", task=result.task)
    assert result.pairs == 3 and result.task.input_shape == (H, W, 1) and result.task.ignore_label == 255
    assert result.task.num_classes == 3 and data.images.shape == (3, H, W, 1)
    assert all(np.array_equal(data.masks[i], _mask(i)) for i in range(3))
    if ext != "jpg":  # lossless formats keep every pixel
        assert all(np.array_equal(np.round(data.images[i, ..., 0] * 255), _image(i, False)) for i in range(3))
    with np.load(tmp_path / "out.npz") as z:
        assert z["names"].tolist() == ["p0", "p1", "p2"] and z["images"].dtype == np.uint8


def test_rgb_with_palette_masks_and_test_dir(tmp_path: Path) -> None:
    root = _folders(tmp_path, rgb=True, mask_mode="P")
    (tmp_path / "test").mkdir()
    for i in range(2):
        Image.fromarray(_image(10 + i, True)).save(tmp_path / "test" / f"t{i}.jpg")
    result = import_folder(root / "img", root / "msk", tmp_path / "out.npz", test_dir=tmp_path / "test")
    data = load_npz(tmp_path / "out.npz")
    assert data.task == result.task and result.task.channels == 3 and result.test_images == 2
    assert data.images.shape == (3, H, W, 3) and data.test_images is not None and data.test_images.shape[0] == 2
    assert np.array_equal(np.round(data.images[1] * 255), _image(1, True))
    assert all(np.array_equal(data.masks[i], _mask(i)) for i in range(3))  # palette indices, not colours
    grey = import_folder(root / "img", root / "msk", tmp_path / "grey.npz", channels=1)
    assert grey.task.channels == 1 and load_npz(tmp_path / "grey.npz").images.shape == (3, H, W, 1)


def test_resize_uses_nearest_for_masks(tmp_path: Path) -> None:
    root = _folders(tmp_path, rgb=True)
    result = import_folder(root / "img", root / "msk", tmp_path / "out.npz", size=(16, 24))
    data = load_npz(tmp_path / "out.npz", task=result.task)
    assert data.images.shape == (3, 16, 24, 3) and data.masks.shape == (3, 16, 24)
    for i in range(3):
        assert set(np.unique(data.masks[i])) <= set(np.unique(_mask(i)))  # no label is invented by blending
    assert set(np.unique(data.masks)) == {0, 1, 2, 255}
    up = import_folder(root / "img", root / "msk", tmp_path / "up.npz", size=(48, 80))
    assert up.task.input_shape == (48, 80, 3) and set(np.unique(load_npz(tmp_path / "up.npz").masks)) == {0, 1, 2, 255}


def test_label_maps_for_colours_and_values(tmp_path: Path) -> None:
    root = _folders(tmp_path / "rgb", mask_mode="RGB")
    inline = json.dumps({",".join(map(str, c)): v for c, v in COLOURS.items()})
    import_folder(root / "img", root / "msk", tmp_path / "c.npz", label_map=parse_label_map(inline))
    assert all(np.array_equal(load_npz(tmp_path / "c.npz").masks[i], _mask(i)) for i in range(3))
    grey = _folders(tmp_path / "grey")
    yaml_file = tmp_path / "map.yaml"
    yaml_file.write_text("0: 1\n1: 2\n2: 3\n255: 0\n")
    result = import_folder(grey / "img", grey / "msk", tmp_path / "v.npz", label_map=parse_label_map(str(yaml_file)))
    masks = load_npz(tmp_path / "v.npz").masks
    lut = np.array([1, 2, 3] + [0] * 253, np.uint8)
    assert np.array_equal(masks[2], lut[_mask(2)]) and result.task.ignore_label is None
    assert result.task.num_classes == 4


@pytest.mark.parametrize(("setup", "kwargs", "match"), [
    ("unpaired", {}, r"Unpaired files in .*: 2 image\(s\) without a mask \(extra0, extra1\); 1 mask\(s\) without an "
                     r"image \(lonely\); expected one mask per image with the same file name stem\."),
    ("rgb masks", {}, r"mask 'p0\.png' is an RGB image with colours 0,0,0; 0,160,0; .* that no --label-map maps"),
    ("unmapped value", {"label_map": '{"0": 0, "1": 1}'}, r"mask 'p0\.png' holds values \[2, 255\] that the label "
                                                           r"map does not map; expected only \[0, 1\]"),
    ("sizes differ", {}, r"'p1\.png' is 20x40 but 'p0\.png' is 24x40; give --size HxW"),
    ("mask size", {}, r"Mask 'p0\.png' is 12x20 but its image 'p0\.png' is 24x40; expected the same size"),
    ("not an image", {}, r"'.*p0\.png' is not a readable image"),
    ("missing folder", {}, r"The masks folder '.*nope' does not exist"),
])
def test_bad_folders_are_one_line_and_write_nothing(tmp_path: Path, setup: str, kwargs: dict, match: str) -> None:
    root = _folders(tmp_path, mask_mode="RGB" if setup == "rgb masks" else "L")
    masks = root / "msk"
    if setup == "unpaired":
        for name in ("extra0", "extra1"):
            Image.fromarray(_image(0, False)).save(root / "img" / f"{name}.png")
        Image.fromarray(_mask(0)).save(masks / "lonely.png")
    elif setup == "sizes differ":
        Image.fromarray(_image(1, False)[:20]).save(root / "img" / "p1.png")
        Image.fromarray(_mask(1)[:20]).save(masks / "p1.png")
    elif setup == "mask size":
        Image.fromarray(_mask(0)[::2, ::2]).save(masks / "p0.png")
    elif setup == "not an image":
        (root / "img" / "p0.png").write_bytes(b"not a png")
    elif setup == "missing folder":
        masks = root / "nope"
    label_map = parse_label_map(kwargs.get("label_map"))
    with pytest.raises(DataError, match=match) as info:
        import_folder(root / "img", masks, tmp_path / "out.npz", label_map=label_map)
    assert "\n" not in str(info.value) and len(str(info.value)) < 400
    assert _written(tmp_path) == set()


@pytest.mark.parametrize("text", ["64", "64x", "0x128", "64*128", "axb", "9000x8"])
def test_bad_size(text: str) -> None:
    with pytest.raises(DataError, match=rf"--size '{re.escape(text)}' is not HxW; expected height x width"):
        parse_size(text)
    assert parse_size(" 48X96 ") == (48, 96)


@pytest.mark.parametrize("arg", ['{"0": 300}', '{"a,b": 1}', "[1, 2]", "{nope", "missing.json"])
def test_bad_label_maps(arg: str) -> None:
    with pytest.raises(DataError, match="label.map|--label-map"):
        parse_label_map(arg)


@pytest.mark.parametrize(("content", "match"), [
    (b"0: 0\n" + b"#" * (1 << 20) + b"\n", r" is 1\.0 MiB; expected a YAML file of at most 1 MiB"),
    (b"0: 0\n7: 1\n0: 2\n", r", line 3 repeats the key '0' \(first at line 1\)"),
    (b"a: &a [1, 2]\nb: [" + b", ".join([b"*a"] * 101) + b"]\n", r", line 2 uses more than 100 aliases"),
    (b"{0: 0,\n", r" is not valid YAML: .* at line 2, column 1\.$"),
], ids=["too-large", "duplicate-key", "aliases", "invalid"])
def test_a_bad_label_map_file_is_yamlio_s_one_line(tmp_path: Path, content: bytes, match: str) -> None:
    """A label map file is read by ``ablate.yamlio``, under the limits every spec file has."""
    path = tmp_path / "map.yaml"
    path.write_bytes(content)
    with pytest.raises(DataError, match=rf"^Label map '.*map\.yaml'{match}") as caught:
        parse_label_map(str(path))
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 300


def test_an_inline_label_map_that_is_not_yaml_is_one_line() -> None:
    with pytest.raises(DataError, match=r"^--label-map is not valid JSON or YAML: .* at line 1, column \d+\.$"):
        parse_label_map('{"0": 0, "1": ')


def test_cli_round_trip_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _folders(tmp_path, rgb=True)
    out = tmp_path / "o.npz"
    args = ["data", "import-folder", str(root / "img"), str(root / "msk"), "--out", str(out)]
    code, _, err = cli_in_process([*args, "--size", "24by40"], capsys)
    assert_clean_failure(code, err, r"--size '24by40' is not HxW")
    code, _, err = cli_in_process([*args, "--label-map", '{"0": 0}'], capsys)
    assert_clean_failure(code, err, r"holds values \[1, 2, 255\] that the label map does not map")
    assert _written(tmp_path) == set()
    code, text, _ = cli_in_process([*args, "--size", "12x20", "--grey"], capsys)
    assert code == 0 and f"wrote {out}: 3 pairs, 0 test images" in text
    assert "task: 12x20x1, 3 classes (class_0, class_1, class_2), ignore label 255" in text
    code, text, _ = cli_in_process(["data", "inspect", str(out)], capsys)
    assert code == 0 and "task: 12x20x1, 3 classes" in text and "255 ignored" in text


def test_class_names_are_stored_and_name_the_inferred_task(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _folders(tmp_path)
    out = tmp_path / "named.npz"
    args = ["data", "import-folder", str(root / "img"), str(root / "msk"), "--out", str(out)]
    code, text, _ = cli_in_process([*args, "--classes", "sky, sand,rock"], capsys)
    assert code == 0 and "task: 24x40x1, 3 classes (sky, sand, rock), ignore label 255" in text, text
    assert load_npz(out).task.classes == ["sky", "sand", "rock"]  # read back from the file's 'classes'
    code, text, _ = cli_in_process(["data", "inspect", str(out)], capsys)
    assert code == 0 and "3 classes (sky, sand, rock)" in text
    for names, match in ((["sky", "sand"], r"'classes' names 2 classes \(sky, sand\) but its masks hold label 2; "
                                           r"expected a name for every label 0-2"),
                         (["Sky", "sand", "rock"], r"class names in the file's 'classes' array make no valid task: "
                                                   r".*'Sky' must be 1-40 lower-case letters"),
                         (["sky", "sky", "rock"], r"class names must be distinct")):
        code, _, err = cli_in_process([*args[:-1], str(tmp_path / "bad.npz"), "--classes", ",".join(names)], capsys)
        assert_clean_failure(code, err, match)
    assert _written(tmp_path) == {"named.npz"}  # nothing half-written by the refused imports


@pytest.mark.parametrize(("classes", "match"), [
    (np.array([1, 2, 3]), r"'classes' in '.*' has shape \(3,\) and dtype int64; expected 2-255 class names as a 1-D "
                          r"string array"),
    (np.array([["a", "b"]]), r"has shape \(1, 2\)"),
    (np.array(["only"]), r"has shape \(1,\)"),
])
def test_a_bad_classes_array_is_one_line(tmp_path: Path, classes: np.ndarray, match: str) -> None:
    file = tmp_path / "bad.npz"
    np.savez(file, images=np.zeros((2, 8, 8), np.uint8), masks=np.zeros((2, 8, 8), np.uint8), classes=classes)
    with pytest.raises(DataError, match=match) as info:
        load_npz(file)
    assert "\n" not in str(info.value)


def test_mars_names_in_a_course_file_keep_the_mars_task(tmp_path: Path) -> None:
    from ablate.task import MARS

    pairs = np.zeros((4, 2, 64, 128), np.uint8)
    pairs[:, 1, :, :64] = 4
    for names, mars in ((None, True), (list(MARS.classes), True), (["void", "a", "b", "c", "d"], False)):
        file = tmp_path / "course.npz"
        np.savez(file, training_set=pairs, **({} if names is None else {"classes": np.array(names)}))
        task = load_npz(file).task
        assert (task == MARS) is mars and (names is None or task.classes == names)
