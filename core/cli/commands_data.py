"""``ablate data {synth,inspect,clean,import-ai4mars,import-folder}``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ablate.cli import types as T


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="generate, inspect, clean and import data sets")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    p = dsub.add_parser("synth", help="write a synthetic Mars terrain set (the embedded default), or one for a task")
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--task", metavar="FILE", help="YAML/JSON task (or a spec with a task: section): a synthetic set "
                                                  "for it in the images/masks layout instead of Mars terrain")
    p.add_argument("--n", type=T.positive_int, default=1200, help="training pairs (default: %(default)s)")
    p.add_argument("--n-test", type=T.non_negative_int, default=200, help="test images (default: %(default)s)")
    p.add_argument("--seed", type=T.seed, default=0)
    p.set_defaults(func=cmd_synth)

    p = dsub.add_parser("inspect", help="the task, shapes, dtypes, class shares, duplicate-mask groups")
    p.add_argument("path")
    p.add_argument("--task", metavar="FILE", help="YAML/JSON task (or a spec with a task: section) to check the "
                                                  "data against; default: the task inferred from the file")
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

    p = dsub.add_parser("import-folder", help="pair image and mask files (PNG, JPEG, TIFF) by name into an .npz")
    p.add_argument("images_dir", metavar="IMAGES_DIR")
    p.add_argument("masks_dir", metavar="MASKS_DIR")
    p.add_argument("--out", required=True, help="output .npz (images/masks layout)")
    p.add_argument("--size", metavar="HxW", help="resize every pair (area/bilinear for images, nearest for masks)")
    p.add_argument("--label-map", metavar="FILE|JSON",
                   help="mask value or 'r,g,b' colour -> label, as a JSON/YAML file or inline JSON")
    colour = p.add_mutually_exclusive_group()
    colour.add_argument("--grey", dest="channels", action="store_const", const=1, help="read images as grey")
    colour.add_argument("--rgb", dest="channels", action="store_const", const=3, help="read images as RGB")
    p.add_argument("--test-dir", metavar="DIR", help="folder of unlabelled test images")
    p.add_argument("--classes", metavar="NAMES", type=_names,
                   help="class names by label, comma-separated (soil,bedrock,sand): stored in the file, so the task "
                        "inferred from it names its classes (default: class_0, class_1, ...)")
    p.set_defaults(func=cmd_import_folder)


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",")]


def cmd_synth(args: argparse.Namespace) -> int:
    from ablate.data import generate, write_npz

    if args.task is not None:
        from ablate.data.infer import task_from_file
        from ablate.data.io import save_npz_atomic
        from ablate.data.synth_task import generate_task

        task = task_from_file(args.task)
        save_npz_atomic(Path(args.out), generate_task(task, args.n, n_test=args.n_test, seed=args.seed))
        print(f"wrote {args.out}: {args.n} training pairs, {args.n_test} test images (seed {args.seed}); "
              f"task: {task.describe()}")
        return 0
    write_npz(Path(args.out), generate(args.n, args.seed, n_test=args.n_test))
    print(f"wrote {args.out}: {args.n} training pairs, {args.n_test} test images (seed {args.seed})")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from ablate.data import format_summary, inspect_npz

    task = None
    if args.task is not None:
        from ablate.data.infer import task_from_file

        task = task_from_file(args.task)
    print(format_summary(inspect_npz(args.path, task=task)))
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


def cmd_import_folder(args: argparse.Namespace) -> int:
    from ablate.data.folder import import_folder, parse_size
    from ablate.data.labelmap import parse_label_map

    size = None if args.size is None else parse_size(args.size)
    result = import_folder(args.images_dir, args.masks_dir, args.out, size=size,
                           label_map=parse_label_map(args.label_map), channels=args.channels, test_dir=args.test_dir,
                           classes=args.classes)
    print(f"wrote {result.path}: {result.pairs} pairs, {result.test_images} test images")
    print(f"task: {result.task.describe()}")
    return 0
