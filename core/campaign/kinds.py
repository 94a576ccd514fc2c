"""What the engine is told about a campaign's trials: a kind for the workers, a round for the bar.

The engine never imports the things that use it. An ablation or a study hands it a
``TrialKind`` (how a worker runs one trial and whether there is more to run) and, for each
round it runs, a ``Round`` (which trials the round is made of, how to count them and how to
name a finished one).

Example:
    >>> square = TrialKind("toy", objective=lambda study, verbose: lambda trial: trial.number ** 2)
    >>> one = Round("toy", unit="trial", counts=lambda study: tally(study.get_trials(), total=3))
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

Objective = Callable[[optuna.Trial], "float | Sequence[float]"]
Key = Callable[[Mapping[str, Any]], Hashable]  # what identifies a trial, read from its user attributes


def has_waiting(study: optuna.Study) -> bool:
    """True while a queued trial waits for a worker (the default ``TrialKind.has_work``)."""
    return bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


@dataclass(frozen=True)
class TrialKind:
    """How a worker runs the trials of one kind of campaign.

    Args:
        name: the study's ``ablate.kind`` user attribute that selects this kind ("ablation", "study").
        objective: ``objective(study, verbose)`` builds the Optuna objective for a loaded study.
        has_work: whether a worker should start another trial now (default: one is queued).
        sampled: False (default) when every trial comes from the queue: a trial started after
            another worker took the last queued one is pruned at once and marked ``empty``;
            True when the study's sampler proposes trials (a search).

    Example:
        >>> ARMS = TrialKind("ablation", objective=ArmObjective)
    """

    name: str
    objective: Callable[[optuna.Study, int], Objective]
    has_work: Callable[[optuna.Study], bool] = has_waiting
    sampled: bool = False


@dataclass(frozen=True)
class Counts:
    """Where the trials of a round stand, by state.

    A trial that was retried counts once: each key is counted in its most advanced state
    (complete, then running, waiting, pruned, failed).
    """

    total: int
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    waiting: int = 0

    @property
    def done(self) -> int:
        """Finished one way or another: complete, pruned or failed."""
        return self.complete + self.pruned + self.failed

    @property
    def claimed(self) -> int:
        """Finished, running or queued."""
        return self.done + self.running + self.waiting


_RANK = {TrialState.COMPLETE: 5, TrialState.RUNNING: 4, TrialState.WAITING: 3, TrialState.PRUNED: 2,
         TrialState.FAIL: 1}
_FIELD = {TrialState.COMPLETE: "complete", TrialState.RUNNING: "running", TrialState.WAITING: "waiting",
          TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}


def tally(trials: Sequence[FrozenTrial], total: int | None = None, key: Key | None = None,
          wanted: Set[Hashable] | None = None) -> Counts:
    """Counts ``trials`` by state, one per key (default: the trial number), only ``wanted`` keys.

    ``total`` defaults to the number of wanted keys (or of keys seen when none are given).
    """
    best: dict[Hashable, TrialState] = {}
    for t in trials:
        k = t.number if key is None else key(t.user_attrs)
        if (wanted is not None and k not in wanted) or t.state not in _RANK:
            continue
        if k not in best or _RANK[t.state] > _RANK[best[k]]:
            best[k] = t.state
    by_field = {name: 0 for name in _FIELD.values()}
    for state in best.values():
        by_field[_FIELD[state]] += 1
    if total is None:
        total = len(wanted) if wanted is not None else len(best)
    return Counts(total, **by_field)


@dataclass(frozen=True)
class Round:
    """The trials the engine runs now, as the progress bar shows them.

    Args:
        label: the bar's description ("skips arms", the study name).
        unit: what one trial is called ("run", "trial").
        counts: ``counts(study)``: where this round's trials stand (``total`` is the bar's length).
        describe: one line for a finished trial, or None to print nothing for it.
        postfix: ``postfix(study, counts)``: text after the bar (default: none).
    """

    label: str
    unit: str
    counts: Callable[[optuna.Study], Counts]
    describe: Callable[[FrozenTrial], str | None] = lambda trial: None
    postfix: Callable[[optuna.Study, Counts], str] | None = None
