"""``ablate ablation {run,report}``, ``ablate compare`` and ``ablate worker``."""

from __future__ import annotations

import argparse

from ablate.cli import types as T


def register(sub: argparse._SubParsersAction) -> None:
    ab = sub.add_parser("ablation", help="run an ablation (baseline, variants, paired seeds) and report it")
    asub = ab.add_subparsers(dest="ablation_command", metavar="ACTION", required=True)

    p = asub.add_parser("run", help="queue and run every (arm, seed); resumes if run again")
    p.add_argument("file", help="ablation YAML (e.g. ablations/skip_connections.yaml)")
    p.add_argument("overrides", nargs="*", help="dotted spec overrides applied to every arm (e.g. train.epochs=2)")
    _seed_options(p)
    p.add_argument("--screening", action="store_true",
                   help="run even if the design cannot reach a verdict; the report is labelled screening")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: sqlite under mlruns/)")
    p.add_argument("--workers", type=T.workers, default=1,
                   help="worker processes (default: 1, in this process; 0: queue the runs only, for "
                        "`ablate worker`s elsewhere)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI")
    p.add_argument("--offline-ok", action="store_true", help="if the tracking server is unreachable, log locally")
    p.add_argument("--report-dir", default=None, help="where to write the report (default: reports/NAME)")
    p.set_defaults(func=cmd_run)

    p = asub.add_parser("report", help="rebuild the report of an ablation from MLflow alone")
    p.add_argument("ref", help="parent run id or ablation name")
    p.add_argument("--out", default=None, help="output folder (default: reports/NAME)")
    p.add_argument("--tracking-uri", default=None)
    p.set_defaults(func=cmd_report)

    for name, text in (("plan", "print what an ablation costs and can conclude (reachable p, seeds needed)"),
                       ("show", "print the arms an ablation file expands to, and its plan, without running")):
        p = asub.add_parser(name, help=text)
        p.add_argument("file")
        p.add_argument("overrides", nargs="*")
        _seed_options(p)
        p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (the store that sizes the seeds)")
        p.add_argument("--no-store", action="store_true", help="do not read the tracking store for the seed sd")
        p.set_defaults(func=cmd_show, arms=name == "show")

    p = sub.add_parser("compare", help="print the ablation table of one or several ablations")
    p.add_argument("refs", nargs="+", help="ablation names or parent run ids")
    p.add_argument("--tracking-uri", default=None)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("worker", help="take queued trials of an ablation or study until none are left")
    p.add_argument("--study", required=True, help="queue name (ablation.NAME for ablations, the study name)")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: sqlite under mlruns/)")
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--max-trials", type=T.positive_int, default=None)
    p.add_argument("--offline-ok", action="store_true", help="if the tracking server is unreachable, log locally")
    p.add_argument("--quiet", action="store_true", help="no Keras progress output")
    p.add_argument("--heartbeat-file", default=None, metavar="PATH",
                   help="rewrite PATH at every epoch and trial, for liveness and readiness probes (Kubernetes); "
                        "removed when the worker stops")
    p.set_defaults(func=cmd_worker)


def _seed_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", type=T.positive_int, default=None,
                   help="paired seeds: a fixed design (overrides the file)")
    p.add_argument("--until-decided", action="store_true",
                   help="run seeds in rounds until every variant's verdict is settled (sequential design)")
    p.add_argument("--max-seeds", type=T.positive_int, default=None, help="most seeds per arm with --until-decided")


def _load(args: argparse.Namespace):  # noqa: ANN202 - an Ablation; ablate.ablation stays a lazy import
    from ablate.ablation.design import load_ablation

    return load_ablation(args.file, seeds=args.seeds, overrides=args.overrides, until_decided=args.until_decided,
                         max_seeds=args.max_seeds)


def cmd_run(args: argparse.Namespace) -> int:
    from ablate import tracking
    from ablate.ablation.orchestrate import run_ablation
    from ablate.ablation.plan import check, make_plan

    ab = _load(args)
    plan = make_plan(ab)
    check(plan, args.screening)  # before any run or store is touched
    ab.screening = args.screening and not plan.reachable
    uri = tracking.setup(args.tracking_uri, offline_ok=args.offline_ok)
    run_ablation(ab, args.storage, args.workers, args.report_dir, uri)  # workers log where this process does
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ablate import tracking
    from ablate.ablation.report import build_report, summary_lines, terminal_table

    tracking.setup(args.tracking_uri)
    out, table = build_report(args.ref, args.out)
    print(terminal_table(table))
    for line in summary_lines(table):
        print(line)
    print(f"wrote {out}/report.md, report.html, report.csv and the figures (and logged them to the parent run)")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from ablate.ablation.plan import make_plan, store_estimate

    ab = _load(args)
    if args.arms:
        for arm in ab.arms:
            print(f"  {arm.key:<32} spec_hash {arm.spec.spec_hash}{'  (baseline)' if arm.is_baseline else ''}")
    estimate = None
    if not args.no_store:
        from ablate import tracking

        tracking.setup(args.tracking_uri)
        estimate = store_estimate(ab)
    plan = make_plan(ab, estimate)
    print(plan.text())
    return 0 if plan.reachable or args.arms else 1  # `plan` fails on a refused design, for scripts


def cmd_compare(args: argparse.Namespace) -> int:
    from ablate import tracking
    from ablate.ablation.collect import collect
    from ablate.ablation.report import ablation_table, terminal_table

    tracking.setup(args.tracking_uri)
    for ref in args.refs:
        record = collect(ref)
        print(f"== {record.name} (parent run {record.parent_run_id})")
        print(terminal_table(ablation_table(record)))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from ablate import tracking
    from ablate.ablation.runner import ARMS
    from ablate.campaign import work_on
    from ablate.study.runner import study_trials

    tracking.setup(args.tracking_uri, offline_ok=args.offline_ok)
    ran = work_on(args.study, args.storage, kinds=[ARMS, study_trials()], max_trials=args.max_trials,
                  verbose=0 if args.quiet else 2, heartbeat_file=args.heartbeat_file)
    print(f"worker: ran {ran} trial(s); no queued work left")
    return 0
