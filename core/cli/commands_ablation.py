"""``ablate ablation {run,report}``, ``ablate compare`` and ``ablate worker``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    ab = sub.add_parser("ablation", help="run an ablation (baseline, variants, paired seeds) and report it")
    asub = ab.add_subparsers(dest="ablation_command", metavar="ACTION", required=True)

    p = asub.add_parser("run", help="queue and run every (arm, seed); resumes if run again")
    p.add_argument("file", help="ablation YAML (e.g. ablations/skip_connections.yaml)")
    p.add_argument("overrides", nargs="*", help="dotted spec overrides applied to every arm (e.g. train.epochs=2)")
    p.add_argument("--seeds", type=int, default=None, help="number of paired seeds (overrides the file)")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: sqlite under mlruns/)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default: 1, in this process)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI")
    p.add_argument("--offline-ok", action="store_true", help="if the tracking server is unreachable, log locally")
    p.add_argument("--report-dir", default=None, help="where to write the report (default: reports/NAME)")
    p.set_defaults(func=cmd_run)

    p = asub.add_parser("report", help="rebuild the report of an ablation from MLflow alone")
    p.add_argument("ref", help="parent run id or ablation name")
    p.add_argument("--out", default=None, help="output folder (default: reports/NAME)")
    p.add_argument("--tracking-uri", default=None)
    p.set_defaults(func=cmd_report)

    p = asub.add_parser("show", help="print the arms an ablation file expands to, without running")
    p.add_argument("file")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--seeds", type=int, default=None)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("compare", help="print the ablation table of one or several ablations")
    p.add_argument("refs", nargs="+", help="ablation names or parent run ids")
    p.add_argument("--tracking-uri", default=None)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("worker", help="take queued trials of an ablation or study until none are left")
    p.add_argument("--study", required=True, help="queue name (ablation.NAME for ablations, the study name)")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: sqlite under mlruns/)")
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--max-trials", type=int, default=None)
    p.add_argument("--offline-ok", action="store_true", help="if the tracking server is unreachable, log locally")
    p.add_argument("--quiet", action="store_true", help="no Keras progress output")
    p.set_defaults(func=cmd_worker)


def _validate_workers(n: int) -> None:
    from core.errors import AblateError

    if n < 1:
        raise AblateError(f"--workers must be >= 1, got {n}.")


def cmd_run(args: argparse.Namespace) -> int:
    from core import tracking
    from core.ablation.design import load_ablation
    from core.ablation.orchestrate import run_ablation

    _validate_workers(args.workers)
    ab = load_ablation(args.file, seeds=args.seeds, overrides=args.overrides)
    uri = tracking.setup(args.tracking_uri, offline_ok=args.offline_ok)
    run_ablation(ab, args.storage, args.workers, args.report_dir, uri)  # workers log where this process does
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from core import tracking
    from core.ablation.report import build_report, terminal_table

    tracking.setup(args.tracking_uri)
    out, table = build_report(args.ref, args.out)
    print(terminal_table(table))
    print(f"wrote {out}/report.md, report.csv, deltas.png, per_class.png, masks.png "
          "(and logged them to the parent run)")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from core.ablation.design import load_ablation

    ab = load_ablation(args.file, seeds=args.seeds, overrides=args.overrides)
    print(f"{ab.name}: design {ab.design}, seeds {ab.seeds}")
    for arm in ab.arms:
        print(f"  {arm.key:<32} spec_hash {arm.spec.spec_hash}{'  (baseline)' if arm.is_baseline else ''}")
    print(f"{len(ab.arms) * len(ab.seeds)} runs")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from core import tracking
    from core.ablation.collect import collect
    from core.ablation.report import ablation_table, terminal_table

    tracking.setup(args.tracking_uri)
    for ref in args.refs:
        record = collect(ref)
        print(f"== {record.name} (parent run {record.parent_run_id})")
        print(terminal_table(ablation_table(record)))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from core import tracking
    from core.worker import work

    tracking.setup(args.tracking_uri, offline_ok=args.offline_ok)
    ran = work(args.study, args.storage, max_trials=args.max_trials, verbose=0 if args.quiet else 2)
    print(f"worker: ran {ran} trial(s); no queued work left")
    return 0
