"""Does an ablation's winner really win? The winner against the runner-up, paired by seed.

:func:`ablate.export.select.from_ablation` exports the best-mean arm only when :class:`Evidence`
says it is ``supported`` (or with ``force``); the card quotes :meth:`Evidence.text`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from mlflow.entities import Run

from ablate.stats import PairedResult, paired_difference, verdict

# Metrics where smaller is better; every other metric (mIoU, IoU) is maximised.
LOWER_IS_BETTER = ("latency_ms_per_image", "params", "train_time_s", "flops_per_image", "epochs_run")
# The bar an ablation's winner must clear against its runner-up before it is exported: the usual
# 5% two-sided level, with the matching 95% interval (a CI that excludes zero <=> p < ALPHA for t).
ALPHA = 0.05
CONFIDENCE = 1.0 - ALPHA
MORE_SEEDS = "`ablate ablation run FILE --until-decided`"


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER and not metric.endswith("loss")


def metric_of(run: Run, metric: str) -> float:
    value = run.data.metrics.get(metric)
    return float(value) if value is not None and math.isfinite(value) else math.nan


# --- does the winner really win? -------------------------------------------------------------------
#
# No multiplicity correction (Holm, as the ablation report uses) is applied: the export rests on one
# hypothesis, "the winner beats the runner-up", not on a family of claims. Ranking first does pick
# the pair from the data, but it picks the *closest* competitor, whose gap to the winner is smaller
# than a random arm's. Simulated under equal arms (normal noise, a shared seed effect, 20,000
# replicates), the rate at which this check passes is 0.048-0.050 with 2 arms (exactly the two-sided
# ALPHA, as the sign of the same differences picks the winner), 0.021-0.030 with 3, 0.005-0.014 with
# 8 (3-8 seeds): selection makes the check conservative, so a correction would only refuse more. The
# test stays two-sided for the same reason: one-sided at ALPHA would pass equal arms at 2 * ALPHA.

@dataclass(frozen=True)
class Evidence:
    """The winner of an ablation against the runner-up (and the baseline), paired by seed.

    Example:
        >>> ev = Evidence.of(groups, *rank_arms(groups, "best_val_miou"), "best_val_miou")
        >>> ev.supported, ev.text()
    """

    metric: str
    winner: str
    mean: float  # the winner's mean over its seeds
    winner_seeds: tuple[str, ...]
    runner_up: str | None  # None: a single arm
    runner_up_seeds: tuple[str, ...]
    vs_runner_up: tuple[PairedResult, tuple[str, ...]] | None  # the result and the seeds that paired
    vs_baseline: tuple[str, PairedResult, tuple[str, ...]] | None  # when a baseline is neither of the two

    @classmethod
    def of(cls, groups: dict[tuple[str, ...], list[Run]], ranked: Sequence[tuple[str, ...]],
           means: dict[tuple[str, ...], float], metric: str) -> Evidence:
        win, runner = groups[ranked[0]], (ranked[1] if len(ranked) > 1 else None)
        base = next((k for k in ranked[2:] if groups[k][0].data.tags.get("is_baseline") == "true"), None)
        return cls(metric, ranked[0][1], means[ranked[0]], _seeds(win), runner[1] if runner else None,
                   _seeds(groups[runner]) if runner else (), _paired(win, groups[runner], metric) if runner else None,
                   (base[1], *_paired(win, groups[base], metric)) if base else None)

    @property
    def supported(self) -> bool:
        """p < ALPHA and the CI excludes zero on the winner's side (``stats.verdict`` says "better")."""
        if self.vs_runner_up is None or self.vs_runner_up[0].n == 0:
            return False
        r = self.vs_runner_up[0]
        return verdict((r.ci_low, r.ci_high), r.p, ALPHA, higher_is_better(self.metric)) == "better"

    def text(self) -> str:
        """The card's paragraph: the evidence, or plainly the lack of it."""
        seeds = f" ({', '.join(self.winner_seeds)})" if self.winner_seeds else ""
        mean = f"its mean {self.metric} over {len(self.winner_seeds) or 'its'} seeds{seeds} is {self.mean:.4f}"
        if self.supported and self.vs_runner_up:
            text = (f"Variant '{self.winner}' beat runner-up '{self.runner_up}' by "
                    f"{_figures(*self.vs_runner_up, self.metric)}; {mean}.")
        else:
            text = (f"Exported with --force, although {self._gap()}: the winner was chosen on its mean alone "
                    f"(the bar is p < {ALPHA} with the {CONFIDENCE:.0%} CI excluding zero); {mean}. Another arm "
                    f"may be as good; run more seeds ({MORE_SEEDS}) to decide.")
        if self.vs_baseline is not None:
            base, result, paired = self.vs_baseline
            text += (f" Against the baseline '{base}': {_figures(result, paired, self.metric)} (this comparison "
                     "alone, not adjusted for the ablation's other arms as the ablation's report is).")
        return text

    def refusal(self, ablation: str) -> str:
        """One line: why nothing is exported, and what to do."""
        return (f"Ablation '{ablation}': {self._gap()}; nothing was exported. Run more seeds (e.g. {MORE_SEEDS}) "
                "or pass --force to export anyway.")

    def _gap(self) -> str:
        """Why the winner is not shown better than the runner-up, with the figures."""
        if self.runner_up is None:
            return (f"variant '{self.winner}' is the only arm with FINISHED runs, so there is no runner-up to show "
                    "that it is better")
        if self.vs_runner_up is None or self.vs_runner_up[0].n == 0:
            return (f"runner-up '{self.runner_up}' shares no seed with winner '{self.winner}' (seeds "
                    f"{', '.join(self.runner_up_seeds) or 'none'} vs {', '.join(self.winner_seeds) or 'none'}), "
                    "so the two cannot be compared seed by seed")
        return (f"variant '{self.winner}' is NOT significantly better than runner-up '{self.runner_up}' on "
                f"{self.metric}: delta {_figures(*self.vs_runner_up, self.metric)}")


def _paired(winner: Sequence[Run], other: Sequence[Run], metric: str) -> tuple[PairedResult, tuple[str, ...]]:
    """``winner - other`` paired by seed tag, and the seeds that paired."""
    a = {r.data.tags["seed"]: metric_of(r, metric) for r in winner if r.data.tags.get("seed")}
    b = {r.data.tags["seed"]: metric_of(r, metric) for r in other if r.data.tags.get("seed")}
    result = paired_difference(list(a.values()), list(b.values()), list(a), list(b),
                               higher_is_better=higher_is_better(metric), confidence=CONFIDENCE)
    return result, _sorted_seeds(set(a) & set(b))


def _figures(r: PairedResult, seeds: Sequence[str], metric: str) -> str:
    unit = "mIoU" if "miou" in metric.lower() else metric
    ci = (f" [{CONFIDENCE:.0%} CI {r.ci_low:+.3f}, {r.ci_high:+.3f}]" if math.isfinite(r.ci_low)
          else f" (no {CONFIDENCE:.0%} CI from {r.n} pair)")
    p = "p=n/a" if not math.isfinite(r.p) else "p<0.001" if r.p < 0.001 else f"p={r.p:.2g}"
    return (f"{r.delta:+.3f} {unit}{ci}, {_test_name(r.test)} {p} over {r.n} paired seed{'s' * (r.n != 1)} "
            f"({', '.join(seeds)})")


def _test_name(test: str) -> str:
    words = test.lower().replace("_", " ").replace("-", " ").split()
    if words and words[-1] in ("t", "ttest") or words[-2:] == ["t", "test"]:
        return "paired t-test"
    return {"permutation": "paired sign-flip permutation test",
            "wilcoxon": "Wilcoxon signed-rank test"}.get(test, f"paired {test} test")


def _seeds(runs: Sequence[Run]) -> tuple[str, ...]:
    return _sorted_seeds({r.data.tags["seed"] for r in runs if r.data.tags.get("seed")})


def _sorted_seeds(seeds: set[str]) -> tuple[str, ...]:
    """Numeric seeds in numeric order, then any others."""
    return tuple(sorted(seeds, key=lambda s: (0, int(s), "") if s.isdigit() else (1, 0, s)))
