"""The ``sfd`` command line. Each area registers its own subcommands; this file dispatches and
reports errors the same way for all of them (see ``sfd.errors``). ``sfd --help`` imports no torch."""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

# Modules with a ``register(subparsers)`` function, in the order of ``sfd --help``.
COMMAND_MODULES = [
    "sfd.commands",  # train, inspect, demo, fetch-weights
    "sfd.config_commands",  # config schema|diff
    "sfd.inference.commands",  # sr, export
    "sfd.evaluate.commands",  # eval, fetch-niqe-model
    "sfd.data.commands",  # degrade-preview, prepare
    "sfd.iqa.commands",  # iqa, iqa-eval, tsne, features
    "sfd.bench_commands",  # bench step|data|sr|iqa|sweep
    "sfd.app.commands",  # app (the local web page; Gradio only when it runs)
]


def _version() -> str:
    from sfd import __version__

    return f"sfd {__version__}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sfd",
        description="Semantic Feature Discrimination for perceptual super-resolution, and SFD-IQA.",
    )
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def report_error(command: str | None, err: BaseException) -> None:
    """One line on stderr: ``sfd COMMAND: error: MESSAGE``."""
    message = " ".join(str(err).split()) or type(err).__name__
    print(f"sfd{' ' + command if command else ''}: error: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    from sfd.errors import USER_ERRORS, CommandFailed, UsageError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as err:  # sfd.train.guard.TrainingInterrupted says where the checkpoint went
        print(f"sfd {args.command}: {err or 'interrupted'}", file=sys.stderr)
        return 128 + getattr(err, "signum", 2)
    except CommandFailed as err:
        if str(err):
            report_error(args.command, err)
        return 1
    except USER_ERRORS as err:
        if args.debug:
            traceback.print_exc()
        report_error(args.command, err)
        from sfd.yamlconfig import ConfigError

        return 2 if isinstance(err, (UsageError, ConfigError)) else 1


if __name__ == "__main__":
    sys.exit(main())
