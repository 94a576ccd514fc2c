"""Losses on labelled pixels: the task's ignore label is left out unless asked.

Every loss takes ``y_true`` (B, H, W) integer labels and ``y_pred`` (B, H, W, C) softmax
probabilities, computes in float32 (so it works under ``mixed_float16``) and is a registered,
Keras-serializable ``keras.losses.Loss``. A loss is built from its spec section, then given the
run's task (``set_task(task)``, Mars until then); losses that need the training set (class
weights) implement ``prepare(train_masks)``. ``ablate.train`` calls both before training.

``ignore_background`` (the spec key, named for the Mars class 0) leaves the task's ignore label
out: its pixels carry no loss, and the region losses (Dice, soft IoU, Lovasz) score the task's
scored classes. With ``ignore_background: false`` every pixel of a class counts and every class
is scored; pixels of an ignore label outside the classes (255) are left out either way: there
is no class to score them against. Such labels never reach ``one_hot`` or a gather.

Example:
    >>> loss = LOSSES.build({"type": "sum", "terms": [{"loss": {"type": "ce"}, "weight": 1.0},
    ...                                               {"loss": {"type": "dice"}, "weight": 0.5}]})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from ablate.errors import SpecError
from ablate.registry import LOSS_TERMS as _TERMS
from ablate.registry import LOSSES
from ablate.task import MARS, Task, task_from_dict

EPS = 1e-7


class PixelLoss(keras.losses.Loss):
    """Base: holds ``ignore_background`` and the task, and builds the labelled-pixel weight map.

    Args:
        ignore_background: leave pixels of the task's ignore label out (Mars: class 0), and
            score the task's scored classes in region losses.
        name: the loss's name in logs.

    The task is not a spec key: the trainer sets it (``set_task``), and a saved loss of another
    task than Mars carries it in its config (read back from ``task`` in ``**kwargs``).

    Example:
        >>> loss = LOSSES.build({"type": "dice"})
        >>> loss.set_task(Task(height=32, width=32, classes=["void", "road"], ignore_label=255))
    """

    def __init__(self, ignore_background: bool = True, name: str | None = None, **kwargs: Any) -> None:
        task = kwargs.pop("task", None)
        super().__init__(name=name or self.__class__.__name__.lower(), reduction="sum_over_batch_size", **kwargs)
        self.ignore_background = bool(ignore_background)
        self.task = MARS
        self.set_task(MARS if task is None else task)

    def set_task(self, task: Task | dict[str, Any]) -> None:
        """The run's task: its ignore label and scored classes (Mars until set)."""
        self.task = task_from_dict(task, "loss task")

    @property
    def ignored_label(self) -> int | None:
        """The label whose pixels carry no loss: the task's ignore label when ``ignore_background``,
        and an ignore label outside the classes always; None when every pixel counts."""
        label = self.task.ignore_label
        if label is None or (self.task.ignore_is_class and not self.ignore_background):
            return None
        return label

    @property
    def region_ids(self) -> tuple[int, ...]:
        """The classes the region losses score: the task's scored ones, or all with ``ignore_background: false``."""
        return self.task.scored_ids if self.ignore_background else tuple(range(self.task.num_classes))

    def labelled(self, y_true: Any) -> Any:
        """1.0 where a pixel counts, 0.0 elsewhere; shape (B, H, W)."""
        y_true = ops.cast(y_true, "int32")
        if self.ignored_label is None:
            return ops.ones_like(y_true, dtype="float32")
        return ops.cast(ops.not_equal(y_true, self.ignored_label), "float32")

    def targets(self, y_true: Any, y_pred: Any) -> tuple[Any, Any, Any]:
        """(labels, labelled-pixel weights, float32 probabilities); ignored pixels' labels read 0,
        so that an ignore label outside the classes never reaches ``one_hot`` or a gather."""
        y_true, y_pred = _prep(y_true, y_pred)
        w = self.labelled(y_true)
        if self.ignored_label is not None and not self.task.ignore_is_class:
            y_true = ops.where(w > 0, y_true, 0)
        return y_true, w, y_pred

    def prepare(self, train_masks: Any) -> None:
        """Hook for losses that need the training masks (class weights); default: nothing."""

    def region_terms(self, y_true: Any, y_pred: Any) -> tuple[Any, Any]:
        """One-hot truth and probabilities of the scored classes, zeroed off labelled pixels.

        Returns two (B, H*W, K) float32 tensors, K = number of scored classes.
        """
        y_true, w, y_pred = self.targets(y_true, y_pred)
        w = ops.expand_dims(w, -1)
        ids = list(self.region_ids)
        g = ops.take(ops.one_hot(y_true, y_pred.shape[-1]), ids, axis=-1) * w
        p = ops.take(y_pred, ids, axis=-1) * w
        shape = (ops.shape(g)[0], -1, len(ids))  # the batch size may be unknown at trace time
        return ops.reshape(g, shape), ops.reshape(p, shape)

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"ignore_background": self.ignore_background, "name": self.name}
        if self.task != MARS:  # a Mars loss's config is what it was before tasks
            config["task"] = self.task.to_dict()
        return config


def _prep(y_true: Any, y_pred: Any) -> tuple[Any, Any]:
    y_true = ops.cast(y_true, "int32")
    if len(y_true.shape) == 4:
        y_true = ops.squeeze(y_true, -1)
    return y_true, ops.cast(y_pred, "float32")


def _labelled_mean(values: Any, w: Any) -> Any:
    """Mean of per-pixel ``values`` over the pixels where ``w`` is 1."""
    return ops.sum(values * w) / ops.maximum(ops.sum(w), 1.0)


@LOSSES.register("ce")
class CrossEntropy(PixelLoss):
    """Cross-entropy averaged over labelled pixels."""

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y_true, w, y_pred = self.targets(y_true, y_pred)
        onehot = ops.one_hot(y_true, y_pred.shape[-1])
        nll = -ops.sum(onehot * ops.log(ops.clip(y_pred, EPS, 1.0)), axis=-1)
        # One scalar per batch: a mean over labelled pixels, not over all pixels.
        return _labelled_mean(nll, w)


def class_weights(masks: Any, power: float, cap: float, ignore_background: bool, num_classes: int | None = None,
                  task: Task = MARS) -> list[float]:
    """Capped inverse-frequency weights ``min(cap, (f_max / f_k) ** power)`` from label counts.

    The most frequent scored class gets 1.0; a class absent from ``masks`` gets ``cap``; with
    ``ignore_background`` the classes the task does not score (Mars: class 0) get 0.0.
    Labels outside the classes (an ignore label such as 255) are not counted.
    """
    c = task.num_classes
    if num_classes is not None and num_classes != c:
        raise SpecError(f"weighted_ce: num_classes={num_classes} disagrees with the task's {c} classes.")
    counts = np.bincount(np.asarray(masks, dtype=np.int64).ravel(), minlength=c)[:c].astype(np.float64)
    ids = list(task.scored_ids) if ignore_background else list(range(c))
    scored = counts[ids]
    if scored.sum() == 0:
        raise SpecError("weighted_ce: the training masks hold no labelled pixel; cannot compute class weights.")
    with np.errstate(divide="ignore"):
        w = np.where(scored > 0, (scored.max() / np.maximum(scored, 1.0)) ** power, np.inf)
    weights = [0.0] * c
    for k, v in zip(ids, np.minimum(w, cap), strict=True):
        weights[k] = float(v)
    return weights


@LOSSES.register("weighted_ce", ignored_with={"weights": ("power", "cap")})  # explicit weights are kept as given
class WeightedCrossEntropy(PixelLoss):
    """Class-weighted cross-entropy; weights from the training masks' label frequencies, capped.

    ``prepare(train_masks)`` sets ``weights[k] = min(cap, (f_max / f_k) ** power)``: 1.0 for the
    most frequent class. The cap matters: uncapped inverse frequencies made models over-predict
    big rock. The loss is the weighted mean ``sum(w_y * nll) / sum(w_y)`` over labelled pixels.
    The weights are part of the config, so a saved model reloads with them.

    Args:
        power: 1.0 for inverse frequency, 0.5 for inverse square root.
        cap: the largest weight, relative to the most frequent class's 1.0.
        weights: explicit per-class weights (length C); ``prepare`` then keeps them.
        ignore_background: leave pixels of the task's ignore label (Mars: 0) out.

    Example:
        >>> loss = WeightedCrossEntropy(cap=10.0)
        >>> loss.prepare(train_masks)
    """

    def __init__(self, power: float = 1.0, cap: float = 10.0, weights: Sequence[float] | None = None,
                 ignore_background: bool = True, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(ignore_background=ignore_background, name=name, **kwargs)
        if power <= 0:
            raise SpecError(f"weighted_ce: power must be > 0 (1.0 inverse frequency, 0.5 inverse sqrt); got {power}.")
        if cap < 1:
            raise SpecError(f"weighted_ce: cap must be >= 1 (the most frequent class weighs 1.0); got {cap}.")
        self.power = float(power)
        self.cap = float(cap)
        self.weights = None if weights is None else [float(v) for v in weights]
        self._fixed = weights is not None

    def prepare(self, train_masks: Any) -> None:
        if not self._fixed:
            self.weights = class_weights(train_masks, self.power, self.cap, self.ignore_background, task=self.task)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        if self.weights is None:
            raise SpecError("weighted_ce has no class weights: call prepare(train_masks) first or pass weights=[...].")
        y_true, w, y_pred = self.targets(y_true, y_pred)
        if len(self.weights) != y_pred.shape[-1]:
            raise SpecError(f"weighted_ce: {len(self.weights)} weights for {y_pred.shape[-1]} classes.")
        pixel_w = ops.take(ops.convert_to_tensor(self.weights, "float32"), y_true) * w
        onehot = ops.one_hot(y_true, y_pred.shape[-1])
        nll = -ops.sum(onehot * ops.log(ops.clip(y_pred, EPS, 1.0)), axis=-1)
        return ops.sum(nll * pixel_w) / ops.maximum(ops.sum(pixel_w), EPS)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "power": self.power, "cap": self.cap, "weights": self.weights}


@LOSSES.register("focal")
class Focal(PixelLoss):
    """Focal loss ``-alpha_y (1 - p_y)^gamma log p_y`` averaged over labelled pixels.

    Args:
        gamma: focusing strength; 0 gives cross-entropy.
        alpha: None, one factor for every class, or a per-class list (length C).
        ignore_background: leave pixels of the task's ignore label (Mars: 0) out.
    """

    def __init__(self, gamma: float = 2.0, alpha: float | Sequence[float] | None = None,
                 ignore_background: bool = True, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(ignore_background=ignore_background, name=name, **kwargs)
        if gamma < 0:
            raise SpecError(f"focal: gamma must be >= 0; got {gamma}.")
        self.gamma = float(gamma)
        self.alpha = alpha if alpha is None or isinstance(alpha, (int, float)) else [float(a) for a in alpha]

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y_true, w, y_pred = self.targets(y_true, y_pred)
        pt = ops.clip(ops.sum(ops.one_hot(y_true, y_pred.shape[-1]) * y_pred, axis=-1), EPS, 1.0)
        fl = -ops.power(1.0 - pt, self.gamma) * ops.log(pt)
        if isinstance(self.alpha, list):
            fl = fl * ops.take(ops.convert_to_tensor(self.alpha, "float32"), y_true)
        elif self.alpha is not None:
            fl = fl * float(self.alpha)
        return _labelled_mean(fl, w)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "gamma": self.gamma, "alpha": self.alpha}


class _SmoothedRegionLoss(PixelLoss):
    """Base of Dice and soft IoU: per-class sums over the batch's labelled pixels."""

    def __init__(self, smooth: float = 1.0, ignore_background: bool = True, name: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(ignore_background=ignore_background, name=name, **kwargs)
        if smooth < 0:
            raise SpecError(f"{type(self).__name__}: smooth must be >= 0; got {smooth}.")
        self.smooth = float(smooth)

    def sums(self, y_true: Any, y_pred: Any) -> tuple[Any, Any, Any]:
        """(intersection, predicted mass, true mass) per scored class, shape (K,)."""
        g, p = self.region_terms(y_true, y_pred)
        return ops.sum(g * p, axis=(0, 1)), ops.sum(p, axis=(0, 1)), ops.sum(g, axis=(0, 1))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "smooth": self.smooth}


@LOSSES.register("dice")
class Dice(_SmoothedRegionLoss):
    """Soft Dice loss ``1 - mean_k (2 I_k + s) / (P_k + G_k + s)`` over the scored classes, labelled pixels.

    Args:
        smooth: added to numerator and denominator; keeps absent classes at Dice 1 when not predicted.
        ignore_background: score the task's scored classes (Mars: 1-4) on its labelled pixels only.
    """

    def call(self, y_true: Any, y_pred: Any) -> Any:
        inter, psum, gsum = self.sums(y_true, y_pred)
        return 1.0 - ops.mean((2.0 * inter + self.smooth) / (psum + gsum + self.smooth))


@LOSSES.register("soft_miou")
class SoftMeanIoU(_SmoothedRegionLoss):
    """Soft Jaccard loss ``1 - mean_k (I_k + s) / (P_k + G_k - I_k + s)`` over the scored classes (Mars: 1-4).

    The differentiable twin of the validation metric (mean IoU over the scored classes on
    labelled pixels): the report's 0.45 -> 0.60 step.

    Args:
        smooth: added to numerator and denominator.
        ignore_background: score the task's scored classes (Mars: 1-4) on its labelled pixels only.
    """

    def call(self, y_true: Any, y_pred: Any) -> Any:
        inter, psum, gsum = self.sums(y_true, y_pred)
        return 1.0 - ops.mean((inter + self.smooth) / (psum + gsum - inter + self.smooth))


@LOSSES.register("lovasz")
class LovaszSoftmax(PixelLoss):
    """Lovasz-softmax (Berman et al. 2018): a convex surrogate of the per-class Jaccard loss.

    Vectorized: errors ``|g - p|`` of every class are sorted at once. Unlabelled pixels get
    error 0 and truth 0, so they sort last and change nothing.

    Args:
        per_image: average the loss of each image (with labelled pixels) instead of one batch loss.
        classes: ``"present"`` averages over classes present in the truth, ``"all"`` over all.
        ignore_background: score the task's scored classes (Mars: 1-4) on its labelled pixels only.
    """

    def __init__(self, per_image: bool = False, classes: str = "present", ignore_background: bool = True,
                 name: str | None = None, **kwargs: Any) -> None:
        super().__init__(ignore_background=ignore_background, name=name, **kwargs)
        if classes not in ("present", "all"):
            raise SpecError(f"lovasz: classes must be 'present' or 'all'; got {classes!r}.")
        self.per_image = bool(per_image)
        self.classes = classes

    def call(self, y_true: Any, y_pred: Any) -> Any:
        g, p = self.region_terms(y_true, y_pred)  # (B, N, K)
        if not self.per_image:
            g, p = ops.reshape(g, (1, -1, g.shape[-1])), ops.reshape(p, (1, -1, p.shape[-1]))
        g, p = ops.transpose(g, (0, 2, 1)), ops.transpose(p, (0, 2, 1))  # (B, K, N)
        errors, order = ops.top_k(ops.abs(g - p), k=ops.shape(g)[-1], sorted=True)
        g_sorted = ops.take_along_axis(g, order, axis=-1)
        gts = ops.sum(g, axis=-1, keepdims=True)
        jaccard = 1.0 - (gts - ops.cumsum(g_sorted, axis=-1)) / (gts + ops.cumsum(1.0 - g_sorted, axis=-1))
        grad = ops.concatenate([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], axis=-1)
        per_class = ops.sum(errors * grad, axis=-1)  # (B, K)
        counted = ops.cast(gts[..., 0] > 0, "float32") if self.classes == "present" else ops.ones_like(per_class)
        n_classes = ops.sum(counted, axis=-1)
        per_item = ops.sum(per_class * counted, axis=-1) / ops.maximum(n_classes, 1.0)
        has = ops.cast(n_classes > 0, "float32")
        return ops.sum(per_item * has) / ops.maximum(ops.sum(has), 1.0)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "per_image": self.per_image, "classes": self.classes}




@LOSSES.register("sum", nested={"terms": _TERMS})
class WeightedSum(PixelLoss):
    """A weighted sum of other registered losses, e.g. cross-entropy plus half a Dice.

    Each term sets its own ``ignore_background``. ``set_task`` and ``prepare`` are passed on to every term.

    Args:
        terms: a list of ``{loss: {type: name, ...}, weight: w}`` (weight defaults to 1.0).

    Example:
        >>> WeightedSum([{"loss": {"type": "ce"}, "weight": 1.0}, {"loss": {"type": "dice"}, "weight": 0.5}])
    """

    def __init__(self, terms: Sequence[Mapping[str, Any]], name: str | None = None, **kwargs: Any) -> None:
        if isinstance(terms, (str, Mapping)) or not terms:
            raise SpecError(f"sum: terms must be a non-empty list of {{loss: ..., weight: w}}; got {terms!r}.")
        for i, term in enumerate(terms):
            _TERMS.validate(term, where=f"loss.terms[{i}]")
        self.types = [LOSSES.split(t["loss"])[0] for t in terms]
        self.losses = [LOSSES.build(t["loss"]) for t in terms]
        self.weights = [float(t.get("weight", 1.0)) for t in terms]
        super().__init__(name=name or "sum", **kwargs)  # sets the task, on the terms too

    def set_task(self, task: Task | dict[str, Any]) -> None:
        super().set_task(task)
        for loss in self.losses:
            loss.set_task(self.task)

    def prepare(self, train_masks: Any) -> None:
        for loss in self.losses:
            loss.prepare(train_masks)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        total = 0.0
        for loss, weight in zip(self.losses, self.weights, strict=True):
            total = total + weight * loss.call(y_true, y_pred)
        return total

    def get_config(self) -> dict[str, Any]:
        terms = []
        for kind, loss, weight in zip(self.types, self.losses, self.weights, strict=True):
            config = {k: v for k, v in loss.get_config().items() if k not in ("name", "task")}
            terms.append({"loss": {"type": kind, **config}, "weight": weight})
        task = {"task": self.task.to_dict()} if self.task != MARS else {}
        return {"terms": terms, "name": self.name, **task}
