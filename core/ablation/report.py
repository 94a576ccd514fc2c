"""The ablation report: table (md, csv), deltas, per-class heat map and masks side by side.

Everything is rebuilt from MLflow alone (``collect``), so ``ablate ablation report`` gives
the same files on any machine that reaches the tracking store.
"""

from __future__ import annotations

import math
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from ablate.ablation.collect import COST_METRICS, AblationRecord, collect
from ablate.ablation.design import BASELINE
from ablate.ablation.html import to_html
from ablate.ablation.words import baseline_sentence, comparison_line, reason, what_changes
from ablate.adapters import NOTE_TAG
from ablate.names import inside
from ablate.stats import PROB_BETTER_EXPLAINED, compare_arms
from ablate.task import MARS, Task

REPORT_FILES = ("report.md", "report.csv", "deltas.png", "per_class.png", "masks.png")


def ablation_table(record: AblationRecord) -> pd.DataFrame:
    """One row per arm: statistics of val mIoU and per-class IoU against the baseline, and cost.

    For a sequential ablation the verdict is the sequential rule's (``decision`` says where and
    why each variant stopped): fixed-sample p-values after optional stopping are shown as
    nominal figures only.
    """
    runs = record.runs
    if runs.empty:
        return pd.DataFrame()
    payload = record.payload
    order = list(payload["arms"])
    alpha = float(payload.get("alpha", 0.05))
    main = compare_arms(runs, metric="val_miou", baseline=BASELINE, alpha=alpha)
    per_class = compare_arms(runs, baseline=BASELINE, metrics=record.class_metrics, alpha=alpha)
    keep = [c for c in per_class.columns if c.endswith((".mean", ".delta", ".p_adj", ".verdict"))]
    table = main.merge(per_class[["variant", *keep]], on="variant")
    ok = runs[runs["status"] == "FINISHED"]
    cost = ok.groupby("variant")[COST_METRICS].mean()
    table = table.merge(cost, left_on="variant", right_index=True, how="left")
    meta = pd.DataFrame([{"variant": k, "factor": a["factor"], "label": a["variant"]}
                         for k, a in payload["arms"].items()])
    table = meta.merge(table, on="variant", how="right")
    table["_order"] = table["variant"].map({k: i for i, k in enumerate(order)})
    table = table.sort_values("_order").drop(columns="_order").reset_index(drop=True)
    table["decision"] = ""
    if payload.get("sequential"):
        _apply_sequential(table, ok, payload)
    table["change"] = [_change(payload, k) for k in table["variant"]]
    return table


def _change(payload: dict, key: str) -> str:
    return "" if key == BASELINE or key not in payload["arms"] else what_changes(payload, key)


def _apply_sequential(table: pd.DataFrame, ok: pd.DataFrame, payload: dict) -> None:
    """Verdicts from the sequential rule, replayed from the finished values (as the run took them)."""
    from ablate.sequential import SequentialDesign, decide

    design = SequentialDesign(**payload["sequential"])
    values = {k: dict(zip(g["seed"], g["val_miou"], strict=True)) for k, g in ok.groupby("variant")}
    base = values.get(BASELINE, {})
    seeds = payload["seeds"]
    deltas = {k: [values[k][s] - base[s] for s in seeds if s in values.get(k, {}) and s in base]
              for k in payload["arms"] if k != BASELINE}
    decisions = decide(design, deltas)
    for i, key in enumerate(table["variant"]):
        d = decisions.get(key)
        if d is None:
            continue
        status = "no evidence" if d.status == "continue" else d.status
        why = d.reason if d.status != "continue" else f"undecided at {d.n} seeds (runs missing or failed)"
        table.loc[i, "verdict"] = status
        table.loc[i, "decision"] = f"sequential: {why}"


def comparison_lines(record: AblationRecord, table: pd.DataFrame) -> list[str]:
    """One plain-language line per variant (see ``ablate.ablation.words``)."""
    rows = table[table["variant"] != BASELINE]
    lines = []
    for _, r in rows.iterrows():
        lines.append(comparison_line(r["variant"], r["change"], r["delta"], r["delta_ci_low"], r["delta_ci_high"],
                                     r["verdict"], reason(r, record.payload, len(rows))))
    return lines


def summary_lines(table: pd.DataFrame) -> list[str]:
    """The printed summary at the end of a run: the baseline and one line per variant."""
    return list(table.attrs.get("summary", []))


def _fmt(x: float, digits: int = 3, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _unit(x: float) -> float:
    """An mIoU bound shown within [0, 1]: a t interval on few seeds may cross the metric's range."""
    return min(1.0, max(0.0, x)) if isinstance(x, float) and math.isfinite(x) else x


def _header(record: AblationRecord, table: pd.DataFrame, findings: Sequence[str]) -> list[str]:
    payload = record.payload
    seeds = payload["seeds"]
    seq = payload.get("sequential")
    alpha = float(payload.get("alpha", 0.05))
    correction = payload.get("correction", "holm")
    seeds_text = (f"sequential seeds, {seq['min_seeds']} to {seq['max_seeds']} per arm: settled variants stopped "
                  "early" if seq else f"{len(seeds)} paired seeds ({', '.join(map(str, seeds))})")
    base = table.iloc[0]
    low, high = _unit(base["ci_low"]), _unit(base["ci_high"])
    lines = [f"# Ablation `{record.name}`", ""]
    if payload.get("screening"):
        lines += ["**SCREENING RUN**: this design could not reach p < alpha with its seeds (run with "
                  "`--screening`); read its deltas as hints for a proper ablation, not as verdicts.", ""]
    lines += [
        f"**Baseline**: `{BASELINE}` (val mIoU {_fmt(base['mean'])} [{_fmt(low)}, {_fmt(high)}] over "
        f"{int(base['n_ok'])} seeds). {baseline_sentence(payload)}",
        "",
        f"Design: {payload['design']}; {len(payload['arms'])} arms; {seeds_text}. Metric: validation mIoU over "
        f"{_scored_text(record.task)}.",
        "",
        "## What was found",
        "",
        *[f"- {line}" for line in [*comparison_lines(record, table), *findings]],
        "",
        "## How to read this report",
        "",
        "- **delta**: the variant's val mIoU minus the baseline's, paired by seed (same split, initialisation, "
        "data order and augmentation in both), averaged over seeds, with a 95% t confidence interval.",
        f"- **p ({correction})**: two-sided paired t-test on the per-seed deltas, adjusted for testing "
        f"{len(table) - 1} variant(s); **p perm.** is the exact sign-flip permutation test (robustness check).",
        f"- **verdict**: better or worse only when the adjusted p is below {alpha:g} and the CI excludes zero; "
        "otherwise no evidence (which is not evidence of no effect).",
        f"- **P(better)**: {PROB_BETTER_EXPLAINED.removeprefix('P(better) is ')}",
        "- Failed seeds are excluded and counted, never averaged in.",
    ]
    if seq:
        lines.append("- Sequential design: verdicts come from the group-sequential rule (family-wise error held "
                     f"at {alpha:g} across looks); p and CIs in the table are nominal fixed-sample figures.")
    return lines + [""]


def markdown(record: AblationRecord, table: pd.DataFrame, sections: Sequence[str] = (),
             figures: Sequence[str] = (), findings: Sequence[str] = ()) -> str:
    """report.md: the baseline named, findings in words, the table, figures (relative links), sections."""
    correction = record.payload.get("correction", "holm")
    lines = [
        *_header(record, table, findings),
        "## Table",
        "",
        f"| variant | seeds ok/failed | mIoU mean [95% CI] | delta vs baseline [95% CI] | p ({correction}) "
        "| p perm. | P(better) | verdict | params | MFLOPs/img | train s | ms/img |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _, r in table.iterrows():
        base = r["variant"] == BASELINE
        delta = "-" if base else (f"{_fmt(r['delta'], signed=True)} [{_fmt(r['delta_ci_low'], signed=True)}, "
                                  f"{_fmt(r['delta_ci_high'], signed=True)}]")
        lines.append(
            f"| {r['variant']} | {int(r['n_ok'])}/{int(r['n_failed'])} "
            f"| {_fmt(r['mean'])} [{_fmt(_unit(r['ci_low']))}, {_fmt(_unit(r['ci_high']))}] | {delta} "
            f"| {'-' if base else _fmt(r['p_adj'])} | {'-' if base else _fmt(r.get('p_perm_adj', math.nan))} "
            f"| {'-' if base else _fmt(r['prob_better'], 2)} "
            f"| {r['verdict']} | {_fmt(r['params'], 0)} | {_fmt(r['flops_per_image'] / 1e6, 1)} "
            f"| {_fmt(r['train_time_s'], 1)} | {_fmt(r['latency_ms_per_image'], 2)} |"
        )
    for name, caption in (("deltas.png", "Paired deltas with 95% CIs"), ("per_class.png", "Per-class IoU deltas"),
                          ("masks.png", "The same validation images predicted by every arm")):
        if name in figures:
            lines += ["", f"![{caption}]({name})"]
    class_metrics = _class_metrics(table)
    lines += ["", "## Per-class IoU delta vs baseline", "",
              "| variant | " + " | ".join(m.removeprefix("best_val_iou_") for m in class_metrics) + " |",
              "|---|" + "---|" * len(class_metrics)]
    for _, r in table.iterrows():
        if r["variant"] == BASELINE:
            cells = [_fmt(r[f"{m}.mean"]) for m in class_metrics]
            lines.append(f"| baseline (IoU) | {' | '.join(cells)} |")
        else:
            cells = [_fmt(r[f"{m}.delta"], signed=True) for m in class_metrics]
            lines.append(f"| {r['variant']} | {' | '.join(cells)} |")
    for section in sections:
        if section:
            lines += ["", section.rstrip()]
    notes = [f"- {r['variant']}: {r['note']}" for _, r in table.iterrows() if r.get("note")]
    if notes:
        lines += ["", "## Excluded runs", "", *notes]
    return "\n".join(lines) + "\n"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def deltas_plot(table: pd.DataFrame, path: Path) -> None:
    plt = _plt()
    rows = table[table["variant"] != BASELINE]
    fig, ax = plt.subplots(figsize=(7, 0.45 * max(len(rows), 2) + 1.2))
    y = np.arange(len(rows))
    colours = {"better": "tab:green", "worse": "tab:red"}
    for i, (_, r) in enumerate(rows.iterrows()):
        lo, hi = r["delta"] - r["delta_ci_low"], r["delta_ci_high"] - r["delta"]
        ax.errorbar(r["delta"], i, xerr=[[lo if np.isfinite(lo) else 0], [hi if np.isfinite(hi) else 0]], fmt="o",
                    color=colours.get(r["verdict"], "tab:gray"), capsize=4)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, rows["variant"])
    ax.invert_yaxis()
    ax.set_xlabel("delta val mIoU vs baseline (paired, 95% CI)")
    ax.set_title("green: better, red: worse, grey: no evidence (Holm-adjusted)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _scored_text(task: Task) -> str:
    """What the mIoU is over, in words: ``classes 1-4 (labelled pixels)`` on Mars."""
    if task == MARS:
        return "classes 1-4 (labelled pixels)"
    left_out = "" if task.ignore_label is None else f"; pixels labelled {task.ignore_label} left out"
    return f"the scored classes ({', '.join(task.scored_names)}{left_out})"


def _class_metrics(table: pd.DataFrame) -> list[str]:
    """The per-class metrics an :func:`ablation_table` holds (``best_val_iou_<name>``, the task's scored classes)."""
    return [c.removesuffix(".delta") for c in table.columns if c.startswith("best_val_iou_") and c.endswith(".delta")]


def per_class_plot(table: pd.DataFrame, path: Path) -> None:
    plt = _plt()
    rows = table[table["variant"] != BASELINE]
    class_metrics = _class_metrics(table)
    data = rows[[f"{m}.delta" for m in class_metrics]].to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * max(len(rows), 2) + 1.5))
    lim = np.nanmax(np.abs(data)) if np.isfinite(data).any() else 0.1
    im = ax.imshow(data, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    names = [m.removeprefix("best_val_iou_") for m in class_metrics]
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(rows)), rows["variant"])
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            ax.text(j, i, _fmt(data[i, j], signed=True), ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=ax, label="IoU delta vs baseline")
    ax.set_title("Per-class IoU delta (mean over paired seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def masks_plot(record: AblationRecord, path: Path, n_images: int = 4) -> bool:
    """The same validation images predicted by every arm (first seed), side by side."""
    from ablate.data.npz import read_arrays  # by key, header-checked: a store's file is read like a user's
    from ablate.tracking import SAMPLE_ARTIFACT, colourize

    task = record.task
    runs = record.runs[record.runs["status"] == "FINISHED"]
    if runs.empty:
        return False
    seed = min(runs["seed"])
    samples = {}
    for key in record.payload["arms"]:
        match = runs[(runs["variant"] == key) & (runs["seed"] == seed)]
        if match.empty:
            continue
        with tempfile.TemporaryDirectory() as tmp:  # MLflow's own download folder would be left in /tmp
            local = mlflow.artifacts.download_artifacts(run_id=match.iloc[0]["run_id"], artifact_path=SAMPLE_ARTIFACT,
                                                        dst_path=tmp)
            wanted = ("images", "truth", "pred")
            samples[key] = read_arrays(local, keys=wanted, required=wanted)
    if not samples:
        return False
    first = next(iter(samples.values()))
    n = min(n_images, len(first["images"]))
    cols = ["image", "truth", *samples]
    plt = _plt()
    fig, axes = plt.subplots(n, len(cols), figsize=(1.9 * len(cols), 1.1 * n + 0.6), squeeze=False)
    for i in range(n):
        image = first["images"][i]
        panels = [image if image.ndim == 3 else np.repeat(image[..., None], 3, -1), colourize(first["truth"][i], task)]
        panels += [colourize(s["pred"][i], task) for s in samples.values()]
        for j, panel in enumerate(panels):
            axes[i, j].imshow(panel)
            axes[i, j].axis("off")
            if i == 0:
                axes[i, j].set_title(cols[j], fontsize=7)
    fig.suptitle(f"Same validation images, every arm (seed {seed})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _metric_key(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", text)


def _sections(record: AblationRecord, out: Path) -> tuple[list[str], list[str], list[str]]:
    """The design's own analysis and the image-by-image analysis: sections, figure files, findings."""
    from ablate.ablation.designs import DESIGNS
    from ablate.ablation.images import image_section

    payload = record.payload
    ok = record.runs[record.runs["status"] == "FINISHED"]
    analysis = DESIGNS.build(payload["design"]).analyse(ok, payload, alpha=float(payload.get("alpha", 0.05)))
    images_md, images_files = image_section(record, out)
    return [analysis.markdown, images_md], list(images_files), list(analysis.sentences)


def build_report(ref: str, out_dir: str | Path | None = None, log: bool = True) -> tuple[Path, pd.DataFrame]:
    """Writes the report files for an ablation (parent run id or name) and logs them to the parent.

    report.md (figures by relative link), report.html (self-contained), report.csv and the
    figures; the plain-language summary becomes the parent run's description in MLflow.
    """
    record = collect(ref)
    out = Path(out_dir) if out_dir else inside(Path("reports"), _safe(record.name), "Ablation name")
    out.mkdir(parents=True, exist_ok=True)
    table = ablation_table(record)
    if table.empty:
        (out / "report.md").write_text(f"# Ablation `{record.name}`\n\nNo finished runs yet.\n")
        return out, table
    table.to_csv(out / "report.csv", index=False, float_format="%.6g")
    deltas_plot(table, out / "deltas.png")
    per_class_plot(table, out / "per_class.png")
    masks_plot(record, out / "masks.png")
    sections, extra, findings = _sections(record, out)
    figures = [f for f in REPORT_FILES if f.endswith(".png") and (out / f).exists()]
    text = markdown(record, table, sections, figures, findings)
    (out / "report.md").write_text(text)
    (out / "report.html").write_text(to_html(text, out, f"ablation {record.name}"))
    summary = [f"baseline: val mIoU {_fmt(table.iloc[0]['mean'])} over {int(table.iloc[0]['n_ok'])} seeds",
               *comparison_lines(record, table), *findings]
    table.attrs["summary"] = summary
    if log:
        _log(record, out, table, summary, [*REPORT_FILES, "report.html", *extra])
    return out, table


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".") or "ablation"


def _log(record: AblationRecord, out: Path, table: pd.DataFrame, summary: list[str], files: list[str]) -> None:
    client = MlflowClient()
    for name in dict.fromkeys(files):
        if (out / name).exists():
            client.log_artifact(record.parent_run_id, str(out / name), "report")
    note = "\n".join([f"**{record.name}**" + (" (SCREENING)" if record.payload.get("screening") else ""), "",
                      *[f"- {line}" for line in summary], "", "Full report: artifacts report/report.html"])
    client.set_tag(record.parent_run_id, NOTE_TAG, note)  # the run's description in the UI
    metrics = {"baseline_val_miou": float(table.iloc[0]["mean"]),
               "n_better": float((table["verdict"] == "better").sum()),
               "n_worse": float((table["verdict"] == "worse").sum()),
               "failed_runs": float(table["n_failed"].sum())}
    for _, r in table.iloc[1:].iterrows():
        if np.isfinite(r["delta"]):
            metrics[_metric_key(f"delta.{r['variant']}")] = float(r["delta"])
    for k, v in metrics.items():
        client.log_metric(record.parent_run_id, k, v)


def terminal_table(table: pd.DataFrame) -> str:
    """A compact table for the terminal."""
    if table.empty:
        return "(no finished runs)"
    cols = {"variant": "variant", "n_ok": "ok", "n_failed": "failed", "mean": "mIoU", "delta": "delta",
            "delta_ci_low": "ci_low", "delta_ci_high": "ci_high", "p_adj": "p_holm", "prob_better": "P(better)",
            "verdict": "verdict", "params": "params"}
    view = table[list(cols)].rename(columns=cols)
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.float_format", "{:.4f}".format):
        return view.to_string(index=False)
