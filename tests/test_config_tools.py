"""``sfd config schema`` (a JSON Schema of the YAML configs) and ``sfd config diff``."""

from __future__ import annotations

import dataclasses
import json
import typing

import pytest
import torch
import yaml
from conftest import REPO

from sfd.cli import main
from sfd.config import Config, ConfigError, config_from_dict, config_to_dict, diff_against_shipped, load_config
from sfd.schema import config_schema

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is a dev dependency (pip install -e '.[dev]')")

SHIPPED = sorted((REPO / "configs").glob("*.yml"))


@pytest.fixture(scope="module")
def validator():
    schema = config_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_config_validates(validator, path):
    errors = [
        f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(yaml.safe_load(path.read_text()))
    ]
    assert not errors, errors


@pytest.mark.parametrize(
    "data,where",
    [
        ({"data": {"batch_size": "big"}}, "data.batch_size"),  # wrong type
        ({"data": {"batch_size": 4.5}}, "data.batch_size"),  # a float for an int
        ({"train": {"precision": "fp8"}}, "train.precision"),  # not a choice
        ({"loss": {"l1": True}}, "loss.l1"),  # a bool for a float
        ({"generator": {"depths": [6, "six"]}}, "generator.depths"),
        ({"data": {"degradation": {"jpeg_backend": "opencv"}}}, "data.degradation"),
        ({"optim": {"lr_gg": 1e-4}}, "optim"),  # unknown key
        ({"generatr": {}}, ""),  # unknown section
    ],
)
def test_schema_rejects_what_the_loader_rejects(validator, data, where):
    errors = list(validator.iter_errors(data))
    assert errors and any(".".join(map(str, e.path)).startswith(where) for e in errors)
    with pytest.raises(ConfigError):
        config_from_dict(data, Config)


def test_yaml_exponent_strings_and_nulls_are_accepted_as_the_loader_accepts_them(validator):
    data = yaml.safe_load(
        "optim:\n  lr_g: 1e-4\n  grad_clip: null\ngenerator:\n  pretrained: null\nimage_d:\n  type: null"
    )
    assert data["optim"]["lr_g"] == "1e-4"  # YAML 1.1 (PyYAML) reads it as a string
    assert not list(validator.iter_errors(data))
    assert config_from_dict(data, Config).optim.lr_g == 1e-4


def _sections(cls, schema, prefix=""):
    """(key, dataclass field, its schema) for every leaf field, following $refs."""
    props = schema["$defs"][cls.__name__]["properties"] if prefix else schema["properties"]
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        inner = [t for t in typing.get_args(hints[f.name]) or [hints[f.name]] if dataclasses.is_dataclass(t)]
        if not dataclasses.is_dataclass(hints[f.name]):  # a leaf, or an optional section (its own default: null)
            yield prefix + f.name, f, props[f.name]
        if inner:
            yield from _sections(inner[0], schema, f"{prefix}{f.name}.")


def test_defaults_and_choices_come_from_the_dataclasses():
    schema = config_schema()
    fields = list(_sections(Config, schema))
    assert len(fields) > 110  # DegradationConfig's fields too
    for key, f, prop in fields:
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if not dataclasses.is_dataclass(default):
            assert prop["default"] == default, key
    by_key = {key: prop for key, _, prop in fields}
    assert by_key["loss.gan_type"]["enum"] == ["vanilla", "lsgan", "hinge", "ragan"]
    assert by_key["image_d.type"]["enum"] == ["vgg", "unet", "transformer", None]
    assert by_key["data.degradation"]["default"] is None and by_key["data.degradation.jpeg_range"]["default"] == [
        30,
        95,
    ]


def test_descriptions_are_the_source_comments():
    by_key = {key: prop for key, _, prop in _sections(Config, config_schema())}
    source = (REPO / "sfd" / "config.py").read_text()
    # a trailing comment, and a block of comment lines above a field
    assert "# N: 5 classic, 1 real-world / IQA" in source
    assert by_key["tg_d.n_pairs"]["description"] == "N: 5 classic, 1 real-world / IQA"
    precision = by_key["train.precision"]["description"]
    assert precision.startswith("bf16/fp16: forward passes under torch.autocast") and "GradScaler" in precision
    assert "description" not in by_key["generator.scale"]  # no comment, no invented text
    assert config_schema()["$defs"]["CLIPConfig"]["description"].startswith("The frozen CLIP")


def test_schema_command_writes_the_schema(tmp_path, capsys):
    assert main(["config", "schema", "-o", str(tmp_path / "s" / "sfd.schema.json")]) == 0
    assert json.loads((tmp_path / "s" / "sfd.schema.json").read_text()) == config_schema()
    assert capsys.readouterr().out.startswith("wrote ")


# ---------------------------------------------------------------- diff


def test_diff_of_a_run_folder_a_checkpoint_and_a_yaml_file(tmp_path, capsys):
    cfg = load_config("classic_rrdb_x4", ["data.batch_size=8", "optim.milestones=[10, 20]", "train.device=cpu"])
    shipped = load_config("classic_rrdb_x4")
    expected = [
        "config 'classic_rrdb_x4' against shipped classic_rrdb_x4 (by name): 3 difference(s)",
        f"data.batch_size: {shipped.data.batch_size} -> 8",
        f"optim.milestones: {json.dumps(shipped.optim.milestones)} -> [10, 20]",
        'train.device: "auto" -> "cpu"',
    ]
    assert shipped.data.batch_size != 8 and shipped.optim.milestones != [10, 20] and shipped.train.device != "cpu"
    assert diff_against_shipped(cfg) == expected
    run = tmp_path / "runs" / "classic_rrdb_x4"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(config_to_dict(cfg)))
    torch.save({"generator": {}, "config": config_to_dict(cfg), "iteration": 3}, tmp_path / "ckpt.pth")
    for source in (run, tmp_path / "ckpt.pth"):
        assert main(["config", "diff", str(source)]) == 0
        assert capsys.readouterr().out.splitlines() == expected
    # a copy of a shipped config under another name: compared with the nearest shipped config
    data = yaml.safe_load((REPO / "configs" / "lgan_rrdb_x4.yml").read_text())
    data["train"] = {**data.get("train", {}), "iterations": 1000}
    (tmp_path / "mine.yml").write_text(yaml.safe_dump(data))
    assert main(["config", "diff", str(tmp_path / "mine.yml")]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "config 'mine' against shipped lgan_rrdb_x4 (the nearest: no shipped config is named 'mine'): 2 difference(s)",
        'name: "lgan_rrdb_x4" -> "mine"',
        f"train.iterations: {load_config('lgan_rrdb_x4').train.iterations} -> 1000",
    ]


def test_diff_errors_are_one_line(tmp_path, capsys):
    assert main(["config", "diff", "lgan_rrdb_x4", "--base", "nope"]) == 2
    assert capsys.readouterr().err.startswith("sfd config: error: --base nope: not a shipped config")
    (tmp_path / "empty").mkdir()
    assert main(["config", "diff", str(tmp_path / "empty")]) == 1
    assert "neither" in capsys.readouterr().err
