"""Real-ESRGAN degradation pipeline, its stages, the pair pool, the U-Net D and degrade-preview."""

import argparse
import io
import json
import math
from dataclasses import asdict

import numpy as np
import pytest
import torch
from PIL import Image

import sfd.data.degradations as deg
from sfd.data.degradations import (
    DegradationConfig,
    PairPool,
    RealESRGANDegradation,
    add_gaussian_noise,
    add_poisson_noise,
    jpeg_encode,
    jpeg_pillow,
    jpeg_quant_tables,
    jpeg_torch,
    usm_sharp,
)
from sfd.data.io import list_images, load_rgb, to_tensor
from sfd.data.kernels import KERNEL_TYPES, KernelSpec, sample_kernel
from sfd.models.unet_d import UNetDiscriminatorSN


def _textured(b: int = 2, size: int = 128, seed: int = 0) -> torch.Tensor:
    """A smooth random colour field with some edges: enough texture for JPEG and blur to act on."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(b, 3, size // 8, size // 8, generator=g)
    img = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    img[..., size // 3 : size // 2, :] += 0.3
    return img.clamp(0, 1)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10(((a - b) ** 2).mean()))


# ---------------------------------------------------------------- kernels


@pytest.mark.parametrize(
    "spec",
    [
        KernelSpec("iso", 21, 2.0, 2.0),
        KernelSpec("aniso", 21, 3.0, 1.0, 0.7),
        KernelSpec("generalized_iso", 15, 1.5, 1.5, beta=0.6),
        KernelSpec("generalized_aniso", 15, 2.5, 1.0, -1.1, beta=3.0),
        KernelSpec("plateau_iso", 13, 1.2, 1.2, beta=1.5),
        KernelSpec("plateau_aniso", 13, 2.0, 0.8, 2.0, beta=1.8),
        KernelSpec("sinc", 11, omega_c=1.3),
        KernelSpec("identity", 1),
    ],
    ids=lambda s: s.type,
)
def test_kernels_sum_to_one_shape_and_symmetry(spec):
    k = spec.build()
    assert k.shape == (spec.size, spec.size)
    assert float(k.sum()) == pytest.approx(1.0, abs=1e-12)
    # All of them are point-symmetric (k(x) = k(-x)), so convolution equals correlation.
    assert torch.allclose(k, k.flip(0, 1), atol=1e-15)
    if not spec.type.endswith("aniso"):  # isotropic: also mirror- and transpose-symmetric
        assert torch.allclose(k, k.T, atol=1e-15) and torch.allclose(k, k.flip(0), atol=1e-15)
    padded = spec.build(pad_to=21)
    assert padded.shape == (21, 21) and float(padded.sum()) == pytest.approx(1.0, abs=1e-12)
    assert padded[10, 10] == k[spec.size // 2, spec.size // 2]  # stays centred


def test_filter2d_is_conv2d_with_reflect_padding():
    from sfd.data.degradations import filter2d

    img = torch.rand(2, 3, 40, 33, dtype=torch.float64)
    kernels = torch.rand(2, 7, 7, dtype=torch.float64)  # asymmetric: checks orientation too
    padded = torch.nn.functional.pad(img, (3, 3, 3, 3), mode="reflect")
    conv = torch.nn.functional.conv2d
    direct = torch.cat([conv(padded[i : i + 1], kernels[i].expand(3, 1, 7, 7), groups=3) for i in range(2)])
    assert torch.allclose(filter2d(img, kernels), direct, atol=1e-12)
    assert torch.allclose(filter2d(img, kernels[0]), filter2d(img, kernels[:1].expand(2, 7, 7)), atol=1e-12)


def test_gaussian_kernels_have_their_sigma_and_angle():
    ax = torch.arange(41, dtype=torch.float64) - 20
    g1 = torch.exp(-0.5 * (ax / 2.0) ** 2)
    separable = torch.outer(g1, g1) / torch.outer(g1, g1).sum()
    assert torch.allclose(KernelSpec("iso", 41, 2.0, 2.0).build(), separable, atol=1e-14)
    k = KernelSpec("aniso", 41, 3.0, 1.0, 0.0).build()  # wide along x (columns)
    assert float((k.sum(0) * ax**2).sum()) == pytest.approx(9.0, rel=1e-3)
    assert float((k.sum(1) * ax**2).sum()) == pytest.approx(1.0, rel=1e-3)
    rotated = KernelSpec("aniso", 41, 3.0, 1.0, math.pi / 2).build()
    assert torch.allclose(rotated, k.T, atol=1e-12)
    # beta = 1 makes the generalised Gaussian a Gaussian.
    assert torch.allclose(
        KernelSpec("generalized_aniso", 41, 3.0, 1.0, 0.3, beta=1.0).build(),
        KernelSpec("aniso", 41, 3.0, 1.0, 0.3).build(),
        atol=1e-14,
    )


def test_sinc_kernel_is_a_low_pass_at_its_cutoff():
    k = KernelSpec("sinc", 21, omega_c=math.pi / 2).build()
    response = torch.fft.fft2(k, s=(256, 256)).abs()  # frequency w = 2 pi i / 256
    assert float(response[0, 0]) == pytest.approx(1.0, abs=1e-12)
    assert float(response[0, 32]) > 0.9  # w = pi/4: passed
    assert float(response[0, 96]) < 0.1  # w = 3pi/4: stopped


def test_kernel_sampling_follows_the_probabilities():
    cfg = DegradationConfig()
    gen = torch.Generator().manual_seed(0)
    draws = [
        sample_kernel(
            gen,
            cfg.kernel_sizes(1),
            cfg.kernel_list,
            cfg.kernel_prob,
            cfg.blur_sigma,
            cfg.betag_range,
            cfg.betap_range,
            cfg.sinc_prob,
        )
        for _ in range(3000)
    ]
    types = [d.type for d in draws]
    assert types.count("sinc") / 3000 == pytest.approx(0.1, abs=0.02)
    for kind, p in zip(KERNEL_TYPES, cfg.kernel_prob):
        assert types.count(kind) / 3000 == pytest.approx(0.9 * p, abs=0.025)
    assert {d.size for d in draws} == set(range(7, 22, 2))
    assert all(0.2 <= d.sigma_x <= 3 for d in draws if d.type != "sinc")


# ---------------------------------------------------------------- config


# Real-ESRGAN's options/train_realesrgan_x4plus.yml
REAL_ESRGAN_X4PLUS = dict(
    blur_kernel_size=21,
    kernel_prob=[0.45, 0.25, 0.12, 0.03, 0.12, 0.03],
    sinc_prob=0.1,
    blur_sigma=[0.2, 3],
    betag_range=[0.5, 4],
    betap_range=[1, 2],
    resize_prob=[0.2, 0.7, 0.1],
    resize_range=[0.15, 1.5],
    gaussian_noise_prob=0.5,
    noise_range=[1, 30],
    poisson_scale_range=[0.05, 3],
    gray_noise_prob=0.4,
    jpeg_range=[30, 95],
    second_blur_prob=0.8,
    blur_kernel_size2=21,
    sinc_prob2=0.1,
    blur_sigma2=[0.2, 1.5],
    betag_range2=[0.5, 4],
    betap_range2=[1, 2],
    resize_prob2=[0.3, 0.4, 0.3],
    resize_range2=[0.3, 1.2],
    gaussian_noise_prob2=0.5,
    noise_range2=[1, 25],
    poisson_scale_range2=[0.05, 2.5],
    gray_noise_prob2=0.4,
    jpeg_range2=[30, 95],
    final_sinc_prob=0.8,
    queue_size=180,
)


def test_config_defaults_are_real_esrgan_x4plus():
    defaults = asdict(DegradationConfig())
    for key, value in REAL_ESRGAN_X4PLUS.items():
        assert defaults[key] == value, key
    assert defaults["kernel_list"] == defaults["kernel_list2"] == list(KERNEL_TYPES) and defaults["use_usm"]
    with pytest.raises(ValueError, match="kernel_list"):
        DegradationConfig(kernel_list=["iso", "gaussian"], kernel_prob=[0.5, 0.5])
    with pytest.raises(ValueError, match="resize_prob2"):
        DegradationConfig(resize_prob2=[0.5, 0.5])


def test_load_degradation_config_from_training_yaml(tmp_path):
    from sfd.data.preview import load_degradation_config

    path = tmp_path / "c.yml"
    path.write_text("data:\n  degradation:\n    jpeg_range: [50, 60]\n    noise_range2: [2, 3]\n")
    cfg = load_degradation_config(path)
    assert cfg.jpeg_range == [50, 60] and cfg.noise_range2 == [2.0, 3.0] and cfg.sinc_prob == 0.1
    path.write_text("degradation:\n  jpeg_rnage: [50, 60]\n")
    with pytest.raises(ValueError, match="jpeg_range"):
        load_degradation_config(path)


# ---------------------------------------------------------------- the pipeline


def test_shapes_value_range_and_8bit_levels():
    hr = _textured(3, 128)
    lr, target, plain = RealESRGANDegradation(scale=4)(hr, torch.tensor([0, 1, 2]))
    assert lr.shape == (3, 3, 32, 32) and target.shape == hr.shape
    assert lr.min() >= 0 and lr.max() <= 1 and target.min() >= 0 and target.max() <= 1
    assert torch.equal(lr * 255, (lr * 255).round())
    assert not torch.equal(target, hr)  # unsharp-masked
    lr2, target2, _ = RealESRGANDegradation(DegradationConfig(use_usm=False), scale=2)(hr[:1], [5])
    assert lr2.shape == (1, 3, 64, 64) and torch.equal(target2, hr[:1])
    with pytest.raises(ValueError, match="multiple of the scale"):
        RealESRGANDegradation(scale=3)(hr[:1], [0])


def test_same_seed_same_output_whatever_the_batch():
    hr = _textured(4, 96)
    degrade = RealESRGANDegradation()
    seeds = [11, 12, 13, 14]
    lr, _, _ = degrade(hr, seeds)
    again, _, _ = degrade(hr, seeds)
    assert torch.equal(lr, again)
    alone, _, _ = degrade(hr[2:3], [13])
    reordered, _, _ = degrade(hr[[3, 2, 0]], [99, 13, 7])  # other neighbours, other position
    assert torch.equal(alone[0], lr[2]) and torch.equal(reordered[1], lr[2])
    other_seed, _, _ = degrade(hr[2:3], [14])
    assert not torch.equal(other_seed[0], lr[2])


def test_describe_is_the_sampled_parameters_and_serialisable():
    degrade = RealESRGANDegradation()
    d = degrade.describe(7)
    assert d == asdict(degrade.sample(7)) == degrade.describe(7)
    assert set(d) == {"seed", "first", "second", "sinc", "final_mode", "resize_first", "crop"}
    assert 30 <= d["first"]["jpeg_quality"] <= 95 and 0.15 <= d["first"]["scale"] <= 1.5
    json.dumps(d)
    assert len(degrade.sample(7).summary()) == 6


def test_pipeline_applies_the_described_parameters(monkeypatch):
    """The JPEG qualities, noise levels and intermediate sizes the pipeline uses are describe()'s."""
    calls = {"jpeg": [], "noise": []}
    real_encode, real_gauss, real_poisson = deg.jpeg_encode, deg.add_gaussian_noise, deg.add_poisson_noise

    def encode(img, quality):
        calls["jpeg"].append(quality)
        return real_encode(img, quality)

    def gauss(img, sigma, gray, gen):
        calls["noise"].append(("gaussian", sigma, gray, tuple(img.shape[-2:])))
        return real_gauss(img, sigma, gray, gen)

    def poisson(img, scale, gray, gen):
        calls["noise"].append(("poisson", scale, gray, tuple(img.shape[-2:])))
        return real_poisson(img, scale, gray, gen)

    monkeypatch.setattr(deg, "jpeg_encode", encode)
    monkeypatch.setattr(deg, "add_gaussian_noise", gauss)
    monkeypatch.setattr(deg, "add_poisson_noise", poisson)
    degrade = RealESRGANDegradation(DegradationConfig(jpeg_backend="pillow"))
    for seed in (3, 4):
        calls["jpeg"].clear(), calls["noise"].clear()
        p = degrade.sample(seed)
        degrade(_textured(1, 128), [seed])
        assert calls["jpeg"] == [p.first.jpeg_quality, p.second.jpeg_quality]
        first_size = (int(128 * p.first.scale),) * 2
        second_size = (int(32 * p.second.scale),) * 2
        assert calls["noise"] == [
            (p.first.noise, p.first.noise_level, p.first.gray, first_size),
            (p.second.noise, p.second.noise_level, p.second.gray, second_size),
        ]


def test_tiny_float_differences_do_not_change_the_output():
    """The pipeline runs in float64, so device-sized float differences (~1e-15; here 1e-10) stay
    far below the 8-bit roundings before JPEG and Poisson noise: the output does not move."""
    hr = _textured(3, 128, seed=3).double()
    degrade = RealESRGANDegradation(DegradationConfig(jpeg_backend="pillow"))
    seeds = [20, 21, 22]
    assert torch.equal(degrade(hr, seeds)[0], degrade(hr + 1e-10, seeds)[0])


def test_torch_jpeg_backend_pipeline():
    hr = _textured(2, 64)
    lr, _, _ = RealESRGANDegradation(DegradationConfig(jpeg_backend="torch"))(hr, [0, 1])
    assert lr.shape == (2, 3, 16, 16) and torch.equal(lr * 255, (lr * 255).round())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_cuda_gives_the_cpu_result():
    hr = _textured(4, 128)
    seeds = [0, 1, 2, 3]
    for backend in ("pillow", "torch", "diffjpeg"):
        degrade = RealESRGANDegradation(DegradationConfig(jpeg_backend=backend))
        cpu, _, _ = degrade(hr, seeds)
        gpu, _, _ = degrade(hr.cuda(), seeds)
        # Same draws, float64 arithmetic: equal but for an exact rounding tie, which could move a
        # pixel by a level before a JPEG re-encode spreads it over its block.
        diff = (gpu.cpu() - cpu).abs()
        assert float(diff.mean()) < 1e-3 and float((diff > 1.5 / 255).float().mean()) < 0.01


def test_real_photo(shared_data):
    path = list_images(shared_data("train/BSDS400"))[0]
    hr = to_tensor(load_rgb(path))[:, :256, :256][None]
    lr, _, _ = RealESRGANDegradation()(hr.expand(2, -1, -1, -1), [0, 1])
    assert lr.shape == (2, 3, 64, 64) and not torch.equal(lr[0], lr[1])


# ---------------------------------------------------------------- stages


@pytest.mark.parametrize("sigma", [3.0, 15.0, 30.0])
def test_gaussian_noise_std_matches_sigma(sigma):
    flat = torch.full((1, 3, 256, 256), 0.5)
    noise = add_gaussian_noise(flat, sigma, False, 0) - flat
    assert float(noise.std() * 255) == pytest.approx(sigma, rel=0.1)
    assert float(noise.mean() * 255) == pytest.approx(0, abs=0.015 * sigma)  # 5 standard errors
    gray = add_gaussian_noise(flat, sigma, True, 0) - flat
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 0], gray[:, 2])
    assert float(gray.std() * 255) == pytest.approx(sigma, rel=0.1)


def test_poisson_noise_variance_is_scale_squared_times_level_over_vals():
    # 200 distinct 8-bit levels -> vals = 256; a large flat region at level 128 to measure on.
    img = torch.full((1, 3, 256, 256), 128 / 255)
    img[..., :8, :200] = torch.arange(200) / 255
    region = (..., slice(16, None), slice(None))
    for scale in (0.5, 1.0, 2.0):
        noise = add_poisson_noise(img, scale, False, 1) - img
        expected = scale**2 * (128 / 255) / 256
        assert float(noise[region].var()) == pytest.approx(expected, rel=0.1)
        assert float(noise[region].mean()) == pytest.approx(0, abs=0.1 * math.sqrt(expected))
    gray = add_poisson_noise(img, 1.0, True, 1) - img
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 0], gray[:, 2])


@pytest.mark.parametrize("quality", [30, 75, 95])
def test_jpeg_reencodes_with_a_real_codec_at_quality(quality):
    img = _textured(1, 96)[0]
    data = jpeg_encode(img, quality)
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "JPEG"
        tables = {k: torch.tensor(list(v)).view(8, 8) for k, v in im.quantization.items()}
    # The stream's quantisation tables are libjpeg's for this quality.
    luma, chroma = jpeg_quant_tables(quality)
    assert torch.equal(tables[0], luma) and torch.equal(tables[1], chroma)
    # ... and the result is exactly Pillow's own encode/decode at that quality.
    arr = (img * 255).round().byte().permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=quality)
    reference = torch.from_numpy(np.asarray(Image.open(buf).convert("RGB")).copy()).permute(2, 0, 1) / 255
    assert torch.equal(jpeg_pillow(img[None], [quality])[0], reference)


def test_quant_tables_follow_libjpeg_scaling():
    luma50, chroma50 = jpeg_quant_tables(50)  # quality 50 is the Annex K table itself
    assert luma50[0].tolist() == [16, 11, 10, 16, 24, 40, 51, 61]
    assert chroma50[0].tolist() == [17, 18, 24, 47, 99, 99, 99, 99]
    assert jpeg_quant_tables(100)[0].eq(1).all()
    coarse, fine = jpeg_quant_tables(30)[0], jpeg_quant_tables(60)[0]
    assert (coarse >= fine).all() and (coarse > fine).any()


def test_torch_jpeg_approximates_the_codec(shared_data):
    path = list_images(shared_data("train/BSDS400"))[1]
    img = to_tensor(load_rgb(path))[:, :128, :160][None]
    codec = jpeg_pillow(img, [40])
    approx = jpeg_torch(img, [40])
    assert _psnr(approx, codec) > _psnr(codec, img) + 5  # much closer to libjpeg than JPEG is to the input
    x = img.clone().requires_grad_()
    jpeg_torch(x, [40], differentiable=True).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_usm_sharpens_edges_and_leaves_flat_areas():
    img = torch.full((1, 3, 128, 128), 0.3)
    img[..., 64:] = 0.7
    out = usm_sharp(img)
    assert out.min() >= 0 and out.max() <= 1
    assert torch.allclose(out[..., :, :20], img[..., :, :20], atol=1e-6)  # far from the edge
    assert out[..., 63].mean() < 0.3 and out[..., 64].mean() > 0.7  # overshoot on both sides


# ---------------------------------------------------------------- pair pool


def test_pair_pool_fills_then_mixes_reproducibly():
    def run(seed: int) -> list[torch.Tensor]:
        pool, outs = PairPool(size=8, seed=seed), []
        for step in range(6):
            lr = torch.arange(step * 2, step * 2 + 2, dtype=torch.float32).view(2, 1)
            out_lr, out_hr = pool(lr, lr * 10)
            assert torch.equal(out_hr, out_lr * 10)  # pairs stay paired
            outs.append(out_lr.flatten())
        return outs

    outs = run(0)
    assert torch.equal(torch.cat(outs[:4]), torch.arange(8.0))  # filling: passed through
    seen = torch.cat(outs[4:])
    assert set(seen.tolist()) <= set(range(10)) and len(set(seen.tolist())) == 4
    assert all(torch.equal(a, b) for a, b in zip(outs, run(0)))
    with pytest.raises(ValueError, match="multiple"):
        PairPool(size=7)(torch.zeros(2, 1))


def test_pair_pool_state_dict_resumes():
    pool = PairPool(size=4, seed=3)
    for i in range(3):
        pool(torch.full((2, 1), float(i)))
    clone = PairPool(size=4, seed=99)
    clone.load_state_dict(pool.state_dict())
    x = torch.full((2, 1), 9.0)
    assert torch.equal(pool(x)[0], clone(x.clone())[0])


# ---------------------------------------------------------------- U-Net discriminator


def test_unet_discriminator_shape_and_spectral_norm():
    d = UNetDiscriminatorSN(num_in_ch=3, num_feat=8)
    x = torch.rand(2, 3, 32, 24, requires_grad=True)
    out = d(x)
    assert out.shape == (2, 1, 32, 24)
    out.mean().backward()
    assert x.grad is not None
    # Real-ESRGAN's layout: spectral norm on conv1..conv8, plain conv0 and conv9.
    sn = [f"conv{i}" for i in range(1, 9)]
    for i in range(10):
        conv = getattr(d, f"conv{i}")
        assert hasattr(conv, "weight_orig") == (f"conv{i}" in sn)
    keys = set(d.state_dict())
    assert {"conv0.weight", "conv0.bias", "conv1.weight_orig", "conv1.weight_u", "conv1.weight_v", "conv9.bias"} <= keys
    assert "conv1.bias" not in keys
    # The spectral norm is enforced: the normalised weight's largest singular value is ~1.
    d.train()
    for _ in range(30):  # each training-mode call runs one power iteration
        d.conv5(torch.rand(1, 32, 4, 4))  # 4 * num_feat in
    w = d.conv5.weight.detach().flatten(1)
    assert float(torch.linalg.matrix_norm(w, ord=2)) == pytest.approx(1.0, rel=0.05)
    with pytest.raises(ValueError, match="divisible by 8"):
        d(torch.rand(1, 3, 20, 20))


def test_unet_discriminator_without_skips():
    d = UNetDiscriminatorSN(3, 8, skip_connection=False)
    assert d(torch.rand(1, 3, 32, 32)).shape == (1, 1, 32, 32)


# ---------------------------------------------------------------- degrade-preview


def test_degrade_preview_writes_a_png(tmp_path, capsys):
    from sfd.cli import COMMAND_MODULES
    from sfd.data import commands

    assert "sfd.data.commands" in COMMAND_MODULES
    src = tmp_path / "in.png"
    Image.fromarray((_textured(1, 80)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(src)
    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers())
    out = tmp_path / "sheet.png"
    args = parser.parse_args(["degrade-preview", str(src), "-o", str(out), "--n", "3", "--seed", "5", "--patch", "64"])
    assert args.func(args) == 0
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 128 and im.height > 64
    printed = capsys.readouterr().out
    assert "seed 5" in printed and "seed 7" in printed and "jpeg q" in printed


def test_degrade_preview_puts_codecs_side_by_side(tmp_path, capsys):
    from sfd.data.preview import preview_sheet

    image = _textured(1, 80)[0]
    texts = preview_sheet(image, tmp_path / "sheet.png", n=2, seed=3, patch=64, codecs=["diffjpeg", "pillow"])
    assert [t[0] for t in texts] == ["jpeg: diffjpeg", "jpeg: pillow"] * 2
    assert texts[0][1:] == texts[1][1:] and texts[0][1] == "seed 3"  # the same parameters for both codecs
    with Image.open(tmp_path / "sheet.png") as im:
        assert im.width >= 3 * 64  # HR, diffjpeg, pillow in one row
