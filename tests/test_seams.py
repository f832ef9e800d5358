"""The seams between the parts: checkpoint descriptor, configs by name, the command conventions."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from helpers import bundled_photo_dir, tiny_config

from sfd import checkpoint
from sfd.cli import main
from sfd.config import config_to_dict, list_configs, load_config
from sfd.train import build_run, save_checkpoint


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("seams")
    photos = bundled_photo_dir(tmp / "photos")
    cfg = tiny_config(photos, tmp / "runs")
    run = build_run(cfg)
    run.iteration = 7
    return run, save_checkpoint(run, tmp / "c.pth")


def test_descriptor_round_trip(saved):
    run, path = saved
    ckpt = checkpoint.load(path)
    assert ckpt.iteration == 7 and ckpt.kind == "sfd"
    assert config_to_dict(ckpt.config) == config_to_dict(run.cfg)
    assert set(ckpt.discriminators) == {"feat_d", "tg_d"}
    ema = run.generator_ema.state_dict()
    assert all(torch.equal(ckpt.inference_generator[k], v) for k, v in ema.items())  # EMA first
    assert ckpt.clip == {"model": "RN50", "weights": "random(seed=0)", "pretrained": False}
    assert ckpt.clip_weights() == ("random", 0)


def test_old_checkpoint_layout_loads(saved, tmp_path):
    """Checkpoints of earlier versions call TG-D ``lpp``; they load under today's name."""
    _, path = saved
    raw = torch.load(path, weights_only=True)
    for part in ("discriminators", "optimizers", "schedulers"):
        raw[part]["lpp"] = raw[part].pop("tg_d")
    torch.save(raw, tmp_path / "old.pth")
    ckpt = checkpoint.load(tmp_path / "old.pth")
    assert "tg_d" in ckpt.discriminators and "lpp" not in ckpt.discriminators
    assert torch.equal(ckpt.discriminators["tg_d"]["ctx"], raw["discriminators"]["lpp"]["ctx"])
    assert "tg_d" in ckpt.optimizers and "tg_d" in ckpt.schedulers


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", None])
def test_unreadable_checkpoints_are_one_clear_error(saved, tmp_path, content):
    _, path = saved
    bad = tmp_path / "bad.pth"
    bad.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2] if content is None else content)
    with pytest.raises(checkpoint.CheckpointError, match="not a readable checkpoint"):
        checkpoint.load(bad)


def test_checkpoint_write_leaves_no_temporary_file(saved, tmp_path):
    run, _ = saved
    path = save_checkpoint(run, tmp_path / "x" / "c.pth")
    assert sorted(p.name for p in path.parent.iterdir()) == ["c.pth", "c.pth.sha256"]  # its checksum (issue 11)


def test_configs_found_by_name_from_another_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert {"classic_rrdb_x4", "quickstart", "iqa"} <= set(list_configs())
    for spec in ("classic_rrdb_x4", "configs/classic_rrdb_x4.yml", "classic_rrdb_x4.yml"):
        assert load_config(spec).name == "classic_rrdb_x4"
    (tmp_path / "mine.yml").write_text("generator:\n  num_blocks: 2\n")
    assert load_config("mine.yml").generator.num_blocks == 2  # a path still works


def test_error_convention(tmp_path, capsys):
    # usage error: exit 2, one line, no traceback
    assert main(["train"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sfd train: error: ") and err.count("\n") == 1 and "Traceback" not in err
    # a config mistake: exit 2, names the key
    assert main(["train", "-c", "quickstart", "--set", "generator.num_blokcs=2"]) == 2
    assert "generator.num_blocks" in capsys.readouterr().err
    # a failure (file that is not a checkpoint): exit 1, one line
    (tmp_path / "x.pth").write_bytes(b"junk")
    assert main(["inspect", str(tmp_path / "x.pth")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sfd inspect: error: ") and err.count("\n") == 1
    # --debug shows the traceback
    assert main(["--debug", "inspect", str(tmp_path / "x.pth")]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_quickstart_without_data_says_what_to_do(capsys):
    assert main(["train", "-c", "configs/quickstart.yml", "--set", "data.train=[]"]) == 2
    err = capsys.readouterr().err
    assert "data.train" in err and "--set data.train=" in err and "Traceback" not in err


def test_python_m_sfd_version_and_help_without_torch():
    out = subprocess.run([sys.executable, "-m", "sfd", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("sfd ")
    code = "import sys; from sfd.cli import build_parser; build_parser().format_help(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_package_face(monkeypatch):
    import sfd
    from sfd.config import load_config as lc
    from sfd.metrics import create_metric as cm
    from sfd.models.loading import load_generator as lg
    from sfd.train import train as tr

    assert (sfd.load_config, sfd.load_generator, sfd.create_metric) == (lc, lg, cm)
    # sfd.train is the package sfd/train/ once imported, and calling it calls its train()
    assert sfd.train.train is tr
    monkeypatch.setattr(sfd.train, "train", lambda *a, **kw: ("trained", a, kw))
    assert sfd.train("cfg", progress=False) == ("trained", ("cfg",), {"progress": False})
    assert sfd.load_config("quickstart").name == "quickstart"
