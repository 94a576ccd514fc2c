"""FLOPs per image: the profiler's count against counts worked out by hand, and its cache."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import pytest

from ablate import cost


def conv_model(bias: bool) -> keras.Model:
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=bias)(inputs)  # 2*3*3*1*4 per output pixel
    x = keras.layers.Conv2D(2, 1, use_bias=False)(x)  # 2*4*2 per output pixel
    return keras.Model(inputs, x)


@pytest.mark.parametrize(("bias", "expected"), [
    (False, 64 * (2 * 9 * 4) + 64 * (2 * 4 * 2)),
    (True, 64 * (2 * 9 * 4) + 64 * 4 + 64 * (2 * 4 * 2)),  # the bias adds one per output value
])
def test_the_count_of_a_small_model_is_the_hand_count(bias: bool, expected: int) -> None:
    assert cost.flops_per_image(conv_model(bias)) == expected


def test_a_count_is_cached_by_key_in_the_process_and_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path))
    monkeypatch.setattr(cost, "_COUNTED", {})
    first = cost.flops_per_image(conv_model(False), key="two convs")
    on_disk = json.loads((tmp_path / "flops.json").read_text())
    assert list(on_disk.values()) == [first]
    monkeypatch.setattr(cost, "_COUNTED", {})  # a new process: read back from disk, not counted again
    monkeypatch.setattr(cost, "_count", lambda model: pytest.fail("counted again despite the cache"))
    assert cost.flops_per_image(conv_model(True), key="two convs") == first
