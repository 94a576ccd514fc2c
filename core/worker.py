"""``ablate worker``: take queued trials of one ablation or study until none are left.

Any number of workers, on any machine that reaches the storage and the tracking server,
can share one queue. A killed worker's trial is failed by the heartbeat and re-queued.
"""

from __future__ import annotations

from collections.abc import Callable

import optuna
from optuna.trial import TrialState

from core.errors import AblateError
from core.storage import load_study, open_storage


def objective_for(study: optuna.Study, verbose: int = 0) -> Callable[[optuna.Trial], float]:
    kind = study.user_attrs.get("ablate.kind")
    if kind == "ablation":
        from core.ablation.runner import ArmObjective

        return ArmObjective(study, verbose)
    if kind == "study":
        from core.study.runner import objective_for_study

        return objective_for_study(study, verbose)
    raise AblateError(f"Study '{study.study_name}' was not created by ablate (no ablate.kind attribute).")


def has_work(study: optuna.Study) -> bool:
    if study.user_attrs.get("ablate.kind") == "study":
        from core.study.runner import has_budget

        return has_budget(study)
    return bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def work(study_name: str, storage_url: str | None = None, max_trials: int | None = None, verbose: int = 0,
         on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None) -> int:
    """Runs trials until the queue is empty (or ``max_trials``); returns how many ran."""
    storage = open_storage(storage_url)
    study = load_study(study_name, storage)
    objective = objective_for(study, verbose)
    ran = 0
    while (max_trials is None or ran < max_trials) and has_work(study):
        study.optimize(objective, n_trials=1, catch=(Exception,),
                       callbacks=[on_trial] if on_trial is not None else None)
        ran += 1
    return ran
