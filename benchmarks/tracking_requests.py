"""MLflow requests per epoch of a run, counted at the HTTP client against a real ``mlflow server``.

A tracked run (``ablate.runner.run_spec``, what every trial of an ablation or a study runs) is
trained twice on a tiny model, for ``--epochs`` and for twice as many, against an ``mlflow server``
on a fresh PostgreSQL database (artifacts proxied, as in team mode). Every request the process
sends is counted by method and path at ``requests.Session.send`` (the transport under MLflow's
client, the background delivery thread's included; a retried request counts again). Per epoch
= (requests of the long run - requests of the short run) / the extra epochs; the rest of a run is
its fixed cost. The spec logs a mask grid every epoch (``tracking.mask_every=1``), the default.

Run it from the project root with PostgreSQL at 127.0.0.1:5432 (trust auth, user postgres):

    .venv/bin/python benchmarks/tracking_requests.py [--epochs 2]

Writes ``benchmarks/results/tracking_requests.json`` and prints it.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from common import ROOT, data_file, machine

sys.path.insert(0, str(ROOT))

OVERRIDES = ["model.filters=4", "model.depth=2", "train.batch_size=16", "data.limit=64", "augment=[]",
             "train.early_stopping=0", "tracking.mask_every=1"]


@contextmanager
def counted_requests() -> Iterator[collections.Counter[str]]:
    """Counts every HTTP request this process sends, as ``METHOD /path`` (run ids and artifact paths folded)."""
    import requests

    counts: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    send = requests.Session.send

    def counting(self: Any, request: Any, **kwargs: Any) -> Any:
        path = re.sub(r"^https?://[^/]+", "", request.url.split("?", 1)[0])
        path = re.sub(r"(/mlflow-artifacts/artifacts)/.*", r"\1/...", path)
        with lock:
            counts[f"{request.method} {path}"] += 1
        return send(self, request, **kwargs)

    requests.Session.send = counting
    try:
        yield counts
    finally:
        requests.Session.send = send


def one_run(epochs: int, data: Path, experiment: str) -> dict[str, int]:
    """Requests sent by one tracked run of ``epochs`` epochs (its delivery finished before it returns)."""
    from ablate.runner import run_spec
    from ablate.spec import load_spec

    spec = load_spec(str(ROOT / "ablations/presets/unet-baseline.yaml"),
                     [*OVERRIDES, f"train.epochs={epochs}", f"data.path={data}"])
    with counted_requests() as counts:
        run_spec(spec, experiment=experiment, verbose=0)
    return dict(counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2, help="the short run's epochs (the long run: twice)")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT / "deploy"))
    import team_demo as td

    from ablate import tracking

    short, long_ = args.epochs, 2 * args.epochs
    with tempfile.TemporaryDirectory() as tmp, td.database(f"ablate_requests_{uuid.uuid4().hex[:8]}") as backend, \
            td.MlflowServer(backend, Path(tmp) / "server") as server:
        tracking.setup(server.uri)
        data = data_file(None, Path(tmp), n=200)
        one_run(1, data, "requests")  # TensorFlow's first tracing and the experiment's creation, not counted
        runs = {n: one_run(n, data, "requests") for n in (short, long_)}
    keys = sorted(set(runs[short]) | set(runs[long_]))
    extra = long_ - short
    per_epoch = {k: round((runs[long_].get(k, 0) - runs[short].get(k, 0)) / extra, 2) for k in keys}
    per_epoch = {k: v for k, v in per_epoch.items() if v}
    total_short = sum(runs[short].values())
    epoch_total = round((sum(runs[long_].values()) - total_short) / extra, 2)
    result = {
        "benchmark": "tracking_requests",
        "setup": {"spec": "ablations/presets/unet-baseline.yaml " + " ".join(OVERRIDES),
                  "server": "mlflow server on PostgreSQL, proxied artifacts, 1 server worker",
                  "counted": "requests.Session.send in the training process (delivery thread included)"},
        "runs": {str(n): {"epochs": n, "requests": sum(runs[n].values()), "by_endpoint": runs[n]} for n in runs},
        "per_epoch": {"requests": epoch_total, "by_endpoint": per_epoch},
        "fixed_per_run": round(total_short - epoch_total * short, 1),
        "machine": machine(),
    }
    out = ROOT / "benchmarks" / "results" / "tracking_requests.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
