"""Entry point: builds the parser from the command modules and turns errors into one line."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from typing import NoReturn

from ablate import signals
from ablate.cli import commands_ablation, commands_data, commands_export, commands_run, commands_study, commands_team

# Each module adds its sub-commands with register(subparsers).
COMMAND_MODULES = [commands_run, commands_data, commands_ablation, commands_export, commands_team, commands_study]


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one ``ablate: error:`` line (with a pointer to ``--help``),
    like every other error of the CLI, instead of the usage block and a second line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"ablate: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="ablate",
        description="Ablation studies and architecture search for image segmentation (Mars terrain by default), "
        "tracked in MLflow.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


@contextlib.contextmanager
def _debug_environment(debug: bool) -> Iterator[None]:
    """Under ``--debug``, TensorFlow's start-up lines too (``ablate.quiet``; set before anything imports
    it, and inherited by worker processes). Restored afterwards: ``main`` also runs in-process."""
    saved = {key: os.environ.get(key) for key in ("ABLATE_DEBUG", "TF_CPP_MIN_LOG_LEVEL")}
    if debug:
        os.environ.update(ABLATE_DEBUG="1", TF_CPP_MIN_LOG_LEVEL="0")
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides may also follow the options (`... FILE --seeds 2 train.epochs=3`)
        if isinstance(getattr(args, "overrides", None), list) and all(
                "=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    with _debug_environment(args.debug):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        with signals.stops_as_interrupt():  # SIGTERM and SIGHUP end runs KILLED, as Ctrl-C does
            return int(args.func(args) or 0)
    except KeyboardInterrupt as e:  # Ctrl-C, or ablate.signals.Stopped: exit 130 / 143 / 129
        return _stopped(e)
    except Exception as e:  # noqa: BLE001 - the CLI's one place that turns errors into a line
        from ablate.errors import AblateError

        if (stop := signals.stop_in(e)) is not None:  # a stop that C code (TensorFlow) wrapped in another error
            return _stopped(stop)
        if args.debug:
            raise
        if isinstance(e, AblateError):
            print(f"ablate: error: {e}", file=sys.stderr)
            return 2
        print(f"ablate: error: {type(e).__name__}: {e} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1


def _stopped(interrupt: BaseException) -> int:
    code = signals.exit_code(interrupt)
    print(f"ablate: {'interrupted' if code == 130 else signals.describe(interrupt)}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
