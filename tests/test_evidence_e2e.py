"""A real-data ablation reaches a true verdict: a planted variant that cannot learn is found worse.

One sequential ablation (3 to 5 paired seeds) on the real Mars file: the baseline against a
control trained with a learning rate of 1e-7. The test checks the verdict, that the sequential
rule stopped it early, and everything the report promises a student: the baseline named, one
line per comparison, figures linked from report.md, a self-contained report.html, the summary
as the parent run's description and the Optuna dashboard note.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import yaml
from helpers import ROOT, TINY_MODEL, real_data_path, requires_real_data
from mlflow.tracking import MlflowClient

PRESET = str(ROOT / "ablations/presets/unet-baseline.yaml")


@requires_real_data
def test_planted_bad_variant_is_found_worse_on_real_data(tmp_path: Path) -> None:
    body = {"name": "planted", "base": PRESET, "design": "one-at-a-time", "seeds": {"min": 3, "max": 5},
            "budget": {"epochs": 3, "early_stopping": 0, "data_limit": 320},
            "factors": {"control": {"frozen": {"optimizer": {"type": "adamw", "learning_rate": 1e-7}}}}}
    path = tmp_path / "planted.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    cmd = [sys.executable, "-m", "ablate.cli", "ablation", "run", str(path), *TINY_MODEL, "model.filters=8",
           "tracking.mask_every=0", "train.batch_size=8", "optimizer.learning_rate=0.003",
           f"data.path={real_data_path()}",
           "--storage", f"sqlite:///{tmp_path}/optuna.db", "--report-dir", str(tmp_path / "report")]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]

    line = next(x for x in done.stdout.splitlines() if x.startswith("control=frozen vs baseline"))
    assert "worse" in line and "no evidence" not in line, done.stdout
    assert "learning_rate: 1e-07 instead of 0.003" in line

    trials = optuna.load_study(study_name="ablation.planted", storage=f"sqlite:///{tmp_path}/optuna.db").get_trials()
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert 6 <= len(complete) <= 10  # 2 arms x 3 to 5 seeds: the control stops once it is settled

    report = (tmp_path / "report/report.md").read_text()
    assert "**Baseline**: `baseline`" in report and "P(better)" in report
    assert "- control=frozen vs baseline" in report and "sequential:" in report
    assert "![Paired deltas with 95% CIs](deltas.png)" in report and (tmp_path / "report/deltas.png").exists()
    html = (tmp_path / "report/report.html").read_text()
    assert "data:image/png;base64," in html and "<table>" in html and 'src="deltas.png"' not in html

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("planted")
    parent = client.search_runs([exp.experiment_id], "tags.`ablate.kind` = 'ablation'")[0]
    assert "control=frozen vs baseline" in parent.data.tags["mlflow.note.content"]
    names = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.html", "report/report.md", "report/deltas.png"} <= names

    from ablate.adapters import get_note

    study = optuna.load_study(study_name="ablation.planted", storage=f"sqlite:///{tmp_path}/optuna.db")
    note = get_note(study)
    assert "not a result" in note and "control=frozen vs baseline" in note
    assert {t.user_attrs["label"] for t in complete} >= {"arm baseline, seed 0", "arm control=frozen, seed 0"}
