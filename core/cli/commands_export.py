"""``ablate export`` and ``ablate predict``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ablate.cli import types as T


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export the best model of a study, ablation, experiment or run",
                       description="Choose a run, write model.keras, saved_model/, model.tflite, spec.json, "
                                   "model_card.md and preprocessing.json to --out, check that every format "
                                   "reproduces the trained model, and register it in MLflow with alias champion.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--study", metavar="NAME", help="the best FINISHED trial of this study")
    src.add_argument("--ablation", metavar="NAME",
                     help="the variant with the best mean over seeds, if it beats the runner-up seed by seed "
                          "(paired test, p < 0.05); its seed closest to that mean")
    src.add_argument("--run", metavar="RUN_ID", help="this MLflow run")
    src.add_argument("--best-of", metavar="EXPERIMENT", help="the FINISHED run with the best metric")
    p.add_argument("--metric", default="best_val_miou", help="selection metric (default: %(default)s)")
    p.add_argument("--trial", type=T.non_negative_int, default=None, metavar="N",
                   help="with --study: export this trial number")
    p.add_argument("--pareto-index", type=T.non_negative_int, default=None, metavar="K",
                   help="with a two-objective --study: the K-th Pareto trial, best metric first (0 = default)")
    p.add_argument("--cost", default=None, choices=("latency_ms_per_image", "params"),
                   help="with --pareto-index: the second objective (default: read from the study's parent run)")
    p.add_argument("--force", action="store_true",
                   help="with --ablation: export the best-mean variant even when it is not significantly better "
                        "than the runner-up (the model card says so)")
    p.add_argument("--name", default=None, help="registered model name (default: the study/ablation/experiment name)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR", help="export folder (default: exports/NAME)")
    p.add_argument("--refit", action="store_true", help="retrain the chosen spec on train+validation first")
    p.add_argument("--tracking-uri", default=None, metavar="URI",
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or mlruns/mlflow.db)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("predict", help="predict masks for an .npz with an exported model",
                       description="Stream an .npz's images through a model; write OUT.npz with 'masks' "
                                   "(N, H, W) uint8 at the model's task's size, and optionally colour overlays "
                                   "and (Mars course task only) the course submission CSV.")
    p.add_argument("--model", required=True,
                   help="an export folder, a .keras file, a SavedModel folder, models:/NAME@champion, "
                        "runs:/RUN_ID/PATH or an MLflow run id; only model.keras (Keras safe mode) or a "
                        "SavedModel is loaded, never a logged model's Python code")
    p.add_argument("--data", required=True, type=Path,
                   help="input .npz: the course layout (test_set, training_set) or images/masks "
                        "(test_images, images), at the model's task's size and channels")
    p.add_argument("--split", choices=("test", "train"), default="test",
                   help="test: test_set or test_images; train: training_set or images (default: %(default)s)")
    p.add_argument("--out", required=True, type=Path, help="output .npz with 'masks' (N, H, W) uint8")
    p.add_argument("--submission", type=Path, default=None,
                   help="also write the Mars course submission CSV (a model of the Mars course task only)")
    p.add_argument("--png", type=Path, default=None, help="also write colour overlays into this folder")
    p.add_argument("--batch-size", type=T.positive_int, default=64, help="images per batch (default: %(default)s)")
    p.add_argument("--tracking-uri", default=None, help="for models:/ and runs:/ URIs and run ids")
    p.set_defaults(func=cmd_predict)


def cmd_export(args: argparse.Namespace) -> int:
    from ablate import tracking
    from ablate.errors import AblateError
    from ablate.export import Selector, export_model
    from ablate.names import check_name

    if (args.trial is not None or args.pareto_index is not None) and not args.study:
        raise AblateError("--trial and --pareto-index apply to --study only.")
    if args.trial is not None and args.pareto_index is not None:
        raise AblateError("Give --trial or --pareto-index, not both.")
    if args.force and not args.ablation:
        raise AblateError("--force applies to --ablation only (it overrides the winner-vs-runner-up check).")
    if args.name is not None:  # before any run is chosen, model built or version registered
        check_name(args.name, "--name")
    uri = tracking.setup(args.tracking_uri)
    sel = Selector(study=args.study, ablation=args.ablation, run_id=args.run, best_of=args.best_of,
                   metric=args.metric, trial=args.trial, pareto_index=args.pareto_index, cost=args.cost,
                   force=args.force)
    result = export_model(sel, out=args.out, name=args.name, refit=args.refit, tracking_uri=uri)
    print(f"chosen: {result.choice.reason}")
    if result.choice.evidence:
        print(f"evidence: {result.choice.evidence}")
    print(f"task: {result.task.describe()}")
    for check in result.checks:
        print(f"  {check.line()}")
    print(f"exported to {result.out_dir}/ (model.keras, saved_model/, model.tflite, model_card.md, ...)")
    print(f"registered models:/{result.model_name}/{result.version}, alias models:/{result.model_name}@champion")
    print(tracking.run_link(uri, result.export_run_id))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from ablate.export import load_predictor, predict_file
    from ablate.export.loading import RUN_ID, STORE_SCHEMES
    from ablate.export.predict import check_request

    check_request(args.data, args.out, args.split, args.batch_size)  # before the (slow) model load; the task's
    # size, channels and the CSV's Mars-only rule are checked once the model (and so its task) is loaded
    if args.model.startswith(STORE_SCHEMES) or (RUN_ID.fullmatch(args.model) and not Path(args.model).exists()):
        from ablate import tracking

        tracking.setup(args.tracking_uri)  # registry URIs and run ids live in the tracking store
    predictor = load_predictor(args.model)
    result = predict_file(predictor, args.data, args.out, split=args.split, submission=args.submission,
                          png=args.png, batch_size=args.batch_size)
    t = predictor.task
    print(f"{result.images} images in {result.seconds:.1f} s -> {result.out} (masks (N, {t.height}, {t.width}) uint8, "
          f"labels 0-{t.num_classes - 1}: {', '.join(t.classes)})")
    if result.submission:
        print(f"submission CSV: {result.submission}")
    if result.png_dir:
        print(f"overlays: {result.png_dir}/")
    return 0
