"""``ablate data {synth,inspect,clean,import-ai4mars}``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ablate.cli import types as T


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="generate, inspect, clean and import data sets")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    p = dsub.add_parser("synth", help="write a synthetic Mars terrain set (the embedded default)")
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--n", type=T.positive_int, default=1200, help="training pairs (default: %(default)s)")
    p.add_argument("--n-test", type=T.non_negative_int, default=200, help="test images (default: %(default)s)")
    p.add_argument("--seed", type=T.seed, default=0)
    p.set_defaults(func=cmd_synth)

    p = dsub.add_parser("inspect", help="shapes, dtypes, class shares, duplicate-mask groups")
    p.add_argument("path")
    p.set_defaults(func=cmd_inspect)

    p = dsub.add_parser("clean", help="remove training pairs that share one outlier mask")
    p.add_argument("path")
    p.add_argument("--out", required=True, help="cleaned .npz")
    p.add_argument("--report", required=True, help="JSON report of removed indices and reasons")
    p.set_defaults(func=cmd_clean)

    p = dsub.add_parser("import-ai4mars", help="convert the public AI4Mars layout to this format")
    p.add_argument("src", help="folder with AI4Mars images and label PNGs")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=T.seed, default=0)
    p.set_defaults(func=cmd_import)


def cmd_synth(args: argparse.Namespace) -> int:
    from ablate.data import generate, write_npz

    write_npz(Path(args.out), generate(args.n, args.seed, n_test=args.n_test))
    print(f"wrote {args.out}: {args.n} training pairs, {args.n_test} test images (seed {args.seed})")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from ablate.data import format_summary, inspect_npz

    print(format_summary(inspect_npz(args.path)))
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    from ablate.data import clean_npz

    report = clean_npz(args.path, args.out, args.report)
    outliers = sum(1 for g in report.groups if g.get("outlier"))
    print(f"removed {len(report.removed)} training pairs in {outliers} outlier group(s); "
          f"wrote {args.out} and {args.report}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from ablate.data import import_ai4mars

    result = import_ai4mars(args.src, args.out, seed=args.seed)
    print(f"wrote {args.out}" + (f": {result}" if result is not None else ""))
    return 0
