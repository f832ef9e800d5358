"""Real-ESRGAN's crop structure and first-order resize, and where the degradations run
(``data.degradation.device``): the loader, the trainer's process, or batched on the training GPU."""

import pytest
import torch
import torch.nn.functional as F
from helpers import bundled_photo_dir, tiny_config
from torch.utils.data import default_collate

import sfd.data.degradations as deg
from sfd.data.datasets import HRPatches
from sfd.data.degradations import DegradationConfig, RealESRGANDegradation, paired_crop
from sfd.data.pipeline import (
    DegradationPlan,
    build_dataset,
    build_degrader,
    build_loader,
    degrade_batch,
    plan_degradations,
)
from sfd.yamlconfig import ConfigError

CROP = ["data.degradation={queue_size: 0, crop_pad_size: 96}", "data.patch_size=64", "data.batch_size=2"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return bundled_photo_dir(tmp_path_factory.mktemp("photos"))


def _hr(b: int = 3, size: int = 96, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(b, 3, size // 8, size // 8, generator=g)
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def test_first_resize_by_scale_factor_as_real_esrgan(monkeypatch):
    """The first-order resize is interpolate(scale_factor=s) (Real-ESRGAN's feed_data), not a resize to
    the rounded size: the two differ for a scale whose product with the side is not whole."""
    seen = []
    real = F.interpolate
    hr = _hr(1)

    def spy(x, *args, **kw):
        seen.append(kw)
        return real(x, *args, **kw)

    monkeypatch.setattr(deg.F, "interpolate", spy)
    degrade = RealESRGANDegradation()
    seed = next(s for s in range(100) if degrade.sample(s).first.resize != "keep")
    p = degrade.sample(seed)
    degrade(hr, [seed])
    assert seen[0].get("scale_factor") == p.first.scale and "size" not in seen[0]
    by_size = RealESRGANDegradation(DegradationConfig(first_resize="size"))
    seen.clear()
    lr_size = by_size(hr, [seed])[0]
    assert seen[0]["size"] == (int(96 * p.first.scale),) * 2
    assert not torch.equal(lr_size, degrade(hr, [seed])[0])


def test_crop_structure_degrades_the_whole_crop_then_takes_the_paired_patch():
    hr = _hr(3, 96)
    seeds = [4, 5, 6]
    whole = RealESRGANDegradation(scale=4)
    cropped = RealESRGANDegradation(scale=4, patch=64)
    lr, target, real = cropped(hr, seeds)
    assert lr.shape == (3, 3, 16, 16) and target.shape == real.shape == (3, 3, 64, 64)
    full_lr, _, _ = whole(hr, seeds)
    for i, s in enumerate(seeds):
        lr_i, (hr_i,) = paired_crop(full_lr[i], [hr[i]], 64, 4, whole.sample(s).crop)
        assert torch.equal(lr[i], lr_i) and torch.equal(real[i], hr_i)
    assert torch.equal(target, whole.usm(real.double()).float())  # the crop sharpened, as Real-ESRGAN's target


def test_paired_crop_covers_every_position_and_stays_aligned():
    lr = torch.arange(10 * 10.0).view(1, 10, 10)
    hr = torch.arange(40 * 40.0).view(1, 40, 40)
    corners = {(0.0, 0.0): (0, 0), (0.999, 0.999): (6, 6), (1.0, 0.5): (6, 3)}
    for where, (top, left) in corners.items():
        lr_c, (hr_c,) = paired_crop(lr, [hr], 16, 4, where)
        assert lr_c[0, 0, 0] == lr[0, top, left] and hr_c[0, 0, 0] == hr[0, 4 * top, 4 * left]
        assert lr_c.shape[-1] == 4 and hr_c.shape[-1] == 16


def test_loader_crops_or_pads_to_crop_pad_size(photos, tmp_path):
    cfg = tiny_config(photos, tmp_path, ["data.degradation={queue_size: 0, crop_pad_size: 400}"])
    dataset = build_dataset(cfg)
    assert dataset.patch == 400 and dataset.pad_to_patch
    sizes = {tuple(dataset[k]["hr"].shape) for k in range(len(dataset))}
    assert sizes == {(3, 400, 400)}  # chelsea.png is 300 x 451: padded by reflection
    small = HRPatches([photos], 400, 4, pad_to_patch=True, min_side=64, use_hflip=False, use_vflip=False)
    small.use_rot = False
    k = next(k for k in range(len(small)) if "chelsea" in small.files[k % len(small)].name)
    # rows 300.. reflect rows 298, 297, ... (OpenCV's BORDER_REFLECT_101, as Real-ESRGAN's copyMakeBorder)
    img = small._image(k)[0]
    assert torch.equal(img[:, 300], img[:, 298]) and torch.equal(img[:, 399], img[:, 199])
    with pytest.raises(ConfigError, match="crop_pad_size"):
        build_dataset(tiny_config(photos, tmp_path, ["data.degradation={queue_size: 0, crop_pad_size: 32}"]))


def test_one_plan_says_where_the_degradations_run(photos, tmp_path):
    cfg = tiny_config(photos, tmp_path, CROP)
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 1)
    assert plan_degradations(cfg, gpu) == DegradationPlan("degrade", cpu, False)  # the default: cpu, in the loader
    cfg.data.degradation.device = "auto"
    assert plan_degradations(cfg, cpu) == DegradationPlan("degrade", cpu, False)
    assert plan_degradations(cfg, gpu) == DegradationPlan("draw", gpu, True)  # auto: batched on the GPU
    cfg.data.degradation.batched = False
    assert plan_degradations(cfg, gpu) == DegradationPlan("draw", gpu, False)
    cfg.data.degrade_in = "trainer"
    assert plan_degradations(cfg, gpu).loader == "nothing" and plan_degradations(cfg, cpu).loader == "nothing"
    cfg.data.degradation.device = "cuda"
    with pytest.raises(ConfigError, match="data.degradation.device=cuda"):
        plan_degradations(cfg, cpu)
    # the loader does what the plan says
    cfg = tiny_config(photos, tmp_path, CROP)
    for loader, keys in (("degrade", {"lr", "target"}), ("draw", {"draws"}), ("nothing", set())):
        degrader = build_degrader(cfg, DegradationPlan(loader, cpu, False))
        batch = next(iter(build_loader(cfg, 0, 1, cpu, degrader=degrader)))
        assert {"lr", "target", "draws"} & batch.keys() == keys


def test_device_path_equals_the_loader_path_and_the_per_sample_path(photos, tmp_path):
    """The trainer's batched path (what runs on the GPU) gives the loader workers' pairs, and each
    sample's pair is the one it gets alone: a sample's LR depends on its seed only."""
    cfg = tiny_config(photos, tmp_path, CROP + ["data.num_workers=1"])
    degrader = build_degrader(cfg, plan_degradations(cfg, torch.device("cpu")))
    in_workers = build_loader(cfg, 4, 2, torch.device("cpu"), degrader=degrader)
    drawing = build_degrader(cfg, DegradationPlan("draw", torch.device("cpu"), False))
    with_draws = build_loader(cfg, 4, 2, torch.device("cpu"), degrader=drawing)
    dataset = build_dataset(cfg)
    for i, (batch, drawn) in enumerate(zip(in_workers, with_draws)):
        # draws made in a worker (as for a GPU's degradations) give the same pairs
        assert "draws" in drawn and "target" not in drawn
        assert "target" in batch and batch["hr"].shape[-1] == 64
        plain = default_collate([dataset[4 + 2 * i], dataset[5 + 2 * i]])
        assert plain["hr"].shape[-1] == 96  # the loader only decodes and crops to crop_pad_size
        batched = degrade_batch(degrader, plain, torch.device("cpu"))
        loaded = degrade_batch(degrader, batch, torch.device("cpu"))
        assert all(torch.equal(a, b) for a, b in zip(batched, loaded))
        assert all(torch.equal(a, b) for a, b in zip(degrade_batch(degrader, drawn, torch.device("cpu")), loaded))
        for j in range(2):
            alone = degrade_batch(degrader, default_collate([dataset[4 + 2 * i + j]]), torch.device("cpu"))
            assert all(torch.equal(a[j], b[0]) for a, b in zip(batched, alone))
    assert i == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_cuda_device_path_gives_the_cpu_pairs(photos, tmp_path):
    """Same draws (noise from the same CPU generators), float64 stages; DiffJPEG runs in float32 as
    BasicSR's, where a coefficient within float32 noise of a rounding half may round the other way on
    another device and move its 8x8 block. Stated tolerance: mean |diff| < 1e-3 and under 1% of LR
    values more than 1.5 levels apart; HR crops and targets equal to float precision."""
    cfg = tiny_config(photos, tmp_path, CROP + ["data.batch_size=4"])
    cpu = build_degrader(cfg, plan_degradations(cfg, torch.device("cpu")))
    gpu = build_degrader(cfg, plan_degradations(cfg, torch.device("cuda")))
    assert gpu.device.type == "cuda"
    dataset = build_dataset(cfg)
    batch = default_collate([dataset[k] for k in range(4)])
    a = degrade_batch(cpu, batch, torch.device("cpu"))
    b = [t.cpu() for t in degrade_batch(gpu, batch, torch.device("cuda"))]
    diff = (a[0] - b[0]).abs()
    assert float(diff.mean()) < 1e-3 and float((diff > 1.5 / 255).float().mean()) < 0.01
    assert torch.equal(a[2], b[2]) and float((a[1] - b[1]).abs().max()) < 1e-5
