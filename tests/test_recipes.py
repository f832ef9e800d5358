"""The paper's recipes: first stages that train, second stages that start from them, augmentation."""

import math
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from helpers import bundled_photo_dir, tiny_overrides

from sfd.config import load_config
from sfd.data.datasets import HRPatches
from sfd.train import build_run, train
from sfd.train.schedulers import build_scheduler


def load_checkpoint(path):
    return torch.load(path, weights_only=True)


pytestmark = pytest.mark.usefixtures("one_thread")  # small CPU ops: one thread is faster on 2 busy cores

CONFIGS = Path(__file__).parents[1] / "configs"
FIRST_STAGES = {"psnr_rrdb_x4", "psnr_swinir_x4", "realesrnet_x4"}
TINY_SWINIR = ["generator.embed_dim=12", "generator.depths=[1]", "generator.num_heads=[2]", "generator.img_size=16"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return bundled_photo_dir(tmp_path_factory.mktemp("photos"))


def _tiny(name: str, photos: Path, out: Path, extra=(), iterations: int = 2):
    overrides = tiny_overrides(photos, out, iterations) + ["data.val=null"] + list(extra)
    if name == "psnr_swinir_x4":
        overrides += TINY_SWINIR
    if name == "realesrnet_x4":
        overrides += ["data.degradation.queue_size=4"]
    return load_config(CONFIGS / f"{name}.yml", overrides)


def test_first_stage_recipes_state_their_sources_numbers():
    rrdb = load_config(CONFIGS / "psnr_rrdb_x4.yml")  # BasicSR train_RRDBNet_PSNR_x4.yml
    assert (rrdb.optim.lr_g, rrdb.data.batch_size, rrdb.data.patch_size) == (2e-4, 16, 128)
    assert rrdb.train.iterations == 10**6
    assert (rrdb.optim.scheduler, rrdb.optim.restart_period, rrdb.optim.eta_min) == ("cosine_restart", 250_000, 1e-7)
    swinir = load_config(CONFIGS / "psnr_swinir_x4.yml")  # BasicSR train_SwinIR_SRx4_scratch.yml
    assert (swinir.optim.lr_g, swinir.data.batch_size, swinir.train.iterations) == (2e-4, 32, 500_000)
    assert swinir.optim.milestones == [250_000, 400_000, 450_000, 475_000]
    net = load_config(CONFIGS / "realesrnet_x4.yml")  # Real-ESRGAN train_realesrnet_x4plus.yml, 4 GPUs x 12
    assert (net.optim.lr_g, net.data.batch_size, net.data.patch_size, net.train.iterations) == (2e-4, 48, 256, 10**6)
    for cfg in (rrdb, swinir, net):
        assert cfg.generator.pretrained == "random" and not cfg.uses_clip and cfg.image_d.type is None
        assert (cfg.loss.l1, cfg.loss.perceptual) == (1.0, 0.0)


def test_every_adversarial_config_starts_from_a_shipped_first_stage():
    for path in sorted(CONFIGS.glob("*.yml")):
        cfg = load_config(path)
        if path.stem in FIRST_STAGES or path.stem == "quickstart":
            continue
        spec = cfg.generator.pretrained
        assert spec.startswith("run:") and spec[4:] in FIRST_STAGES, (path.stem, spec)
        first = load_config(CONFIGS / f"{spec[4:]}.yml")
        assert first.generator == load_config(path, [f"generator.pretrained={first.generator.pretrained}"]).generator
        assert (first.data.degradation is None) == (cfg.data.degradation is None), path.stem


def test_real_world_recipes_flip_horizontally_only_with_global_batch_48():
    for name in ("realesrnet_x4", "realworld_rrdb_x4", "realworld_lgan_unet_x4", "iqa"):
        cfg = load_config(CONFIGS / f"{name}.yml")
        assert (cfg.data.use_hflip, cfg.data.use_vflip, cfg.data.use_rot) == (True, False, False), name
        assert cfg.data.batch_size == 48 and cfg.data.degradation.queue_size % 48 == 0, name
    classic = load_config(CONFIGS / "classic_rrdb_x4.yml")
    assert (classic.data.use_hflip, classic.data.use_vflip, classic.data.use_rot) == (True, True, True)
    old = load_config(None, ["data.use_flip=false"])  # configs and checkpoints from before the split
    assert (old.data.use_hflip, old.data.use_vflip, old.data.use_rot) == (False, False, True)


def test_augmentation_flags_and_a_stream_that_does_not_depend_on_them(photos):
    def patches(h, v, r):
        return HRPatches([photos], 64, 4, seed=1, use_hflip=h, use_vflip=v, use_rot=r, bicubic=False)

    plain, hflip, full = patches(False, False, False), patches(True, False, False), patches(True, True, True)
    flipped, others = 0, 0
    for k in range(24):
        a, b, c = plain[k], hflip[k], full[k]
        assert a["seed"] == b["seed"] == c["seed"]
        assert torch.equal(b["hr"], a["hr"]) or torch.equal(b["hr"], a["hr"].flip(-1))
        flipped += not torch.equal(b["hr"], a["hr"])
        orientations = [a["hr"].rot90(i, (-2, -1)) for i in range(4)]
        orientations += [o.flip(-1) for o in orientations]
        assert any(torch.equal(c["hr"], o) for o in orientations)
        others += not any(torch.equal(c["hr"], o) for o in (a["hr"], a["hr"].flip(-1)))
    assert 0 < flipped < 24 and others > 0


def test_cosine_restart_schedule_is_basicsrs():
    cfg = load_config(None, ["optim.scheduler=cosine_restart", "optim.restart_period=4", "optim.eta_min=1.0e-7"]).optim
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=2e-4)
    sched = build_scheduler(opt, cfg)
    lrs = []
    for _ in range(9):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # BasicSR: eta_min + 0.5 * (lr - eta_min) * (1 + cos(pi * t / period)), t counted from the last restart
    expected = [1e-7 + 0.5 * (2e-4 - 1e-7) * (1 + math.cos(math.pi * (i % 4) / 4)) for i in range(9)]
    assert lrs == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("name", sorted(FIRST_STAGES))
def test_each_first_stage_config_trains(name, photos, tmp_path):
    final = train(_tiny(name, photos, tmp_path), progress=False)
    ckpt = load_checkpoint(final)
    assert ckpt["iteration"] == 2 and ckpt["generator_ema"] is not None and not ckpt["discriminators"]
    assert "clip" not in ckpt["meta"] and "vgg" not in ckpt["meta"]  # L1 only: no CLIP, no VGG
    assert ckpt["meta"]["generator"]["init"].startswith("random")


def test_second_stage_starts_from_the_first_stages_newest_ema(photos, tmp_path):
    runs = tmp_path / "runs"
    train(_tiny("psnr_rrdb_x4", photos, runs, iterations=4), progress=False)  # iter 2 and iter 4
    newest = runs / "psnr_rrdb_x4" / "checkpoints" / "iter_00000004.pth"
    ema = load_checkpoint(newest)["generator_ema"]
    for spec in ("run:psnr_rrdb_x4", str(runs / "psnr_rrdb_x4")):
        overrides = tiny_overrides(photos, runs) + [f"generator.pretrained={spec}"]
        cfg = load_config(CONFIGS / "classic_rrdb_x4.yml", overrides)
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # no "random weights" warning
            warnings.filterwarnings("ignore", message=".*RANDOM weights")  # the tiny test's VGG19
            run = build_run(cfg)
        assert str(newest) in run.meta["generator"]["init"]
        state = run.generator.state_dict()
        assert all(torch.equal(state[k], v) for k, v in ema.items())


def test_random_init_is_explicit_and_warns_in_adversarial_runs(photos, tmp_path):
    with pytest.warns(UserWarning, match="randomly initialised generator"):
        build_run(load_config(CONFIGS / "classic_rrdb_x4.yml", tiny_overrides(photos, tmp_path)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        build_run(_tiny("psnr_rrdb_x4", photos, tmp_path))  # a first stage starts from random weights silently


def test_a_missing_first_stage_stops_training_with_one_line(photos, tmp_path, monkeypatch, capsys):
    from sfd.cli import main

    monkeypatch.chdir(tmp_path)  # default train.output_dir "runs" is relative
    code = main(["train", "-c", str(CONFIGS / "classic_rrdb_x4.yml"), "--set", f"data.train=[{photos}]"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == (
        "sfd train: error: generator.pretrained=run:psnr_rrdb_x4: no checkpoint under runs/psnr_rrdb_x4/checkpoints; "
        "train the first stage first: sfd train -c configs/psnr_rrdb_x4.yml\n"
    )
    assert not (tmp_path / "runs").exists()  # nothing was written

    code = main(
        [
            "train",
            "-c",
            str(CONFIGS / "realworld_rrdb_x4.yml"),
            "--set",
            f"data.train=[{photos}]",
            "--set",
            "train.output_dir=elsewhere",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "sfd train -c configs/realesrnet_x4.yml --set train.output_dir=elsewhere" in err

    code = main(["train", "-c", str(CONFIGS / "classic_rrdb_x4.yml"), "--set", "generator.pretrained=null"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "generator.pretrained is not set" in err and "'random'" in err

    code = main(["train", "-c", str(CONFIGS / "classic_rrdb_x4.yml"), "--set", "generator.pretrained=nothing/G.pth"])
    err = capsys.readouterr().err
    assert (
        code == 2 and err.count("\n") == 1 and err.startswith("sfd train: error: generator.pretrained=nothing/G.pth: ")
    )


def test_resume_needs_no_first_stage_and_keeps_the_init_record(photos, tmp_path):
    runs = tmp_path / "runs"
    train(_tiny("psnr_rrdb_x4", photos, runs), progress=False)
    stage2 = ["name=stage2", "generator.pretrained=run:psnr_rrdb_x4"]
    half = train(_tiny("psnr_rrdb_x4", photos, runs, stage2, iterations=2), progress=False)
    init = load_checkpoint(half)["meta"]["generator"]["init"]
    assert "psnr_rrdb_x4" in init
    shutil.rmtree(runs / "psnr_rrdb_x4")  # the first stage is gone: resuming must not need it
    final = train(_tiny("psnr_rrdb_x4", photos, runs, stage2, iterations=4), resume="auto", progress=False)
    ckpt = load_checkpoint(final)
    assert ckpt["iteration"] == 4 and ckpt["meta"]["generator"]["init"] == init


def test_quickstart_and_demo_opt_into_random_init_and_still_run(photos, tmp_path):
    cfg = load_config(CONFIGS / "quickstart.yml", tiny_overrides(photos, tmp_path))
    assert cfg.generator.pretrained == "random" and cfg.train.pixel_warmup > 0
    with pytest.warns(UserWarning, match=r"randomly initialised generator \(after 100 L1 warm-up iterations\)"):
        final = train(cfg, progress=False)
    assert load_checkpoint(final)["meta"]["generator"]["init"].startswith("random")

    from sfd.demo import run_demo

    report = run_demo(tmp_path / "demo", iterations=2)
    assert report.is_file() and "SFD demo" in report.read_text()


def test_demo_uses_the_cores_it_may_run_on_unless_omp_num_threads_says(monkeypatch):
    """Issue 29: `sfd demo` used one thread and left a user's cores idle."""
    import os

    from sfd.demo import demo_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5}, raising=False)  # e.g. taskset -c 0,2,5
    assert demo_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert demo_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "")  # set but empty: as if unset
    assert demo_threads() == 3
