"""Statistics for paired-seed ablations: pure numpy/scipy, deterministic.

Each arm runs with the same seeds as the baseline (same split, init, data order and
augmentation stream), so arms are compared through per-seed differences
``variant - baseline``, not through two independent means. Ablations run 2-12 seeds, so
every choice is made for small samples and checked by simulation
(``tests/test_stats_sim.py``). Choices, and why:

- **Arm CI**: Student-t interval of the mean at every n >= 2 (nan below, never min/max).
  A percentile bootstrap of 2-12 values has few distinct resamples and is too narrow (it
  covered about 76% at 3 seeds); the t interval is exact for normal seed noise.
- **Delta CI**: the same t interval of the paired differences (``ci_method`` "t").
- **Primary test**: two-sided paired t-test on the differences (``test`` "paired-t"). It
  is the test of the mean the delta CI describes (p < 1 - confidence exactly when the CI
  excludes zero), and its p can reach alpha at 3-5 seeds when the effect is consistent:
  deltas -0.04, -0.05, -0.045 give p = 0.004. The sign-flip test cannot: its floor is
  ``2 / 2**n`` (0.25 at 3 seeds, 0.0625 at 5). Zero spread gives p = 0 (all differences
  equal, non-zero) or 1 (all zero); under 2 pairs p = 1, so the arm still counts for Holm.
- **p_perm** (robustness column): two-sided sign-flip permutation test of ``|sum|``,
  distribution-free; exact up to ``EXACT_MAX_N`` pairs, above that Monte-Carlo with
  ``n_boot`` random flips, ``p = (1 + hits) / (1 + n_boot)``. A verdict whose ``p_perm_adj``
  is far above alpha leans on the normality of few differences (or on too few seeds:
  see ``min_p``).
- **prob_better**: ``PROB_BETTER_EXPLAINED``; it exceeds 1 - (1 - confidence) / 2
  exactly when the delta CI excludes zero on the variant's side.
- **Multiplicity**: Holm across the non-baseline arms, per metric, for p and p_perm.
- **Verdict** (unchanged): "better"/"worse" only when the Holm-adjusted p is below alpha
  *and* the delta CI excludes zero on that side; otherwise "no evidence".
- **Planning**: ``min_p``, ``min_adjusted_p``, ``seeds_needed_permutation``,
  ``power_paired_t``, ``seeds_for_power``, ``pooled_seed_sd``.

Measured (``tests/test_stats_sim.py``, 20,000 replicates per cell, 95% intervals):

=========  ======  ======  ======  ======  ======  ======
n seeds      2       3       5       8       12      30
=========  ======  ======  ======  ======  ======  ======
arm, N     0.952   0.949   0.951   0.951   0.950   0.952
delta, N   0.949   0.950   0.951   0.951   0.949   0.949
arm, t3    0.959   0.963   0.961   0.959   0.959   0.953
delta, t3  0.956   0.961   0.961   0.958   0.956   0.954
=========  ======  ======  ======  ======  ======  ======

(N: normal seed noise; t3: Student t with 3 df; the bootstrap it replaces covered 0.76
at 3 seeds.) Family-wise false-positive rate of the verdict, 4 null variants against
one shared baseline, Holm: 0.048 at 3 seeds, 0.045 at 5, 0.047 at 8 (normal), 0.034 at
5 (t3). Power of the verdict for one variant whose effect is 2 sd of the paired
differences, 5 seeds: 0.909 (``power_paired_t``: 0.909).
"""

from ablate.stats._checks import Seed
from ablate.stats._inference import (
    EXACT_MAX_N,
    PROB_BETTER_EXPLAINED,
    ArmSummary,
    PairedResult,
    bootstrap_ci,
    paired_difference,
    paired_test,
    permutation_test,
    summarize_arm,
)
from ablate.stats._inference import _t_batch as _t_batch
from ablate.stats._multiplicity import CORRECTIONS, adjust, holm, verdict
from ablate.stats._multiplicity import _adjust_batch as _adjust_batch
from ablate.stats._multiplicity import _verdict_codes as _verdict_codes
from ablate.stats._planning import (
    TESTS,
    min_adjusted_p,
    min_p,
    pooled_seed_sd,
    power_paired_t,
    seeds_for_power,
    seeds_needed_permutation,
)
from ablate.stats._table import OK_STATUS, compare_arms

__all__ = [
    "CORRECTIONS",
    "EXACT_MAX_N",
    "OK_STATUS",
    "PROB_BETTER_EXPLAINED",
    "TESTS",
    "ArmSummary",
    "PairedResult",
    "Seed",
    "adjust",
    "bootstrap_ci",
    "compare_arms",
    "holm",
    "min_adjusted_p",
    "min_p",
    "paired_difference",
    "paired_test",
    "permutation_test",
    "pooled_seed_sd",
    "power_paired_t",
    "seeds_for_power",
    "seeds_needed_permutation",
    "summarize_arm",
    "verdict",
]

# The examples live in the private modules; listing the public classes and functions here lets
# ``doctest.testmod(ablate.stats)`` run them all (doctest only looks at names defined in a module).
__test__ = {name: globals()[name] for name in __all__ if callable(globals()[name])}
