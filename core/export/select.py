"""Choosing the run to export, from MLflow alone (no Optuna storage needed).

- ``--ablation NAME``: the variant with the best mean metric over its FINISHED seeds, and of
  its seeds the run closest to that mean (a typical seed, not the luckiest one); only when it
  beats the runner-up, paired by seed, at p < ``ALPHA`` with a CI that excludes zero
  (``force=True`` exports anyway and says so).
- ``--study NAME``: the FINISHED trial with the best metric; ``--trial N`` picks trial N;
  for two objectives ``--pareto-index K`` picks the K-th point of the Pareto front (sorted by
  the metric, best first; 0 is the default choice).
- ``--best-of EXPERIMENT``: the FINISHED run with the best metric; ``--run RUN_ID``: that run.

Example:
    >>> choice = select(MlflowClient(), Selector(ablation="skip-types"))
    >>> choice.run.info.run_id, choice.reason
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ablate.campaign.runs import child_runs, search_all
from ablate.errors import AblateError
from ablate.export.evidence import ALPHA as ALPHA
from ablate.export.evidence import CONFIDENCE as CONFIDENCE
from ablate.export.evidence import LOWER_IS_BETTER as LOWER_IS_BETTER
from ablate.export.evidence import MORE_SEEDS as MORE_SEEDS
from ablate.export.evidence import Evidence, higher_is_better, metric_of

SECOND_OBJECTIVES = ("latency_ms_per_image", "params")
# Runs --best-of never picks: parents and exports hold no model; a refit's validation images were
# in its training set, so its figures are not comparable.
EXCLUDED_KINDS = ("ablation", "study", "export", "refit")


@dataclass(frozen=True)
class Selector:
    """What the user asked to export (exactly one of study, ablation, run_id, best_of)."""

    study: str | None = None
    ablation: str | None = None
    run_id: str | None = None
    best_of: str | None = None
    metric: str = "best_val_miou"
    trial: int | None = None
    pareto_index: int | None = None
    cost: str | None = None  # the second objective of a two-objective study (auto-detected)
    force: bool = False  # with ablation: export even if the winner is not shown better than the runner-up


@dataclass
class Choice:
    """The chosen run, why it was chosen and the table it was chosen from (for the card)."""

    run: Run
    source: str  # "ablation", "study", "run" or "best-of"
    name: str  # the ablation, study or experiment name (the default model name)
    metric: str
    reason: str
    table: str = ""  # markdown: variant means or trial summary
    report: str = ""  # the ablation's report.md or the study's summary.md, from the parent run
    evidence: str = ""  # ablation: the winner against the runner-up (and the baseline), one paragraph
    supported: bool | None = None  # ablation: did the winner clear the ALPHA bar? None for other sources


def select(client: MlflowClient, sel: Selector) -> Choice:
    """Resolves a :class:`Selector` to a :class:`Choice`; raises AblateError with the reason."""
    given = [k for k in ("study", "ablation", "run_id", "best_of") if getattr(sel, k)]
    if len(given) != 1:
        raise AblateError("Choose exactly one source: --study NAME, --ablation NAME, --run RUN_ID or "
                          f"--best-of EXPERIMENT (got {len(given) or 'none'}).")
    if sel.force and not sel.ablation:
        raise AblateError("--force applies to --ablation only (it overrides the winner-vs-runner-up check).")
    if sel.ablation:
        return from_ablation(client, sel.ablation, sel.metric, force=sel.force)
    if sel.study:
        return from_study(client, sel)
    if sel.best_of:
        return from_experiment(client, sel.best_of, sel.metric)
    return from_run(client, str(sel.run_id), sel.metric)


# --- MLflow queries --------------------------------------------------------------------------

def experiment_id(client: MlflowClient, name: str, what: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is None:
        known = ", ".join(sorted(e.name for e in client.search_experiments())[:20]) or "(none)"
        raise AblateError(f"No MLflow experiment named '{name}' for {what} (known: {known}); check the name "
                          f"and --tracking-uri.")
    return exp.experiment_id


def latest_parent(client: MlflowClient, exp_id: str, kind: str, name: str) -> Run:
    parents = search_all(client, [exp_id], f"tags.`ablate.kind` = '{kind}' and tags.`{kind}` = '{name}'")
    if not parents:
        raise AblateError(f"Experiment '{name}' has no {kind} parent run (tag ablate.kind={kind}); run it first "
                          f"with `ablate {kind} run FILE`, or use --best-of {name}.")
    return max(parents, key=lambda r: r.info.start_time or 0)


def finished_with(runs: Sequence[Run], metric: str) -> list[Run]:
    return [r for r in runs if r.info.status == "FINISHED" and not math.isnan(metric_of(r, metric))]


def best_run(runs: Sequence[Run], metric: str) -> Run:
    sign = 1.0 if higher_is_better(metric) else -1.0
    return max(runs, key=lambda r: (sign * metric_of(r, metric), -(r.info.start_time or 0)))


# --- sources -------------------------------------------------------------------------------------

def from_run(client: MlflowClient, run_id: str, metric: str) -> Choice:
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise AblateError(f"Run '{run_id}' not found in the tracking store; check the id and --tracking-uri.") from None
    if run.info.status != "FINISHED":
        raise AblateError(f"Run '{run_id}' is {run.info.status}; only FINISHED runs can be exported.")
    exp = client.get_experiment(run.info.experiment_id)
    value = metric_of(run, metric)
    return Choice(run, "run", exp.name, metric, f"Run {run_id} was named on the command line "
                  f"({metric} = {value:.4f}).")


def from_experiment(client: MlflowClient, name: str, metric: str) -> Choice:
    runs = [r for r in finished_with(search_all(client, [experiment_id(client, name, "--best-of")]), metric)
            if r.data.tags.get("ablate.kind") not in EXCLUDED_KINDS]
    if not runs:
        raise AblateError(f"Experiment '{name}' has no FINISHED run with metric '{metric}'.")
    run = best_run(runs, metric)
    word = "highest" if higher_is_better(metric) else "lowest"
    return Choice(run, "best-of", name, metric, f"Run {run.info.run_id} has the {word} {metric} "
                  f"({metric_of(run, metric):.4f}) of the {len(runs)} FINISHED runs in experiment '{name}'.")


def from_ablation(client: MlflowClient, name: str, metric: str, force: bool = False) -> Choice:
    """The best-mean variant's typical seed, if it is shown better than the runner-up (or ``force``).

    Raises:
        AblateError: no FINISHED arm; or, without ``force``, a winner that is not significantly
            better than the runner-up, a single arm, or a runner-up that shares no seed with it.
    """
    parent = latest_parent(client, experiment_id(client, name, "--ablation"), "ablation", name)
    arms = finished_with([r for r in child_runs(client, parent) if r.data.tags.get("ablate.kind", "arm") == "arm"],
                         metric)
    if not arms:
        raise AblateError(f"Ablation '{name}' (parent run {parent.info.run_id}) has no FINISHED arm with "
                          f"metric '{metric}'.")
    groups = group_arms(arms)
    ranked, means = rank_arms(groups, metric)
    evidence = Evidence.of(groups, ranked, means, metric)
    if not evidence.supported and not force:
        raise AblateError(evidence.refusal(name))
    choice = closest_to_best_mean(groups, metric)
    choice.name, choice.evidence, choice.supported = name, evidence.text(), evidence.supported
    choice.report = parent_report(client, parent, ("report/report.md", "report.md"))
    return choice


def group_arms(arms: Sequence[Run]) -> dict[tuple[str, ...], list[Run]]:
    """One group per arm, keyed (factor, variant, arm key); of runs repeating a seed, the latest counts."""
    latest: dict[tuple[str, ...], dict[str, Run]] = defaultdict(dict)
    for run in sorted(arms, key=lambda r: r.info.start_time or 0):
        t = run.data.tags
        key = (t.get("factor", ""), t.get("variant", run.info.run_name or "?"), t.get("arm", ""))
        latest[key][t.get("seed") or run.info.run_id] = run  # no seed tag: the run stands alone
    return {key: list(by_seed.values()) for key, by_seed in latest.items()}


def rank_arms(groups: dict[tuple[str, ...], list[Run]],
              metric: str) -> tuple[list[tuple[str, ...]], dict[tuple[str, ...], float]]:
    """The arm keys, best mean first, and each arm's mean over its seeds."""
    sign = 1.0 if higher_is_better(metric) else -1.0
    means = {k: statistics.fmean(metric_of(r, metric) for r in runs) for k, runs in groups.items()}
    return sorted(means, key=lambda k: -sign * means[k]), means


def closest_to_best_mean(groups: dict[tuple[str, ...], list[Run]], metric: str) -> Choice:
    """The variant with the best mean, and of its seeds the run closest to that mean."""
    ranked, means = rank_arms(groups, metric)
    (factor, variant, *_), mean = ranked[0], means[ranked[0]]
    runs = groups[ranked[0]]
    chosen = min(runs, key=lambda r: (abs(metric_of(r, metric) - mean), _seed(r)))
    luckiest = best_run(runs, metric)
    runner_up = (f"; runner-up '{ranked[1][1]}' {means[ranked[1]]:.4f}" if len(ranked) > 1 else "")
    lucky = ("it is also its best seed" if luckiest is chosen else
             f"not its luckiest seed (seed {_seed(luckiest)}, {metric_of(luckiest, metric):.4f})")
    reason = (f"Variant '{variant}' (factor '{factor}') has the best mean {metric}, {mean:.4f} over "
              f"{len(runs)} FINISHED seed(s){runner_up}. Of its seeds, run {chosen.info.run_id} (seed "
              f"{_seed(chosen)}, {metric_of(chosen, metric):.4f}) is the closest to that mean, so the exported "
              f"model is a typical one; {lucky}.")
    table = _variant_table(groups, means, ranked, metric, chosen)
    return Choice(chosen, "ablation", "", metric, reason, table)


def _seed(run: Run) -> int:
    try:
        return int(run.data.tags.get("seed", "0"))
    except ValueError:
        return 0


def _variant_table(groups: dict[tuple[str, ...], list[Run]], means: dict[tuple[str, ...], float],
                   ranked: list[tuple[str, ...]], metric: str, chosen: Run) -> str:
    lines = [f"| factor | variant | seeds | mean {metric} | sd | min | max |", "|---|---|---|---|---|---|---|"]
    for key in ranked:
        values = [metric_of(r, metric) for r in groups[key]]
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        mark = " **(exported)**" if chosen in groups[key] else ""
        base = " (baseline)" if groups[key][0].data.tags.get("is_baseline") == "true" else ""
        lines.append(f"| {key[0]} | {key[1]}{base}{mark} | {len(values)} | {means[key]:.4f} | {sd:.4f} | "
                     f"{min(values):.4f} | {max(values):.4f} |")
    return "\n".join(lines)


def parent_report(client: MlflowClient, parent: Run, names: Sequence[str]) -> str:
    """The first of ``names`` (artifact paths) the parent run holds, as text; "" if none."""
    import tempfile
    from pathlib import Path

    for name in names:
        folder = name.rpartition("/")[0] or None
        try:
            if name not in {a.path for a in client.list_artifacts(parent.info.run_id, folder)}:
                continue
            with tempfile.TemporaryDirectory() as tmp:
                return Path(client.download_artifacts(parent.info.run_id, name, tmp)).read_text(encoding="utf-8")
        except (MlflowException, OSError):
            continue
    return ""


def from_study(client: MlflowClient, sel: Selector) -> Choice:
    name, metric = str(sel.study), sel.metric
    parent = latest_parent(client, experiment_id(client, name, "--study"), "study", name)
    trials = [r for r in child_runs(client, parent) if r.data.tags.get("ablate.kind", "trial") == "trial"]
    finished = finished_with(trials, metric)
    cost = sel.cost or study_cost(parent)
    if sel.trial is not None:
        run, why = _trial(trials, sel.trial), f"Trial {sel.trial} was named with --trial"
    elif not finished:
        raise AblateError(f"Study '{name}' has no FINISHED trial with metric '{metric}'.")
    elif sel.pareto_index is not None:
        run, why = _pareto_pick(finished, metric, cost, sel.pareto_index)
    else:
        run = best_run(finished, metric)
        why = f"Trial {run.data.tags.get('trial_number')} has the best {metric} of {len(finished)} FINISHED trials"
    reason = f"{why} ({metric} = {metric_of(run, metric):.4f}); run {run.info.run_id} of study '{name}'."
    return Choice(run, "study", name, metric, reason, study_table(trials, metric, cost, run),
                  parent_report(client, parent, ("report/summary.md", "summary.md")))


def study_cost(parent: Run) -> str | None:
    """The second objective of a two-objective study, read from its parent run's params/tags."""
    for key, value in {**parent.data.params, **parent.data.tags}.items():
        if "objective" in key.lower() or "direction" in key.lower():
            for cand in SECOND_OBJECTIVES:
                if cand.split("_")[0] in str(value):
                    return cand
    return None


def _trial(trials: Sequence[Run], number: int) -> Run:
    match = [r for r in trials if r.data.tags.get("trial_number") == str(number)]
    if not match:
        known = sorted(int(t) for r in trials if (t := r.data.tags.get("trial_number", "")).isdigit())
        raise AblateError(f"The study has no trial {number}; trials: {known}.")
    run = max(match, key=lambda r: r.info.start_time or 0)
    if run.info.status != "FINISHED":
        state = "pruned" if run.info.status == "KILLED" else run.info.status.lower()
        raise AblateError(f"Trial {number} is {run.info.status} ({state}); choose a FINISHED trial.")
    return run


def pareto_front(runs: Sequence[Run], metric: str, cost: str) -> list[Run]:
    """Non-dominated runs (best metric, lowest cost), sorted by the metric, best first."""
    sign = 1.0 if higher_is_better(metric) else -1.0
    pts = [(sign * metric_of(r, metric), -metric_of(r, cost), r) for r in runs if not math.isnan(metric_of(r, cost))]
    front = [p for p in pts if not any(q[0] >= p[0] and q[1] >= p[1] and q[:2] != p[:2] for q in pts)]
    return [p[2] for p in sorted(front, key=lambda p: (-p[0], -p[1]))]


def _pareto_pick(finished: Sequence[Run], metric: str, cost: str | None, index: int) -> tuple[Run, str]:
    if cost is None:
        raise AblateError("--pareto-index needs a second objective; this study's parent run names none. "
                          f"Pass --cost ({' or '.join(SECOND_OBJECTIVES)}).")
    front = pareto_front(finished, metric, cost)
    if not 0 <= index < len(front):
        raise AblateError(f"--pareto-index {index} is out of range; the Pareto front ({metric} vs {cost}) has "
                          f"{len(front)} trials (0-{len(front) - 1}).")
    run = front[index]
    return run, (f"Pareto point {index} of {len(front)} ({metric} vs {cost} = {metric_of(run, cost):.4g}) is "
                 f"trial {run.data.tags.get('trial_number')}")


def study_table(trials: Sequence[Run], metric: str, cost: str | None, chosen: Run, top: int = 10) -> str:
    """Markdown: trial counts by state and the best finished trials."""
    counts: dict[str, int] = defaultdict(int)
    for r in trials:
        counts[{"KILLED": "pruned"}.get(r.info.status, r.info.status.lower())] += 1
    finished = finished_with(trials, metric)
    sign = -1.0 if higher_is_better(metric) else 1.0
    best = sorted(finished, key=lambda r: sign * metric_of(r, metric))[:top]
    front = {r.info.run_id for r in pareto_front(finished, metric, cost)} if cost else set()
    head = f"| trial | {metric} |" + (f" {cost} | Pareto |" if cost else "")
    lines = [f"Trials: {len(trials)} ({', '.join(f'{v} {k}' for k, v in sorted(counts.items()))}).", "",
             head, "|---|---|" + ("---|---|" if cost else "")]
    for r in best:
        mark = " **(exported)**" if r.info.run_id == chosen.info.run_id else ""
        row = f"| {r.data.tags.get('trial_number', '?')}{mark} | {metric_of(r, metric):.4f} |"
        if cost:
            row += f" {metric_of(r, cost):.4g} | {'yes' if r.info.run_id in front else ''} |"
        lines.append(row)
    return "\n".join(lines)
