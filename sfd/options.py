"""Command-line options that every area's commands share. Below ``sfd.cli`` (which loads the command
modules), so that a command module never imports the dispatcher that imports it."""

from __future__ import annotations

import argparse

__all__ = ["add_output_option"]


def add_output_option(parser: argparse.ArgumentParser, default: str | None, what: str) -> None:
    """``-o/--output`` (``args.out``), the same in every command that writes files; ``--out``, its earlier
    name, still works where there is a default. ``default`` None: the option is required."""
    if default is None:
        parser.add_argument("-o", "--output", dest="out", required=True, help=what)
        return
    parser.add_argument("-o", "--output", dest="out", default=default, help=f"{what} (default {default})")
    parser.add_argument("--out", dest="out", help=argparse.SUPPRESS)
