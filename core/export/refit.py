"""``--refit``: retrain the chosen spec on train + validation, as its own tracked run.

The refit trains for the source run's best epoch count (there is no held-out set left to stop
on) with the same seed, so data order and initialisation match the source run's. It reuses
``ablate.runner.run_spec``; the validation figures it logs are on images it trained on and are
tagged as such.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from pathlib import Path

import numpy as np
from mlflow.tracking import MlflowClient

from ablate.errors import AblateError
from ablate.export.select import Choice, metric_of
from ablate.spec import Spec, validate


def refit_spec(source: Spec, best_epoch: float) -> Spec:
    """The source spec trained for its best epoch count without early stopping."""
    raw = source.to_dict()
    epochs = int(best_epoch) if math.isfinite(best_epoch) and best_epoch >= 1 else source.train.epochs
    raw["name"] = f"{source.name}-refit"
    raw["train"] = {**raw["train"], "epochs": epochs, "early_stopping": 0}
    return validate(raw)


def refit(choice: Choice) -> str:
    """Trains the refit run in the source run's experiment; returns its run id."""
    from ablate.runner import run_spec
    from ablate.train import load_data

    client = MlflowClient()
    source = choice.run
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(source.info.run_id, "spec.json", tmp)
        spec = refit_spec(validate(json.loads(Path(path).read_text(encoding="utf-8"))),
                          metric_of(source, "best_epoch"))
    split = load_data(spec)
    expected = source.data.tags.get("data_fingerprint")
    if expected and split.fingerprint != expected:
        raise AblateError(f"--refit: the data file '{split.path}' (fingerprint {split.fingerprint}) is not the one "
                          f"run {source.info.run_id} trained on (fingerprint {expected}); restore that file.")
    # replace() keeps every other field of the split, its task included
    full = dataclasses.replace(split, x_train=np.concatenate([split.x_train, split.x_val]),
                               y_train=np.concatenate([split.y_train, split.y_val]))
    experiment = client.get_experiment(source.info.experiment_id).name
    tags = {"ablate.kind": "refit", "refit_of": source.info.run_id, "validation": "seen in training (refit)"}
    return run_spec(spec, experiment=experiment, tags=tags, split=full, run_name=spec.name).run_id
