"""The queue: an Optuna study in shared storage that any number of workers take trials from.

A campaign's study carries its kind (user attribute ``ablate.kind``) so that a worker started
with nothing but the study's name knows what a trial is. Trials are either enqueued with user
attributes that identify them (an ablation's ``(arm, seed)``; ``enqueue_missing`` skips those
already finished, queued or running, so a queue grows between rounds and a second invocation
queues only what is missing) or sampled by the study's sampler (a study's trials).

Example:
    >>> study = open_queue("ablation.skips", storage, kind="ablation")
    >>> enqueue_missing(study, [{"arm": "baseline", "seed": 0}], key=lambda a: (a["arm"], a["seed"]))
    1
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import TrialState

from ablate.campaign.kinds import Key
from ablate.errors import AblateError

KIND = "ablate.kind"  # study user attribute: which TrialKind runs the study's trials
PRESENT = (TrialState.COMPLETE, TrialState.WAITING, TrialState.RUNNING)  # not queued again


def open_queue(name: str, storage: optuna.storages.BaseStorage, kind: str, directions: Sequence[str] = ("maximize",),
               sampler: optuna.samplers.BaseSampler | None = None,
               pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    """Creates the study ``name`` or loads it; a study of another kind under that name is an error."""
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner, load_if_exists=True,
                                directions=[optuna.study.StudyDirection[d.upper()] for d in directions])
    found = study.user_attrs.get(KIND, kind)
    if found != kind:
        raise AblateError(f"'{name}' in this storage is not a {kind} (it is a {found}).")
    study.set_user_attr(KIND, kind)
    return study


def kind_of(study: optuna.Study) -> str | None:
    return study.user_attrs.get(KIND)


def enqueue_missing(study: optuna.Study, items: Iterable[Mapping[str, Any]], key: Key) -> int:
    """Queues each item (a trial's user attributes) whose key is not finished, queued or running.

    Failed trials do not count as present: their keys are queued again. Returns how many were queued.
    """
    present = {key(t.user_attrs) for t in study.get_trials(deepcopy=False, states=PRESENT)}
    queued = 0
    for attrs in items:
        k = key(attrs)
        if k in present:
            continue
        study.enqueue_trial({}, user_attrs=dict(attrs))
        present.add(k)
        queued += 1
    return queued
