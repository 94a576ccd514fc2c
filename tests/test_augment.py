"""Augmentations: image-mask alignment, label range, seeding, copy-paste, tf.data graph mode."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import tensorflow as tf

from ablate import load_all
from ablate.augment import Policy, warp
from ablate.errors import SpecError
from ablate.pipeline import train_dataset
from ablate.registry import AUGMENTATIONS
from ablate.spec import validate

load_all()  # registers every block (a saved model of this project reloads)

H, W = 64, 128
PHOTOMETRIC = {"brightness_contrast"}  # change intensities only: the mask must stay as it was
FULL = [{"type": name, "p": 1.0} for name in AUGMENTATIONS.names() if name not in PHOTOMETRIC]


def block_masks(n: int, seed: int = 0, block: int = 16) -> np.ndarray:
    """Masks of constant 16x16 blocks with random labels 0-4 (every image holds big rock)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 5, size=(n, H // block, W // block))
    small[:, 0, 0] = 4
    return np.repeat(np.repeat(small, block, axis=1), block, axis=2).astype(np.uint8)


def encode(masks: np.ndarray) -> np.ndarray:
    """Images whose intensity encodes the label: image = mask / 4."""
    return (masks.astype(np.float32) / 4.0)[..., None]


def policy(configs: list[dict[str, Any]], masks: np.ndarray) -> Policy:
    pol = Policy(configs)
    pol.prepare(encode(masks), masks)
    return pol


def run(pol: Policy, image: np.ndarray, mask: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    out_image, out_mask = pol(tf.constant(image), tf.constant(mask), tf.constant([seed, 7], tf.int64))
    return out_image.numpy(), out_mask.numpy()


def consistent_pixels(image: np.ndarray) -> np.ndarray:
    """Pixels away from the border whose intensity is exactly one label's (not a bilinear blend).

    There, every interpolated neighbour held that label, so nearest must pick it too; one
    pixel of misalignment between image and mask shows up along every block edge.
    """
    img = image[..., 0]
    keep = np.abs(img * 4 - np.round(img * 4)) < 1e-4
    keep[:2], keep[-2:], keep[:, :2], keep[:, -2:] = False, False, False, False
    return keep


CASES = [[{"type": name, "p": 1.0}] for name in AUGMENTATIONS.names()] + [FULL]
IDS = [*AUGMENTATIONS.names(), "full-policy"]


@pytest.mark.parametrize("configs", CASES, ids=IDS)
def test_image_and_mask_stay_aligned(configs: list[dict[str, Any]]) -> None:
    masks = block_masks(4)
    pol = policy(configs, masks)
    for i, (image, mask) in enumerate(zip(encode(masks), masks, strict=True)):
        out_image, out_mask = run(pol, image, mask, seed=i)
        assert out_image.shape == (H, W, 1) and out_image.dtype == np.float32
        assert out_mask.shape == (H, W) and out_mask.dtype == np.uint8
        if configs[0]["type"] in PHOTOMETRIC:
            np.testing.assert_array_equal(out_mask, mask)
            assert not np.allclose(out_image, image)
            continue
        keep = consistent_pixels(out_image)
        assert keep.mean() > 0.3, "too few pixels to check alignment"
        np.testing.assert_array_equal(out_mask[keep], np.round(out_image[keep, 0] * 4).astype(np.uint8))


@pytest.mark.parametrize("name", AUGMENTATIONS.names())
def test_labels_stay_in_range(name: str) -> None:
    rng = np.random.default_rng(1)
    masks = rng.integers(0, 5, size=(2, H, W)).astype(np.uint8)
    masks[:, :8, :8] = 4
    pol = policy([{"type": name, "p": 1.0}], masks)
    for seed in range(3):
        _, out_mask = run(pol, rng.random((H, W, 1), np.float32), masks[1], seed)
        assert out_mask.min() >= 0 and out_mask.max() <= 4


@pytest.mark.parametrize("name", AUGMENTATIONS.names())
def test_seeding(name: str) -> None:
    masks = block_masks(3, seed=2)
    pol = policy([{"type": name, "p": 0.5}], masks)
    image, mask = encode(masks)[1], masks[1]
    outputs = [run(pol, image, mask, seed) for seed in range(8)]
    again = run(pol, image, mask, 3)
    np.testing.assert_array_equal(again[0], outputs[3][0])
    np.testing.assert_array_equal(again[1], outputs[3][1])
    distinct = {out[0].tobytes() + out[1].tobytes() for out in outputs}
    assert len(distinct) > 1, "different seeds gave the same output every time"


def test_copy_paste_adds_big_rock() -> None:
    bank_masks = block_masks(6)
    target = np.full((H, W), 2, np.uint8)
    pol = policy([{"type": "copy_paste", "p": 1.0, "size": 24}], bank_masks)
    for seed in range(4):
        out_image, out_mask = run(pol, encode(target[None])[0], target, seed)
        rock = out_mask == 4
        assert rock.sum() > 0
        np.testing.assert_allclose(out_image[rock, 0], 1.0)  # the source images' big-rock intensity
        np.testing.assert_array_equal(out_mask[~rock], 2)


def test_copy_paste_bank_is_capped_and_needs_prepare() -> None:
    masks = block_masks(10)
    pol = Policy([{"type": "copy_paste", "p": 1.0, "bank_size": 3}])
    with pytest.raises(RuntimeError, match="call prepare"):
        run(pol, encode(masks)[0], masks[0], 0)
    pol.prepare(encode(masks), masks)
    assert len(pol.augs[0].bank[0]) == 3
    no_rock = np.ones((2, H, W), np.uint8)
    empty = policy([{"type": "copy_paste", "p": 1.0}], no_rock)
    _, out_mask = run(empty, encode(no_rock)[0], no_rock[0], 0)
    np.testing.assert_array_equal(out_mask, no_rock[0])


def test_fused_affine_run_matches_one_warp() -> None:
    masks = block_masks(1)
    pol = policy([{"type": "zoom", "p": 1.0}, {"type": "rotate", "p": 1.0}], masks)
    image, mask = encode(masks)[0], masks[0]
    seed = tf.constant([5, 7], tf.int64)
    fused = pol(tf.constant(image), tf.constant(mask), seed)
    h, w = tf.constant(float(H)), tf.constant(float(W))
    matrix = tf.eye(3)
    for i, aug in enumerate(pol.augs):
        _, op_seed = aug.coin(tf.random.experimental.stateless_fold_in(seed, i))
        matrix = matrix @ aug.matrix(op_seed, h, w)
    expected = warp(tf.constant(image), tf.constant(mask), matrix)
    np.testing.assert_allclose(fused[0].numpy(), expected[0].numpy(), atol=1e-6)
    np.testing.assert_array_equal(fused[1].numpy(), expected[1].numpy())


def test_policy_runs_inside_tf_data_and_is_deterministic() -> None:
    masks = block_masks(8)
    images = encode(masks)

    def first_batch() -> tuple[np.ndarray, np.ndarray]:
        ds = train_dataset(images, masks, batch_size=4, seed=3, policy=Policy(FULL), shuffle_buffer=8)
        x, y = next(iter(ds))
        return x.numpy(), y.numpy()

    x1, y1 = first_batch()
    x2, y2 = first_batch()
    assert x1.shape == (4, H, W, 1) and y1.shape == (4, H, W) and y1.dtype == np.uint8
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert y1.max() <= 4


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"type": "rotate", "p": 1.5}, r"'augmentation.p': expected a number in \[0, 1\]"),
        ({"type": "zoom", "scale": [1.2, 0.8]}, "zoom: scale must be"),
        ({"type": "cutout", "size": 0}, r"'augmentation.size': expected a number > 0, got 0"),
        ({"type": "cutout", "size": 1.5}, r"cutout: size must be in \(0, 1\]"),  # the constructor's own check
        ({"type": "elastic", "spacing": 1}, "'augmentation.spacing': expected an integer >= 2"),
        ({"type": "rotat"}, "Unknown augmentation 'rotat'.*Did you mean 'rotate'"),
    ],
)
def test_bad_configs_are_spec_errors(config: dict[str, Any], match: str) -> None:
    with pytest.raises(SpecError, match=match):
        Policy([config])


def test_unknown_key_is_named_in_the_spec() -> None:
    with pytest.raises(SpecError, match=r"Unknown key 'degree' in augment\[0\]"):
        validate({"augment": [{"type": "rotate", "degree": 10}]})
