"""Queues an ablation's (arm, seed) pairs in an Optuna study and runs them.

The study is the queue: every pair is an enqueued trial carrying ``arm``, ``seed`` and
``spec_hash`` user attributes. Finished pairs are skipped on a second invocation (matched by
spec hash and seed); failed or interrupted ones are queued again. Workers anywhere can
share the queue (``ablate worker``). MLflow holds one parent run per ablation and one child
run per (arm, seed).
"""

from __future__ import annotations

import json
from typing import Any

import mlflow
import optuna
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from core import tracking
from core.ablation.design import Ablation, Arm
from core.errors import AblateError
from core.reconcile import reconcile
from core.spec import validate

KIND = "ablation"


def study_name(name: str) -> str:
    return f"ablation.{name}"


Pair = tuple[Arm, int]  # (arm, seed): one run


def all_pairs(ab: Ablation) -> list[Pair]:
    """Every (arm, seed) of a fixed design."""
    return [(arm, seed) for arm in ab.arms for seed in ab.seeds]


def arms_payload(ab: Ablation) -> dict[str, Any]:
    seq = ab.sequential
    return {
        "name": ab.name,
        "design": ab.design,
        "seeds": ab.seeds,
        "alpha": ab.alpha,
        "min_effect": ab.min_effect,
        "test": ab.test,
        "correction": ab.correction,
        "screening": ab.screening,
        "sequential": None if seq is None else {"min_seeds": seq.min_seeds, "max_seeds": seq.max_seeds,
                                                "step": seq.step, "alpha": seq.alpha, "min_effect": seq.min_effect,
                                                "futility": seq.futility},
        "arms": {a.key: {"factor": a.factor, "variant": a.variant, "is_baseline": a.is_baseline,
                         "spec_hash": a.spec.spec_hash, "levels": a.levels, "spec": a.spec.to_dict()}
                 for a in ab.arms},
    }


def prepare(ab: Ablation, storage: optuna.storages.BaseStorage) -> tuple[optuna.Study, str, int]:
    """Creates or resumes the queue and the MLflow parent run; returns (study, parent id, queued)."""
    study = optuna.create_study(study_name=study_name(ab.name), storage=storage, direction="maximize",
                                load_if_exists=True)
    payload = arms_payload(ab)
    study.set_user_attr("ablate.kind", KIND)
    study.set_user_attr("ablation", payload)
    parent = ensure_parent(study, ab, payload)
    dashboard_note(study, ab, ["(no verdicts yet: the ablation is running)"])
    reconcile(study)
    return study, parent, 0 if ab.sequential is not None else enqueue_missing(study, ab)


def dashboard_note(study: optuna.Study, ab: Ablation, lines: list[str]) -> None:
    """What optuna-dashboard shows on the study page: this queue is an ablation, not a search.

    Its "best trial" is one lucky (arm, seed) and means nothing; each trial's user attributes
    name its arm and seed, and the verdicts (written here after each report) compare arms.
    """
    from optuna_dashboard import save_note

    study.set_metric_names(["val_mIoU of one (arm, seed)"])
    body = [f"# Ablation `{ab.name}` ({ab.design})", "",
            "This study is the queue of an ablation: one trial per (arm, seed), named by the trial's user "
            "attributes `arm` and `seed`. The dashboard's *best trial* is one lucky seed of one arm and is not "
            "a result: compare arms over their paired seeds in the verdicts below and in the MLflow report.",
            "", "## Verdicts", "", *[f"- {line}" for line in lines]]
    save_note(study, "\n".join(body))


def ensure_parent(study: optuna.Study, ab: Ablation, payload: dict[str, Any]) -> str:
    client = MlflowClient()
    exp_id = tracking.ensure_experiment(ab.name)
    parent = study.user_attrs.get("mlflow_parent_run_id")
    if parent:
        try:
            if client.get_run(parent).info.experiment_id == exp_id:
                client.update_run(parent, status="RUNNING")
                client.log_text(parent, json.dumps(payload, indent=2), "ablation.json")
                return parent
        except mlflow.exceptions.MlflowException:
            pass  # a new tracking store: start a new parent
    run = client.create_run(exp_id, run_name=ab.name, tags={"ablate.kind": KIND, "ablation": ab.name,
                                                             "optuna_study": study.study_name, "design": ab.design,
                                                             **tracking.git_info()})
    client.log_text(run.info.run_id, json.dumps(payload, indent=2), "ablation.json")
    client.log_param(run.info.run_id, "seeds", ",".join(map(str, ab.seeds)))
    client.log_param(run.info.run_id, "arms", len(ab.arms))
    study.set_user_attr("mlflow_parent_run_id", run.info.run_id)
    return run.info.run_id


def enqueue_missing(study: optuna.Study, ab: Ablation, pairs: list[Pair] | None = None) -> int:
    """Queues every (arm, seed) of ``pairs`` (default: all) that is neither finished, queued nor running."""
    present = {(t.user_attrs.get("spec_hash"), t.user_attrs.get("seed"))
               for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.WAITING,
                                                                 TrialState.RUNNING))}
    queued = 0
    for arm, seed in all_pairs(ab) if pairs is None else pairs:
        if (arm.spec.spec_hash, seed) in present:
            continue
        study.enqueue_trial({}, user_attrs={"arm": arm.key, "seed": seed, "spec_hash": arm.spec.spec_hash})
        queued += 1
    return queued


def completed_values(study: optuna.Study, ab: Ablation) -> dict[str, dict[int, float]]:
    """Finished val mIoU per arm key and seed, read from the queue (no tracking-store query)."""
    by_hash = {a.spec.spec_hash: a.key for a in ab.arms}
    out: dict[str, dict[int, float]] = {a.key: {} for a in ab.arms}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        key = by_hash.get(t.user_attrs.get("spec_hash"))
        if key is not None and t.value is not None and t.user_attrs.get("seed") is not None:
            out[key][int(t.user_attrs["seed"])] = float(t.value)
    return out


def counts(study: optuna.Study, ab: Ablation, pairs: list[Pair] | None = None) -> dict[str, int]:
    """Progress of ``pairs`` (default: every arm and seed): done (finished), failed, running, waiting."""
    wanted = {(a.spec.spec_hash, s) for a, s in (all_pairs(ab) if pairs is None else pairs)}
    out = {"done": 0, "failed": 0, "running": 0, "waiting": 0, "total": len(wanted)}
    done = set()
    for t in study.get_trials(deepcopy=False):
        key = (t.user_attrs.get("spec_hash"), t.user_attrs.get("seed"))
        if key not in wanted:
            continue
        if t.state == TrialState.COMPLETE:
            done.add(key)
        elif t.state == TrialState.RUNNING:
            out["running"] += 1
        elif t.state == TrialState.WAITING:
            out["waiting"] += 1
    out["done"] = len(done)
    failed_keys = {(t.user_attrs.get("spec_hash"), t.user_attrs.get("seed"))
                   for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
    out["failed"] = len((failed_keys & wanted) - done)
    return out


class ArmObjective:
    """The Optuna objective of an ablation worker: run the queued (arm, seed), return val mIoU."""

    def __init__(self, study: optuna.Study, verbose: int = 0) -> None:
        payload = study.user_attrs.get("ablation")
        if not payload:
            raise AblateError(f"Study '{study.study_name}' is not an ablation queue.")
        self.payload = payload
        self.parent = study.user_attrs["mlflow_parent_run_id"]
        self.study_name = study.study_name
        self.verbose = verbose
        self._splits: dict[tuple[str, int], Any] = {}

    def __call__(self, trial: optuna.Trial) -> float:
        from core.runner import run_spec
        from core.train import load_data

        key, seed = trial.user_attrs.get("arm"), trial.user_attrs.get("seed")
        if key is None or key not in self.payload["arms"]:
            trial.set_user_attr("empty", True)  # another worker took the last queued pair
            raise optuna.TrialPruned("no queued arm")
        arm = self.payload["arms"][key]
        spec = validate({**arm["spec"], "seed": int(seed)})
        data_key = (json.dumps(spec.data.model_dump(), sort_keys=True), int(seed))
        if data_key not in self._splits:
            self._splits = {data_key: load_data(spec)}  # arms of one seed share the split
        tags = {"ablate.kind": "arm", "ablation": self.payload["name"], "factor": arm["factor"],
                "variant": arm["variant"], "arm": key, "seed": str(seed),
                "is_baseline": str(arm["is_baseline"]).lower(), "arm_hash": arm["spec_hash"],
                "optuna_study": self.study_name,
                "optuna_trial": str(trial.number)}
        outcome = run_spec(spec, experiment=self.payload["name"], parent_run_id=self.parent, tags=tags,
                           split=self._splits[data_key], run_name=f"{key} s{seed}", verbose=self.verbose,
                           on_start=lambda run_id: trial.set_user_attr("mlflow_run_id", run_id))
        return float(outcome.summary["best_val_miou"])
