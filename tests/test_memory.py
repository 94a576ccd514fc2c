"""The memory estimate reads the model schema (``ablate.registry.BRANCH`` and the builders' schemas).

The estimate's own bounds against built models are in ``tests/test_hardening_domain.py``; here,
that it counts what the schema declares rather than copies of it.
"""

from __future__ import annotations

import dataclasses

import pytest

from ablate import memory
from ablate.registry import BRANCH, DEFAULT_BRANCH, STAGE
from ablate.spec import load_spec


def params(model: dict[str, object]) -> int:
    return memory.parameters(load_spec({"model": model}))


def test_the_stage_slot_default_block_gives_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model that leaves its stage slot out is counted with that slot's default block, kernel included."""
    stage = BRANCH.at(STAGE)[0]
    five = {"type": "double", "kernel_size": 5}
    assert params({"type": "unet"}) == params({"type": "unet", stage.key: {"type": "double"}})
    assert params({"type": "unet"}) < params({"type": "unet", stage.key: five})
    slots = tuple(dataclasses.replace(s, default=five) if s is stage else s for s in BRANCH.slots)
    monkeypatch.setattr(BRANCH, "slots", slots)
    assert params({"type": "unet"}) == params({"type": "unet", stage.key: five})


def test_the_branch_defaults_are_the_schemas() -> None:
    """Left-out scalars are ``BRANCH.scalars``; a left-out global branch is the default branch's defaults."""
    assert params({"type": "unet"}) == params({"type": "unet", **BRANCH.scalars})
    assert params({"type": "coarse_fine"}) == params({"type": "coarse_fine", "global_branch": {"type": DEFAULT_BRANCH}})
    assert params({"type": "coarse_fine"}) > 2 * params({"type": "unet"})  # two branches and a fusion
