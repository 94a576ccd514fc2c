"""``ablate study {run,report,show}`` and ``ablate dashboard``."""

from __future__ import annotations

import argparse

from ablate.cli import types as T


def register(sub: argparse._SubParsersAction) -> None:
    st = sub.add_parser("study", help="search the block space with Optuna (pruning, many workers), tracked in MLflow")
    ssub = st.add_subparsers(dest="study_command", metavar="ACTION", required=True)

    p = ssub.add_parser("run", help="create or resume a study and run it until its trial budget is used")
    p.add_argument("file", help="study YAML (e.g. studies/architecture.yaml)")
    p.add_argument("overrides", nargs="*", help="dotted overrides of the base spec (e.g. data.limit=500)")
    p.add_argument("--trials", type=T.positive_int, default=None,
                   help="trial budget over all workers (overrides the file)")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: sqlite under mlruns/; "
                                                   "postgresql://... for teams)")
    p.add_argument("--workers", type=T.workers, default=1,
                   help="worker processes (default 1: in this process; 0: create the study only)")
    p.add_argument("--timeout", type=T.positive_float, default=None, help="start no trial after this many seconds")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI")
    p.add_argument("--report-dir", default=None, help="where to write the report (default: reports/NAME)")
    p.set_defaults(func=cmd_run)

    p = ssub.add_parser("report", help="rebuild a study's report (plots, trials.csv, summary) from its storage")
    p.add_argument("name", help="study name (the file's name: key)")
    p.add_argument("--storage", default=None)
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--out", default=None, help="output folder (default: reports/NAME)")
    p.set_defaults(func=cmd_report)

    p = ssub.add_parser("show", help="validate a study file and print its space, without running")
    p.add_argument("file")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("dashboard", help="optuna-dashboard for the study storage, on 127.0.0.1",
                       description="Serves optuna-dashboard over the study storage until stopped (Ctrl-C, "
                                   "SIGTERM); the URL is printed once it answers. The dashboard has no "
                                   "authentication: it listens on loopback unless --host and --insecure say "
                                   "otherwise.")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: sqlite under mlruns/)")
    p.add_argument("--port", type=T.port, default=8080)
    p.add_argument("--host", default="127.0.0.1",
                   help="bind address (default: loopback only; any other needs --insecure)")
    p.add_argument("--insecure", action="store_true",
                   help="allow a --host beyond this machine, although the dashboard has no authentication")
    p.set_defaults(func=cmd_dashboard)


def cmd_run(args: argparse.Namespace) -> int:
    from ablate import tracking
    from ablate.study.files import load_study_file
    from ablate.study.orchestrate import run_study

    plan = load_study_file(args.file, args.overrides, trials=args.trials)
    tracking.setup(args.tracking_uri)
    run_study(plan, args.storage, args.workers, args.timeout, args.tracking_uri, args.report_dir)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ablate import tracking
    from ablate.study.orchestrate import report_study

    tracking.setup(args.tracking_uri)
    out, summary = report_study(args.name, args.storage, args.out)
    print(summary)
    print(f"wrote {out}/ (summary.md, trials.csv, importances.csv and plots; also logged to the parent run)")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from ablate.study.files import check_space, load_study_file

    plan = load_study_file(args.file, args.overrides)
    objectives = ", ".join(f"{o.metric} ({o.direction})" for o in plan.objectives)
    print(f"{plan.name}: {plan.n_trials} trials of {plan.base['train']['epochs']} epochs; objectives {objectives}; "
          f"sampler {plan.sampler}; pruner {plan.pruner}")
    for key, param in plan.params.items():
        when = f"  when {param.when}" if param.when else ""
        values = param.labels() if param.type == "categorical" else " .. ".join(map(str, param.labels()))
        print(f"  {key:<40} {param.type:<11} {values}{' (log)' if param.log else ''}{when}")
    print(f"{check_space(plan)} specs checked: every choice is valid where it is active")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from ablate import serve

    serve.check_host(args.host, args.insecure, "optuna-dashboard")
    from ablate.errors import AblateError

    try:
        from optuna_dashboard import wsgi
    except ImportError:
        raise AblateError("`ablate dashboard` needs optuna-dashboard, part of the team extra: "
                         "pip install -e '.[team]' (or `make team-demo`).") from None

    from ablate.storage import open_storage, redact, resolve_storage_url

    url = resolve_storage_url(args.storage)
    app = wsgi(open_storage(url))  # ours creates the tables of a new store; a bad URL is one line, before listening
    serve.serve_wsgi(app, args.host, args.port, "optuna-dashboard",
                     announce=f"optuna-dashboard on {serve.local_url(args.host, args.port)} for {redact(url)} "
                              f"(Ctrl-C to stop)")
