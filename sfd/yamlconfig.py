"""Typed configuration files: dataclasses loaded from YAML, strictly.

This module imports nothing of ``sfd``, so every part can define its own config dataclass
beside its code (as open_clip's model configs sit beside their models) and ``sfd.config``
composes them. An unknown key is an error that names it (with the closest valid name), and
``--set a.b=value`` overrides any field from the command line.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

__all__ = [
    "ConfigError",
    "config_from_dict",
    "config_to_dict",
    "apply_overrides",
    "read_yaml",
    "CONFIG_DIR",
    "list_configs",
    "find_config",
]


class ConfigError(ValueError):
    """A config that does not validate; the message names the offending key."""


def _check_type(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check_type(value, inner[0], key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"'{key}' must be a mapping, got {value!r}")
        return config_from_dict(value, tp, prefix=key + ".")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"'{key}' must be one of {list(args)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"'{key}' must be a list, got {value!r}")
        return [_check_type(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"'{key}' must be a mapping, got {value!r}")
        return {str(k): _check_type(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", value.strip()):
        return float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string; everyone means the number
    if tp in (int, float, str, bool) and not (isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        raise ConfigError(f"'{key}' must be {tp.__name__}, got {value!r}")
    return value


def config_from_dict(data: dict, cls: type, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown config key '{prefix}{key}'{hint}")
        kwargs[key] = _check_type(value, hints[key], prefix + key)
    return cls(**kwargs)


def config_to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` strings (values parsed as YAML) to a nested dict."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got '{item}'")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: '{part}' is not a section")
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def read_yaml(path: str | Path) -> dict:
    """A YAML file that must hold a mapping (an empty file is an empty mapping)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping")
    return data


# ---------------------------------------------------------------- shipped configs

CONFIG_DIR = Path(__file__).parent / "configs"  # the shipped configs (a link to the repository's configs/)


def list_configs() -> list[str]:
    """Names of the configs shipped with the package (``sfd train -c NAME``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yml"))


def find_config(spec: str | Path) -> Path:
    """A config file: an existing path, else a shipped config by name (``classic_rrdb_x4``, with or
    without ``configs/`` and ``.yml``), so that the documented commands work from any folder."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    shipped = CONFIG_DIR / (path.stem + ".yml")
    if path.suffix in ("", ".yml", ".yaml") and shipped.is_file():
        return shipped
    raise ConfigError(f"config file not found: {spec} (nor a shipped config of that name: {', '.join(list_configs())})")
