"""A new user's first hour: the ten points of the issue, each as a test where one can be written."""

from __future__ import annotations

import os
import stat
import time
import warnings

import pytest
import torch
from helpers import bundled_photo_dir, tiny_overrides

from sfd.cli import main
from sfd.config import CONFIG_DIR, list_configs, load_config


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return bundled_photo_dir(tmp_path_factory.mktemp("photos"))


def test_every_shipped_config_picks_its_device(tmp_path):
    """Point 2: no config asks for CUDA outright (a CPU-only machine gets the CPU)."""
    for name in list_configs():
        assert load_config(name).train.device == "auto", name
        assert "device: cuda" not in (CONFIG_DIR / f"{name}.yml").read_text()


def test_missing_clip_weights_offline_is_one_quick_line(monkeypatch, tmp_path):
    """Point 3: no minute of retries and no tracebacks: one line, at once."""
    from sfd.models import clip

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("SFD_CLIP_WEIGHTS", raising=False)
    monkeypatch.setattr(clip, "_cached_openai_file", lambda name: None)
    start = time.perf_counter()
    with pytest.raises(clip.CLIPWeightsError) as err:
        clip.load_clip("RN50", "openai")
    assert time.perf_counter() - start < 5  # generous: it must not reach the network at all
    assert "\n" not in str(err.value) and "SFD_CLIP_WEIGHTS" in str(err.value)


def test_vgg_weights_are_never_downloaded_unasked(monkeypatch, tmp_path):
    """Point 4: `imagenet` reads the cache or a path; a download only through `sfd fetch-weights`."""
    import torch.hub

    from sfd.losses import PerceptualLoss, VGGWeightsError

    def no_download(*args, **kwargs):
        raise AssertionError("sfd tried to download VGG19 weights")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv("SFD_VGG_WEIGHTS", raising=False)
    with pytest.raises(VGGWeightsError, match="sfd fetch-weights vgg19") as err:
        PerceptualLoss({"conv5_4": 1.0}, "imagenet")
    assert "\n" not in str(err.value)
    with pytest.warns(UserWarning, match=r"loss\.vgg_weights=auto"):  # auto falls back to random, saying which option
        assert not PerceptualLoss({"conv1_2": 1.0}, "auto").pretrained


def test_resume_path_applies_set_and_finished_runs_are_not_overwritten(photos, tmp_path, capsys):
    """Points 5 and 6."""
    overrides = [f"--set={o}" for o in tiny_overrides(photos, tmp_path, iterations=2) + ["name=run"]]
    assert main(["train", "-c", "quickstart", "--no-progress", *overrides]) == 0
    capsys.readouterr()
    # the same command again: refused, nothing appended to the log
    log = tmp_path / "run" / "log.jsonl"
    before = log.read_text()
    assert main(["train", "-c", "quickstart", "--no-progress", *overrides]) == 2
    err = capsys.readouterr().err
    assert "--resume auto" in err and "--overwrite" in err and err.count("\n") == 1
    assert log.read_text() == before
    # --resume PATH without -c: --set still applies (here: train two more iterations)
    ckpt = tmp_path / "run" / "checkpoints" / "iter_00000002.pth"
    assert main(["train", "--resume", str(ckpt), "--set", "train.iterations=4", "--no-progress"]) == 0
    assert (tmp_path / "run" / "checkpoints" / "iter_00000004.pth").exists()
    capsys.readouterr()
    # --resume auto with no checkpoint says that it starts from scratch
    assert main(["train", "-c", "quickstart", "--resume", "auto", "--no-progress", *overrides, "--set=name=fresh"]) == 0
    captured = capsys.readouterr()
    assert "starting from scratch: no checkpoint in" in captured.out + captured.err


def test_degrade_preview_with_a_bicubic_config_says_why(tmp_path, capsys):
    """Point 8."""
    from sfd.data.io import save_png

    save_png(torch.rand(3, 64, 64), tmp_path / "a.png")
    assert (
        main(["degrade-preview", str(tmp_path / "a.png"), "-o", str(tmp_path / "s.png"), "--config", "quickstart"]) == 2
    )
    err = capsys.readouterr().err
    assert "without data.degradation" in err and "unknown config key" not in err


def test_warm_up_shows_no_scheduler_warning(photos, tmp_path):
    """Point 10: the L1 warm-up does not print torch's lr_scheduler.step() warning."""
    from sfd.data.datasets import HRPatches
    from sfd.train import build_run, make_pair, train_step

    cfg = load_config(None, tiny_overrides(photos, tmp_path) + ["train.pixel_warmup=2"])
    run = build_run(cfg)
    ds = HRPatches([photos], 64, 4)
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        train_step(run, *make_pair(run, batch))
    assert not [w for w in seen if "lr_scheduler.step()" in str(w.message)]


def test_eval_without_scale_says_no_border(tmp_path, capsys):
    """Point 10: `sfd eval --sr` without --scale does not claim a border."""
    from sfd.data.io import save_png

    save_png(torch.rand(3, 200, 200, generator=torch.Generator().manual_seed(0)), tmp_path / "sr" / "a.png")
    assert main(["eval", "--sr", str(tmp_path / "sr"), "-o", str(tmp_path / "out"), "--device", "cpu"]) == 0
    assert "no border shaved" in capsys.readouterr().out


def test_exported_files_follow_the_umask(tmp_path):
    """Point 10: files are written with the user's umask (safetensors alone would give 0600)."""
    from eval_helpers import tiny_rrdbnet

    from sfd.models.export import export_safetensors

    torch.save(tiny_rrdbnet().state_dict(), tmp_path / "g.pth")
    old = os.umask(0o022)
    try:
        export_safetensors(tmp_path / "g.pth", tmp_path / "g.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "g.safetensors").stat().st_mode) == 0o644


def test_version_is_the_package_version(capsys):
    from sfd import __version__

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"sfd {__version__}"


def test_iqa_outputs_are_not_replaced_without_overwrite(tmp_path, capsys):
    """No command replaces an existing output without --overwrite (here: sfd iqa --csv, features)."""
    from sfd.data.io import save_png

    save_png(torch.rand(3, 200, 200, generator=torch.Generator().manual_seed(0)), tmp_path / "a.png")
    (tmp_path / "scores.csv").write_text("the user's own file")
    args = ["iqa", str(tmp_path / "a.png"), "--metric", "niqe", "--csv", str(tmp_path / "scores.csv")]
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "scores.csv").read_text() == "the user's own file"
    assert main([*args, "--overwrite"]) == 0
    assert (tmp_path / "scores.csv").read_text().startswith("image,niqe")
    (tmp_path / "f.png").write_text("x")
    assert main(["features", "a", "b", "--image", str(tmp_path / "a.png"), "-o", str(tmp_path / "f.png")]) == 2
