"""The domains of block keyword values, declared once, checked when a spec is validated.

A block's constructor checks its own arguments, but only when it is built: for an optimizer or an
augmentation that is after the MLflow run has started, and some never check at all (a negative
learning rate trains "fine", upwards). ``ablate.registry`` calls :func:`check_keyword` on every key
a spec sets, from the constructor's default alone, so it needs neither the block nor TensorFlow:

- a number default (int or float) means the value must be a finite number (no nan, no inf, no
  null: a builder has no default to fall back on once the key is set);
- an int default means a strict integer (not ``3.5``, not ``true``);
- a key named in ``DOMAINS`` must lie in its range, whatever block it belongs to (for a list
  value, such as ASPP ``rates``, each element must).

A key is in ``DOMAINS`` only when it means the same in every block that takes it; ranges that
depend on the block (rotate's ``degrees`` up to 180, shear's below 90) stay in the constructor.

Example:
    >>> check_keyword("optimizer.learning_rate", -1, 1e-3)
    Traceback (most recent call last):
    ablate.errors.SpecError: Invalid value for 'optimizer.learning_rate': expected a number > 0 ...
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ablate.errors import SpecError, excerpt

_SHOWN = 60  # characters of a bad value quoted in a message: enough to recognise it, never the whole input


@dataclass(frozen=True)
class Domain:
    """An interval of numbers, maybe integers only.

    Args:
        low, high: the bounds (None: unbounded on that side).
        low_open, high_open: whether the bound itself is excluded.
        integer: whether only whole numbers (ints, not bools) belong.
        why: a few words saying why the bound is there, appended to the message.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    why: str = ""

    def __contains__(self, value: object) -> bool:
        if not _is_number(value) or not math.isfinite(value):  # type: ignore[arg-type]
            return False
        if self.integer and not isinstance(value, int):
            return False
        v = float(value)  # type: ignore[arg-type]
        above = self.low is None or (v > self.low if self.low_open else v >= self.low)
        below = self.high is None or (v < self.high if self.high_open else v <= self.high)
        return above and below

    def text(self) -> str:
        """``a number > 0``, ``an integer >= 1``, ``a number in [0, 1)``."""
        kind = "an integer" if self.integer else "a number"
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"{kind} in {left}{_num(self.low)}, {_num(self.high)}{right}"
        if self.low is not None:
            return f"{kind} {'>' if self.low_open else '>='} {_num(self.low)}"
        if self.high is not None:
            return f"{kind} {'<' if self.high_open else '<='} {_num(self.high)}"
        return f"a finite {'integer' if self.integer else 'number'}"


POSITIVE = Domain(0, low_open=True)
NON_NEGATIVE = Domain(0)
COUNT = Domain(1, integer=True)  # layers, heads, holes: at least one
FRACTION = Domain(0, 1)  # probabilities and mixing ratios, both ends included
RATE = Domain(0, 1, high_open=True, why="a rate of 1 drops everything")  # dropout-like rates

# Keys that mean the same in every block taking them, and the values that make sense there.
DOMAINS: dict[str, Domain] = {
    # optimizers and schedules (ablate.optim)
    "learning_rate": Domain(0, low_open=True, why="a rate <= 0 does not descend"),
    "weight_decay": NON_NEGATIVE,
    "clipnorm": POSITIVE,
    "momentum": Domain(0, 1, high_open=True, why="momentum >= 1 diverges"),
    "beta_1": Domain(0, 1, high_open=True),
    "beta_2": Domain(0, 1, high_open=True),
    "factor": Domain(0, 1, low_open=True, high_open=True, why="it multiplies the rate on a plateau"),
    "patience": Domain(0, integer=True),
    "min_lr": NON_NEGATIVE,
    "warmup_epochs": NON_NEGATIVE,
    "min_lr_ratio": FRACTION,
    # model width and depth (ablate.models), block sizes (ablate.blocks)
    "filters": COUNT,
    "depth": COUNT,
    "width_mult": POSITIVE,
    "downsample": COUNT,
    "kernel_size": COUNT,
    "se_ratio": COUNT,
    "heads": COUNT,
    "layers": COUNT,
    "mlp_ratio": POSITIVE,
    "inter_channels": COUNT,
    "rates": COUNT,  # dilation rates, each element
    "bins": COUNT,  # pyramid pooling grid sizes, each element
    # regularizers
    "strength": NON_NEGATIVE,
    "l1_ratio": FRACTION,
    "rate": RATE,
    "dropout": RATE,
    "drop_path": RATE,
    # losses (ablate.losses)
    "gamma": NON_NEGATIVE,
    "alpha": NON_NEGATIVE,  # focal class weights, elastic displacement: both scale something
    "smooth": NON_NEGATIVE,
    "power": POSITIVE,
    "cap": Domain(1, why="the most frequent class weighs 1"),
    "weights": NON_NEGATIVE,  # class weights, each element
    # augmentations (ablate.augment)
    "p": FRACTION,
    "degrees": NON_NEGATIVE,
    "fraction": Domain(0, 1, high_open=True),
    "holes": COUNT,
    "size": POSITIVE,  # cutout: a fraction of the image; copy-paste: pixels
    "spacing": Domain(2, integer=True, why="pixels between control points"),
    "brightness": FRACTION,
    "contrast": Domain(0, 1, high_open=True),
    "scale": POSITIVE,  # zoom range, each element
    "bank_size": COUNT,
    "min_pixels": COUNT,
}


def check_keyword(where: str, value: Any, default: Any) -> None:
    """Raises a SpecError unless ``value`` fits the default's type and the key's domain.

    Args:
        where: the dotted place of the key in the spec (``optimizer.learning_rate``); its last
            part names the key in ``DOMAINS``.
        value: what the spec sets.
        default: the constructor's default (``None`` or a non-scalar: no type rule).
    """
    if value is None and not _is_number(default):
        return
    if _is_number(default) and not isinstance(value, (list, tuple)):
        _check_number(where, value, default)
    domain = DOMAINS.get(where.rsplit(".", 1)[-1])
    if domain is None:
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_in(f"{where}[{i}]", item, domain)
    elif not isinstance(value, dict):  # a block config is checked by its own registry
        _check_in(where, value, domain)


def _check_number(where: str, value: Any, default: float) -> None:
    """An int default takes only ints; a float default any finite number; never a bool."""
    if isinstance(default, int) and not (isinstance(value, int) and not isinstance(value, bool)):
        raise SpecError(f"Invalid value for '{where}': expected an integer (default {default!r}), "
                        f"got {show(value)}.")
    if not _is_number(value) or not math.isfinite(value):
        raise SpecError(f"Invalid value for '{where}': expected a finite number (default {default!r}), "
                        f"got {show(value)}.")


def _check_in(where: str, value: Any, domain: Domain) -> None:
    if value not in domain:
        why = f" ({domain.why})" if domain.why else ""
        raise SpecError(f"Invalid value for '{where}': expected {domain.text()}{why}, got {show(value)}.")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def show(value: Any) -> str:
    """A bad value as a message quotes it (``ablate.errors.excerpt``): enough to recognise it, never the input."""
    return excerpt(value, _SHOWN)
