"""Losses: numpy references, the class-0 contract, optima, capped weights, serialization."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest

from ablate import load_all
from ablate.errors import SpecError
from ablate.losses import PixelLoss, class_weights
from ablate.registry import LOSSES
from ablate.spec import validate

load_all()  # registers every block (a saved model of this project reloads)

C = 5
SUM = {"type": "sum", "terms": [{"loss": {"type": "ce"}, "weight": 1.0}, {"loss": {"type": "dice"}, "weight": 0.5}]}
# A default config per registered loss; a new loss without one fails test_every_loss_has_a_default.
DEFAULTS: dict[str, dict[str, Any]] = {name: {"type": name} for name in LOSSES.names() if name != "sum"}
DEFAULTS["sum"] = SUM


@pytest.fixture
def batch() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, C, size=(2, 4, 6))
    logits = rng.normal(size=(2, 4, 6, C)) * 2
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return y, p.astype(np.float32)


def build(config: dict[str, Any], masks: np.ndarray) -> PixelLoss:
    loss = LOSSES.build(config)
    loss.prepare(masks)
    return loss


def value(loss: Any, y: np.ndarray, p: np.ndarray) -> float:
    return float(loss(y, p))


# ---- numpy references ---------------------------------------------------------------------------

def _flat(y: np.ndarray, p: np.ndarray, ignore: bool) -> tuple[np.ndarray, np.ndarray]:
    keep = (y > 0) if ignore else np.ones(y.shape, bool)
    return y[keep], p[keep].astype(np.float64)


def np_ce(y: np.ndarray, p: np.ndarray, ignore: bool, weights: np.ndarray | None = None) -> float:
    yy, pp = _flat(y, p, ignore)
    nll = -np.log(pp[np.arange(len(yy)), yy])
    w = np.ones_like(nll) if weights is None else weights[yy]
    return float((w * nll).sum() / w.sum())


def np_focal(y: np.ndarray, p: np.ndarray, ignore: bool, gamma: float, alpha: list[float] | None) -> float:
    yy, pp = _flat(y, p, ignore)
    pt = pp[np.arange(len(yy)), yy]
    a = np.ones_like(pt) if alpha is None else np.asarray(alpha)[yy]
    return float(np.mean(-a * (1 - pt) ** gamma * np.log(pt)))


def np_region(y: np.ndarray, p: np.ndarray, ignore: bool, smooth: float, iou: bool) -> float:
    yy, pp = _flat(y, p, ignore)
    scores = []
    for k in range(1 if ignore else 0, C):
        g = (yy == k).astype(np.float64)
        inter, psum, gsum = (g * pp[:, k]).sum(), pp[:, k].sum(), g.sum()
        if iou:
            scores.append((inter + smooth) / (psum + gsum - inter + smooth))
        else:
            scores.append((2 * inter + smooth) / (psum + gsum + smooth))
    return 1.0 - float(np.mean(scores))


def np_lovasz_flat(yy: np.ndarray, pp: np.ndarray, classes: range) -> float | None:
    """Berman et al.'s lovasz_softmax_flat with classes='present', on labelled pixels only."""
    losses = []
    for c in classes:
        fg = (yy == c).astype(np.float64)
        if fg.sum() == 0:
            continue
        errors = np.abs(fg - pp[:, c])
        order = np.argsort(-errors, kind="stable")
        fg_sorted = fg[order]
        inter = fg_sorted.sum() - np.cumsum(fg_sorted)
        union = fg_sorted.sum() + np.cumsum(1 - fg_sorted)
        jaccard = 1.0 - inter / union
        jaccard[1:] = jaccard[1:] - jaccard[:-1]
        losses.append(float(errors[order] @ jaccard))
    return float(np.mean(losses)) if losses else None


def np_lovasz(y: np.ndarray, p: np.ndarray, ignore: bool, per_image: bool) -> float:
    classes = range(1 if ignore else 0, C)
    if not per_image:
        return np_lovasz_flat(*_flat(y, p, ignore), classes) or 0.0
    values = [np_lovasz_flat(*_flat(y[i], p[i], ignore), classes) for i in range(len(y))]
    return float(np.mean([v for v in values if v is not None]))


# ---- tests -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("ignore", [True, False])
def test_ce_matches_numpy(batch: tuple[np.ndarray, np.ndarray], ignore: bool) -> None:
    y, p = batch
    loss = build({"type": "ce", "ignore_background": ignore}, y)
    assert value(loss, y, p) == pytest.approx(np_ce(y, p, ignore), rel=1e-5)


@pytest.mark.parametrize("ignore", [True, False])
def test_weighted_ce_matches_numpy(batch: tuple[np.ndarray, np.ndarray], ignore: bool) -> None:
    y, p = batch
    loss = build({"type": "weighted_ce", "ignore_background": ignore, "cap": 3.0, "power": 0.5}, y)
    counts = np.bincount(y.ravel(), minlength=C).astype(float)
    scored = counts[1:] if ignore else counts
    w = np.minimum((scored.max() / scored) ** 0.5, 3.0)
    w = np.concatenate([[0.0], w]) if ignore else w
    np.testing.assert_allclose(loss.weights, w, rtol=1e-6)
    assert value(loss, y, p) == pytest.approx(np_ce(y, p, ignore, w), rel=1e-5)


@pytest.mark.parametrize("alpha", [None, [0.0, 1.0, 0.5, 2.0, 4.0]])
def test_focal_matches_numpy(batch: tuple[np.ndarray, np.ndarray], alpha: list[float] | None) -> None:
    y, p = batch
    loss = build({"type": "focal", "gamma": 1.5, "alpha": alpha}, y)
    assert value(loss, y, p) == pytest.approx(np_focal(y, p, True, 1.5, alpha), rel=1e-5)


@pytest.mark.parametrize("name", ["dice", "soft_miou"])
@pytest.mark.parametrize("ignore", [True, False])
def test_region_losses_match_numpy(batch: tuple[np.ndarray, np.ndarray], name: str, ignore: bool) -> None:
    y, p = batch
    loss = build({"type": name, "ignore_background": ignore, "smooth": 0.5}, y)
    assert value(loss, y, p) == pytest.approx(np_region(y, p, ignore, 0.5, iou=name == "soft_miou"), rel=1e-5)


@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("ignore", [True, False])
def test_lovasz_matches_numpy(batch: tuple[np.ndarray, np.ndarray], per_image: bool, ignore: bool) -> None:
    y, p = batch
    loss = build({"type": "lovasz", "per_image": per_image, "ignore_background": ignore}, y)
    assert value(loss, y, p) == pytest.approx(np_lovasz(y, p, ignore, per_image), rel=1e-5)


def test_sum_matches_its_terms(batch: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = batch
    expected = np_ce(y, p, True) + 0.5 * np_region(y, p, True, 1.0, iou=False)
    assert value(build(SUM, y), y, p) == pytest.approx(expected, rel=1e-5)


def test_every_loss_has_a_default() -> None:
    assert sorted(DEFAULTS) == LOSSES.names()


@pytest.mark.parametrize("name", LOSSES.names())
def test_background_pixels_have_no_effect(batch: tuple[np.ndarray, np.ndarray], name: str) -> None:
    y, p = batch
    loss = build(DEFAULTS[name], y)
    q = p.copy()
    rng = np.random.default_rng(1)
    q[y == 0] = rng.dirichlet(np.ones(C), size=int((y == 0).sum())).astype(np.float32)
    assert (y == 0).sum() > 0 and not np.allclose(p, q)
    assert value(loss, y, q) == pytest.approx(value(loss, y, p), rel=1e-6, abs=1e-7)


@pytest.mark.parametrize("name", ["dice", "soft_miou", "lovasz", "ce"])
def test_perfect_prediction_is_optimal(batch: tuple[np.ndarray, np.ndarray], name: str) -> None:
    y, p = batch
    perfect = np.eye(C, dtype=np.float32)[y]
    loss = build(DEFAULTS[name], y)
    assert value(loss, y, perfect) == pytest.approx(0.0, abs=1e-5)
    assert value(loss, y, p) > 0.05


def test_class_weights_are_capped() -> None:
    masks = np.zeros((1, 100, 100), np.uint8)
    masks[0, :50] = 1
    masks[0, 50:90] = 2
    masks[0, 90:99] = 3
    masks[0, 99, :10] = 4  # 10 pixels of big rock: uncapped weight 500
    w = class_weights(masks, power=1.0, cap=10.0, ignore_background=True)
    assert w[0] == 0.0 and w[1] == 1.0
    assert w[2] == pytest.approx(5000 / 4000)
    assert w[4] == 10.0 and max(w) == 10.0
    w_sqrt = class_weights(masks, power=0.5, cap=100.0, ignore_background=True)
    assert w_sqrt[4] == pytest.approx(np.sqrt(500))
    masks[masks == 4] = 3
    assert class_weights(masks, power=1.0, cap=7.0, ignore_background=True)[4] == 7.0  # absent class


def test_weighted_ce_needs_weights(batch: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = batch
    with pytest.raises(SpecError, match="call prepare"):
        LOSSES.build({"type": "weighted_ce"})(y, p)
    with pytest.raises(SpecError, match=r"'loss\.cap': expected a number >= 1"):
        LOSSES.build({"type": "weighted_ce", "cap": 0.5})


@pytest.mark.parametrize("name", LOSSES.names())
def test_serialization_round_trip(batch: tuple[np.ndarray, np.ndarray], name: str) -> None:
    y, p = batch
    loss = build(DEFAULTS[name], y)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(restored) is type(loss)
    assert restored.get_config() == loss.get_config()
    assert value(restored, y, p) == pytest.approx(value(loss, y, p), rel=1e-6)


@pytest.mark.parametrize("name", LOSSES.names())
def test_float16_predictions_give_float32_loss(batch: tuple[np.ndarray, np.ndarray], name: str) -> None:
    y, p = batch
    loss = build(DEFAULTS[name], y)
    out = loss.call(y, p.astype(np.float16))
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert float(out) == pytest.approx(value(loss, y, p), rel=1e-2, abs=1e-3)


@pytest.mark.parametrize("name", LOSSES.names())
def test_gradients_are_finite(batch: tuple[np.ndarray, np.ndarray], name: str) -> None:
    import tensorflow as tf

    y, p = batch
    loss = build(DEFAULTS[name], y)
    logits = tf.Variable(np.log(p))
    with tf.GradientTape() as tape:
        out = loss(y, tf.nn.softmax(logits))
    grad = tape.gradient(out, logits).numpy()
    assert np.isfinite(grad).all() and np.abs(grad).sum() > 0


def test_unknown_loss_inside_sum_is_a_spec_error() -> None:
    bad = {"type": "sum", "terms": [{"loss": {"type": "ce"}}, {"loss": {"type": "dise"}, "weight": 0.5}]}
    with pytest.raises(SpecError, match="Unknown loss 'dise'.*Did you mean 'dice'"):
        validate({"loss": bad})
    with pytest.raises(SpecError, match="Unknown loss 'dise'"):
        LOSSES.build(bad)
    with pytest.raises(SpecError, match=r"Unknown key 'gama' in loss.terms\[0\].loss"):
        validate({"loss": {"type": "sum", "terms": [{"loss": {"type": "focal", "gama": 2}}]}})
    with pytest.raises(SpecError, match=r"loss.terms\[0\] must be a mapping"):
        validate({"loss": {"type": "sum", "terms": [{"type": "ce"}]}})
