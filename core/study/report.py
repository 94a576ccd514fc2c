"""The study report: best trial(s), parameter importances, Optuna's plots, trials.csv, a summary.

Everything comes from the Optuna storage, so ``ablate study report NAME`` rebuilds the same
files on any machine that reaches it; they are also logged to the MLflow parent run under
``report/``. Plots use Optuna's matplotlib backend (PNG): optimisation history, parameter
importances, parallel coordinates, intermediate values (per-epoch val mIoU) and, for two
objectives, the Pareto front. Surplus trials (see ``ablate.study.runner``) appear nowhere.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from ablate.campaign import PARENT, RUN_ID
from ablate.names import inside
from ablate.study.runner import SURPLUS, counts, plan_of
from ablate.study.space import StudyDef

TOP = 5  # best trials listed for a single objective
IMPORTANCE = "PED-ANOVA (Optuna's default evaluator; conditional parameters included)"


def build_report(study: optuna.Study, out_dir: str | Path | None = None, log: bool = True) -> tuple[Path, str]:
    """Writes the report to ``out_dir`` (default ``reports/NAME``); returns it and the terminal summary."""
    plan = plan_of(study)
    out = Path(out_dir) if out_dir else inside(Path("reports"), study.study_name, "Study name")
    out.mkdir(parents=True, exist_ok=True)
    trials_frame(study).to_csv(out / "trials.csv", index=False)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # "no complete trials yet" is said in the report
    try:
        importances = param_importances(study, plan)
        written, skipped = plot_all(study, plan, out)
    finally:
        optuna.logging.set_verbosity(verbosity)
    pd.DataFrame(importances).rename_axis("param").to_csv(out / "importances.csv")
    summary = terminal_summary(study, plan, importances)
    (out / "summary.md").write_text(markdown(study, plan, summary, written, skipped))
    if log and study.user_attrs.get(PARENT):
        from mlflow.tracking import MlflowClient

        MlflowClient().log_artifacts(study.user_attrs[PARENT], str(out), "report")
    return out, summary


def real_trials(study: optuna.Study, states: tuple[TrialState, ...] | None = None) -> list[FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False, states=states) if not t.user_attrs.get(SURPLUS)]


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """``study.trials_dataframe()`` without surplus trials (one row per trial, params as columns)."""
    df = study.trials_dataframe()
    col = f"user_attrs_{SURPLUS}"
    if col in df.columns:
        df = df[df[col] != True].drop(columns=col)  # noqa: E712 - NaN for the real trials
    return df.reset_index(drop=True)


def best_trials(study: optuna.Study, plan: StudyDef) -> list[FrozenTrial]:
    """The top trials for one objective, the Pareto front (by the first objective) for two."""
    complete = real_trials(study, (TrialState.COMPLETE,))
    if not complete:
        return []
    if len(plan.objectives) > 1:
        sign = -1 if plan.directions[0] == "maximize" else 1
        return sorted(study.best_trials, key=lambda t: sign * t.values[0])
    sign = -1 if plan.directions[0] == "maximize" else 1
    return sorted(complete, key=lambda t: sign * float(t.value or 0.0))[:TOP]


def param_importances(study: optuna.Study, plan: StudyDef) -> dict[str, dict[str, float]]:
    """``{metric: {param: importance}}`` from Optuna's default evaluator; empty if too few trials."""
    out: dict[str, dict[str, float]] = {}
    if len(real_trials(study, (TrialState.COMPLETE,))) < 2:
        return out
    for i, metric in enumerate(plan.metric_names):
        target = _target(plan, i)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out[metric] = dict(optuna.importance.get_param_importances(study, target=target))
        except (ValueError, RuntimeError, ZeroDivisionError):
            continue  # e.g. every complete trial has the same value
    return out


def _target(plan: StudyDef, i: int) -> Callable[[FrozenTrial], float] | None:
    return None if len(plan.objectives) == 1 else (lambda t: t.values[i])


def plot_all(study: optuna.Study, plan: StudyDef, out: Path) -> tuple[list[str], dict[str, str]]:
    """Saves every applicable plot as PNG; returns the files written and why others were skipped."""
    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as ovm

    plots: dict[str, Callable[[], Any]] = {}
    for i, metric in enumerate(plan.metric_names):
        suffix = "" if len(plan.objectives) == 1 else f"_{metric}"
        kw = {} if len(plan.objectives) == 1 else {"target": _target(plan, i), "target_name": metric}
        if len(plan.objectives) == 1:
            kw["target_name"] = metric
        plots[f"history{suffix}.png"] = lambda kw=kw: ovm.plot_optimization_history(study, **kw)
        plots[f"importances{suffix}.png"] = lambda kw=kw: ovm.plot_param_importances(study, **kw)
        plots[f"parallel_coordinate{suffix}.png"] = lambda kw=kw: ovm.plot_parallel_coordinate(study, **kw)
    if len(plan.objectives) == 1:
        plots["intermediate_values.png"] = lambda: ovm.plot_intermediate_values(study)
    else:
        plots["pareto_front.png"] = lambda: ovm.plot_pareto_front(study, target_names=plan.metric_names)
    written, skipped = [], {}
    for name, make in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna's matplotlib backend is 'experimental'
                _save(make(), out / name)
            written.append(name)
        except Exception as e:  # noqa: BLE001 - one unplottable view must not cost the others
            skipped[name] = f"{type(e).__name__}: {e}".splitlines()[0][:200]
    return written, skipped


def _save(axes: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig = np.asarray(axes).flat[0].figure
    if not any(ax.has_data() for ax in fig.axes):
        plt.close(fig)
        raise ValueError("nothing to plot yet (too few finished trials)")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


# --- text ------------------------------------------------------------------------------------

def terminal_summary(study: optuna.Study, plan: StudyDef, importances: dict[str, dict[str, float]]) -> str:
    """Counts, the best trial(s) as a table, and the top parameter importances."""
    c = counts(study, plan)
    lines = [f"study {plan.name}: {c.done} of {plan.n_trials} trials finished ({c.complete} complete, "
             f"{c.pruned} pruned, {c.failed} failed)" + (f", {c.running} running" if c.running else "")]
    best = best_trials(study, plan)
    lines.append("Pareto front (best trade-offs):" if len(plan.objectives) > 1 else "best trials:")
    if not best:
        lines.append("  (no complete trial yet)")
    else:
        lines.extend(table(best, plan))
    for metric, imp in importances.items():
        top = ", ".join(f"{k} {v:.2f}" for k, v in list(imp.items())[:5])
        lines.append(f"importance for {metric}: {top}")
    return "\n".join(lines)


def table(trials: list[FrozenTrial], plan: StudyDef) -> list[str]:
    head = ["trial", *plan.metric_names, "epochs", "mlflow run", "params"]
    rows = [[f"#{t.number}", *[_num(v) for v in (t.values or [])], str(t.user_attrs.get("epochs", "-")),
             str(t.user_attrs.get(RUN_ID, "-"))[:8],
             " ".join(f"{short(k)}={_num(v)}" for k, v in t.params.items())] for t in trials]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head) - 1)]
    fmt = [" ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)) + " " + r[-1] for r in [head, *rows]]
    return ["  " + line for line in fmt]


def trial_line(trial: FrozenTrial, plan: StudyDef) -> str:
    """One line for a finished trial: state, value(s) or epochs, and its parameters."""
    state = trial.state.name.lower()
    if trial.values is not None and trial.state == TrialState.COMPLETE:
        state += " " + ", ".join(f"{m} {_num(v)}" for m, v in zip(plan.metric_names, trial.values, strict=True))
    elif trial.state == TrialState.PRUNED:
        state += f" after {len(trial.intermediate_values)} epoch(s)"
    return state + "  " + " ".join(f"{short(k)}={_num(v)}" for k, v in trial.params.items())


def short(key: str) -> str:
    """``model.skip.type`` -> ``skip.type`` (the model section is implied)."""
    return key.removeprefix("model.")


def _num(v: Any) -> str:
    if isinstance(v, float):
        if math.isfinite(v) and abs(v) >= 1000:
            return f"{v:.0f}"
        return f"{v:.4g}"
    return str(v)


def markdown(study: optuna.Study, plan: StudyDef, summary: str, written: list[str], skipped: dict[str, str]) -> str:
    objectives = ", ".join(f"{o.metric} ({o.direction})" for o in plan.objectives)
    parts = [
        f"# Study `{plan.name}`", "", *([plan.description, ""] if plan.description else []),
        f"Objectives: {objectives}. Sampler: `{plan.sampler}`. Pruner: `{plan.pruner}`. "
        f"Per-trial budget: {plan.base['train']['epochs']} epochs, data limit {plan.base['data']['limit']}. "
        f"Importances: {IMPORTANCE}.", "",
        "```", summary, "```", "",
        "Files: trials.csv, importances.csv" + "".join(f", {w}" for w in written) + ".",
    ]
    if skipped:
        parts += ["", "Not plotted:"] + [f"- {k}: {v}" for k, v in skipped.items()]
    return "\n".join(parts) + "\n"
