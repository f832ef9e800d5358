"""Configs that cannot work are errors before any work starts, naming the key (docs/reliability.md)."""

import pytest
from helpers import bundled_photo_dir, tiny_overrides

from sfd.cli import main
from sfd.config import ConfigError, load_config


@pytest.mark.parametrize(
    "override,key",
    [
        ("train.iterationz=5", "unknown config key 'train.iterationz'"),  # a typo
        ("train.iterations=many", "'train.iterations' must be int"),  # a wrong type
        ("data.batch_size=[2]", "'data.batch_size' must be int"),
        ("generator.arch=vgg", "'generator.arch' must be one of"),
        ("data.patch_size=100", "data.patch_size=100 must be a multiple of 32"),  # CLIP's stride
        ("data.patch_size=0", "data.patch_size=0 must be at least 32"),
        ("generator.scale=3", "not a multiple of generator.scale=3"),  # scale mismatch between G and data
        ("data.batch_size=0", "data.batch_size=0 must be at least 1"),
        ("train.iterations=0", "train.iterations=0 must be at least 1"),
        ("train.save_every=0", "train.save_every=0 must be at least 1"),
        ("train.keep_checkpoints=0", "train.keep_checkpoints=0 must be at least 1"),
        ("train.max_bad_steps=0", "train.max_bad_steps=0 must be at least 1"),
        ("optim.lr_g=-1e-4", "optim.lr_g=-0.0001 must be positive"),
        ("optim.ema_decay=1.5", "optim.ema_decay=1.5 must lie in (0, 1)"),
        ("optim.betas=[0.9]", "optim.betas=[0.9] must be two numbers"),
        ("loss.l1=-1", "must not be negative"),
        ("tg_d.length=80", "tg_d.length=80 does not fit CLIP's 77-token context"),
        ("data.degradation={queue_size: 5}", "queue_size=5 must be a multiple of data.batch_size"),
    ],
)
def test_impossible_configs_name_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_config("classic_rrdb_x4", [override])
    assert key in str(err.value)


def test_prompts_longer_than_clips_context_are_refused():
    long = " ".join(["sharp"] * 80)
    with pytest.raises(ConfigError, match=r"loss.clipiqa_loss.prompts: .* more than the 75"):
        load_config(
            "classic_rrdb_x4", ["loss.clipiqa_loss.variant=maximize", f"loss.clipiqa_loss.prompts=[{long}, bad]"]
        )
    with pytest.raises(ConfigError, match=r"tg_d.init_words: .* more than the 4"):
        load_config("classic_rrdb_x4", ["tg_d.length=4", "tg_d.init_words=[a very sharp clean photo, blurry]"])
    load_config("classic_rrdb_x4", ["tg_d.length=8", "tg_d.init_words=[a sharp photo, a blurry photo]"])  # fits


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return bundled_photo_dir(tmp_path_factory.mktemp("photos"))


def _train_args(photos, out, extra=()):
    sets = tiny_overrides(photos, out) + ["data.val=null"] + list(extra)
    return ["train", "-c", "classic_rrdb_x4", "--no-progress"] + [a for s in sets for a in ("--set", s)]


@pytest.mark.parametrize(
    "extra,message",
    [
        (["data.train=[{missing}]"], "data.train: no such folder"),
        (["data.train=[{empty}]"], "data.train: no usable training images"),
        (["data.train=[{small}]"], "data.train: no usable training images"),
        (["data.val={missing}"], "data.val: no such folder"),
        (["train.device=cuda:7"], None),  # only where torch sees no CUDA device
    ],
    ids=["missing-folder", "no-images", "all-too-small-or-broken", "missing-val", "no-cuda"],
)
def test_train_refuses_bad_data_before_any_work(photos, tmp_path, capsys, extra, message):
    import torch
    from PIL import Image

    if message is None:
        if torch.cuda.is_available():
            pytest.skip("a CUDA device is present")
        message = "torch sees no CUDA device"
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    small = tmp_path / "small"
    small.mkdir()
    Image.new("RGB", (40, 200)).save(small / "thin.png")  # narrower than the 64-pixel patch
    (small / "zero.png").write_bytes(b"")
    (small / "junk.JPG").write_bytes(b"\xff\xd8 not really")
    dirs = {"missing": tmp_path / "missing", "empty": tmp_path / "empty", "small": small}
    extra = [e.format(**dirs) for e in extra]
    assert main(_train_args(photos, tmp_path / "runs", extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sfd train: error: ") and message in err[0], err
    assert not (tmp_path / "runs").exists()  # nothing was written, not even the run folder


def test_a_pretrained_generator_of_another_scale_is_one_line(photos, tmp_path, capsys):
    import torch
    from eval_helpers import tiny_rrdbnet

    torch.save(tiny_rrdbnet(scale=2, num_filters=8).state_dict(), tmp_path / "psnr_x2.pth")
    extra = ["data.val=null", f"generator.pretrained={tmp_path / 'psnr_x2.pth'}"]
    assert main(_train_args(photos, tmp_path / "runs", extra)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "psnr_x2.pth" in err[0] and "x2" in err[0], err
