"""``sfd export --format onnx``: the file runs in onnxruntime on any size and matches PyTorch."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage
import torch
from conftest import shared_data_dir
from eval_helpers import sfd_checkpoint, tiny_rrdbnet, tiny_swinir
from spandrel.architectures.Compact import Compact

from sfd.cli import main
from sfd.inference.tiling import run_model

onnx = pytest.importorskip("onnx", reason="the onnx extra (pip install 'sfd[onnx]') is not installed")
ort = pytest.importorskip("onnxruntime", reason="the onnx extra (pip install 'sfd[onnx]') is not installed")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def real_image(tmp_path_factory) -> Path:
    """A real photograph: Set5's bird from the shared data, else one that ships inside scikit-image."""
    bird = shared_data_dir() / "sr" / "Set5" / "bird.png"
    if bird.is_file():
        return bird
    dest = tmp_path_factory.mktemp("photo") / "astronaut.png"
    shutil.copy(Path(skimage.__file__).parent / "data" / "astronaut.png", dest)
    return dest


def _export(capsys, args: list[str]) -> tuple[int, str, str]:
    code = main(["export", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _printed_diff(out: str, what: str = "fp32") -> float:
    return float(re.search(rf"max \|ONNX - PyTorch {what}\| = (\S+)", out).group(1))


def _onnxruntime(path: Path, x: torch.Tensor) -> torch.Tensor:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    kind = session.get_inputs()[0].type
    feed = x.numpy().astype(np.float16 if kind == "tensor(float16)" else np.float32)
    return torch.from_numpy(session.run(None, {"input": feed})[0]).float()


def _reference(model: torch.nn.Module, scale: int, x: torch.Tensor, multiple: int = 1) -> torch.Tensor:
    return run_model(model.float().eval(), scale, multiple)(x)


@pytest.mark.parametrize("precision,tolerance", [("fp32", 1e-5), ("fp16", 2e-3)])
def test_rrdbnet_checkpoint_to_onnx_matches_pytorch_on_other_sizes(tmp_path, capsys, real_image, precision, tolerance):
    ema = tiny_rrdbnet(scale=4, seed=11)
    torch.save(sfd_checkpoint(tiny_rrdbnet(scale=4, seed=12), ema, "rrdbnet", 4), tmp_path / "ckpt.pth")
    out_file = tmp_path / "G.onnx"  # the suffix selects the format
    code, out, err = _export(
        capsys,
        [str(tmp_path / "ckpt.pth"), "-o", str(out_file), "--precision", precision, "--check-image", str(real_image)],
    )
    assert code == 0, err
    assert f"crop of {real_image.name}" in out and f"opset 17, {precision}" in out
    printed = _printed_diff(out)
    assert 0 <= printed <= tolerance
    model = onnx.load(str(out_file))
    assert model.opset_import[0].version >= 17
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]  # dynamic batch, height and width
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["architecture"] == "ESRGAN" and meta["scale"] == "4" and meta["precision"] == precision
    # Sizes the export never saw, two images in a batch: the EMA generator's output, as `sfd sr` computes it.
    for h, w in [(23, 31), (40, 17)]:
        x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(h))
        got, want = _onnxruntime(out_file, x), _reference(ema, 4, x)
        assert got.shape == (2, 3, 4 * h, 4 * w)
        assert (got - want).abs().max() <= tolerance


def test_spandrel_models_swinir_and_compact(tmp_path, capsys):
    """A SwinIR (the graph pads to its window) and a compact SRVGG, as spandrel loads them from .pth files."""
    swinir = tiny_swinir(scale=2, seed=13)
    torch.save({"params": swinir.state_dict()}, tmp_path / "swinir.pth")
    code, out, err = _export(capsys, [str(tmp_path / "swinir.pth"), "--format", "onnx", "-o", str(tmp_path / "s")])
    assert code == 0, err
    assert "synthetic 45x61 image" in out and "padded inside to multiples of 4" in out and _printed_diff(out) <= 1e-5
    x = torch.rand(1, 3, 29, 35)  # neither a multiple of the window nor the export's size
    assert (_onnxruntime(tmp_path / "s", x) - _reference(swinir, 2, x)).abs().max() <= 1e-5
    code, _, err = _export(
        capsys, [str(tmp_path / "swinir.pth"), "-o", str(tmp_path / "s16.onnx"), "--precision", "fp16"]
    )
    assert code == 2 and "SwinIR does not support fp16" in err and not (tmp_path / "s16.onnx").exists()

    torch.manual_seed(14)
    compact = Compact(num_in_ch=3, num_out_ch=3, num_feat=16, num_conv=2, upscale=4).eval()
    torch.save(compact.state_dict(), tmp_path / "compact.pth")
    for precision, tolerance in [("fp32", 1e-5), ("fp16", 5e-3)]:
        target = tmp_path / f"c_{precision}.onnx"
        code, out, err = _export(capsys, [str(tmp_path / "compact.pth"), "-o", str(target), "--precision", precision])
        assert code == 0, err
        x = torch.rand(1, 3, 19, 26)
        assert (_onnxruntime(target, x) - _reference(compact, 4, x)).abs().max() <= tolerance
        if precision == "fp16":
            assert "max |ONNX fp16 - PyTorch fp16| = " in out


def test_a_graph_that_differs_from_pytorch_is_refused(tmp_path, capsys, monkeypatch):
    from sfd.inference import onnx_export

    torch.save(tiny_rrdbnet(scale=4, seed=15).state_dict(), tmp_path / "g.pth")
    forward = onnx_export._AnySize.forward
    monkeypatch.setattr(onnx_export._AnySize, "forward", lambda self, x: forward(self, x) + 1e-3)
    code, _, err = _export(capsys, [str(tmp_path / "g.pth"), "-o", str(tmp_path / "g.onnx")])
    assert code == 1 and "differs from PyTorch's by 0.001" in err and "nothing was written" in err
    assert list(tmp_path.iterdir()) == [tmp_path / "g.pth"]  # no file, no partial file


def test_missing_onnxruntime_is_one_line(tmp_path, capsys, monkeypatch):
    torch.save(tiny_rrdbnet(scale=4, seed=16).state_dict(), tmp_path / "g.pth")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime raises ImportError
    code, out, err = _export(capsys, [str(tmp_path / "g.pth"), "-o", str(tmp_path / "g.onnx")])
    assert code == 1 and out == ""
    assert err.strip().splitlines() == [
        "sfd export: error: ONNX export needs the onnx and onnxruntime packages (onnxruntime is missing): "
        "pip install 'sfd[onnx]'"
    ]


def test_safetensors_only_options_are_usage_errors(tmp_path, capsys):
    torch.save(tiny_rrdbnet(scale=4, seed=17).state_dict(), tmp_path / "g.pth")
    code, _, err = _export(
        capsys, [str(tmp_path / "g.pth"), "-o", str(tmp_path / "g.safetensors"), "--precision", "fp16"]
    )
    assert code == 2 and "apply to --format onnx" in err
