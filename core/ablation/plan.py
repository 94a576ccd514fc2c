"""Plan an ablation before running it: runs, reachable p-values, seeds for a stated effect.

``ablate ablation plan FILE`` (and ``show``) prints what the design costs and what it can
conclude. A design whose smallest reachable adjusted p is not below alpha can never give a
verdict; ``ablate ablation run`` refuses it (one line naming the seeds it needs) unless
``--screening`` is given, and the report then labels the runs as screening.

Seeds for a minimum effect: when the tracking store already holds finished runs of the
baseline arm (same arm hash: same spec and data, any seed), their spread estimates the seed
standard deviation ``sd`` of val mIoU. Without knowing the correlation between arms of one
seed, the paired difference is given ``sqrt(2) * sd`` (the value for independent arms; paired
arms usually correlate positively, so this errs towards more seeds). The seeds needed are the
smallest n whose two-sided paired t-test at ``alpha / m`` (Holm's first step, its strictest)
reaches 80% power for ``min_effect``.

Example:
    >>> plan = make_plan(load_ablation("ablations/skip_connections.yaml"))  # doctest: +SKIP
    >>> print(plan.text())  # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ablate import stats
from ablate.ablation.design import Ablation
from ablate.errors import SpecError

POWER = 0.8  # the conventional target power of a planned comparison
_TEST_NAMES = {"paired-t": "two-sided paired t-test", "permutation": "exact sign-flip permutation test"}


@dataclass
class StoreEstimate:
    """Seed spread of the baseline arm, from finished runs already in the tracking store."""

    n_runs: int
    seed_sd: float

    @property
    def diff_sd(self) -> float:
        return math.sqrt(2.0) * self.seed_sd


@dataclass
class Plan:
    """What an ablation costs and what it can conclude, before any run."""

    ab: Ablation
    n_variants: int
    runs_min: int
    runs_max: int
    seeds_first: int  # seeds every arm runs first (all of them in a fixed design)
    min_p_adj: float  # smallest adjusted p of the primary test with seeds_first pairs
    min_p_adj_perm: float  # the same for the exact permutation test (the robustness column)
    seeds_needed: int | None  # smallest seed count that can reach alpha with the primary test
    detectable_sd: float  # paired effect (in sd of the differences) found with 80% power
    estimate: StoreEstimate | None = None
    seeds_for_effect: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def reachable(self) -> bool:
        return self.min_p_adj < self.ab.alpha

    def refusal(self) -> str:
        """One line: why the design cannot reach a verdict and what to run instead."""
        ab = self.ab
        need = f"use {self.seeds_needed} seeds or more" if self.seeds_needed else "use more seeds"
        return (f"Ablation '{ab.name}': {self.seeds_first} seed(s) can never reach p < {ab.alpha:g} with the "
                f"{_TEST_NAMES[ab.test]} and {ab.correction} over {self.n_variants} variant(s) (smallest adjusted "
                f"p {self.min_p_adj:.3g}); {need} (--seeds N), --until-decided, or --screening to run anyway.")

    def text(self) -> str:
        ab = self.ab
        lines = [f"ablation '{ab.name}': design {ab.design}, {len(ab.arms)} arms (baseline + {self.n_variants} "
                 f"variant(s))"]
        if ab.sequential is not None:
            looks = ab.sequential.looks()
            lines.append(f"seeds: sequential, {looks[0]} to {looks[-1]} per arm in rounds at {looks}; "
                         f"{self.runs_min} to {self.runs_max} runs")
        else:
            lines.append(f"seeds: {len(ab.seeds)} per arm ({', '.join(map(str, ab.seeds))}), fixed; "
                         f"{self.runs_max} runs")
        lines.append(f"test: {_TEST_NAMES[ab.test]}, {ab.correction} across {self.n_variants} comparison(s), "
                     f"alpha {ab.alpha:g}")
        lines.append(f"smallest adjusted p each comparison can reach with {self.seeds_first} seeds: "
                     f"{_p_text(self.min_p_adj, ab.test)}; exact permutation (robustness column): "
                     f"{self.min_p_adj_perm:.3g}")
        lines.append(f"with {self.seeds_first} seeds, 80% power needs a consistent paired effect of "
                     f"{self.detectable_sd:.1f} sd of the per-seed differences")
        if self.estimate is None:
            lines.append(f"seed sd: no finished baseline runs in the store yet; run once to size the seeds for "
                         f"min_effect {ab.min_effect:g}")
        else:
            e = self.estimate
            need = (f"{self.seeds_for_effect} seeds per arm" if self.seeds_for_effect
                    else "more than 200 seeds per arm")
            lines.append(f"seed sd from the store: {e.seed_sd:.4f} val mIoU over {e.n_runs} finished baseline "
                         f"run(s); paired-difference sd ~{e.diff_sd:.4f}; to detect {ab.min_effect:g} mIoU with "
                         f"80% power: {need}")
        lines += self.notes
        if not self.reachable:
            lines.append("REFUSED: " + self.refusal())
        return "\n".join(lines)


def _p_text(p: float, test: str) -> str:
    if test == "paired-t" and p == 0.0:
        return "no floor (a consistent effect can reach any p)"
    return f"{p:.3g}"


def detectable_effect(n: int, alpha: float, power: float = POWER) -> float:
    """The paired effect, in sd of the differences, that a t-test on n pairs finds with ``power``."""
    if n < 2:
        return math.inf
    low, high = 0.0, 1.0
    while stats.power_paired_t(n, high, 1.0, alpha) < power:
        high *= 2.0
        if high > 1e6:
            return math.inf
    for _ in range(60):  # bisection: power grows with the effect
        mid = (low + high) / 2.0
        low, high = (mid, high) if stats.power_paired_t(n, mid, 1.0, alpha) < power else (low, mid)
    return high


def _seeds_needed(ab: Ablation, m: int) -> int | None:
    if ab.test == "permutation":
        return stats.seeds_needed_permutation(m, ab.alpha, ab.correction)
    return 2


def make_plan(ab: Ablation, estimate: StoreEstimate | None = None) -> Plan:
    """The plan of ``ab``; ``estimate`` (see ``store_estimate``) sizes the seeds for ``min_effect``."""
    m = max(1, len(ab.variants))
    if ab.sequential is not None:
        looks = ab.sequential.looks()
        first, last = looks[0], looks[-1]
    else:
        first = last = len(ab.seeds)
    plan = Plan(
        ab=ab, n_variants=len(ab.variants), runs_min=len(ab.arms) * first, runs_max=len(ab.arms) * last,
        seeds_first=first,
        min_p_adj=stats.min_adjusted_p(last if ab.sequential else first, m, ab.test, ab.correction),
        min_p_adj_perm=stats.min_adjusted_p(first, m, "permutation", ab.correction),
        seeds_needed=_seeds_needed(ab, m), detectable_sd=detectable_effect(first, ab.alpha / m),
        estimate=estimate)
    if estimate is not None and estimate.seed_sd > 0:
        plan.seeds_for_effect = stats.seeds_for_power(ab.min_effect, estimate.diff_sd, ab.alpha / m, POWER)
    if ab.sequential is not None:
        plan.notes.append(f"sequential: after each round, variants whose verdict is settled stop "
                          f"({ab.sequential.describe()})" if hasattr(ab.sequential, "describe") else
                          "sequential: after each round, variants whose verdict is settled stop")
    return plan


def store_estimate(ab: Ablation) -> StoreEstimate | None:
    """Seed sd of the baseline arm from FINISHED runs in the current tracking store (None if < 2)."""
    from mlflow.tracking import MlflowClient

    from ablate.campaign.runs import search_all

    client = MlflowClient()
    exp_ids = [e.experiment_id for e in client.search_experiments()]
    if not exp_ids:
        return None
    runs = search_all(client, exp_ids, f"tags.arm_hash = '{ab.baseline.spec.spec_hash}' and "
                                       "attributes.status = 'FINISHED'")
    by_seed: dict[str, float] = {}
    for run in runs:
        value = run.data.metrics.get("best_val_miou")
        if value is not None and math.isfinite(value):
            by_seed.setdefault(run.data.tags.get("seed", run.info.run_id), value)
    if len(by_seed) < 2:
        return None
    return StoreEstimate(len(by_seed), stats.pooled_seed_sd({"baseline": list(by_seed.values())}))


def check(plan: Plan, screening: bool) -> None:
    """Raise the plan's one-line refusal unless it can reach alpha or ``screening`` is set."""
    if not plan.reachable and not screening:
        raise SpecError(plan.refusal())
