"""``sfd config schema``: a JSON Schema of the YAML configs, generated from the config dataclasses.

Types, choices (``Literal``), defaults and nesting come from the dataclasses; descriptions from their
source: the class docstring, and for each field the comment lines right above it plus its trailing
comment. Editors (yaml-language-server: VS Code, Neovim, JetBrains...) use it to validate and complete
config files (docs/training.md). It is as strict as ``sfd.config.load_config``: unknown keys and wrong
types are errors; range checks (``Config.validate``) stay in Python.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import json
import textwrap
import tokenize
import types
import typing
from typing import Any, Literal

__all__ = ["config_schema", "field_comments", "SCHEMA_DIALECT"]

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
# YAML 1.1 (PyYAML) reads 1e-4, without a dot, as a string; the loader takes it as the number it means.
_EXPONENT_STRING = r"^\s*[-+]?\d+(\.\d*)?[eE][-+]?\d+\s*$"


def field_comments(cls: type) -> dict[str, str]:
    """``{field: description}`` from the comments in ``cls``'s source: the comment lines right above a
    field (no blank line between) and the comment at the end of its line(s)."""
    try:
        lines, _ = inspect.getsourcelines(cls)
    except (OSError, TypeError):  # no source (a frozen or compiled build): types and defaults only
        return {}
    source = textwrap.dedent("".join(lines))
    comments: dict[int, str] = {}  # line number (1-based, in source) -> comment text
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    text_lines = source.splitlines()
    result = {}
    for node in ast.parse(source).body[0].body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above, line = [], node.lineno - 1
        while line >= 1 and text_lines[line - 1].strip().startswith("#"):
            above.insert(0, comments[line].lstrip("- ").strip())
            line -= 1
        trailing = [comments[n] for n in range(node.lineno, node.end_lineno + 1) if n in comments]
        text = " ".join(part for part in above + trailing if part)
        if text:
            result[node.target.id] = " ".join(text.split())
    return result


def _type_schema(tp: Any, defs: dict) -> dict:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        nullable = len(options) < len(args)
        if len(options) == 1 and typing.get_origin(options[0]) is Literal:
            values = list(typing.get_args(options[0]))
            return {"enum": values + [None] if nullable else values}
        inner = [_type_schema(a, defs) for a in options] + ([{"type": "null"}] if nullable else [])
        return inner[0] if len(inner) == 1 else {"anyOf": inner}
    if origin is Literal:
        return {"enum": list(args)}
    if dataclasses.is_dataclass(tp):
        if tp.__name__ not in defs:
            defs[tp.__name__] = {}  # placeholder first: a recursive reference terminates
            defs[tp.__name__] = _object_schema(tp, defs)
        return {"$ref": f"#/$defs/{tp.__name__}"}
    if origin is list:
        return {"type": "array", "items": _type_schema(args[0], defs)}
    if origin is dict:
        return {"type": "object", "additionalProperties": _type_schema(args[1], defs)}
    if tp is Any:  # e.g. generator.params: each architecture's own keywords (checked when it is built)
        return {}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        return {"anyOf": [{"type": "number"}, {"type": "string", "pattern": _EXPONENT_STRING}]}
    if tp is str:
        return {"type": "string"}
    raise TypeError(f"no JSON Schema for config type {tp!r}")


def _object_schema(cls: type, defs: dict) -> dict:
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    properties = {}
    for f in dataclasses.fields(cls):
        prop = _type_schema(hints[f.name], defs)
        if f.name in comments:
            prop = {"description": comments[f.name], **prop}
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        if default is not dataclasses.MISSING and not dataclasses.is_dataclass(default):  # a section's
            prop["default"] = json.loads(json.dumps(default))  # defaults are on its own fields
        properties[f.name] = prop
    schema = {"type": "object", "properties": properties, "additionalProperties": False}
    doc = inspect.getdoc(cls)
    if doc and not doc.startswith(f"{cls.__name__}("):  # dataclasses invent "Name(field: type, ...)"
        schema = {"description": " ".join(doc.split()), **schema}
    return schema


def config_schema() -> dict:
    """The JSON Schema (draft 2020-12) of an sfd YAML config (``sfd.config.Config``)."""
    from sfd import __version__
    from sfd.config import Config

    defs: dict = {}
    root = _object_schema(Config, defs)
    return {
        "$schema": SCHEMA_DIALECT,
        "title": f"sfd training config (sfd {__version__})",
        **root,
        "$defs": dict(sorted(defs.items())),
    }
