"""The ablation report: table (md, csv), deltas, per-class heat map and masks side by side.

Everything is rebuilt from MLflow alone (``collect``), so ``ablate ablation report`` gives
the same files on any machine that reaches the tracking store.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from core.ablation.collect import CLASS_METRICS, COST_METRICS, AblationRecord, collect
from core.ablation.design import BASELINE
from core.stats import compare_arms

REPORT_FILES = ("report.md", "report.csv", "deltas.png", "per_class.png", "masks.png")


def ablation_table(record: AblationRecord) -> pd.DataFrame:
    """One row per arm: statistics of val mIoU and per-class IoU against the baseline, and cost."""
    runs = record.runs
    if runs.empty:
        return pd.DataFrame()
    order = list(record.payload["arms"])
    main = compare_arms(runs, metric="val_miou", baseline=BASELINE)
    per_class = compare_arms(runs, baseline=BASELINE, metrics=CLASS_METRICS)
    keep = [c for c in per_class.columns if c.endswith((".mean", ".delta", ".p_adj", ".verdict"))]
    table = main.merge(per_class[["variant", *keep]], on="variant")
    ok = runs[runs["status"] == "FINISHED"]
    cost = ok.groupby("variant")[COST_METRICS].mean()
    table = table.merge(cost, left_on="variant", right_index=True, how="left")
    meta = pd.DataFrame([{"variant": k, "factor": a["factor"], "label": a["variant"]}
                         for k, a in record.payload["arms"].items()])
    table = meta.merge(table, on="variant", how="right")
    table["_order"] = table["variant"].map({k: i for i, k in enumerate(order)})
    return table.sort_values("_order").drop(columns="_order").reset_index(drop=True)


def _fmt(x: float, digits: int = 3, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def markdown(record: AblationRecord, table: pd.DataFrame) -> str:
    """The publication-style table with a header saying how it was obtained."""
    seeds = record.payload["seeds"]
    lines = [
        f"# Ablation `{record.name}`",
        "",
        f"Design: {record.payload['design']}; {len(record.payload['arms'])} arms x {len(seeds)} paired seeds "
        f"({', '.join(map(str, seeds))}). Metric: validation mIoU over classes 1-4 (labelled pixels). "
        "Delta: paired by seed against the baseline, 95% CI; p: paired exact permutation test "
        "(Wilcoxon above 12 seeds), Holm-adjusted across variants. Failed seeds are excluded and counted.",
        "",
        "| variant | factor | seeds ok/failed | mIoU mean [95% CI] | delta vs baseline [95% CI] | p (Holm) "
        "| P(better) | verdict | params | MFLOPs/img | train s | ms/img |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _, r in table.iterrows():
        base = r["variant"] == BASELINE
        delta = "-" if base else (f"{_fmt(r['delta'], signed=True)} [{_fmt(r['delta_ci_low'], signed=True)}, "
                                  f"{_fmt(r['delta_ci_high'], signed=True)}]")
        lines.append(
            f"| {r['variant']} | {r['factor'] or '-'} | {int(r['n_ok'])}/{int(r['n_failed'])} "
            f"| {_fmt(r['mean'])} [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}] | {delta} "
            f"| {'-' if base else _fmt(r['p_adj'])} | {'-' if base else _fmt(r['prob_better'], 2)} "
            f"| {r['verdict']} | {_fmt(r['params'], 0)} | {_fmt(r['flops_per_image'] / 1e6, 1)} "
            f"| {_fmt(r['train_time_s'], 1)} | {_fmt(r['latency_ms_per_image'], 2)} |"
        )
    lines += ["", "## Per-class IoU delta vs baseline", "",
              "| variant | " + " | ".join(m.removeprefix("best_val_iou_") for m in CLASS_METRICS) + " |",
              "|---|" + "---|" * len(CLASS_METRICS)]
    for _, r in table.iterrows():
        if r["variant"] == BASELINE:
            cells = [_fmt(r[f"{m}.mean"]) for m in CLASS_METRICS]
            lines.append(f"| baseline (IoU) | {' | '.join(cells)} |")
        else:
            cells = [_fmt(r[f"{m}.delta"], signed=True) for m in CLASS_METRICS]
            lines.append(f"| {r['variant']} | {' | '.join(cells)} |")
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


def per_class_plot(table: pd.DataFrame, path: Path) -> None:
    plt = _plt()
    rows = table[table["variant"] != BASELINE]
    data = rows[[f"{m}.delta" for m in CLASS_METRICS]].to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * max(len(rows), 2) + 1.5))
    lim = np.nanmax(np.abs(data)) if np.isfinite(data).any() else 0.1
    im = ax.imshow(data, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    names = [m.removeprefix("best_val_iou_") for m in CLASS_METRICS]
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
    from core.tracking import SAMPLE_ARTIFACT, colourize

    runs = record.runs[record.runs["status"] == "FINISHED"]
    if runs.empty:
        return False
    seed = min(runs["seed"])
    samples = {}
    for key in record.payload["arms"]:
        match = runs[(runs["variant"] == key) & (runs["seed"] == seed)]
        if match.empty:
            continue
        local = mlflow.artifacts.download_artifacts(run_id=match.iloc[0]["run_id"], artifact_path=SAMPLE_ARTIFACT)
        with np.load(local, allow_pickle=False) as z:
            samples[key] = {k: z[k] for k in ("images", "truth", "pred")}
    if not samples:
        return False
    first = next(iter(samples.values()))
    n = min(n_images, len(first["images"]))
    cols = ["image", "truth", *samples]
    plt = _plt()
    fig, axes = plt.subplots(n, len(cols), figsize=(1.9 * len(cols), 1.1 * n + 0.6), squeeze=False)
    for i in range(n):
        panels = [np.repeat(first["images"][i][..., None], 3, -1), colourize(first["truth"][i])]
        panels += [colourize(s["pred"][i]) for s in samples.values()]
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


def build_report(ref: str, out_dir: str | Path | None = None, log: bool = True) -> tuple[Path, pd.DataFrame]:
    """Writes the report files for an ablation (parent run id or name) and logs them to the parent."""
    record = collect(ref)
    out = Path(out_dir or Path("reports") / record.name)
    out.mkdir(parents=True, exist_ok=True)
    table = ablation_table(record)
    if table.empty:
        (out / "report.md").write_text(f"# Ablation `{record.name}`\n\nNo finished runs yet.\n")
        return out, table
    table.to_csv(out / "report.csv", index=False, float_format="%.6g")
    (out / "report.md").write_text(markdown(record, table))
    deltas_plot(table, out / "deltas.png")
    per_class_plot(table, out / "per_class.png")
    masks_plot(record, out / "masks.png")
    if log:
        client = MlflowClient()
        for name in REPORT_FILES:
            if (out / name).exists():
                client.log_artifact(record.parent_run_id, str(out / name), "report")
        summary = {"baseline_val_miou": float(table.iloc[0]["mean"]),
                   "n_better": float((table["verdict"] == "better").sum()),
                   "n_worse": float((table["verdict"] == "worse").sum()),
                   "failed_runs": float(table["n_failed"].sum())}
        for _, r in table.iloc[1:].iterrows():
            if np.isfinite(r["delta"]):
                summary[_metric_key(f"delta.{r['variant']}")] = float(r["delta"])
        for k, v in summary.items():
            client.log_metric(record.parent_run_id, k, v)
    return out, table


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
