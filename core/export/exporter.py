"""``ablate export``: choose a run, build every format, check them, register the champion.

Order matters: the local formats are checked before anything is registered, the pyfunc is
checked after logging but before the ``champion`` alias moves, and the export folder appears
only when everything passed (built in a hidden staging folder, then renamed into place).

Example:
    >>> result = export_model(Selector(ablation="skip-types"), out=Path("exports/skip-types"))
    >>> result.model_name, result.version
    ('skip-types', '3')
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ablate.errors import AblateError, SpecError, excerpt
from ablate.export import card, check, formats, publish
from ablate.export.formats import ExportError
from ablate.export.select import Choice, Selector, select
from ablate.names import RULE, check_name, inside, is_safe
from ablate.spec import Spec, validate
from ablate.task import MARS, TASK_FILE, Task, task_from_dict

EXPORTS = Path("exports")  # the default export folder: exports/NAME
NO_TASK = "which logged no task.json (so the Mars task)"  # runs logged before tasks existed


@dataclass
class ExportResult:
    """What an export produced."""

    out_dir: Path
    model_name: str
    version: str
    choice: Choice
    export_run_id: str
    model_run_id: str  # the source run, or its refit
    checks: list[check.FormatCheck]
    task: Task = MARS  # the exported model's task (the run's task.json)


def export_model(sel: Selector, out: Path | None = None, name: str | None = None, refit: bool = False,
                 tracking_uri: str = "") -> ExportResult:
    """Exports the run ``sel`` picks (see :mod:`ablate.export.select`); MLflow must be set up."""
    client = MlflowClient()
    choice = select(client, sel)
    model_name = model_name_for(name, choice)
    out = out or inside(EXPORTS, model_name, "Registered model name")
    model_run = refit_run(choice) if refit else choice.run
    with tempfile.TemporaryDirectory() as tmp:
        model_file, spec = fetch(client, model_run.info.run_id, Path(tmp))
        task, where = fetch_task(client, model_run.info.run_id, Path(tmp))
        if refit and where == NO_TASK:  # a refit is trained on the source run's data: the same task
            task, where = fetch_task(client, choice.run.info.run_id, Path(tmp))
        model = formats.load_keras(model_file, task, source=f"the task of run {model_run.info.run_id}, {where}")
        with staging(out) as stage:
            build_bundle(model, model_file, spec, stage, task)
            checks = check.check_bundle(model, stage, task)  # before anything is registered
            with export_run(choice, model_name, model_run.info.run_id):
                version = publish.log_pyfunc(stage / "saved_model", model_name, check.check_images(task)[:1],
                                             {"source_run_id": choice.run.info.run_id, "task": task.to_dict()},
                                             task, stage / TASK_FILE)
                pyfunc = publish.pyfunc_predictor(f"models:/{model_name}/{version}")
                checks.append(check.check_pyfunc(model, pyfunc, task))
                publish.tag_version(client, model_name, version, version_tags(choice, spec, model_run.info.run_id))
                inputs = card.CardInputs(choice, spec, model_name, version, checks, tracking_uri,
                                         model_run.info.run_id if refit else None, task=task)
                write_docs(stage, inputs)
                mlflow.log_artifacts(str(stage), "export")
                run_id = mlflow.active_run().info.run_id  # type: ignore[union-attr]
                publish.move_alias(client, model_name, version)
    return ExportResult(out, model_name, version, choice, run_id, model_run.info.run_id, checks, task)


def model_name_for(name: str | None, choice: Choice) -> str:
    """The registered model's name: ``--name``, else the study, ablation or experiment chosen from.

    Checked against ``ablate.names`` before anything is built or logged: MLflow refuses some names
    (``a/b``) only when the model is logged, which would leave a logged model and a built bundle.
    An experiment name need not be safe (MLflow allows spaces), so the message asks for ``--name``.
    """
    if name is not None:
        return check_name(name, "--name")
    if not is_safe(choice.name):
        kind = choice.source if choice.source in ("study", "ablation") else "experiment"
        raise AblateError(f"The {kind} name {excerpt(choice.name, 60)} cannot name the registered model "
                          f"(expected {RULE}); give one with --name.")
    return choice.name


def fetch(client: MlflowClient, run_id: str, dst: Path) -> tuple[Path, Spec]:
    """Downloads a run's ``model/model.keras`` and ``spec.json``; returns the file and the spec."""
    try:
        model_file = Path(client.download_artifacts(run_id, "model/model.keras", str(dst)))
        spec_file = Path(client.download_artifacts(run_id, "spec.json", str(dst)))
    except (MlflowException, OSError) as e:
        raise AblateError(f"Run {run_id} has no model/model.keras or spec.json artifact (was it trained with "
                          f"tracking.log_model=false?): {str(e).splitlines()[0]}") from None
    return model_file, validate(json.loads(spec_file.read_text(encoding="utf-8")))


def fetch_task(client: MlflowClient, run_id: str, dst: Path) -> tuple[Task, str]:
    """The run's ``task.json`` artifact as a Task, and where it came from; a run without one (logged
    before tasks existed) is the Mars task."""
    try:
        names = {a.path for a in client.list_artifacts(run_id)}
        if TASK_FILE not in names:
            return MARS, NO_TASK
        raw = Path(client.download_artifacts(run_id, TASK_FILE, str(dst))).read_text(encoding="utf-8")
        return task_from_dict(json.loads(raw), "task.json"), "from its task.json"
    except (MlflowException, OSError) as e:
        raise AblateError(f"Could not read the task.json of run {run_id}: {_first_line(e)}") from None
    except (ValueError, SpecError) as e:
        raise ExportError(f"Run {run_id} has an invalid task.json ({_first_line(e)}); expected the task the run "
                          "logged (height, width, channels, classes, ignore_label, scored).") from None


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:200]


def build_bundle(model: object, model_file: Path, spec: Spec, stage: Path, task: Task = MARS) -> None:
    """model.keras (the trained file, byte for byte), saved_model/ (with the task), model.tflite, spec.json,
    task.json."""
    shutil.copyfile(model_file, stage / "model.keras")
    formats.write_saved_model(model, stage / "saved_model", task)  # type: ignore[arg-type]
    formats.write_tflite(model, stage / "model.tflite", task)  # type: ignore[arg-type]
    (stage / "spec.json").write_text(json.dumps(spec.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (stage / TASK_FILE).write_text(task.file_text(), encoding="utf-8")


def write_docs(stage: Path, inputs: card.CardInputs) -> None:
    prep = card.preprocessing(inputs.model_name, inputs.version, inputs.task)
    (stage / "preprocessing.json").write_text(json.dumps(prep, indent=2) + "\n", encoding="utf-8")
    (stage / "model_card.md").write_text(card.model_card(inputs), encoding="utf-8")


def version_tags(choice: Choice, spec: Spec, model_run_id: str) -> dict[str, str]:
    tags = choice.run.data.tags
    return {
        "source_run_id": choice.run.info.run_id,
        "model_run_id": model_run_id,
        "spec_hash": spec.spec_hash,
        "data_fingerprint": tags.get("data_fingerprint", "unknown"),
        "selected_from": f"{choice.source}:{choice.name}",
        "selection_metric": choice.metric,
    }


@contextlib.contextmanager
def staging(out: Path) -> Iterator[Path]:
    """A hidden folder next to ``out``, renamed onto ``out`` if the block succeeds."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise AblateError(f"--out '{out}' is a file; expected a folder for the export.")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield stage
        old = out.with_name(f".{out.name}.old") if out.exists() else None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
        stage.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


@contextlib.contextmanager
def export_run(choice: Choice, model_name: str, model_run_id: str) -> Iterator[None]:
    """An MLflow run recording the export; ends FAILED (KILLED on Ctrl-C) if the block raises."""
    tags = {"ablate.kind": "export", "source_run_id": choice.run.info.run_id, "model_run_id": model_run_id,
            "model_name": model_name, "selected_from": f"{choice.source}:{choice.name}"}
    mlflow.start_run(experiment_id=choice.run.info.experiment_id, run_name=f"export-{model_name}", tags=tags)
    try:
        mlflow.log_text(choice.reason, "selection.txt")
        yield
    except KeyboardInterrupt:
        mlflow.end_run("KILLED")
        raise
    except BaseException as e:
        with contextlib.suppress(Exception):
            mlflow.set_tag("error", f"{type(e).__name__}: {e}"[:500])
        mlflow.end_run("FAILED")
        raise
    else:
        mlflow.end_run("FINISHED")


def refit_run(choice: Choice) -> mlflow.entities.Run:
    """Retrains the chosen spec on train + validation as its own run; returns that run."""
    from ablate.export.refit import refit

    return MlflowClient().get_run(refit(choice))
