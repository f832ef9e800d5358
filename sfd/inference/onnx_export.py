"""``sfd export --format onnx``: a generator as an ONNX file that onnxruntime, chaiNNer and other
front-ends run on images of any size.

The graph takes ``input``, float32 (or float16) RGB in [0, 1], shape (batch, 3, height, width) with
all three dynamic, and returns ``output`` (batch, 3, height*scale, width*scale), not clamped. Inside,
the input is reflect-padded to the size multiple the architecture needs and the output cropped back:
the same as ``sfd sr`` does around the PyTorch model, so a front-end needs no knowledge of the
architecture (tiling, if any, is the front-end's business: the graph runs whatever tile it gets).

The exporter is torch's TorchScript-based one (``dynamo=False``). The ``torch.export``-based one
(torch's default since 2.9) specialises SwinIR's window arithmetic to the example input's size:
its graph fails at run time on other sizes (torch 2.14, onnxscript 0.7), and it takes 10-40 s
where the TorchScript one takes under 2 s on the test models.

Every export is checked before it is kept: onnxruntime runs the file on an image (a crop of the
user's, or a synthetic one) and the largest absolute difference from the PyTorch model, as
``sfd sr`` runs it, must stay under a tolerance; otherwise the file is deleted.
"""

from __future__ import annotations

import copy
import math
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from sfd.errors import UsageError
from sfd.models.loading import LoadedGenerator, load_generator

__all__ = [
    "OPSET",
    "TOLERANCE",
    "OnnxExport",
    "require_onnx",
    "export_onnx",
    "check_onnx",
    "check_image",
    "report_lines",
]

OPSET = 17  # the first opset with LayerNormalization (SwinIR); onnxruntime >= 1.13 runs it
# Largest |ONNX - PyTorch fp32| accepted, per ONNX precision (outputs in [0, 1]; one 8-bit level = 0.0039).
TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2}
# Sizes that architectures pad their input to internally (spandrel's ``pad_to_multiple`` calls): a traced
# graph freezes that padding at the example's size, so the wrapper pads to these multiples first.
_PAD_ATTRIBUTES = ("window_size", "shuffle_factor", "padder_size", "pad_size", "downscale_factor")
CHECK_CROP = (45, 61)  # (height, width) of the check image's centre crop: odd sizes exercise the padding
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


def require_onnx():
    """``(onnx, onnxruntime)``, or one clear ImportError naming the extra to install."""
    try:
        import onnx
        import onnxruntime
    except ImportError as err:
        raise ImportError(
            f"ONNX export needs the onnx and onnxruntime packages ({err.name} is missing): pip install 'sfd[onnx]'"
        ) from None
    return onnx, onnxruntime


@dataclass
class OnnxExport:
    """What ``export_onnx`` wrote and how it checked it."""

    path: str
    architecture: str
    scale: int
    source: str
    precision: str
    opset: int
    multiple: int  # the graph pads height and width to multiples of this
    min_size: int  # smallest height/width the graph accepts
    check_image: str  # what the check ran on
    check_size: tuple[int, int]  # (height, width) of the check input
    max_abs_diff: float  # |ONNX - PyTorch fp32|, outputs in [0, 1]
    max_abs_diff_same_precision: float | None  # fp16 only: |ONNX fp16 - PyTorch fp16|
    tolerance: float
    onnxruntime: str  # version and execution provider of the check

    def as_dict(self) -> dict:
        return asdict(self)


class _AnySize(nn.Module):
    """Reflect-pad (N, 3, h, w) to multiples of ``multiple``, run ``model``, crop to (h*scale, w*scale).

    The pad amounts are computed from the traced shape, so they stay dynamic in the graph."""

    def __init__(self, model: nn.Module, scale: int, multiple: int):
        super().__init__()
        self.model, self.scale, self.multiple = model, scale, multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2], x.shape[3]
        if self.multiple > 1:
            pad_h = (self.multiple - h % self.multiple) % self.multiple
            pad_w = (self.multiple - w % self.multiple) % self.multiple
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
        return self.model(x)[:, :, : h * self.scale, : w * self.scale]


def _as_ints(value) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if isinstance(value, (tuple, list)) and all(isinstance(v, int) for v in value):
        return list(value)
    return []


def graph_multiple(gen: LoadedGenerator) -> int:
    """The multiple the graph pads to: spandrel's size requirement and the model's internal padding."""
    multiple = max(1, gen.size_multiple)
    for name in _PAD_ATTRIBUTES:
        for v in _as_ints(getattr(gen.model, name, None)):
            if v > 1:
                multiple = math.lcm(multiple, v)
    return multiple


def check_image(path: str | Path | None, min_size: int = 0) -> tuple[torch.Tensor, str]:
    """The (3, h, w) image in [0, 1] the check runs on, and its description: the centre crop of ``path``
    (at most ``CHECK_CROP``), or, without a path, a seeded synthetic image (gradients, edges, noise), made
    larger (still odd-sized) when the architecture needs ``min_size``."""
    ch, cw = CHECK_CROP
    if path is None:
        if min_size > min(ch, cw):
            ch, cw = min_size + 3, min_size + 19
        gen = torch.Generator().manual_seed(0)
        yy, xx = torch.meshgrid(torch.linspace(0, 1, ch), torch.linspace(0, 1, cw), indexing="ij")
        img = torch.stack([xx, yy, ((xx * 7).floor() + (yy * 5).floor()) % 2])  # gradients and a checkerboard
        img = (0.8 * img + 0.2 * torch.rand(3, ch, cw, generator=gen)).clamp(0, 1)
        return img, f"a synthetic {ch}x{cw} image (seeded gradients, edges and noise)"
    from sfd.data.io import load_rgb, to_tensor

    img = to_tensor(load_rgb(path))
    h, w = img.shape[-2:]
    ch, cw = min(ch, h), min(cw, w)
    top, left = (h - ch) // 2, (w - cw) // 2
    return img[:, top : top + ch, left : left + cw].contiguous(), f"the centre {ch}x{cw} crop of {Path(path).name}"


def _example_size(multiple: int, min_size: int) -> tuple[int, int]:
    """The traced example's (h, w): multiples of ``multiple``, non-square and unlike the check's size, so
    that no constant of the trace can pass the check by coincidence."""
    base = max(min_size, 16)  # small: tracing runs the model once, slowly (a 23-block RRDBNet: seconds)
    h = math.ceil(base / multiple) * multiple
    w = math.ceil((base + 5) / multiple) * multiple
    if w == h:
        w += multiple
    return h, w


def _run_pytorch(gen: LoadedGenerator, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model as ``sfd sr`` runs it (padded for its size needs, cropped back), not clamped."""
    from sfd.inference.tiling import run_model

    return run_model(model, gen.scale, gen.size_multiple, gen.min_size)(x).float()


def check_onnx(path: str | Path, gen: LoadedGenerator, image: torch.Tensor, precision: str = "fp32") -> dict:
    """Run ONNX file ``path`` in onnxruntime (CPU) on ``image`` (3, h, w) and compare with ``gen.model``.

    Returns ``max_abs_diff`` (against PyTorch fp32) and, for fp16, ``max_abs_diff_same_precision``
    (against PyTorch run in fp16 on the CPU)."""
    _, ort = require_onnx()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: no graph-optimisation chatter
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = image[None].float()
    feed = x.to(_DTYPES[precision]).numpy()
    out = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: feed})[0]).float()
    ref = _run_pytorch(gen, gen.model.float(), x)
    if out.shape != ref.shape:
        raise ValueError(f"onnxruntime returned {tuple(out.shape)}, PyTorch {tuple(ref.shape)}")
    result = {"max_abs_diff": float((out - ref).abs().max()), "max_abs_diff_same_precision": None}
    if precision == "fp16":
        half = _run_pytorch(gen, copy.deepcopy(gen.model).half(), x.half())
        result["max_abs_diff_same_precision"] = float((out - half).abs().max())
    result["onnxruntime"] = f"onnxruntime {ort.__version__} (CPUExecutionProvider)"
    return result


def export_onnx(
    spec: str | Path,
    output: str | Path,
    precision: str = "fp32",
    image: str | Path | None = None,
    prefer_ema: bool = True,
    allow_pickle: bool = False,
    opset: int = OPSET,
) -> OnnxExport:
    """Write the generator of ``spec`` (anything ``load_generator`` takes) to ONNX file ``output``.

    ``precision``: fp32, or fp16 (weights, input and output float16). ``image``: the picture the
    onnxruntime check runs on (its centre crop), or None for a synthetic one. The file is written
    only if the check passes (``TOLERANCE``)."""
    onnx, _ = require_onnx()
    if precision not in _DTYPES:
        raise UsageError(f"ONNX precision {precision!r}: use one of {', '.join(_DTYPES)}")
    if opset < OPSET:
        raise UsageError(f"--opset {opset}: sfd exports opset {OPSET} or later")
    img, image_desc = check_image(image)  # read first: a bad image path fails before the slow part
    gen = load_generator(spec, prefer_ema=prefer_ema, allow_pickle=allow_pickle)
    if precision == "fp16" and not gen.supports_half:
        raise UsageError(f"{gen.architecture} does not support fp16 (spandrel says so); export fp32")
    multiple = graph_multiple(gen)
    min_size = max(gen.min_size, multiple)
    if image is None and min(img.shape[-2:]) < min_size:
        img, image_desc = check_image(None, min_size)
    if min(img.shape[-2:]) < min_size:
        raise UsageError(f"the check image is {img.shape[-2]}x{img.shape[-1]}; {gen.architecture} needs {min_size}")

    dtype = _DTYPES[precision]
    wrapper = _AnySize(copy.deepcopy(gen.model), gen.scale, multiple).to(dtype).eval()
    example = torch.rand(1, 3, *_example_size(multiple, min_size), generator=torch.Generator().manual_seed(0))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # TracerWarnings about Python ints in shapes, and the TorchScript exporter's deprecation notice
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper,
                (example.to(dtype),),
                str(partial),
                dynamo=False,
                opset_version=opset,
                input_names=["input"],
                output_names=["output"],
                dynamic_axes={
                    "input": {0: "batch", 2: "height", 3: "width"},
                    "output": {0: "batch", 2: "out_height", 3: "out_width"},
                },
            )
        model = onnx.load(str(partial))
        onnx.checker.check_model(model)
        from sfd import __version__

        meta = {
            "architecture": gen.architecture,
            "scale": str(gen.scale),
            "source": gen.source,
            "precision": precision,
            "size_multiple": str(multiple),
            "min_size": str(min_size),
            "input": "RGB in [0, 1], NCHW; output NCHW, not clamped",
            "exporter": f"sfd export {__version__}",
        }
        onnx.helper.set_model_props(model, meta)
        model.producer_name, model.doc_string = (
            "sfd",
            f"{gen.architecture} x{gen.scale} ({precision}) from {gen.source}",
        )
        onnx.save(model, str(partial))
        check = check_onnx(partial, gen, img, precision)
        if not check["max_abs_diff"] <= TOLERANCE[precision]:  # NaN fails too
            raise ValueError(
                f"the ONNX file's output differs from PyTorch's by {check['max_abs_diff']:.3g} on {image_desc} "
                f"(tolerance {TOLERANCE[precision]:g} for {precision}); nothing was written"
            )
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)
    return OnnxExport(
        path=str(output),
        architecture=gen.architecture,
        scale=gen.scale,
        source=gen.source,
        precision=precision,
        opset=opset,
        multiple=multiple,
        min_size=min_size,
        check_image=image_desc,
        check_size=(int(img.shape[-2]), int(img.shape[-1])),
        max_abs_diff=check["max_abs_diff"],
        max_abs_diff_same_precision=check["max_abs_diff_same_precision"],
        tolerance=TOLERANCE[precision],
        onnxruntime=check["onnxruntime"],
    )


def report_lines(done: OnnxExport) -> list[str]:
    """What ``sfd export --format onnx`` prints: the file, its interface, and the check's numbers."""
    kind = {"fp32": "float32", "fp16": "float16"}[done.precision]
    lines = [
        f"wrote {done.path}: {done.architecture} x{done.scale} from {done.source}; "
        f"ONNX opset {done.opset}, {done.precision}",
        f"input 'input' {kind} (batch, 3, height, width), RGB in [0, 1], any height and width >= {done.min_size}"
        + (f" (padded inside to multiples of {done.multiple})" if done.multiple > 1 else "")
        + f"; output 'output' (batch, 3, {done.scale}*height, {done.scale}*width), not clamped",
        f"checked with {done.onnxruntime} on {done.check_image}: "
        f"max |ONNX - PyTorch fp32| = {done.max_abs_diff:.3g} (tolerance {done.tolerance:g})",
    ]
    if done.max_abs_diff_same_precision is not None:
        lines[-1] += f"; max |ONNX fp16 - PyTorch fp16| = {done.max_abs_diff_same_precision:.3g}"
    return lines
