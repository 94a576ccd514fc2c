"""The task a model is built for: input size and channels, the classes, the ignore label, the scored classes.

One :class:`Task` travels from the spec (its ``task:`` section, or inferred from the data where the
spec does not give it) to every module that needs it: the loader checks the data against it, the
models take its input shape and class count, the metric and the losses its ignore label and
scored classes, the figures its colours and names, the export its signatures and model card.
The Mars course task is the default (:data:`MARS`), so specs without a ``task:`` section and the
course's files work unchanged.

The scoring rule, for every task: pixels whose ground truth is the ignore label are not scored
(they count neither for nor against any class); every other pixel counts for its true class and
against the class it is predicted as; the mean IoU is over the scored classes that appear in the
truth or the predictions. The ignore label may be one of the classes (Mars: 0, "background", a
class the model predicts but is not scored on) or a value outside them (255, the common
convention for unlabelled pixels, which the model never predicts).

Kept free of TensorFlow, so that a spec's depth is checked against the input size when the
spec is read (``ablate spec``), not only when its model is built.

Example:
    >>> t = Task(height=96, width=96, channels=3, classes=["void", "road", "car"], ignore_label=255)
    >>> t.scored_ids, t.num_classes, t.input_shape
    ((0, 1, 2), 3, (96, 96, 3))
    >>> MARS.scored_names
    ('soil', 'bedrock', 'sand', 'big_rock')
"""

from __future__ import annotations

import json
import re
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ablate.errors import SpecError, validation_error

MARS_CLASSES = ("background", "soil", "bedrock", "sand", "big_rock")
MARS_COLOURS = ((0, 0, 0), (196, 120, 60), (120, 120, 140), (235, 200, 90), (220, 40, 40))
MAX_CLASSES = 255  # labels are stored as uint8, and 255 is kept for the common ignore label
MIN_BOTTLENECK = 2  # pixels per side at the bottleneck: 64x128 at depth 5 is 2x4
MAX_DEPTH = 8  # down-samplings a branch may take at all (a 512x512 input at depth 8 is 2x2)
# Colours of classes beyond the Mars ones: a qualitative palette (Tableau 10, then a few more).
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120),
           (152, 223, 138), (255, 152, 150), (197, 176, 213), (196, 156, 148))
_CLASS_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")  # it names metrics (val_iou_<name>) and columns


class Task(BaseModel):
    """A segmentation task; the spec's ``task:`` section.

    Attributes:
        height, width: the input size in pixels.
        channels: 1 (grayscale) or 3 (RGB).
        classes: class names, label k is ``classes[k]``; lower-case letters, digits and ``_``.
        ignore_label: the label whose pixels are not scored, one of the classes' labels or a value
            outside them (such as 255); null scores every pixel.
        scored: the classes the mean IoU is over, by name; null: every class but the ignore label.
        colours: RGB colour of each class in figures; null: the Mars colours for the Mars
            classes, else a qualitative palette.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    height: int = Field(64, ge=4, le=8192)
    width: int = Field(128, ge=4, le=8192)
    channels: Literal[1, 3] = 1
    classes: list[str] = Field(default_factory=lambda: list(MARS_CLASSES), min_length=2, max_length=MAX_CLASSES)
    ignore_label: int | None = Field(0, ge=0, le=255)
    scored: list[str] | None = None
    colours: list[list[int]] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Task:
        for name in self.classes:
            if not isinstance(name, str) or not _CLASS_NAME.match(name):
                raise ValueError(f"class name {name!r} must be 1-40 lower-case letters, digits or '_', "
                                 f"starting with a letter (it names metrics such as val_iou_<name>)")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"class names must be distinct, got {self.classes}")
        if self.scored is not None:
            unknown = [n for n in self.scored if n not in self.classes]
            if unknown:
                raise ValueError(f"scored names {unknown} that are not classes; expected some of {self.classes}")
            if not self.scored or len(set(self.scored)) != len(self.scored):
                raise ValueError("scored must name one or more distinct classes")
            if self.ignore_label is not None and self.ignore_label < len(self.classes) \
                    and self.classes[self.ignore_label] in self.scored:
                raise ValueError(f"class {self.classes[self.ignore_label]!r} is the ignore label "
                                 f"({self.ignore_label}) and cannot be scored")
        if self.colours is not None:
            if len(self.colours) != len(self.classes) or any(
                    len(c) != 3 or any(isinstance(v, bool) or not 0 <= v <= 255 for v in c) for c in self.colours):
                raise ValueError(f"colours must hold one [r, g, b] of 0-255 per class ({len(self.classes)})")
        if not self.scored_ids:
            raise ValueError("no class is left to score once the ignore label is set aside")
        return self

    # --- derived --------------------------------------------------------------------------

    @property
    def num_classes(self) -> int:
        """Channels of the model's output: one per class (the ignore label too when it is a class)."""
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.channels)

    @cached_property
    def scored_ids(self) -> tuple[int, ...]:
        """Labels of the scored classes, in label order."""
        if self.scored is not None:
            return tuple(sorted(self.classes.index(n) for n in self.scored))
        return tuple(k for k in range(self.num_classes) if k != self.ignore_label)

    @property
    def scored_names(self) -> tuple[str, ...]:
        return tuple(self.classes[k] for k in self.scored_ids)

    @property
    def ignore_is_class(self) -> bool:
        """Whether the ignore label is one of the model's classes (Mars: 0) rather than a value outside them."""
        return self.ignore_label is not None and self.ignore_label < self.num_classes

    @property
    def valid_labels(self) -> tuple[int, ...]:
        """Every value a mask may hold: the classes' labels, and the ignore label."""
        extra = () if self.ignore_label is None or self.ignore_is_class else (self.ignore_label,)
        return (*range(self.num_classes), *extra)

    @cached_property
    def palette(self) -> tuple[tuple[int, int, int], ...]:
        """RGB per class label."""
        if self.colours is not None:
            return tuple(tuple(int(v) for v in c) for c in self.colours)  # type: ignore[misc]
        if tuple(self.classes[: len(MARS_CLASSES)]) == MARS_CLASSES:
            return MARS_COLOURS + PALETTE[: self.num_classes - len(MARS_CLASSES)]
        colours = [PALETTE[k % len(PALETTE)] for k in range(self.num_classes)]
        if self.ignore_is_class:
            colours[self.ignore_label] = (0, 0, 0)  # type: ignore[index]
        return tuple(colours)

    def label(self, k: int) -> str:
        """A class's name as figures show it ("big rock")."""
        return self.classes[k].replace("_", " ")

    def class_id(self, name: str, where: str = "class") -> int:
        """The label of the class ``name``; a SpecError naming the task's classes otherwise."""
        if name not in self.classes:
            raise SpecError(f"{where} names class {name!r}, which this task does not have; "
                            f"expected one of {', '.join(self.classes)}.")
        return self.classes.index(name)

    def scored_class_id(self, name: str, where: str = "class") -> int:
        """The label of the class ``name``, which must not be the ignore label (copy-paste's class);
        a SpecError otherwise."""
        class_id = self.class_id(name, where)
        if class_id == self.ignore_label:
            raise SpecError(f"{where} names {name!r}, the task's ignore label, which is not scored; expected one of "
                            f"{', '.join(self.scored_names)}.")
        return class_id

    def require_ignore_label(self, block: str, where: str = "") -> None:
        """A SpecError when the task has no ignore label, which ``block`` needs for the pixels it blanks
        (cutout's holes); ``where`` places it in a spec."""
        if self.ignore_label is None:
            raise SpecError(f"{where or block}: the task has no ignore_label, so a hole has no label that is left "
                            f"unscored; set task.ignore_label (e.g. 255) or drop {block}.")

    @property
    def is_mars(self) -> bool:
        """The course task (64x128 grayscale, the five Mars classes): the submission CSV is for it alone."""
        return (self.height, self.width, self.channels) == (64, 128, 1) and tuple(self.classes) == MARS_CLASSES

    def describe(self) -> str:
        """One line: ``64x128x1, 5 classes (background, soil, ...), ignore 0 (background), scored: soil, ...``."""
        ignore = "none" if self.ignore_label is None else str(self.ignore_label)
        if self.ignore_is_class:
            ignore += f" ({self.classes[self.ignore_label]})"  # type: ignore[index]
        return (f"{self.height}x{self.width}x{self.channels}, {self.num_classes} classes "
                f"({', '.join(self.classes)}), ignore label {ignore}, scored: {', '.join(self.scored_names)}")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def file_text(self) -> str:
        """The ``task.json`` text (``TASK_FILE``) of a run or an export; ``task_from_dict`` reads it back."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def __hash__(self) -> int:  # frozen, but holds lists: hash the canonical JSON
        return hash(self.to_json())


MARS = Task()
TASK_FILE = "task.json"  # a run's resolved task (an artifact), and an export's (at its root and in assets.extra)
INPUT_SHAPE = MARS.input_shape  # the Mars task's (64, 128, 1); code that builds for a task reads task.input_shape


def task_from_dict(raw: Any, where: str = "task") -> Task:
    """Validates a ``task:`` mapping (from a spec or a logged ``task.json``) into a Task, or a one-line
    SpecError in the spec's own style (``ablate.errors.validation_error``); ``where`` other than
    ``"task"`` says where the mapping came from and leads the line."""
    if isinstance(raw, Task):
        return raw
    if not isinstance(raw, dict):
        raise SpecError(f"'{where}' must be a mapping of {', '.join(Task.model_fields)}; got {type(raw).__name__}.")
    try:
        return Task.model_validate(raw)
    except ValidationError as e:
        raise validation_error(e, Task, "task", "" if where == "task" else where) from None


def max_depth(height: int, width: int) -> int:
    """The most down-samplings an input of this size allows: both sides divide by 2**depth and keep
    at least ``MIN_BOTTLENECK`` pixels."""
    depth = 0
    while depth < MAX_DEPTH:
        step = 2 ** (depth + 1)
        if height % step or width % step or height // step < MIN_BOTTLENECK or width // step < MIN_BOTTLENECK:
            break
        depth += 1
    return depth


def check_depth(depth: Any, height: int = MARS.height, width: int = MARS.width, where: str = "model.depth") -> None:
    """Raises a SpecError unless ``depth`` down-samplings fit a ``height`` x ``width`` input.

    Example:
        >>> check_depth(4, 48, 100)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ablate.errors.SpecError: model.depth=4 ... 48x100 input: 100 is not divisible by 2^4 = 16; expected ... 1 to 2.
    """
    most = max_depth(height, width)
    expected = f"expected a depth from 1 to {most}" if most else "no depth fits: the input must divide by 2"
    if isinstance(depth, bool) or not isinstance(depth, int):
        raise SpecError(f"{where} must be an integer; got {depth!r} ({expected} for a {height}x{width} input).")
    if depth < 1 or depth > most:
        step = 2**depth if 0 < depth <= 30 else None
        if depth < 1:
            why = "a depth counts down-samplings, at least 1"
        elif step is None:
            why = "far more down-samplings than any input allows"
        elif height % step or width % step:
            side = height if height % step else width
            why = f"{side} is not divisible by 2^{depth} = {step}"
        else:
            bottom = f"{height // step}x{width // step}"
            why = f"the bottleneck would be {bottom} pixels (at least {MIN_BOTTLENECK} per side)"
        raise SpecError(f"{where}={depth} is not possible for a {height}x{width} input: {why}; {expected}.")
