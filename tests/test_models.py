"""Model builders: depth and width checks at spec time, the encoder-to-decoder contract,
stochastic depth wiring, the coarse-fine model with every fusion, and the presets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import pytest

from ablate import load_all
from ablate.blocks.base import DropPath
from ablate.errors import SpecError
from ablate.models import build_model
from ablate.models.coarse_fine import global_config
from ablate.models.unet import encode, make_branch
from ablate.registry import FUSIONS
from ablate.spec import check_buildable, load_spec

load_all()  # registers every block (a saved model of this project reloads)

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted((ROOT / "ablations/presets").glob("*.yaml"))
TINY_GLOBAL = {"type": "unet", "downsample": 2, "depth": 3, "filters": 4}


def params(model_spec: dict[str, Any]) -> int:
    return int(build_model(model_spec).count_params())


# --- depth and width --------------------------------------------------------------------------

@pytest.mark.parametrize(("depth", "message"), [
    (6, r"model\.depth=6 is not possible for a 64x128 input: the bottleneck would be 1x2 .*1 to 5"),  # the size limit
    (0, r"Invalid value for 'model\.depth': expected an integer >= 1, got 0"),  # the domain's limit
    (-1, r"Invalid value for 'model\.depth': expected an integer >= 1, got -1"),
])
def test_impossible_depth_is_a_spec_error_at_load_time(depth: int, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        load_spec({"model": {"type": "unet", "depth": depth}})


@pytest.mark.parametrize("depth", ["3", True, 2.5])  # strict ints: no string, bool or float
def test_non_integer_depth_is_a_spec_error(depth: Any) -> None:
    with pytest.raises(SpecError, match=r"Invalid value for 'model\.depth': expected an integer \(default 3\)"):
        load_spec({"model": {"type": "unet", "depth": depth}})


# The global branch's size depends on its down-sampling block, so these are constructor checks:
# ``check_buildable``, which every training command runs before its first run.
def test_impossible_global_depth_is_a_spec_error() -> None:
    spec = load_spec({"model": {"type": "coarse_fine", "global_branch": {"type": "unet", "downsample": 4, "depth": 5}}})
    with pytest.raises(SpecError, match=r"model\.global_branch\.depth=5 is not possible for a 16x32 input"):
        check_buildable(spec)


def test_global_downsample_must_divide_the_input() -> None:
    spec = load_spec({"model": {"type": "coarse_fine", "global_branch": {"type": "unet", "downsample": 3}}})
    with pytest.raises(SpecError, match=r"model\.global_branch\.downsample=3 must divide the 64x128 input"):
        check_buildable(spec)


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5])
def test_encoder_returns_one_feature_per_scale(depth: int) -> None:
    """The encoder-to-decoder contract: {scale: feature} for scales 1 .. 2**depth."""
    features = encode(keras.Input((64, 128, 1)), make_branch({"depth": depth, "filters": 2}))
    assert sorted(features) == [2**level for level in range(depth + 1)]
    for scale, feature in features.items():
        assert tuple(feature.shape[1:3]) == (64 // scale, 128 // scale)


def test_width_mult_scales_the_parameter_count() -> None:
    base = {"type": "unet", "depth": 2, "filters": 4}
    narrow, plain, wide = (params({**base, "width_mult": m}) for m in (0.5, 1.0, 2.0))
    assert narrow < plain < wide
    assert wide > 3 * plain  # convolutions grow with the square of the width


def test_filters_and_width_mult_are_checked() -> None:
    with pytest.raises(SpecError, match=r"Invalid value for 'model\.width_mult': expected a number > 0, got 0\."):
        load_spec({"model": {"type": "unet", "width_mult": 0}})
    with pytest.raises(SpecError, match=r"Invalid value for 'model\.filters': expected an integer >= 1, got 0\."):
        load_spec({"model": {"type": "unet", "filters": 0}})


# --- stochastic depth -------------------------------------------------------------------------

def _drop_rates(model: keras.Model) -> list[float]:
    return [layer.rate for layer in model._flatten_layers(include_self=False) if isinstance(layer, DropPath)]


def test_stochastic_depth_reaches_residual_blocks_and_a_block_setting_wins() -> None:
    base = {"type": "unet", "depth": 2, "filters": 4, "regularizer": {"type": "stochastic_depth", "rate": 0.2}}
    assert set(_drop_rates(build_model({**base, "conv": {"type": "residual"}}))) == {0.2}
    assert set(_drop_rates(build_model({**base, "conv": {"type": "residual", "drop_path": 0.05}}))) == {0.05}
    assert _drop_rates(build_model({**base, "conv": {"type": "double"}})) == []  # no residual branch to drop


# --- coarse-fine --------------------------------------------------------------------------------

@pytest.mark.parametrize("fusion", FUSIONS.names())
def test_coarse_fine_builds_with_every_fusion(fusion: str) -> None:
    model = build_model({"type": "coarse_fine", "depth": 2, "filters": 4, "global_branch": TINY_GLOBAL,
                         "fusion": {"type": fusion}})
    assert tuple(model.output.shape) == (None, 64, 128, 5)
    assert tuple(model.get_layer("l_bottleneck").output.shape[1:3]) == (16, 32)
    assert tuple(model.get_layer("g_bottleneck").output.shape[1:3]) == (4, 8)  # 32x64 input, 3 down-samplings
    assert tuple(model.get_layer("fusion").output.shape[1:]) == (64, 128, 4)


def test_global_branch_defaults_fill_only_missing_keys() -> None:
    assert global_config(None) == {"type": "unet", "downsample": 2, "depth": 4}
    assert global_config({"type": "unet", "depth": 2}) == {"type": "unet", "downsample": 2, "depth": 2}


def test_coarse_fine_global_branch_has_its_own_blocks() -> None:
    model = build_model({"type": "coarse_fine", "depth": 2, "filters": 4, "fusion": {"type": "gated"},
                         "global_branch": {**TINY_GLOBAL, "bottleneck": {"type": "transformer", "layers": 1},
                                           "conv": {"type": "residual"},
                                           "regularizer": {"type": "stochastic_depth", "rate": 0.1}}})
    assert type(model.get_layer("g_bottleneck")).__name__ == "TransformerBottleneck"
    assert type(model.get_layer("l_bottleneck")).__name__ == "PlainBottleneck"
    assert type(model.get_layer("g_enc0")).__name__ == "ResidualConv"
    assert type(model.get_layer("l_enc0")).__name__ == "DoubleConv"


# --- presets ------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_preset_resolves_and_its_model_builds(path: Path) -> None:
    spec = load_spec(path)
    model = build_model(spec.model)
    assert tuple(model.output.shape) == (None, 64, 128, 5)
    assert model.count_params() > 0


def test_seed_presets_are_the_reports_milestones() -> None:
    baseline, miou, final = (load_spec(ROOT / f"ablations/presets/{n}.yaml")
                             for n in ("seed-baseline", "seed-miou-loss", "seed-final"))
    assert baseline.model["bottleneck"]["type"] == "se_da" and baseline.model["regularizer"]["type"] == "l2"
    assert miou.model == baseline.model and miou.loss == {"type": "soft_miou", "ignore_background": True}
    assert final.model["type"] == "coarse_fine" and final.model["fusion"]["type"] == "cross_scale"
    assert final.model["global_branch"]["bottleneck"]["type"] == "transformer"
    assert final.loss == miou.loss
