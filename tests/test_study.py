"""Studies: study files and their conditional spaces, the budget, pruning, and a tiny study end to end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import keras
import mlflow
import optuna
import pandas as pd
import pytest
import yaml
from helpers import ROOT, assert_one_error_line, run_cli
from mlflow.tracking import MlflowClient
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from ablate.errors import SpecError
from ablate.study.files import load_study_file
from ablate.study.report import build_report
from ablate.study.runner import DEADLINE, PAYLOAD, SURPLUS, PruningCallback, budget_trials, has_budget
from ablate.study.space import assign

PRESET = str(ROOT / "ablations/presets/unet-baseline.yaml")
STUDIES = sorted((ROOT / "studies").glob("*.yaml"))


@pytest.fixture(autouse=True)
def _restore_tracking_uri() -> Iterator[None]:
    """Studies point MLflow at their own stores; later tests get the previous URI back."""
    before = mlflow.get_tracking_uri()
    yield
    mlflow.set_tracking_uri(before)


def write(tmp_path: Path, body: dict, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def study_body(space: dict, **extra) -> dict:
    return {"name": "t", "base": PRESET, "trials": 3, "space": space, **extra}


SKIP = {"model.skip.type": {"type": "categorical", "choices": ["concat", "add"]}}


# --- study files ---------------------------------------------------------------------------

@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_every_shipped_study_loads_and_every_choice_is_valid(path):
    plan = load_study_file(path)
    assert plan.name == path.stem
    assert plan.params and plan.n_trials >= 10
    assert plan.make_sampler() is not None and plan.make_pruner() is not None


def test_efficiency_study_has_two_objectives_and_no_pruner():
    plan = load_study_file(ROOT / "studies/efficiency.yaml")
    assert plan.directions == ["maximize", "minimize"]
    assert plan.metric_names == ["val_miou", "params"]
    assert plan.pruner == {"type": "none"} and plan.report_metric is None


@pytest.mark.parametrize("path", [ROOT / "studies/architecture.yaml", ROOT / "studies/loss_and_aug.yaml"],
                         ids=lambda p: p.stem)
def test_conditional_space_samples_only_valid_specs(path):
    plan = load_study_file(path)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3), directions=plan.directions)
    seen = set()
    for _ in range(60):
        trial = study.ask()
        spec, labels = plan.spec_for(trial)  # validated by ablate.spec: raises if invalid
        model = spec.model
        assert ("model.fusion.type" in labels) == (model["type"] == "coarse_fine" and "model.type" in labels)
        if model["type"] == "unet":
            assert "fusion" not in model and "global_branch" not in model
        transformer = model["bottleneck"]["type"] == "transformer"
        assert ("heads" in model["bottleneck"]) == ("model.bottleneck.heads" in labels) == transformer
        if "loss.cap" in labels:
            assert spec.loss["type"] == "weighted_ce"
        if spec.loss["type"] == "sum":
            assert "ignore_background" not in spec.loss
        study.tell(trial, 0.0)
        seen.add(model["type"])
    if path.stem == "architecture":
        assert seen == {"unet", "coarse_fine"}


def test_fixed_trial_gives_the_expected_coarse_fine_spec():
    plan = load_study_file(ROOT / "studies/architecture.yaml")
    spec, _ = plan.spec_for(optuna.trial.FixedTrial({
        "model.type": "coarse_fine", "model.fusion.type": "gated", "model.global_branch": "transformer",
        "model.global_branch.bottleneck.heads": 4, "model.depth": 3, "model.skip.type": "attention",
        "model.bottleneck.type": "aspp", "model.regularizer.type": "l2", "model.regularizer.strength": 1e-4}))
    assert spec.model["fusion"] == {"type": "gated"}
    assert spec.model["global_branch"] == {"type": "unet", "bottleneck": {"type": "transformer", "heads": 4}}
    assert spec.model["regularizer"] == {"type": "l2", "strength": 1e-4}
    assert spec.model["filters"] == 16  # the base's keys survive the change of model type


def test_a_new_block_type_keeps_only_the_keys_it_accepts():
    raw = {"model": {"type": "unet", "depth": 2, "bottleneck": {"type": "da", "rates": [1, 2]}}}
    out = assign(raw, "model.bottleneck.type", "transformer")
    assert out["model"]["bottleneck"] == {"type": "transformer"}
    out = assign(raw, "model.bottleneck.type", "se_da")
    assert out["model"]["bottleneck"] == {"type": "se_da", "rates": [1, 2]}
    out = assign(raw, "model.type", "coarse_fine")
    assert out["model"]["depth"] == 2 and out["model"]["type"] == "coarse_fine"
    assert raw["model"]["bottleneck"]["type"] == "da"  # the input is not modified


INVALID = [
    ({"model.skipp.type": {"type": "categorical", "choices": ["add"]}},
     {}, r"space key 'model\.skipp\.type'.*Unknown key 'skipp' in model"),
    ({"model.skip.type": {"type": "categorical", "choices": ["concat", "concatt"]}},
     {}, r"space key 'model\.skip\.type'='concatt'.*Unknown skip 'concatt'.*Did you mean 'concat'"),
    ({"skip.type": {"type": "categorical", "choices": ["add"]}},
     {}, r"space key 'skip\.type': a key must start with a spec section.*did you mean 'model\.skip\.type'"),
    ({"model.depth": {"type": "int", "low": 4, "high": 2}}, {}, r"space key 'model\.depth': low \(4\.0\) must be <="),
    ({"optimizer.learning_rate": {"type": "float", "low": 0, "high": 0.1, "log": True}},
     {}, r"space key 'optimizer\.learning_rate': a log-scale range needs low > 0"),
    ({"model.skip.type": {"type": "categorical"}}, {}, r"space key 'model\.skip\.type': a categorical .* needs"),
    ({"model.bottleneck.type": {"type": "categorical", "choices": ["plain", "transformer"]},
      "model.bottleneck.heads": {"type": "categorical", "choices": [2, 4]}},
     {}, r"space key 'model\.bottleneck\.heads'=2 \(with model\.bottleneck\.type='plain'\).*Unknown key 'heads'"),
    ({**SKIP, "model.fusion.type": {"type": "categorical", "choices": ["add"], "when": {"model.typ": "coarse_fine"}}},
     {}, r"space key 'model\.fusion\.type': `when` names 'model\.typ'"),
    ({"model.type": {"type": "categorical", "choices": ["unet", "coarse_fine"]},
      "model.fusion.type": {"type": "categorical", "choices": ["add"], "when": {"model.type": "coarsefine"}}},
     {}, r"`when` value 'coarsefine' is not a choice of 'model\.type'"),
    (SKIP, {"objectives": [{"metric": "miou"}]}, r"unknown metric 'miou'"),
    (SKIP, {"objectives": [{"metric": "val_miou"}, {"metric": "params", "direction": "minimize"}],
            "pruner": {"type": "median"}}, r"pruner 'median': Optuna cannot prune a multi-objective study"),
    (SKIP, {"sampler": {"type": "tpe", "seeed": 1}}, r"sampler.*Unknown key 'seeed'.*Allowed keys:.*seed"),
    (SKIP, {"sampler": {"type": "cmaes"}}, r"Unknown sampler 'cmaes'\. Known: grid, nsga2, random, tpe"),
    (SKIP, {"pruner": {"type": "wilcoxon", "p_threshold": 2.0}}, r"pruner: p_threshold must be between 0 and 1"),
    ({**SKIP, "model.depth": {"type": "int", "low": 2, "high": 3, "when": {"model.skip.type": "add"}}},
     {"sampler": {"type": "grid"}}, r"space key 'model\.depth': the grid sampler cannot search conditional"),
    (SKIP, {"trails": 3}, r"unknown key 'trails'"),
]


@pytest.mark.parametrize("space, extra, match", INVALID)
def test_invalid_study_file_is_a_spec_error_naming_the_key(tmp_path, space, extra, match):
    path = write(tmp_path, study_body(space, **extra))
    with pytest.raises(SpecError, match=match):
        load_study_file(path)


def test_cli_reports_an_invalid_study_file_in_one_line(tmp_path):
    path = write(tmp_path, study_body({"model.skipp.type": {"type": "categorical", "choices": ["add"]}}))
    result = run_cli(["study", "run", str(path)], cwd=tmp_path)
    assert result.returncode == 2
    assert_one_error_line(result.stderr, r"Study file .*space key 'model\.skipp\.type'.*Unknown key 'skipp'")


def test_grid_sampler_caps_the_budget_at_the_grid_size(tmp_path):
    space = {**SKIP, "model.depth": {"type": "int", "low": 2, "high": 3}}
    plan = load_study_file(write(tmp_path, study_body(space, trials=50, sampler={"type": "grid"})))
    assert plan.n_trials == 4 and plan.grid_space() == {"model.skip.type": ["concat", "add"], "model.depth": [2, 3]}


# --- budget, pruning and report without training ---------------------------------------------

def _study_with(plan, trials) -> optuna.Study:
    study = optuna.create_study(directions=plan.directions)
    study.set_user_attr(PAYLOAD, plan.payload())
    for t in trials:
        study.add_trial(t)
    return study


def _trial(state, value=None, params=None, **attrs):
    params = params or {"model.skip.type": "add"}
    dists = {k: CategoricalDistribution(["concat", "add"]) if isinstance(v, str) else FloatDistribution(0, 1)
             for k, v in params.items()}
    return create_trial(state=state, values=None if value is None else [value] if not isinstance(value, list)
                        else value, params=params, distributions=dists, user_attrs=attrs.get("user_attrs", {}),
                        system_attrs=attrs.get("system_attrs", {}))


def test_budget_counts_finished_running_and_queued_but_not_surplus_or_retried(tmp_path):
    plan = load_study_file(write(tmp_path, study_body(SKIP, trials=4)))
    study = _study_with(plan, [
        _trial(TrialState.COMPLETE, 0.5),
        _trial(TrialState.FAIL),  # failed by its heartbeat, retried as trial 3
        _trial(TrialState.PRUNED, 0.1, user_attrs={SURPLUS: True}),
        _trial(TrialState.WAITING, system_attrs={"failed_trial": 1, "retry_history": [1]}),
        _trial(TrialState.FAIL),  # a failure that was not retried uses the budget
    ])
    assert [t.number for t in budget_trials(study.get_trials())] == [0, 3, 4]
    assert has_budget(study)  # 3 of 4 claimed (and a retry is queued)
    study.set_user_attr(DEADLINE, 1.0)  # long past
    assert not has_budget(study)


def test_pruning_callback_reports_each_epoch_and_stops_training():
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0.5))
    trial = study.ask()
    callback = PruningCallback(trial, "val_miou")
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.stop_training = False  # what Keras sets when fit starts
    callback.set_model(model)
    callback.set_params({"epochs": 3})
    callback.on_epoch_end(0, {"val_miou": 0.7})
    assert callback.pruned is None and not callback.model.stop_training
    callback.on_epoch_end(1, {"val_miou": 0.2})
    assert callback.model.stop_training and callback.pruned.startswith("pruned after epoch 2")
    assert study.trials[0].intermediate_values == {1: 0.7, 2: 0.2}


def test_pruning_callback_never_prunes_the_last_epoch():
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0.5))
    callback = PruningCallback(study.ask(), "val_miou")
    callback.set_params({"epochs": 1})
    callback.on_epoch_end(0, {"val_miou": 0.2})  # the trial completes: pruning it would save nothing
    assert callback.pruned is None and study.trials[0].intermediate_values == {1: 0.2}


def test_two_objective_report_has_a_pareto_front(tmp_path):
    plan = load_study_file(ROOT / "studies/efficiency.yaml")
    dist = {"model.filters": CategoricalDistribution([4, 8, 16, 24, 32])}
    points = [(4, 0.30, 2e3), (8, 0.40, 8e3), (16, 0.38, 3e4), (24, 0.50, 6e4), (32, 0.45, 1e5)]
    study = _study_with(plan, [create_trial(values=[m, p], params={"model.filters": f}, distributions=dist)
                               for f, m, p in points])
    out, summary = build_report(study, tmp_path / "r", log=False)
    assert (out / "pareto_front.png").stat().st_size > 1000
    assert "Pareto front" in summary and "#0" in summary and "#2" not in summary  # trial 2 is dominated
    assert len(pd.read_csv(out / "trials.csv")) == 5


# --- end to end ----------------------------------------------------------------------------

def tiny_plan(tmp_path: Path, data: Path, trials: int, pruner: dict):
    body = study_body({**SKIP, "model.regularizer.type": {"type": "categorical", "choices": ["none", "l2"]},
                       "model.regularizer.strength": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True,
                                                      "when": {"model.regularizer.type": "l2"}}},
                      trials=trials, budget={"epochs": 2, "early_stopping": 0, "data_limit": 100},
                      sampler={"type": "random", "seed": 0}, pruner=pruner)
    overrides = [f"data.path={data}", "model.filters=4", "model.depth=2", "tracking.mask_every=0", "augment=[]",
                 "train.batch_size=16"]
    return load_study_file(write(tmp_path, body), overrides)


def test_tiny_study_end_to_end_on_sqlite(tmp_path, synth_npz, monkeypatch, capsys):
    from ablate import tracking
    from ablate.cli.main import main
    from ablate.study.orchestrate import run_study

    monkeypatch.chdir(tmp_path)
    uri, storage = f"sqlite:///{tmp_path / 'mlflow.db'}", f"sqlite:///{tmp_path / 'optuna.db'}"
    tracking.setup(uri)
    run_study(tiny_plan(tmp_path, synth_npz, 2, {"type": "none"}), storage, tracking_uri=uri, report=False)
    # Resumed with one more trial and a pruner that prunes every trial after its first epoch...
    run_study(tiny_plan(tmp_path, synth_npz, 3, {"type": "threshold", "lower": 0.99}), storage, tracking_uri=uri,
              report=False)
    # ...and with one more whose training crashes.
    monkeypatch.setattr("ablate.runner.fit", _crash)
    study = run_study(tiny_plan(tmp_path, synth_npz, 4, {"type": "none"}), storage, tracking_uri=uri)

    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2 + [TrialState.PRUNED, TrialState.FAIL]
    assert [t.user_attrs["epochs"] for t in trials[:3]] == [2, 2, 1]
    client = MlflowClient()
    parent = client.get_run(study.user_attrs["mlflow_parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["ablate.kind"] == "study"
    assert client.get_experiment(parent.info.experiment_id).name == "t"
    children = client.search_runs([parent.info.experiment_id], "tags.`ablate.kind` = 'trial'")
    by_number = {int(r.data.tags["trial_number"]): r for r in children}
    assert sorted(by_number) == [0, 1, 2, 3] and len(children) == 4
    for t in trials:
        run = by_number[t.number]
        assert t.user_attrs["mlflow_run_id"] == run.info.run_id
        assert run.data.tags["study"] == "t" and run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert [by_number[n].info.status for n in range(4)] == ["FINISHED", "FINISHED", "KILLED", "FAILED"]
    assert len(client.get_metric_history(by_number[2].info.run_id, "val_miou")) == 1  # the pruned trial's epoch
    assert len(client.get_metric_history(by_number[0].info.run_id, "val_miou")) == 2
    assert by_number[2].data.tags["pruned"].startswith("pruned after epoch 1")

    artifacts = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"trials.csv", "summary.md", "importances.csv", "history.png", "importances.png",
            "parallel_coordinate.png", "intermediate_values.png"} <= artifacts
    assert len(pd.read_csv(tmp_path / "reports/t/trials.csv")) == 4
    out = capsys.readouterr().out
    assert "4 of 4 trials finished (2 complete, 1 pruned, 1 failed)" in out

    assert main(["study", "report", "t", "--storage", storage, "--tracking-uri", uri, "--out", "again"]) == 0
    assert "best trials:" in capsys.readouterr().out
    assert (tmp_path / "again/trials.csv").exists() and (tmp_path / "again/history.png").exists()


def _crash(*args, **kwargs):
    raise RuntimeError("injected training failure")
