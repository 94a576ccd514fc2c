"""An ablation on the campaign engine: its (arm, seed) pairs are the trials of the queue.

The queue (``ablate.campaign``) is an Optuna study: every pair is an enqueued trial carrying
``arm``, ``seed`` and ``spec_hash`` user attributes (its key is the spec hash and the seed).
Finished pairs are skipped on a second invocation; failed or interrupted ones are queued
again. Workers anywhere can share the queue (``ablate worker``). MLflow holds one parent run
per ablation and one child run per (arm, seed). The Optuna dashboard shows the study as an
ablation (a note, the metric name) and each trial as "arm X, seed s", not as a search.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ablate import adapters
from ablate.ablation.design import Ablation, Arm
from ablate.campaign import (
    Counts,
    ParentRun,
    Round,
    TrialKind,
    child_tags,
    ensure_parent,
    open_queue,
    reconcile,
    remember_run,
    require_parent,
    tally,
)
from ablate.campaign import enqueue_missing as enqueue
from ablate.campaign.liveness import epoch_beats
from ablate.errors import AblateError
from ablate.spec import validate

KIND = "ablation"
PAYLOAD = "ablation"  # study user attribute: arms_payload()
METRIC = "val_mIoU of one (arm, seed)"


def study_name(name: str) -> str:
    return f"ablation.{name}"


Pair = tuple[Arm, int]  # (arm, seed): one run


def all_pairs(ab: Ablation) -> list[Pair]:
    """Every (arm, seed) of a fixed design."""
    return [(arm, seed) for arm in ab.arms for seed in ab.seeds]


def pair_key(attrs: Mapping[str, Any]) -> tuple[Any, Any]:
    """A pair's key in the queue, read from a trial's user attributes: (spec hash, seed)."""
    return attrs.get("spec_hash"), attrs.get("seed")


def pair_label(arm_key: str, seed: int) -> str:
    return f"arm {arm_key}, seed {seed}"


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
    """Creates or resumes the queue and the MLflow parent run; returns (study, parent id, queued).

    A fixed design's runs are queued before the parent run is set on the study: a worker needs
    the parent to start, so a worker started while the campaign is being created (a Kubernetes
    worker Job beside the campaign Job) never finds a parent and an empty queue, and exits early.
    """
    study = open_queue(study_name(ab.name), storage, KIND)
    payload = arms_payload(ab)
    study.set_user_attr(PAYLOAD, payload)
    reconcile(study)
    queued = 0 if ab.sequential is not None else enqueue_missing(study, ab)
    parent = ensure_parent(study, ParentRun(
        ab.name, tags={"ablation": ab.name, "design": ab.design},
        params={"seeds": ",".join(map(str, ab.seeds)), "arms": len(ab.arms)},
        files={"ablation.json": json.dumps(payload, indent=2)}))
    dashboard_note(study, ab, ["(no verdicts yet: the ablation is running)"])
    return study, parent, queued


def dashboard_note(study: optuna.Study, ab: Ablation, lines: list[str]) -> None:
    """What optuna-dashboard shows on the study page: this queue is an ablation, not a search.

    Its "best trial" is one lucky (arm, seed) and means nothing; each trial is named by its arm
    and seed (user attributes and a trial note), and the verdicts (written here after each
    report) compare arms.
    """
    adapters.set_metric_names(study, [METRIC])
    body = [f"# Ablation `{ab.name}` ({ab.design})", "",
            "This study is the queue of an ablation: one trial per (arm, seed), named by the trial's user "
            "attributes `arm` and `seed`. The dashboard's *best trial* is one lucky seed of one arm and is not "
            "a result: compare arms over their paired seeds in the verdicts below and in the MLflow report.",
            "", "## Verdicts", "", *[f"- {line}" for line in lines]]
    adapters.save_note(study, "\n".join(body))


def enqueue_missing(study: optuna.Study, ab: Ablation, pairs: list[Pair] | None = None) -> int:
    """Queues every (arm, seed) of ``pairs`` (default: all) that is neither finished, queued nor running."""
    items = [{"arm": arm.key, "seed": seed, "spec_hash": arm.spec.spec_hash, "label": pair_label(arm.key, seed)}
             for arm, seed in (all_pairs(ab) if pairs is None else pairs)]
    return enqueue(study, items, pair_key)


def completed_values(study: optuna.Study, ab: Ablation) -> dict[str, dict[int, float]]:
    """Finished val mIoU per arm key and seed, read from the queue (no tracking-store query)."""
    by_hash = {a.spec.spec_hash: a.key for a in ab.arms}
    out: dict[str, dict[int, float]] = {a.key: {} for a in ab.arms}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        key = by_hash.get(str(t.user_attrs.get("spec_hash")))
        if key is not None and t.value is not None and t.user_attrs.get("seed") is not None:
            out[key][int(t.user_attrs["seed"])] = float(t.value)
    return out


def counts(study: optuna.Study, ab: Ablation, pairs: list[Pair] | None = None) -> Counts:
    """Where ``pairs`` (default: every arm and seed) stand, one count per pair."""
    wanted = {(a.spec.spec_hash, s) for a, s in (all_pairs(ab) if pairs is None else pairs)}
    return tally(study.get_trials(deepcopy=False), key=pair_key, wanted=wanted)


def pairs_round(ab: Ablation, pairs: list[Pair]) -> Round:
    """What the engine's progress bar shows while ``pairs`` run."""
    return Round(f"{ab.name} arms", "run", counts=lambda study: counts(study, ab, pairs), describe=describe)


def describe(trial: FrozenTrial) -> str | None:
    """``skip=add seed 1: complete val mIoU 0.4123`` (nothing for a trial that found no pair)."""
    if not trial.user_attrs.get("arm"):
        return None
    value = f" val mIoU {trial.value:.4f}" if trial.value is not None else ""
    return f"{trial.user_attrs['arm']} seed {trial.user_attrs['seed']}: {trial.state.name.lower()}{value}"


class ArmObjective:
    """The Optuna objective of an ablation worker: run the queued (arm, seed), return val mIoU."""

    def __init__(self, study: optuna.Study, verbose: int = 0) -> None:
        payload = study.user_attrs.get(PAYLOAD)
        if not payload:
            raise AblateError(f"Study '{study.study_name}' is not an ablation queue.")
        self.payload = payload
        self.parent = require_parent(study)
        self.verbose = verbose
        self._splits: dict[tuple[str, int], Any] = {}

    def __call__(self, trial: optuna.Trial) -> float:
        from ablate.runner import run_spec
        from ablate.train import load_data

        key, seed = trial.user_attrs.get("arm"), trial.user_attrs.get("seed")
        if key is None or seed is None or key not in self.payload["arms"]:  # queued by an earlier definition
            raise optuna.TrialPruned(f"arm {key!r} is not in the ablation any more")
        adapters.save_note(trial, pair_label(key, seed))  # the dashboard names the trial by its arm and seed
        arm = self.payload["arms"][key]
        spec = validate({**arm["spec"], "seed": int(seed)})
        data_key = (json.dumps(spec.data.model_dump(), sort_keys=True), int(seed))
        if data_key not in self._splits:
            self._splits = {data_key: load_data(spec)}  # arms of one seed share the split
        tags = {"ablate.kind": "arm", "ablation": self.payload["name"], "factor": arm["factor"],
                "variant": arm["variant"], "arm": key, "seed": str(seed),
                "is_baseline": str(arm["is_baseline"]).lower(), "arm_hash": arm["spec_hash"], **child_tags(trial)}
        outcome = run_spec(spec, experiment=self.payload["name"], parent_run_id=self.parent, tags=tags,
                           callbacks=epoch_beats(trial.number), split=self._splits[data_key],
                           run_name=f"{key} s{seed}", verbose=self.verbose, on_start=remember_run(trial))
        return float(outcome.summary["best_val_miou"])


ARMS = TrialKind(KIND, objective=ArmObjective)  # what `ablate worker` runs for an ablation queue
