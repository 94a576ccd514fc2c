"""``ablate doctor``: list (and repair) runs and trials left inconsistent by crashes."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="list runs and trials left RUNNING by crashes; --repair ends them")
    p.add_argument("--repair", action="store_true", help="fix what is found (default: only list it)")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: $ABLATE_STORAGE or mlruns/)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, mlruns/)")
    p.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    """Exit status 0: nothing found or all repaired; 1: problems found and not repaired."""
    from mlflow.tracking import MlflowClient

    from ablate import tracking
    from ablate.doctor import diagnose
    from ablate.resilience import redact_text
    from ablate.storage import open_storage, resolve_storage_url

    uri = tracking.setup(args.tracking_uri)
    url = resolve_storage_url(args.storage)
    findings = diagnose(open_storage(url), MlflowClient())
    print(f"checked {redact_text(url)} and {redact_text(uri)}: {len(findings)} problem(s)")
    for finding in findings:
        if args.repair:
            finding.repair()
            print(f"  repaired {finding.line()}")
        else:
            print(f"  {finding.line()}")
    if findings and not args.repair:
        print("run `ablate doctor --repair` with the same options to fix them")
        return 1
    return 0
