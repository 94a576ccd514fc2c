"""The seed contract and a learning sanity check, on tiny models and synthetic data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from helpers import PRESET, TINY_MODEL

from ablate import load_all
from ablate.spec import Spec, load_spec
from ablate.train import fit, load_data

load_all()  # registers every block (a saved model of this project reloads)

FAST = ["train.epochs=1", "train.batch_size=16", "train.early_stopping=0", "tracking.log_model=false"]


def tiny_spec(data: Path, *overrides: str) -> Spec:
    """The baseline preset (flip augmentation included) shrunk to seconds on a CPU."""
    return load_spec(PRESET, [f"data.path={data}", "data.limit=64", *TINY_MODEL, *FAST, *overrides])


def first_loss(spec: Spec) -> float:
    return fit(spec, verbose=0).history["loss"][0]


@pytest.fixture(scope="module")
def seed0_loss(synth_npz: Path) -> float:
    return first_loss(tiny_spec(synth_npz, "seed=0"))


def test_same_spec_and_seed_give_the_same_first_epoch_loss(synth_npz: Path, seed0_loss: float) -> None:
    again = first_loss(tiny_spec(synth_npz, "seed=0"))
    assert np.isfinite(seed0_loss)
    assert again == pytest.approx(seed0_loss, rel=1e-6, abs=0)


def test_a_different_seed_gives_a_different_split_and_loss(synth_npz: Path, seed0_loss: float) -> None:
    a, b = load_data(tiny_spec(synth_npz, "seed=0")), load_data(tiny_spec(synth_npz, "seed=1"))
    assert len(a.x_val) == len(b.x_val) > 0
    assert not np.array_equal(a.y_val, b.y_val)
    np.testing.assert_array_equal(a.y_val, load_data(tiny_spec(synth_npz, "seed=0")).y_val)  # a fixed split
    assert abs(first_loss(tiny_spec(synth_npz, "seed=1")) - seed0_loss) > 1e-4


def test_training_reduces_the_loss(synth_npz: Path) -> None:
    spec = tiny_spec(synth_npz, "data.limit=128", "train.epochs=4", "optimizer.learning_rate=0.01", "augment=[]")
    result = fit(spec, verbose=0)
    losses = result.history["loss"]
    assert len(losses) == 4 and all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0], losses
    assert result.history["val_miou"][-1] > 0.0
    assert set(result.best) >= {"val_loss", "val_miou", "val_iou_soil"}


SWITCHES = {  # the speed switches benchmarks/gpu.py measures; each must train on a CPU too
    "fp32": [],
    "mixed": ["train.mixed_precision=true"],
    "xla": ["train.jit_compile=true"],
    "mixed+xla": ["train.mixed_precision=true", "train.jit_compile=true"],
}


@pytest.mark.parametrize("switch", list(SWITCHES))
def test_every_speed_switch_builds_and_trains_to_a_finite_loss(synth_npz: Path, switch: str) -> None:
    spec = tiny_spec(synth_npz, "data.limit=40", *SWITCHES[switch])  # 32 + 8 pairs: full batches, one XLA compile each
    try:
        result = fit(spec, verbose=0)
        policy = result.model.dtype_policy.name
    finally:
        keras.mixed_precision.set_global_policy("float32")  # fit leaves the global policy set; other tests build models
    assert result.epochs_run == 1
    assert np.isfinite(result.history["loss"][0]) and np.isfinite(result.history["val_loss"][0])
    assert np.isfinite(result.best["val_miou"])
    assert policy == ("mixed_float16" if spec.train.mixed_precision else "float32")
    assert bool(result.model.jit_compile) is spec.train.jit_compile


def _epochs(scores: list[float], planned: int) -> tuple[list[np.ndarray], list[np.ndarray], Any]:
    """Runs ``BestWeights`` over epochs with these val mIoUs, the model's weights changing each epoch;
    returns the weights at each epoch's end, the model's weights after training, and the callback."""
    from ablate.train import BestWeights

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    callback = BestWeights()
    callback.set_model(model)
    callback.set_params({"epochs": planned})
    seen = []
    for epoch, score in enumerate(scores):
        model.set_weights([w + epoch + 1 for w in model.get_weights()])  # what the epoch's training did
        seen.append(model.get_weights()[0].copy())
        callback.on_epoch_end(epoch, {"val_miou": score})
    callback.on_train_end()
    return seen, model.get_weights(), callback


@pytest.mark.parametrize(("scores", "planned", "best"), [
    ([0.5, 0.4, 0.3], 3, 0),  # a worse last epoch: the best one's weights come back
    ([0.5, 0.7, 0.6], 3, 1),
    ([0.5, 0.6, 0.9], 3, 2),  # the best is the planned last epoch: kept as trained, never copied
    ([0.5, 0.6], 5, 1),  # stopped early right after a new best
    ([0.2], 1, 0),  # a one-epoch trial
])
def test_best_weights_restores_the_best_epoch(scores: list[float], planned: int, best: int) -> None:
    seen, final, callback = _epochs(scores, planned)
    assert callback.best_epoch == best
    np.testing.assert_array_equal(final[0], seen[best])


def test_best_weights_copies_nothing_when_the_best_epoch_is_the_planned_last() -> None:
    _, _, callback = _epochs([0.5, 0.6, 0.9], 3)
    assert callback.weights is None


def test_training_passes_after_the_first_skip_the_validation_record(synth_npz: Path) -> None:
    """The mIoU metric's per-image record is the validation pass's: from the second epoch on a training
    pass does not pay for it (the record is on again for each validation pass and after the fit)."""
    from ablate.train import _miou_metric

    seen_in_training: list[int] = []

    class Watch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            seen_in_training.append(int(_miou_metric(self.model).seen.numpy()))

    result = fit(tiny_spec(synth_npz, "train.epochs=2"), callbacks=[Watch()], verbose=0)
    per_epoch = len(seen_in_training) // 2
    assert seen_in_training[per_epoch - 1] > 0  # the first epoch: recorded while the metric was being built
    assert seen_in_training[per_epoch:] == [0] * per_epoch  # the second: skipped
    metric = _miou_metric(result.model)
    assert int(metric.recording.numpy()) == 1 and result.extras["confusions"].sum() > 0
