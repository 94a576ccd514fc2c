"""Seeds until decided: a group-sequential design for paired-seed ablations.

``seeds: {min: 3, max: 10}`` runs seeds in rounds. After each round (a *look*) every
variant still running is tested on its per-seed differences ``variant - baseline``;
variants whose verdict is settled stop, the others get the next round of seeds, up to
``max_seeds``. The family-wise error rate over all looks and all variants stays at ``alpha``.

Method, and why:

- **Efficacy** (a "better"/"worse" verdict): the two-sided paired t-test at each look,
  against a Lan-DeMets O'Brien-Fleming-type alpha-spending boundary on the information
  fraction ``n / max_seeds``. O'Brien-Fleming spends almost nothing on the first looks,
  where a t-test on 2-4 degrees of freedom can hardly reject anyway, so the last look stays
  close to the fixed design's threshold and verdicts agree with it. (Power-family spending,
  rho = 3, reached the same agreement for the same runs in the benchmark; Pocock-type and
  rho <= 2 stop large effects sooner but lose more agreement than they save runs.)
  An anytime-valid test (e-values) was not chosen: it pays, in power at 3-10 seeds, for
  validity under any stopping rule, which rounds at seed counts fixed in advance do not need.
- **Boundaries for the t statistic itself**: converting normal-theory boundaries to nominal
  p-values ignores that the t statistics of successive looks are less correlated than the
  z statistics; with 2-9 degrees of freedom that lifts the error rate of four null variants
  to about 0.054. Here each look's nominal threshold is solved so that the probability of
  first crossing at that look equals the alpha spent there: the marginal part is exact (the
  t distribution), the overlap with earlier crossings is integrated with 2**19 scrambled
  Sobol paths of null data (a fixed scramble seed, so the thresholds are deterministic; their
  error is about 0.3% of alpha).
- **Multiplicity**: Holm-type recycling for group-sequential designs (Ye et al., Stat Med
  2013; Maurer & Bretz, Stat Biopharm Res 2013): each variant starts at level
  ``alpha / m`` with its own spending boundary; when ``r`` variants have been rejected the
  others are tested at ``alpha / (m - r)`` from then on, re-checked within the same look
  (earlier looks are not re-checked: conservative, and a resumed run replays the same).
  A variant stopped for futility keeps its share (recycling from it would not be valid).
- **Futility** (non-binding: the boundaries are computed as if nobody ever stopped for
  futility, so stopping early only lowers the error rate): a variant stops with "no
  evidence" when its conditional power (the chance to cross the last boundary at
  ``max_seeds`` if the current estimate were the truth, computed on the normal score with
  the same p-value as its t statistic) is below ``futility``, or when the 90% t CI of its
  mean difference lies within ``(-min_effect, min_effect)``. The default ``futility`` is
  the one that meets both targets below with about equal margins; higher values save runs
  and lose agreement (0.1: 0.948 agreement, 0.574 runs).
- **Rounds** of one seed (``step=1``) by default: a variant stops as soon as it is settled,
  which needs the fewest runs; larger steps mean fewer rounds but more runs.

Measured by ``benchmarks/sequential.py`` (4 variants; effects 0, 0, +/-1 or +/-2-3 sd of the
paired difference; seed sd 0.01-0.02; 20,000 ablations; ``benchmarks/results/sequential.json``)
for ``seeds: {min: 3, max: 10}``: the same verdict as the fixed 10-seed design (paired t, Holm,
CI) for 95.4% of variants (null 98.6%, moderate 84.6%, large 99.8%) and 83.6% of whole
ablations, with 59.4% of its runs (baseline included); FWER of four null variants 0.037
(0.046 without the futility rules; the fixed design's is 0.047). Moderate effects are where
the designs differ: the fixed design itself finds them only 63% of the time.

How the report should label results: the verdict is the sequential rule's (``Decision``):
the status, the seeds it used, the reason, and the nominal p-value with the threshold it was
compared with at that look. Fixed-sample p-values, Holm-adjusted p-values and CIs computed
on the seeds a variant happened to get are not valid after optional stopping (and the mean
difference of a variant that stopped early for efficacy is biased away from zero): show them,
if at all, as "descriptive, not adjusted for sequential stopping".

Example:
    >>> design = SequentialDesign(min_seeds=3, max_seeds=10)
    >>> design.looks()
    [3, 4, 5, 6, 7, 8, 9, 10]
    >>> decisions = decide(design, {"depth=4": [0.02, 0.03, 0.02], "skip=add": [0.01, -0.01, 0.0]})
    >>> decisions["skip=add"].status, decisions["skip=add"].reason
    ('no evidence', 'futile at 3 seeds (conditional power 0.00 < 0.065)')
    >>> next_seed_count(design, decisions)
    4
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special
from scipy.stats import qmc

__all__ = ["STATUSES", "Decision", "SequentialDesign", "decide", "efficacy_thresholds", "next_seed_count"]

STATUSES = ("continue", "better", "worse", "no evidence")
MAX_SEEDS_LIMIT = 100  # more seeds per arm than this is not an ablation; keeps the boundary tables small
EQUIVALENCE_SIDE = 0.05  # one-sided level of each bound of the min_effect check (a 90% CI, as in TOST)
_QMC_LOG2_POINTS = 19  # 2**19 null paths: boundary error ~0.3% of alpha, ~0.5 s per design
_QMC_SEED = 20240607  # fixed scramble: the same design always gets the same thresholds
_CHUNK_LOG2 = 16  # paths generated at once, so memory stays ~10 MB


@dataclass(frozen=True)
class SequentialDesign:
    """When to look, and at what error rate: ``seeds: {min: 3, max: 10}``.

    Args:
        min_seeds: seeds of the first round (at least 2: one pair gives no variance).
        max_seeds: seeds after which every variant is decided.
        step: seeds added per round after the first.
        alpha: family-wise error rate over all looks and variants (two-sided).
        min_effect: the smallest mean difference worth finding; a variant whose 90% CI lies
            within ``(-min_effect, min_effect)`` stops for futility (0 turns this off).
        futility: a variant stops for futility when its conditional power at ``max_seeds``
            under the current estimate is below this (0 turns this off).

    Example:
        >>> SequentialDesign(min_seeds=3, max_seeds=10, step=2).looks()
        [3, 5, 7, 9, 10]
    """

    min_seeds: int
    max_seeds: int
    step: int = 1  # one seed per round: fewest runs (see the module docstring)
    alpha: float = 0.05
    min_effect: float = 0.01  # val mIoU
    futility: float = 0.065  # from benchmarks/sequential.py: >= 95% agreement with the fixed design, <= 60% runs

    def __post_init__(self) -> None:
        for name in ("min_seeds", "max_seeds", "step"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ValueError(f"SequentialDesign: '{name}' must be an integer, received {value!r}.")
        if self.min_seeds < 2:
            raise ValueError(f"SequentialDesign: 'min_seeds' must be at least 2 (one pair has no variance), "
                             f"received {self.min_seeds}.")
        if not self.min_seeds <= self.max_seeds <= MAX_SEEDS_LIMIT:
            raise ValueError(f"SequentialDesign: 'max_seeds' must be between min_seeds ({self.min_seeds}) and "
                             f"{MAX_SEEDS_LIMIT}, received {self.max_seeds}.")
        if self.step < 1:
            raise ValueError(f"SequentialDesign: 'step' must be at least 1, received {self.step}.")
        _check_fraction("SequentialDesign", "alpha", self.alpha, 0.0, 0.5, low_open=True)
        _check_fraction("SequentialDesign", "futility", self.futility, 0.0, 1.0, low_open=False)
        if not (isinstance(self.min_effect, int | float) and math.isfinite(self.min_effect) and self.min_effect >= 0):
            raise ValueError(f"SequentialDesign: 'min_effect' must be a finite number >= 0, "
                             f"received {self.min_effect!r}.")

    def looks(self) -> list[int]:
        """Seed counts at which decisions are taken, ending at ``max_seeds``."""
        return [*range(self.min_seeds, self.max_seeds, self.step), self.max_seeds]

    def describe(self) -> str:
        """One line for plans and reports."""
        looks = self.looks()
        at = ", ".join(map(str, looks)) if len(looks) <= 6 else f"{looks[0]}, {looks[1]}, ..., {looks[-1]}"
        return (f"looks at {at} seeds; O'Brien-Fleming-type alpha spending with Holm recycling, FWER "
                f"{self.alpha:g}; stops for futility when conditional power < {self.futility:g} or the 90% CI "
                f"lies within +/-{self.min_effect:g}")


def _check_fraction(owner: str, name: str, value: object, low: float, high: float, low_open: bool) -> None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        if low < value < high if low_open else low <= value < high:
            return
    interval = f"({low:g}, {high:g})" if low_open else f"[{low:g}, {high:g})"
    raise ValueError(f"{owner}: '{name}' must be a number in {interval}, received {value!r}.")


@dataclass(frozen=True)
class Decision:
    """A variant's state after the latest look its data reach.

    ``status`` is one of ``STATUSES``; ``n`` the seeds the decision used (0 before the
    first look); ``p`` the nominal two-sided paired t p-value at that look and ``threshold``
    the efficacy threshold it was compared with (both NaN before the first look).

    Example:
        >>> Decision("better", 4, "crossed the efficacy boundary at 4 seeds (p=3e-05 <= 8e-05)", 3e-05, 8e-05).settled
        True
    """

    status: str
    n: int
    reason: str
    p: float
    threshold: float

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"Decision: 'status' must be one of {', '.join(STATUSES)}, received {self.status!r}.")

    @property
    def settled(self) -> bool:
        return self.status != "continue"


def efficacy_thresholds(design: SequentialDesign, level: float) -> list[float]:
    """Nominal two-sided p-value thresholds of one variant tested at ``level``, one per look.

    Example:
        >>> [f"{p:.1e}" for p in efficacy_thresholds(SequentialDesign(3, 5), 0.05)]
        ['1.1e-02', '2.1e-02', '3.3e-02']
    """
    _check_fraction("efficacy_thresholds", "level", level, 0.0, 1.0, low_open=True)
    return list(_thresholds(tuple(design.looks()), float(level)))


def _spent(level: float, looks: tuple[int, ...]) -> np.ndarray:
    """Lan-DeMets O'Brien-Fleming-type alpha spent by each look (cumulative)."""
    t = np.asarray(looks, float) / looks[-1]
    return 2.0 * special.ndtr(special.ndtri(level / 2.0) / np.sqrt(t))


@functools.lru_cache(maxsize=2)
def _null_abs_t(looks: tuple[int, ...]) -> np.ndarray:
    """|t| at each look for 2**19 quasi-random paths of N(0, 1) differences (float32)."""
    n_max = looks[-1]
    sampler = qmc.Sobol(n_max, scramble=True, seed=_QMC_SEED)
    out = np.empty((2**_QMC_LOG2_POINTS, len(looks)), np.float32)
    step = 2**_CHUNK_LOG2
    for start in range(0, len(out), step):
        x = special.ndtri(np.clip(sampler.random(step), 1e-15, 1 - 1e-15))
        s, w = np.cumsum(x, axis=1), np.cumsum(x * x, axis=1)
        for k, n in enumerate(looks):
            ss = np.maximum(w[:, n - 1] - s[:, n - 1] ** 2 / n, 1e-300)
            out[start:start + step, k] = np.abs(s[:, n - 1]) * math.sqrt(n - 1) / np.sqrt(n * ss)
    return out


@functools.lru_cache(maxsize=64)
def _thresholds(looks: tuple[int, ...], level: float) -> tuple[float, ...]:
    """Nominal p threshold per look: first-crossing probability at each look = alpha spent there."""
    abs_t = _null_abs_t(looks)
    increments = np.diff(_spent(level, looks), prepend=0.0)
    crossed = np.zeros(len(abs_t), bool)
    out = []
    for k, n in enumerate(looks):
        earlier = np.sort(abs_t[crossed, k])
        q = _solve_threshold(n, float(increments[k]), earlier, len(abs_t))
        out.append(q)
        if q > 0:
            crossed |= abs_t[:, k] >= _t_critical(n, q)
    return tuple(out)


def _t_critical(n: int, p: float) -> float:
    """|t| with two-sided p-value ``p`` on n - 1 degrees of freedom."""
    return float(-special.stdtrit(n - 1, p / 2.0))


def _solve_threshold(n: int, spend: float, earlier: np.ndarray, n_paths: int) -> float:
    """Nominal p with ``p - P(cross here and earlier) = spend`` (bisection on log p)."""
    if spend <= 1e-15:
        return 0.0

    def overlap(p: float) -> float:
        return (len(earlier) - np.searchsorted(earlier, _t_critical(n, p), side="left")) / n_paths

    low, high = math.log(spend), math.log(min(1.0, spend + len(earlier) / n_paths))
    for _ in range(60):
        mid = (low + high) / 2.0
        p = math.exp(mid)
        low, high = (mid, high) if p - overlap(p) < spend else (low, mid)
    return math.exp(low)


@dataclass(frozen=True)
class _Look:
    """One variant's paired t-test at one look."""

    n: int
    mean: float
    sd: float
    p: float


def _paired_t(d: np.ndarray) -> _Look:
    n = len(d)
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if sd == 0.0:
        return _Look(n, mean, sd, 0.0 if mean != 0.0 else 1.0)
    return _Look(n, mean, sd, float(2.0 * special.stdtr(n - 1, -abs(mean) / (sd / math.sqrt(n)))))


def _conditional_power(look: _Look, last_threshold: float, n_max: int) -> float:
    """Chance to cross the last boundary at ``n_max`` seeds if the current estimate were true."""
    z = -special.ndtri(look.p / 2.0)  # the normal score with the same p-value as the t statistic
    c = -special.ndtri(last_threshold / 2.0)
    return float(special.ndtr((z * math.sqrt(n_max / look.n) - c) / math.sqrt((n_max - look.n) / n_max)))


def _equivalent(look: _Look, min_effect: float) -> tuple[bool, float, float]:
    """Whether the 90% t CI lies within (-min_effect, min_effect), and the CI."""
    half = float(-special.stdtrit(look.n - 1, EQUIVALENCE_SIDE)) * look.sd / math.sqrt(look.n)
    low, high = look.mean - half, look.mean + half
    return min_effect > 0 and -min_effect < low and high < min_effect, low, high


def _as_deltas(name: str, values: Sequence[float]) -> np.ndarray:
    try:
        d = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"decide: the deltas of '{name}' must be a sequence of numbers, "
                         f"received {values!r}.") from None
    if d.ndim != 1 or not np.all(np.isfinite(d)):
        raise ValueError(f"decide: the deltas of '{name}' must be a flat sequence of finite numbers (one per seed), "
                         f"received {values!r}.")
    return d


def decide(design: SequentialDesign, deltas: Mapping[str, Sequence[float]],
           higher_is_better: bool = True) -> dict[str, Decision]:
    """Each variant's decision, replaying the looks in order from the data alone.

    Args:
        design: the sequential design.
        deltas: per-seed differences ``variant - baseline`` of each variant, in seed order;
            a stopped variant may have fewer (values past its stopping look are ignored).
        higher_is_better: whether a positive difference is an improvement.

    Returns:
        A ``Decision`` per variant, in the order of ``deltas``. A look is taken only when
        every variant still running has its seeds for it; until then they are "continue".

    Raises:
        ValueError: if ``deltas`` is not a mapping of names to finite numbers.

    Example:
        >>> design = SequentialDesign(min_seeds=3, max_seeds=10)
        >>> decide(design, {"wide": [0.020, 0.021, 0.019, 0.022, 0.018]})["wide"].status
        'better'
    """
    if not isinstance(deltas, Mapping):
        raise ValueError(f"decide: 'deltas' must map variant names to per-seed differences, "
                         f"received {type(deltas).__name__}.")
    data = {name: _as_deltas(name, values) for name, values in deltas.items()}
    looks = design.looks()
    out: dict[str, Decision] = {}
    running = list(data)
    for name in running:
        out[name] = Decision("continue", 0, f"waiting for {looks[0]} seeds (has {len(data[name])})", math.nan, math.nan)
    rejected = 0
    for k, n in enumerate(looks):
        if not running or any(len(data[name]) < n for name in running):
            break
        tests = {name: _paired_t(data[name][:n]) for name in running}
        rejected = _efficacy(design, tests, k, len(data), rejected, running, out, higher_is_better)
        for name in list(running):
            out[name] = _no_efficacy(design, tests[name], k, len(data), rejected)
            if out[name].settled:
                running.remove(name)
    return {name: out[name] for name in data}


def _level(design: SequentialDesign, m: int, rejected: int) -> float:
    return design.alpha / (m - min(rejected, m - 1))


def _efficacy(design: SequentialDesign, tests: dict[str, _Look], k: int, m: int, rejected: int,
              running: list[str], out: dict[str, Decision], higher_is_better: bool) -> int:
    """Holm step-down at look ``k``: reject what crosses, raise the others' level, repeat."""
    looks = tuple(design.looks())
    while True:
        threshold = _thresholds(looks, _level(design, m, rejected))[k]
        crossing = [name for name in running if tests[name].p <= threshold]
        if not crossing:
            return rejected
        for name in crossing:
            t = tests[name]
            status = "better" if (t.mean > 0) == higher_is_better else "worse"
            out[name] = Decision(status, t.n, f"crossed the efficacy boundary at {t.n} seeds "
                                 f"(p={t.p:.2g} <= {threshold:.2g})", t.p, threshold)
            running.remove(name)
        rejected += len(crossing)


def _no_efficacy(design: SequentialDesign, t: _Look, k: int, m: int, rejected: int) -> Decision:
    """A variant that did not cross at look ``k``: at max, futile, or continue."""
    looks = tuple(design.looks())
    thresholds = _thresholds(looks, _level(design, m, rejected))
    threshold = thresholds[k]
    compared = f"p={t.p:.2g} > {threshold:.2g}"
    if k == len(looks) - 1:
        return Decision("no evidence", t.n, f"max seeds reached ({compared})", t.p, threshold)
    power = _conditional_power(t, thresholds[-1], looks[-1])
    if power < design.futility:
        return Decision("no evidence", t.n, f"futile at {t.n} seeds (conditional power {power:.2f} < "
                        f"{design.futility:g})", t.p, threshold)
    equivalent, low, high = _equivalent(t, design.min_effect)
    if equivalent:
        return Decision("no evidence", t.n, f"futile at {t.n} seeds (90% CI [{low:.3g}, {high:.3g}] within "
                        f"+/-{design.min_effect:g})", t.p, threshold)
    return Decision("continue", t.n, f"continue after {t.n} seeds ({compared}, conditional power {power:.2f})",
                    t.p, threshold)


def next_seed_count(design: SequentialDesign, decisions: Mapping[str, Decision]) -> int | None:
    """Seeds every unsettled variant (and the baseline) needs for the next round; None when all settled.

    Example:
        >>> next_seed_count(SequentialDesign(3, 10), {"a": Decision("continue", 4, "", 0.2, 1e-4)})
        5
    """
    pending = [d.n for d in decisions.values() if not d.settled]
    if not pending:
        return None
    looks = design.looks()
    n = min(pending)
    later = [look for look in looks if look > n]
    if not later:
        raise ValueError(f"next_seed_count: a 'continue' decision at {n} seeds cannot occur when max_seeds is "
                         f"{design.max_seeds}; were the decisions made with another design?")
    return later[0]
