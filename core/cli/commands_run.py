"""``ablate run``, ``ablate spec``, ``ablate blocks`` and ``ablate ui``."""

from __future__ import annotations

import argparse
import json
import os
import sys

from ablate.cli import types as T


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
    p.add_argument("--build", action="store_true",
                   help="also run the model's own checks by instantiating its blocks (loads TensorFlow)")
    p.set_defaults(func=cmd_spec)

    p = sub.add_parser("blocks", help="list every registry and its blocks, and the model's slots")
    p.set_defaults(func=cmd_blocks)

    p = sub.add_parser("ui", help="MLflow UI over the local store on 127.0.0.1",
                       description="Serves the MLflow UI over the local store until stopped (Ctrl-C, SIGTERM); "
                                   "the URL is printed once the server answers. The server has no "
                                   "authentication: it listens on loopback unless --host and --insecure say "
                                   "otherwise.")
    p.add_argument("--port", type=T.port, default=5000)
    p.add_argument("--host", default="127.0.0.1",
                   help="bind address (default: loopback only; any other needs --insecure)")
    p.add_argument("--insecure", action="store_true",
                   help="allow a --host beyond this machine, although the server has no authentication")
    p.set_defaults(func=cmd_ui)


def cmd_run(args: argparse.Namespace) -> int:
    from ablate import tracking
    from ablate.names import check_name
    from ablate.resilience import redact_text
    from ablate.runner import run_spec
    from ablate.spec import load_spec

    check_name(args.experiment, "--experiment")  # it becomes an MLflow experiment: refused before one is made
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
    from ablate.spec import check_buildable, load_spec

    spec = load_spec(args.spec, args.overrides)
    if args.build:
        check_buildable(spec)
    print(json.dumps(spec.to_dict(), indent=2))
    print(f"# spec_hash: {spec.spec_hash}", file=sys.stderr)
    return 0


def cmd_blocks(args: argparse.Namespace) -> int:
    from ablate.registry import ALL_REGISTRIES, BRANCH

    for kind, registry in ALL_REGISTRIES.items():
        print(f"{kind}:")
        for name in registry.names():
            print(f"  {name:<16} {registry.summary(name)}")
    print("slots:")  # every U-Net branch's (model, model.global_branch): registry, role, default, blocks
    for slot in BRANCH.slots:
        print(f"  {slot.key:<16} {slot.describe()}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from ablate import serve

    serve.check_host(args.host, args.insecure, "the MLflow UI")
    serve.check_port_free(args.host, args.port)
    from ablate import tracking

    uri = tracking.default_tracking_uri()
    artifacts = (tracking.LOCAL_STORE / "artifacts").resolve()
    log = tracking.LOCAL_STORE / "ui.log"
    # One worker serves one user and starts fastest; no job runner (seven processes for GenAI jobs we do not use).
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--workers", "1",
           "--default-artifact-root", artifacts.as_uri(), "--host", args.host, "--port", str(args.port)]
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
    url = serve.local_url(args.host, args.port)
    serve.serve_child(cmd, url + "health", log, "the MLflow server", env=env,
                      announce=f"MLflow UI: {url}#/experiments?workflowType=machine_learning  "
                               f"(store: {uri}; server log: {log}; Ctrl-C to stop)")
