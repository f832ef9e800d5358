"""DualFormer-IQA: a trained DualFormer's two Ds as a registry metric, its crops and sum of logits by hand, and
`sfd iqa-eval` comparing it with SFD-IQA, CLIP-IQA and NIQE on the same images."""

import csv
import json

import pytest
import torch
from helpers import bundled_photo_dir, tiny_config
from PIL import Image, ImageFilter

import sfd.metrics as registry
from sfd.cli import main
from sfd.data.io import list_images, load_rgb
from sfd.errors import UsageError
from sfd.metrics.base import TooSmall
from sfd.metrics.dualformer_iqa import crop_starts
from sfd.models.spectral_d import SpectralD, SwinStyleD
from sfd.train import build_run, save_checkpoint

SMALL = ["image_d.input_size=64", "spectral_d.embed_dim=24", "spectral_d.depths=[1,1]", "spectral_d.heads=[2,4]"]


@pytest.fixture(scope="module")
def dual(tmp_path_factory):
    """A DualFormer checkpoint (tiny Ds, one training step) and an SFD one (untrained), both 64 px patches."""
    tmp = tmp_path_factory.mktemp("dual")
    photos = bundled_photo_dir(tmp / "photos", max_side=200)
    cfg = tiny_config(photos, tmp / "runs", ["data.val=null", *SMALL], path="dualformer_rrdb_x4")
    run = build_run(cfg)
    from sfd.train import train_step

    g = torch.Generator().manual_seed(0)
    train_step(run, torch.rand(2, 3, 16, 16, generator=g), torch.rand(2, 3, 64, 64, generator=g))
    sfd_run = build_run(tiny_config(photos, tmp / "runs", ["data.val=null"]))
    return save_checkpoint(run, tmp / "dual.pth"), save_checkpoint(sfd_run, tmp / "sfd.pth"), photos, tmp


def test_crop_starts():
    assert crop_starts(64, 64, 32) == [0]
    assert crop_starts(100, 64, 32) == [0, 32, 36]
    assert crop_starts(128, 64, 32) == [0, 32, 64]
    assert crop_starts(63, 64, 32) == []


def _ds_by_hand(path):
    """The checkpoint's two Ds built from its state dicts, without the metric's code."""
    state = torch.load(path, weights_only=True)["discriminators"]
    kw = dict(input_size=64, patch_size=32, embed_dim=24, depths=(1, 1), heads=(2, 4))
    spat, spec = SwinStyleD(**kw), SpectralD(**kw)
    spat.load_state_dict(state["image_d"])
    spec.load_state_dict(state["spectral_d"])
    return spat.eval(), spec.eval()


@torch.no_grad()
def test_score_is_the_mean_spatial_plus_mean_spectral_logit_over_the_crops(dual):
    ckpt = dual[0]
    metric = registry.create_metric("dualformer-iqa", weights=ckpt, device="cpu", stride=32)
    spat, spec = _ds_by_hand(ckpt)
    img = torch.rand(3, 96, 128, generator=torch.Generator().manual_seed(3))
    crops = [img[:, y : y + 64, x : x + 64] for y in (0, 32) for x in (0, 32, 64)]
    s_spat = sum(float(spat(c[None])) for c in crops) / len(crops)
    s_spec = sum(float(spec(c[None])) for c in crops) / len(crops)
    parts = metric.components(img)[0]
    assert parts["s_spatial"] == pytest.approx(s_spat, abs=1e-5)
    assert parts["s_spectral"] == pytest.approx(s_spec, abs=1e-5)
    assert float(metric(img)[0]) == pytest.approx(s_spat + s_spec, abs=1e-5)
    with pytest.raises(TooSmall, match="at least 64x64"):  # "n/a" in tables
        metric.score_image(img[:, :60, :60])


def test_registry_entry_and_its_required_checkpoint(dual):
    entry = registry.metric_entry("DualFormer")
    assert entry.name == "dualformer-iqa" and entry.mode == "nr" and not entry.lower_better
    assert "dualformer-iqa" in registry.list_metrics("nr")
    with pytest.raises(UsageError, match="--dualformer-checkpoint"):
        registry.build("dualformer-iqa", registry.MetricOptions(device="cpu"))
    with pytest.raises(ValueError, match="neither DualFormer discriminator"):
        registry.create_metric("dualformer-iqa", weights=dual[1], device="cpu")


def test_iqa_eval_compares_it_with_sfd_iqa_clipiqa_and_niqe(dual, capsys):
    ckpt, sfd_ckpt, photos, tmp = dual
    folder = tmp / "iqa"
    folder.mkdir()
    mos = {}
    sources = [load_rgb(p) for p in list_images(photos)]
    for i in range(6):
        radius = (i % 3) * 1.5
        im = sources[i % len(sources)].crop((0, 0, 192, 128)).filter(ImageFilter.GaussianBlur(radius))
        im.save(folder / f"im{i}.png")
        mos[f"im{i}.png"] = 80 - 10 * radius + i  # made up, for the test only
    with open(tmp / "mos.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "mos"])
        w.writerows(mos.items())
    out = tmp / "eval"
    args = ["iqa-eval", "--images", str(folder), "--mos", str(tmp / "mos.csv"), "-o", str(out), "--no-progress"]
    args += ["--metrics", "sfd-iqa,clipiqa,niqe,dualformer-iqa", "--checkpoint", str(sfd_ckpt)]
    args += ["--dualformer-checkpoint", str(ckpt), "--device", "cpu"]
    assert main(args) == 0
    table = capsys.readouterr().out
    for name in ("sfd-iqa", "clipiqa", "niqe", "dualformer-iqa"):
        assert f"| {name}" in table
    report = json.loads((out / "results.json").read_text())
    assert report["metrics"]["dualformer-iqa"]["n"] == 6
    Image.open(out / "scatter_dualformer-iqa.png").verify()
