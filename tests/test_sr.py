"""Generator loading, export, tiled inference, image IO and the ``sfd sr`` command."""

from __future__ import annotations

import re

import numpy as np
import pytest
import spandrel
import torch
from eval_helpers import sfd_checkpoint, tiny_rrdbnet, tiny_swinir  # noqa: F401  (fixture)
from PIL import Image, ImageOps

from sfd.cli import main
from sfd.data.io import read_image, save_image
from sfd.inference.tiling import bicubic_upscale, run_model, tiled_upscale
from sfd.models.loading import load_generator

pytestmark = pytest.mark.usefixtures("one_thread")

cv2 = pytest.importorskip("cv2", reason="16-bit colour images need OpenCV")


def _out(model, x):
    with torch.inference_mode():
        return model(x)


# ---------------------------------------------------------------- loading


@pytest.mark.parametrize("arch,build,scale", [("rrdbnet", tiny_rrdbnet, 4), ("swinir", tiny_swinir, 2)])
def test_sfd_checkpoint_loads_through_spandrel_ema_first(tmp_path, arch, build, scale):
    raw, ema = build(scale=scale, seed=1), build(scale=scale, seed=2)
    torch.save(sfd_checkpoint(raw, ema, arch, scale), tmp_path / "ckpt.pth")
    x = torch.rand(1, 3, 16, 16)
    loaded = load_generator(tmp_path / "ckpt.pth")
    assert loaded.model.__module__.startswith("spandrel.architectures.")
    assert loaded.scale == scale and not loaded.model.training
    assert torch.allclose(_out(loaded.model, x), _out(ema, x), atol=1e-6)
    assert "generator_ema" in loaded.source and "iteration 1234" in loaded.source
    no_ema = load_generator(tmp_path / "ckpt.pth", prefer_ema=False)
    assert torch.allclose(_out(no_ema.model, x), _out(raw, x), atol=1e-6)
    # The core initialises its generator from this state dict: it must fit the same class.
    fresh = type(loaded.model)(**loaded.hyperparameters)
    fresh.load_state_dict(loaded.model.state_dict())


def test_checkpoint_whose_config_disagrees_is_refused(tmp_path):
    torch.save(sfd_checkpoint(tiny_rrdbnet(scale=4), None, "swinir", 4), tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="config says swinir"):
        load_generator(tmp_path / "bad.pth")


def _new_keys(old_key: str, layout: str) -> str:
    """spandrel (old ESRGAN) key -> the authors' released or BasicSR RRDBNet key."""
    authors = layout == "authors"
    m = re.match(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(\w+)", old_key)
    if m:
        b, r, c, kind = m.groups()
        return f"RRDB_trunk.{b}.RDB{r}.conv{c}.{kind}" if authors else f"body.{b}.rdb{r}.conv{c}.{kind}"
    m = re.match(r"model\.(\d+)(?:\.sub\.\d+)?\.(\w+)$", old_key)
    index, kind = m.groups()
    names = {
        "0": "conv_first",
        "1": "trunk_conv" if authors else "conv_body",
        "3": "upconv1" if authors else "conv_up1",
        "6": "upconv2" if authors else "conv_up2",
        "8": "HRconv" if authors else "conv_hr",
        "10": "conv_last",
    }
    return f"{names[index]}.{kind}"


@pytest.mark.parametrize("layout", ["authors", "basicsr"])
def test_released_rrdbnet_layouts_load(tmp_path, layout):
    model, other = tiny_rrdbnet(scale=4, seed=3), tiny_rrdbnet(scale=4, seed=4)
    sd = {_new_keys(k, layout): v for k, v in model.state_dict().items()}
    if layout == "basicsr":  # params_ema is the one to use; params holds other weights
        sd = {"params_ema": sd, "params": {_new_keys(k, layout): v for k, v in other.state_dict().items()}}
    torch.save(sd, tmp_path / "net.pth")
    loaded = load_generator(tmp_path / "net.pth")
    x = torch.rand(1, 3, 12, 12)
    assert loaded.architecture == "ESRGAN" and loaded.scale == 4
    assert torch.allclose(_out(loaded.model, x), _out(model, x), atol=1e-6)


def test_unknown_model_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="realesrgan-x4plus"):
        load_generator("no-such-model")
    (tmp_path / "a.param").write_text("7767517\n0 0\n")
    with pytest.raises(FileNotFoundError, match="a.bin"):
        load_generator(tmp_path / "a.param")


# ---------------------------------------------------------------- export


@pytest.mark.parametrize("arch,build,scale", [("rrdbnet", tiny_rrdbnet, 4), ("swinir", tiny_swinir, 2)])
def test_export_is_loaded_by_spandrel_with_same_outputs(tmp_path, arch, build, scale):
    ema = build(scale=scale, seed=5)
    torch.save(sfd_checkpoint(build(scale=scale, seed=6), ema, arch, scale), tmp_path / "ckpt.pth")
    assert main(["export", str(tmp_path / "ckpt.pth"), "-o", str(tmp_path / "G.safetensors")]) == 0
    desc = spandrel.ModelLoader().load_from_file(tmp_path / "G.safetensors")
    assert desc.architecture.id == {"rrdbnet": "ESRGAN", "swinir": "SwinIR"}[arch]
    assert desc.scale == scale
    x = torch.rand(1, 3, 20, 20)
    assert torch.allclose(_out(desc.model.eval(), x), _out(ema, x), atol=1e-6)


# ---------------------------------------------------------------- tiling


def test_tiled_equals_untiled_and_tiles_stay_small():
    model = tiny_rrdbnet(scale=4, num_blocks=2, seed=7)
    fn = run_model(model, 4)
    seen = []

    def recording(x):
        seen.append(x.shape[-2:])
        return fn(x)

    img = torch.rand(3, 90, 70)
    full = tiled_upscale(fn, img, 4)
    tiled = tiled_upscale(recording, img, 4, tile=24, tile_pad=32)
    assert (tiled - full).abs().max() <= 1 / 255
    assert max(h * w for h, w in seen) <= (24 + 2 * 32) ** 2 and len(seen) == 4 * 3
    # The image is split evenly: 50 x 26 at tile 24 is 3 x 2 tiles of at most 17 x 13, not 24 x 24 plus slivers.
    seen.clear()
    tiled_upscale(recording, torch.rand(3, 50, 26), 4, tile=24, tile_pad=0)
    assert sorted(set(seen)) == [(16, 13), (17, 13)] and len(seen) == 6
    as_u8 = tiled_upscale(fn, img, 4, tile=24, tile_pad=32, out_dtype=torch.uint8)
    assert as_u8.dtype == torch.uint8 and (as_u8.float() / 255 - full).abs().max() <= 1 / 255 + 1e-6
    alpha = torch.rand(1, 30, 50)
    assert torch.allclose(
        tiled_upscale(bicubic_upscale(2), alpha, 2, tile=8, tile_pad=2),
        tiled_upscale(bicubic_upscale(2), alpha, 2),
        atol=1e-6,
    )


# ---------------------------------------------------------------- IO and the sr command


def _make_inputs(folder):
    rng = np.random.default_rng(0)
    folder.mkdir()
    rgb = (rng.random((12, 10, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(folder / "rgb.PNG")
    rgba = np.dstack([rgb, (rng.random((12, 10)) * 255).astype(np.uint8)])
    Image.fromarray(rgba).save(folder / "rgba.png")
    Image.fromarray(rgb[..., 0]).save(folder / "gray.bmp")
    pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.info["transparency"] = 0
    pal.save(folder / "pal.png", transparency=0)
    Image.fromarray((rng.random((12, 10)) * 65535).astype(np.uint16)).save(folder / "gray16.png")
    cv2.imwrite(str(folder / "rgb16.png"), (rng.random((12, 10, 3)) * 65535).astype(np.uint16))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: 12x10 stored, 10x12 shown
    Image.fromarray(rgb).save(folder / "photo.JPG", exif=exif, quality=95)
    Image.fromarray(rgb).save(folder / "web.webp", lossless=True)
    Image.fromarray(rgb).save(folder / "tif.tiff")
    (folder / "notes.txt").write_text("not an image")


def test_read_image_kinds(tmp_path):
    _make_inputs(tmp_path / "in")
    kinds = {
        p: read_image(tmp_path / "in" / p)
        for p in ["rgba.png", "gray.bmp", "pal.png", "gray16.png", "rgb16.png", "photo.JPG"]
    }
    assert kinds["rgba.png"].alpha is not None and kinds["rgba.png"].bit_depth == 8
    assert kinds["gray.bmp"].grayscale and kinds["gray.bmp"].rgb.shape == (3, 12, 10)
    assert kinds["pal.png"].alpha is not None and not kinds["pal.png"].grayscale
    assert kinds["gray16.png"].bit_depth == 16 and kinds["gray16.png"].grayscale
    rgb16 = kinds["rgb16.png"]
    raw = cv2.imread(str(tmp_path / "in" / "rgb16.png"), cv2.IMREAD_UNCHANGED)[..., ::-1]
    assert rgb16.bit_depth == 16 and torch.equal(
        (rgb16.rgb * 65535).round().permute(1, 2, 0), torch.from_numpy(raw.astype(np.float32))
    )
    with Image.open(tmp_path / "in" / "photo.JPG") as im:
        shown = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    assert kinds["photo.JPG"].rgb.shape == (3, 10, 12)
    assert np.array_equal((kinds["photo.JPG"].rgb * 255).round().byte().permute(1, 2, 0).numpy(), shown)


def test_save_image_16bit_colour_roundtrip(tmp_path):
    rgb = torch.randint(0, 65536, (3, 5, 7), dtype=torch.int32).to(torch.uint16)
    save_image(rgb, tmp_path / "o.png", bit_depth=16)
    back = read_image(tmp_path / "o.png")
    assert back.bit_depth == 16 and torch.equal((back.rgb * 65535).round().to(torch.int32), rgb.to(torch.int32))


def test_sr_command_on_a_folder(tmp_path, capsys):
    _make_inputs(tmp_path / "in")
    model = tiny_rrdbnet(scale=2, seed=8)
    torch.save(model.state_dict(), tmp_path / "g.pth")
    args = [
        "sr",
        str(tmp_path / "in"),
        "-o",
        str(tmp_path / "out"),
        "--model",
        str(tmp_path / "g.pth"),
        "--tile",
        "6",
        "--tile-pad",
        "16",
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["rgb.png", "rgba.png", "gray.png", "pal.png", "gray16.png", "rgb16.png", "photo.png", "web.png", "tif.png"]
    )
    with Image.open(out / "rgba.png") as im:
        assert im.mode == "RGBA" and im.size == (20, 24)
        alpha = torch.from_numpy(np.asarray(im)[..., 3].astype(np.float32) / 255)
    src_alpha = read_image(tmp_path / "in" / "rgba.png").alpha
    expected = tiled_upscale(bicubic_upscale(2), src_alpha, 2)[0]
    assert (alpha - expected).abs().max() <= 1 / 255 + 1e-6  # alpha kept, upscaled on its own
    with Image.open(out / "gray.png") as im:
        assert im.mode == "L"
    with Image.open(out / "gray16.png") as im:
        assert im.mode.startswith("I;16") and im.size == (20, 24)
    rgb16 = cv2.imread(str(out / "rgb16.png"), cv2.IMREAD_UNCHANGED)
    assert rgb16.dtype == np.uint16 and rgb16.shape == (24, 20, 3)
    with Image.open(out / "photo.png") as im:
        assert im.size == (24, 20)  # EXIF rotation applied before upscaling
    # The RGB output is the model's output, quantised.
    x = read_image(tmp_path / "in" / "rgb.PNG").rgb[None]
    expected = (_out(model, x)[0].clamp(0, 1) * 255).permute(1, 2, 0).numpy()
    with Image.open(out / "rgb.png") as im:
        assert np.abs(np.asarray(im).astype(np.float32) - expected).max() <= 1.0
    err = capsys.readouterr().err
    assert "9 written" in err
    assert main(args) == 0 and "9 skipped" in capsys.readouterr().err  # existing outputs are kept


def test_sr_command_reports_bad_input(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "broken.png").write_bytes(b"not a png")
    torch.save(tiny_rrdbnet(scale=2).state_dict(), tmp_path / "g.pth")
    code = main(
        ["sr", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(tmp_path / "g.pth"), "--device", "cpu"]
    )
    assert code == 1 and "1 failed" in capsys.readouterr().err


def test_upscaler_checks_precision_and_channels_last_changes_nothing(tmp_path):
    """One Upscaler for every command: it refuses a precision the architecture lacks (sfd sr, eval and
    --paper-table alike), and channels-last weights and tiles give the same pixels."""
    from sfd.errors import UsageError
    from sfd.inference import InferenceSettings, Upscaler

    path = tmp_path / "g.pth"
    torch.save(tiny_rrdbnet(4).state_dict(), path)
    x = torch.rand(3, 20, 28, generator=torch.Generator().manual_seed(0))
    tiles = dict(tile=12, tile_pad=6)
    plain = Upscaler.load(path, InferenceSettings(**tiles))
    nhwc = Upscaler.load(path, InferenceSettings(channels_last=True, **tiles))
    conv = next(m for m in nhwc.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert plain.describe() == f"{path}, ESRGAN x4, fp32"
    torch.testing.assert_close(nhwc(x), plain(x), atol=1e-5, rtol=0)
    gen = load_generator(path)
    gen.supports_half = False
    with pytest.raises(UsageError, match="ESRGAN does not support fp16; use fp32"):
        Upscaler(gen, InferenceSettings(precision="fp16"))
    with pytest.raises(UsageError, match="precision must be one of"):
        InferenceSettings(precision="fp8")
