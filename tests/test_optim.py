"""Optimizers and schedules: cosine warm-up values, every optimizer and schedule builds."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from ablate import load_all
from ablate.errors import SpecError
from ablate.registry import OPTIMIZERS, SCHEDULES

load_all()  # registers every block (a saved model of this project reloads)


def lr_at(schedule: object, step: int) -> float:
    return float(schedule(step)) if callable(schedule) else float(schedule)


def test_cosine_warmup_then_decay() -> None:
    lr = SCHEDULES.build({"type": "cosine", "warmup_epochs": 2, "min_lr_ratio": 0.1}).learning_rate(
        1e-3, epochs=10, steps_per_epoch=10)
    assert isinstance(lr, keras.optimizers.schedules.LearningRateSchedule)
    assert lr_at(lr, 0) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(lr, 10) == pytest.approx(0.5e-3)  # halfway through the linear warm-up
    assert lr_at(lr, 20) == pytest.approx(1e-3)  # warm-up done: the base rate
    assert lr_at(lr, 60) == pytest.approx(1e-4 + 0.9e-3 * 0.5 * (1 + math.cos(math.pi * 40 / 80)))
    assert lr_at(lr, 100) == pytest.approx(1e-4)  # the floor, min_lr_ratio x base
    assert lr_at(lr, 500) == pytest.approx(1e-4)


def test_cosine_without_warmup_starts_at_base() -> None:
    lr = SCHEDULES.build({"type": "cosine", "warmup_epochs": 0}).learning_rate(2e-3, epochs=4, steps_per_epoch=5)
    assert lr_at(lr, 0) == pytest.approx(2e-3)
    assert lr_at(lr, 10) == pytest.approx(1e-3)
    assert lr_at(lr, 20) == pytest.approx(0.0, abs=1e-12)


def test_cosine_warmup_longer_than_run_leaves_a_decay_step() -> None:
    lr = SCHEDULES.build({"type": "cosine", "warmup_epochs": 5}).learning_rate(1e-3, epochs=1, steps_per_epoch=4)
    assert lr_at(lr, 3) == pytest.approx(1e-3)
    assert np.isfinite(lr_at(lr, 4))


@pytest.mark.parametrize(("config", "match"), [
    ({"type": "cosine", "min_lr_ratio": 2.0}, r"'schedule\.min_lr_ratio': expected a number in \[0, 1\], got 2\.0"),
    ({"type": "cosine", "warmup_epochs": -1}, r"'schedule\.warmup_epochs': expected a number >= 0, got -1"),
    ({"type": "cosin"}, "Unknown schedule 'cosin'.*Did you mean 'cosine'"),
])
def test_bad_schedules_are_spec_errors(config: dict[str, object], match: str) -> None:
    with pytest.raises(SpecError, match=match):
        SCHEDULES.build(config)


@pytest.mark.parametrize("name", SCHEDULES.names())
def test_every_schedule_builds(name: str) -> None:
    schedule = SCHEDULES.build({"type": name})
    lr = schedule.learning_rate(1e-3, epochs=3, steps_per_epoch=4)
    assert 0.0 <= lr_at(lr, 1) <= 1e-3
    callbacks = schedule.callbacks(3, 4)
    assert all(isinstance(cb, keras.callbacks.Callback) for cb in callbacks)
    assert bool(callbacks) == (name == "plateau")  # only plateau adapts through a callback


@pytest.mark.parametrize("name", OPTIMIZERS.names())
@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_every_optimizer_builds_and_steps(name: str, schedule: str) -> None:
    lr = SCHEDULES.build({"type": schedule}).learning_rate(1e-2, epochs=2, steps_per_epoch=2)
    opt = OPTIMIZERS.get(name)(learning_rate=lr)
    assert isinstance(opt, keras.optimizers.Optimizer)
    var = keras.Variable(np.ones(3, np.float32))
    for _ in range(2):
        opt.apply_gradients([(keras.ops.ones(3), var)])
    assert np.all(var.numpy() < 1.0)


def test_sgd_momentum_and_nesterov_pass_through() -> None:
    opt = OPTIMIZERS.get("sgd")(learning_rate=0.1, momentum=0.8, nesterov=True)
    assert opt.momentum == pytest.approx(0.8) and opt.nesterov
    with pytest.raises(SpecError, match=r"sgd: momentum must be in \[0, 1\)"):
        OPTIMIZERS.get("sgd")(momentum=1.5)
