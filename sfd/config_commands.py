"""``sfd config schema`` and ``sfd config diff``: the config files' JSON Schema, and what a run changed."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sfd.options import add_output_option

__all__ = ["register", "load_any_config"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "config",
        help="the YAML configs' JSON Schema (for editors), and how a run's config differs from a shipped one",
        description="Tools for the YAML training configs (docs/training.md).",
    )
    config_sub = p.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    s = config_sub.add_parser(
        "schema",
        help="write the JSON Schema of the config files (types, choices, defaults, descriptions)",
        description="A JSON Schema (draft 2020-12) generated from the config dataclasses, for editors that "
        "validate and complete YAML (yaml-language-server: VS Code, Neovim, JetBrains).",
    )
    add_output_option(s, "-", "file to write the schema to; - prints it")
    s.set_defaults(func=cmd_schema)

    d = config_sub.add_parser(
        "diff",
        help="how a run's resolved config differs from the shipped config it started from",
        description="RUN_OR_FILE: a run folder (its config.json), an sfd checkpoint, or a YAML/JSON config. "
        "It is compared with the shipped config of the same name, else the nearest one, or --base.",
    )
    d.add_argument("source", metavar="RUN_OR_FILE")
    d.add_argument("--base", metavar="NAME", help="the shipped config to compare with (default: by name)")
    d.set_defaults(func=cmd_diff)


def load_any_config(source: str | Path):
    """The resolved ``Config`` of a run folder (``config.json``, else its newest checkpoint), an sfd
    checkpoint, a ``.json`` config, or a YAML file / shipped name (as ``sfd train -c`` reads it)."""
    from sfd.config import Config, config_from_dict, load_config

    path = Path(source).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            path = path / "config.json"
        elif not (path / "checkpoints").is_dir():
            raise FileNotFoundError(f"{path}: a run folder holds config.json or checkpoints/; this one has neither")
    if path.is_file() and path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from None
        return config_from_dict(data, Config).validate()
    if path.is_dir() or (path.is_file() and path.suffix.lower() not in (".yml", ".yaml")):
        from sfd import checkpoint

        return checkpoint.load(path).config.validate()
    return load_config(source)  # a YAML file or a shipped config's name; a clear error otherwise


def cmd_schema(args: argparse.Namespace) -> int:
    from sfd.schema import config_schema

    text = json.dumps(config_schema(), indent=2, ensure_ascii=False) + "\n"
    if args.out == "-":
        print(text, end="")
        return 0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}: JSON Schema of sfd's YAML configs")
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from sfd.config import diff_against_shipped

    print("\n".join(diff_against_shipped(load_any_config(args.source), base=args.base)))
    return 0
