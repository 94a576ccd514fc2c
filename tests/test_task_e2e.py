"""The whole path on two tasks, through the CLI as a user runs it: spec, ablation (runs and report), study,
export and predict, on the Mars task (the course layout, no `task:` section) and on a second task that
shares nothing with it (RGB, 48x96, 7 classes, ignore label 255). The second task's runs infer it from
the data file (the `images`/`masks` layout, its `classes` names, the 255s in its masks), as data brought
with `ablate data import-folder` is read; its spec step states it in a `task:` section.

Each step is a separate `ablate` process on one local store; the models are tiny (filters 4, depth 2, one
epoch), so the assertions are about shapes, names and the task travelling through every step, not accuracy.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import ROOT, run_cli

pytestmark = pytest.mark.slow

RGB7 = {"height": 48, "width": 96, "channels": 3, "ignore_label": 255,
        "classes": ["void", "grass", "road", "water", "building", "tree", "car"]}
TASKS: dict[str, dict[str, Any] | None] = {"mars": None, "rgb7": RGB7}
SHAPES = {"mars": (64, 128), "rgb7": (48, 96)}
SCORED = {"mars": ["soil", "bedrock", "sand", "big_rock"], "rgb7": RGB7["classes"]}


def _write_data(name: str, root: Path) -> Path:
    path = root / f"{name}.npz"
    if name == "mars":
        proc = run_cli(["data", "synth", "--out", str(path), "--n", "120", "--n-test", "6", "--seed", "0"])
        assert proc.returncode == 0, proc.stderr[-2000:]
    else:
        from ablate.data.synth_task import generate_task
        from ablate.task import task_from_dict

        arrays = generate_task(task_from_dict(RGB7), 120, n_test=6, seed=0)
        np.savez(path, **arrays, classes=np.array(RGB7["classes"]))
    return path


def _write_files(name: str, root: Path, data: Path) -> dict[str, Path]:
    base: dict[str, Any] = {"base": str(ROOT / "ablations/presets/unet-baseline.yaml"),
                            "data": {"path": str(data)}, "model": {"filters": 4, "depth": 2},
                            "train": {"batch_size": 16}, "tracking": {"mask_every": 1, "mask_images": 3}}
    stated = {"task": TASKS[name]} if TASKS[name] is not None else {}  # the runs infer it from the file
    files = {
        "spec": {**base, **stated, "name": f"{name}-spec"},
        "ablation": {"name": f"{name}-abl", "base": base, "design": "one-at-a-time",
                     "budget": {"epochs": 1, "early_stopping": 0, "data_limit": 80},
                     "factors": {"skip": {"add": {"skip": {"type": "add"}}}}},
        "study": {"name": f"{name}-stu", "base": base, "trials": 2,
                  "budget": {"epochs": 1, "early_stopping": 0, "data_limit": 80},
                  "objectives": [{"metric": "val_miou", "direction": "maximize"}],
                  "sampler": {"type": "random", "seed": 0}, "pruner": {"type": "none"},
                  "space": {"model.skip.type": {"type": "categorical", "choices": ["concat", "add"]}}},
    }
    out = {}
    for kind, body in files.items():
        out[kind] = root / f"{kind}.yaml"
        out[kind].write_text(yaml.safe_dump(body, sort_keys=False))
    return out


@pytest.fixture(scope="module", params=sorted(TASKS))
def path(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Runs every step once per task; the tests below read what the steps left."""
    name = request.param
    root = tmp_path_factory.mktemp(f"task-{name}")
    data = _write_data(name, root)
    files = _write_files(name, root, data)
    store = f"sqlite:///{root / 'mlflow.db'}"
    common = ["--tracking-uri", store]
    steps = {
        "spec": ["spec", str(files["spec"]), "--build"],
        "ablation": ["ablation", "run", str(files["ablation"]), "--seeds", "2", "--screening",
                     "--storage", f"sqlite:///{root / 'optuna.db'}", "--report-dir", str(root / "abl-report"), *common],
        "study": ["study", "run", str(files["study"]), "--storage", f"sqlite:///{root / 'optuna.db'}",
                  "--report-dir", str(root / "stu-report"), *common],
        "export": ["export", "--study", f"{name}-stu", "--out", str(root / "export"), *common],
        "predict": ["predict", "--model", str(root / "export"), "--data", str(data), "--out", str(root / "pred.npz"),
                    "--png", str(root / "png")],
    }
    procs = {}
    for step, args in steps.items():
        procs[step] = proc = run_cli(args, cwd=root, timeout=900)
        assert proc.returncode == 0, f"`ablate {' '.join(args[:2])}` failed on task {name}:\n{proc.stderr[-3000:]}"
    return {"name": name, "root": root, "store": root / "mlflow.db", "procs": procs}


def _metric_keys(db: Path) -> set[str]:
    with sqlite3.connect(db) as con:
        return {k for (k,) in con.execute("SELECT DISTINCT key FROM metrics")}


def test_the_spec_check_shows_the_task(path: dict[str, Any]) -> None:
    shown = json.loads(path["procs"]["spec"].stdout)["task"]
    if path["name"] == "mars":
        assert shown is None  # no `task:` section: the Mars default, or the data file's
    else:
        assert (shown["height"], shown["width"], shown["channels"]) == (48, 96, 3)
        assert shown["classes"] == RGB7["classes"] and shown["ignore_label"] == 255


def test_the_study_report_covers_its_trials(path: dict[str, Any]) -> None:
    report = path["root"] / "stu-report"
    trials = pd.read_csv(report / "trials.csv")
    assert len(trials) == 2 and set(trials["state"]) == {"COMPLETE"}, trials
    assert set(trials["params_model.skip.type"]) <= {"concat", "add"} and trials["value_val_miou"].between(0, 1).all()
    assert f"{path['name']}-stu" in (report / "summary.md").read_text()


def test_every_run_scores_the_tasks_classes_by_name(path: dict[str, Any]) -> None:
    keys = _metric_keys(path["store"])
    for name in SCORED[path["name"]]:
        assert f"val_iou_{name}" in keys and f"best_val_iou_{name}" in keys, sorted(keys)
    others = {k.removeprefix("val_iou_") for k in keys if k.startswith("val_iou_")} - set(SCORED[path["name"]])
    assert not others, f"classes scored that the task does not score: {others}"


def test_every_run_logs_its_task(path: dict[str, Any]) -> None:
    logged = [p for p in path["root"].rglob("task.json") if "export" not in p.relative_to(path["root"]).parts]
    assert len(logged) >= 6, "2 arms x 2 seeds and 2 trials each log task.json"
    tasks = {json.dumps(json.loads(p.read_text()), sort_keys=True) for p in logged}
    assert len(tasks) == 1, tasks
    task = json.loads(tasks.pop())
    assert (task["height"], task["width"]) == SHAPES[path["name"]]
    expected = RGB7["classes"] if path["name"] == "rgb7" else ["background", *SCORED["mars"]]
    assert task["classes"] == expected


def test_the_ablation_report_names_the_classes(path: dict[str, Any]) -> None:
    report = (path["root"] / "abl-report" / "report.md").read_text()
    assert "add" in report and "concat" in report
    for name in SCORED[path["name"]]:
        assert name.replace("_", " ") in report or name in report, f"class {name} missing from the report"


def test_the_export_carries_the_task(path: dict[str, Any]) -> None:
    prep = json.loads((path["root"] / "export" / "preprocessing.json").read_text())
    height, width = SHAPES[path["name"]]
    channels = 3 if path["name"] == "rgb7" else 1
    assert prep["input"]["shape"] == [height, width, channels]
    names = [c["name"] for c in prep["classes"]]
    assert set(SCORED[path["name"]]) <= set(names)
    card = (path["root"] / "export" / "model_card.md").read_text()
    assert all(n.replace("_", " ") in card or n in card for n in SCORED[path["name"]])


def test_predict_writes_masks_of_the_tasks_size_and_labels(path: dict[str, Any]) -> None:
    with np.load(path["root"] / "pred.npz") as f:
        masks = f["masks"]
    height, width = SHAPES[path["name"]]
    assert masks.shape == (6, height, width) and masks.dtype == np.uint8
    assert masks.max() < len(RGB7["classes"] if path["name"] == "rgb7" else ["background", *SCORED["mars"]])
    assert len(list((path["root"] / "png").glob("*.png"))) == 6
