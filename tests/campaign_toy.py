"""A toy campaign for the engine's tests: a trial squares the number ``x`` it was queued with.

No training and no TensorFlow work: each trial opens and ends an MLflow child run of the
campaign's parent, like a real trial does. Run as a script it is a worker process, with the
command line ``ablate worker`` gets (``--study NAME --storage URL --quiet [--tracking-uri URI]
[--heartbeat-file PATH]``), and exits as it does (0 when no work is left, 128 + N when stopped
by signal N).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ablate.adapters import PARENT_TAG  # noqa: E402
from ablate.campaign import TrialKind, child_tags, remember_run, require_parent, work_on  # noqa: E402
from ablate.signals import exit_code  # noqa: E402

STUCK = 77  # a trial of this x blocks until the file named by $TOY_RELEASE exists (a worker that hangs)


def objective(study: optuna.Study, verbose: int) -> Callable[[optuna.Trial], float]:
    """``x ** 2`` of the trial's ``x``; a negative ``x`` fails the trial, ``x == 99`` stops like Ctrl-C,
    ``x == STUCK`` blocks until ``$TOY_RELEASE`` exists (a stop ends its run KILLED, as a real run's does)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    parent = require_parent(study)
    experiment = client.get_run(parent).info.experiment_id

    def run(trial: optuna.Trial) -> float:
        x = int(trial.user_attrs["x"])
        trial.set_user_attr("pid", os.getpid())
        run_id = client.create_run(experiment, tags={PARENT_TAG: parent, **child_tags(trial)}).info.run_id
        try:
            remember_run(trial)(run_id)
            while x == STUCK and not os.path.exists(os.environ["TOY_RELEASE"]):
                time.sleep(0.05)
        except KeyboardInterrupt:
            client.set_terminated(run_id, "KILLED")
            raise
        if x == 99:
            client.set_terminated(run_id, "KILLED")
            raise KeyboardInterrupt("toy interrupt")
        if x < 0:
            client.set_terminated(run_id, "FAILED")
            raise ValueError(f"toy failure for x={x}")
        client.set_terminated(run_id, "FINISHED")
        return float(x * x)

    return run


TOY = TrialKind("toy", objective=objective)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--study", required=True)
    parser.add_argument("--storage", required=True)
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--heartbeat-file", default=None)
    args = parser.parse_args()
    import mlflow

    mlflow.set_tracking_uri(args.tracking_uri)
    try:
        ran = work_on(args.study, args.storage, kinds=[TOY], heartbeat_file=args.heartbeat_file)
    except KeyboardInterrupt as e:  # a stop signal: the CLI's exit status
        return exit_code(e)
    print(f"worker: ran {ran} trial(s); no queued work left")
    return 0


if __name__ == "__main__":
    sys.exit(main())
