"""Sequential benchmark: "seeds until decided" against the fixed max-seed design.

Simulated ablations (numpy only, no training): ``m`` variants and a shared baseline run on
paired seeds. Per seed, every arm shares a seed effect (the split, init and data order move
all arms together: correlation ``ARM_CORR`` between arms of one seed) plus its own noise;
the seed sd of val mIoU is ``SEED_SD``. Each variant's true effect, in units of the sd of the
paired difference, is drawn independently from ``MIX``: {0, 0, +/-1, +/-U(2, 3)}, i.e. null
half the time, moderate a quarter, large a quarter.

Both designs see the same seeds: the fixed design runs ``max_seeds`` seeds per arm and
gives a verdict by the paired t-test, Holm-adjusted across the variants at ``alpha`` and
the t CI excluding zero on the same side; the sequential design (``ablate.sequential``) is
replayed on prefixes of the same per-seed differences. Reported per setting:

- agreement: the share of variants with the same verdict as the fixed design (target
  >= 0.95), and of ablations where every variant agrees;
- run fraction: runs of the sequential design over the fixed design's, the baseline
  counted at the seeds of its longest-running variant (target <= 0.60);
- FWER: the share of all-null ablations with any false claim (target <= alpha), with
  and without the (non-binding) futility rules, and the false-claim rate among the null
  variants of the mixed ablations.

Run from the project root (about 3 minutes on 2 CPU cores):

    .venv/bin/python benchmarks/sequential.py [--ablations 20000] [--nulls 20000] [--seed 0]

Writes ``benchmarks/results/sequential.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import special

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ablate.sequential import SequentialDesign, decide  # noqa: E402

N_VARIANTS = 4
SEED_SD = (0.01, 0.02)  # seed sd of val mIoU per arm, drawn per ablation
ARM_CORR = (0.3, 0.7)  # correlation of two arms' results on the same seed, drawn per ablation
MIX = {"null": (0.5, 0.0, 0.0), "moderate": (0.25, 1.0, 1.0), "large": (0.25, 2.0, 3.0)}  # share, |effect| range (sd)
HEADLINE = SequentialDesign(min_seeds=3, max_seeds=10)
ALTERNATIVES = [
    dataclasses.replace(HEADLINE, step=2),
    dataclasses.replace(HEADLINE, min_seeds=4),
    dataclasses.replace(HEADLINE, futility=0.1),
    dataclasses.replace(HEADLINE, futility=0.02),
]
TARGETS = {"agreement_min": 0.95, "run_fraction_max": 0.60, "fwer_max": 0.05}


def simulate(rng: np.random.Generator, n_ablations: int, max_seeds: int,
             null_only: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Effects (in sd of the paired difference) and per-seed differences, shapes (R, m) and (R, m, N)."""
    shape = (n_ablations, N_VARIANTS)
    if null_only:
        effect = np.zeros(shape)
    else:
        names = list(MIX)
        kind = rng.choice(len(names), size=shape, p=[MIX[k][0] for k in names])
        low = np.array([MIX[k][1] for k in names])[kind]
        high = np.array([MIX[k][2] for k in names])[kind]
        effect = rng.uniform(low, high) * rng.choice([-1.0, 1.0], size=shape)
    sd = rng.uniform(*SEED_SD, size=(n_ablations, 1, 1))
    corr = rng.uniform(*ARM_CORR, size=(n_ablations, 1, 1))
    seed_effect = rng.standard_normal((n_ablations, 1, max_seeds)) * sd * np.sqrt(corr)
    own = rng.standard_normal((n_ablations, N_VARIANTS + 1, max_seeds)) * sd * np.sqrt(1.0 - corr)
    arms = seed_effect + own  # arm 0 is the baseline
    diff_sd = sd[..., 0] * np.sqrt(2.0 * (1.0 - corr[..., 0]))
    deltas = arms[:, 1:] - arms[:, :1] + (effect * diff_sd)[..., None]
    return effect, deltas


def fixed_verdicts(deltas: np.ndarray, alpha: float) -> np.ndarray:
    """+1 better, -1 worse, 0 no evidence: paired t, Holm across variants, CI on the same side."""
    n = deltas.shape[-1]
    mean, sd = deltas.mean(-1), deltas.std(-1, ddof=1)
    t = mean / (sd / math.sqrt(n))
    p = 2.0 * special.stdtr(n - 1, -np.abs(t))
    m = p.shape[1]
    order = np.argsort(p, axis=1)
    adjusted = np.maximum.accumulate(np.minimum(1.0, np.take_along_axis(p, order, 1) * (m - np.arange(m))), axis=1)
    p_adj = np.empty_like(p)
    np.put_along_axis(p_adj, order, adjusted, 1)
    half = -special.stdtrit(n - 1, alpha / 2.0) * sd / math.sqrt(n)
    ci_excludes_zero = (mean - half > 0) | (mean + half < 0)
    return np.where((p_adj < alpha) & ci_excludes_zero, np.sign(mean), 0.0)


def sequential_verdicts(design: SequentialDesign, deltas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Verdicts (+1/-1/0) and seeds used per variant, replaying ``decide`` on each ablation."""
    code = {"better": 1.0, "worse": -1.0, "no evidence": 0.0}
    names = [f"v{j}" for j in range(deltas.shape[1])]
    verdict = np.zeros(deltas.shape[:2])
    seeds = np.zeros(deltas.shape[:2], int)
    for i, row in enumerate(deltas):
        decisions = decide(design, dict(zip(names, row, strict=True)))
        for j, name in enumerate(names):
            verdict[i, j], seeds[i, j] = code[decisions[name].status], decisions[name].n
    return verdict, seeds


def run_fraction(seeds: np.ndarray, max_seeds: int) -> np.ndarray:
    """Per ablation: (baseline runs + variant runs) / fixed design's runs."""
    return (seeds.max(1) + seeds.sum(1)) / ((seeds.shape[1] + 1) * max_seeds)


def by_class(effect: np.ndarray, fixed: np.ndarray, seq: np.ndarray, seeds: np.ndarray) -> dict[str, Any]:
    size = np.abs(effect)
    classes = {"null": size == 0, "moderate": (size > 0) & (size < 1.5), "large": size >= 1.5}
    return {name: {"variants": int(sel.sum()), "agreement": round(float((fixed[sel] == seq[sel]).mean()), 4),
                   "fixed_claims": round(float((fixed[sel] != 0).mean()), 4),
                   "sequential_claims": round(float((seq[sel] != 0).mean()), 4),
                   "mean_seeds": round(float(seeds[sel].mean()), 2)}
            for name, sel in classes.items()}


def evaluate(design: SequentialDesign, mixed: tuple[np.ndarray, np.ndarray],
             nulls: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    effect, deltas = mixed
    n = design.max_seeds
    fixed = fixed_verdicts(deltas[..., :n], design.alpha)
    seq, seeds = sequential_verdicts(design, deltas[..., :n])
    agree = fixed == seq
    fraction = run_fraction(seeds, n)
    null = effect == 0
    null_fixed = fixed_verdicts(nulls[1][..., :n], design.alpha)
    null_seq, null_seeds = sequential_verdicts(design, nulls[1][..., :n])
    fwer = float((null_seq != 0).any(1).mean())
    return {
        "design": dataclasses.asdict(design), "looks": design.looks(),
        "agreement": round(float(agree.mean()), 4),
        "agreement_se": round(float(agree.mean(1).std() / math.sqrt(len(agree))), 4),
        "agreement_all_variants": round(float(agree.all(1).mean()), 4),
        "run_fraction": round(float(fraction.mean()), 4),
        "run_fraction_se": round(float(fraction.std() / math.sqrt(len(fraction))), 4),
        "fwer_all_null": round(fwer, 4),
        "fwer_all_null_se": round(math.sqrt(fwer * (1 - fwer) / len(null_seq)), 4),
        "fwer_all_null_fixed": round(float((null_fixed != 0).any(1).mean()), 4),
        "run_fraction_all_null": round(float(run_fraction(null_seeds, n).mean()), 4),
        "false_claims_null_variants_mixed": round(float((seq[null] != 0).mean()), 4),
        "false_claims_null_variants_mixed_fixed": round(float((fixed[null] != 0).mean()), 4),
        "ablations_with_a_false_claim_mixed": round(float(((seq != 0) & null).any(1).mean()), 4),
        "wrong_sign_claims": round(float(((seq != 0) & (effect != 0) & (seq != np.sign(effect))).mean()), 5),
        "by_effect": by_class(effect, fixed, seq, seeds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ablations", type=int, default=20000, help="mixed ablations per setting")
    parser.add_argument("--nulls", type=int, default=20000, help="all-null ablations per setting")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    n_max = max(d.max_seeds for d in [HEADLINE, *ALTERNATIVES])
    mixed, nulls = simulate(rng, args.ablations, n_max), simulate(rng, args.nulls, n_max, null_only=True)
    started = time.time()
    headline = evaluate(HEADLINE, mixed, nulls)
    no_futility = dataclasses.replace(HEADLINE, futility=0.0, min_effect=0.0)
    null_seq, _ = sequential_verdicts(no_futility, nulls[1][..., :HEADLINE.max_seeds])
    headline["fwer_all_null_without_futility"] = round(float((null_seq != 0).any(1).mean()), 4)
    alternatives = [evaluate(d, mixed, nulls) for d in ALTERNATIVES]
    met = {"agreement": headline["agreement"] >= TARGETS["agreement_min"],
           "run_fraction": headline["run_fraction"] <= TARGETS["run_fraction_max"],
           "fwer": headline["fwer_all_null"] <= TARGETS["fwer_max"]}
    result = {
        "benchmark": "sequential",
        "settings": {"variants": N_VARIANTS, "mixed_ablations": args.ablations, "null_ablations": args.nulls,
                     "seed": args.seed, "seed_sd": SEED_SD, "arm_correlation": ARM_CORR,
                     "effect_mix": {k: {"share": v[0], "abs_effect_in_diff_sd": [v[1], v[2]]} for k, v in MIX.items()},
                     "effect_sign": "+/- with equal probability", "higher_is_better": True,
                     "fixed_design": "max_seeds per arm; paired t, Holm across variants at alpha, "
                                     "t CI on the same side",
                     "runs": "baseline counted at the seeds of its longest-running variant"},
        "targets": TARGETS, "headline_meets": met, "headline": headline, "alternatives": alternatives,
        "seconds": round(time.time() - started, 1),
        "machine": {"python": platform.python_version(), "numpy": np.__version__},
    }
    out = ROOT / "benchmarks" / "results" / "sequential.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'design':<42} {'agree':>6} {'all4':>6} {'runs':>6} {'FWER0':>6} {'null FP':>7}")
    for row in [headline, *alternatives]:
        d = row["design"]
        name = f"min {d['min_seeds']} max {d['max_seeds']} step {d['step']} futility {d['futility']:g}"
        print(f"{name:<42} {row['agreement']:>6.3f} {row['agreement_all_variants']:>6.3f} "
              f"{row['run_fraction']:>6.3f} {row['fwer_all_null']:>6.4f} "
              f"{row['false_claims_null_variants_mixed']:>7.4f}")
    print(f"FWER of the headline without futility: {headline['fwer_all_null_without_futility']:.4f} "
          f"(fixed design: {headline['fwer_all_null_fixed']:.4f}); targets met: {met}")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
