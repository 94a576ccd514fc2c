"""``ablate run``, ``ablate spec``, ``ablate blocks`` and ``ablate ui``."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="train one model from a spec, tracked in MLflow")
    p.add_argument("spec", help="spec YAML file (e.g. ablations/presets/unet-baseline.yaml)")
    p.add_argument("overrides", nargs="*", help="dotted overrides key=value (e.g. train.epochs=3)")
    p.add_argument("--experiment", default="ablate-runs", help="MLflow experiment name (default: %(default)s)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or mlruns/mlflow.db)")
    p.add_argument("--offline-ok", action="store_true", help="if the tracking server is unreachable, log locally")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("spec", help="print the resolved, validated spec as JSON")
    p.add_argument("spec")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=cmd_spec)

    p = sub.add_parser("blocks", help="list every registry and its blocks")
    p.set_defaults(func=cmd_blocks)

    p = sub.add_parser("ui", help="MLflow UI over the local store on 127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    p.set_defaults(func=cmd_ui)


def cmd_run(args: argparse.Namespace) -> int:
    from core import tracking
    from core.resilience import redact_text
    from core.runner import run_spec
    from core.spec import load_spec

    spec = load_spec(args.spec, args.overrides)
    uri = tracking.setup(args.tracking_uri, offline_ok=args.offline_ok)
    outcome = run_spec(spec, experiment=args.experiment)
    s = outcome.summary
    print(f"run {outcome.run_id} FINISHED: best val mIoU {s['best_val_miou']:.4f} at epoch {int(s['best_epoch'])}, "
          f"{int(s['params'])} params, {s['train_time_s']:.1f} s")
    print(f"tracking: {redact_text(uri)}")
    print(tracking.run_link(uri, outcome.run_id))
    return 0


def cmd_spec(args: argparse.Namespace) -> int:
    from core.spec import load_spec

    spec = load_spec(args.spec, args.overrides)
    print(json.dumps(spec.to_dict(), indent=2))
    print(f"# spec_hash: {spec.spec_hash}", file=sys.stderr)
    return 0


def cmd_blocks(args: argparse.Namespace) -> int:
    from core.registry import ALL_REGISTRIES

    for kind, registry in ALL_REGISTRIES.items():
        print(f"{kind}:")
        for name in registry.names():
            print(f"  {name:<16} {registry.summary(name)}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from core import tracking

    uri = tracking.default_tracking_uri()
    artifacts = (tracking.LOCAL_STORE / "artifacts").resolve()
    print(f"MLflow UI: http://{args.host}:{args.port}/#/experiments?workflowType=machine_learning  (store: {uri})")
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
           "--default-artifact-root", artifacts.as_uri(), "--host", args.host, "--port", str(args.port)]
    return subprocess.call(cmd, env={**os.environ})

