"""The ``sfd`` command line. Each area registers its own subcommands; this file only dispatches."""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules with a ``register(subparsers)`` function, in the order of ``sfd --help``.
COMMAND_MODULES = [
    "sfd.commands",  # train, inspect, demo
    "sfd.evaluate.commands",  # sr, eval, export
    "sfd.data.commands",  # degrade-preview
    "sfd.iqa.commands",  # iqa, iqa-eval, tsne, features
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sfd",
        description="Semantic Feature Discrimination for perceptual super-resolution, and SFD-IQA.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
