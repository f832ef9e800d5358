"""BasicSR's ``DiffJPEG`` codec (the JPEG of Real-ESRGAN's training degradations), re-implemented in PyTorch.

Real-ESRGAN compresses its LR images with BasicSR's ``DiffJPEG(differentiable=False)``, not with
libjpeg, and its images carry that codec's look. What it does, and what is reproduced here:

- quality is a float (Real-ESRGAN draws it uniformly from ``jpeg_range``), turned into a scale
  factor of the Annex K tables by libjpeg's formula (5000/q below 50, 200 - 2q above), divided
  by 100, *without* libjpeg's rounding of the scaled table or its clamp to 1..255;
- the luma table is applied transposed (BasicSR's ``y_table`` is the standard's transpose; the
  chroma table is symmetric where it differs from 99);
- the image is padded with zeros to a multiple of 16 at the bottom and right, then cropped back;
- JFIF RGB -> YCbCr, 4:2:0 chroma by a 2x2 mean, orthonormal 8x8 DCT, ``round(coef / step)``
  (half to even, as ``torch.round``), dequantisation, inverse DCT;
- chroma upsampled by repeating each sample 2x2 (libjpeg interpolates: its colour is smoother);
- the result clamped to [0, 1] but *not* rounded to 8-bit levels (the input is not rounded either).

Computed in float32 with BasicSR's order of operations, whatever the input's dtype: a coefficient
that falls within float32 noise of a rounding half (frequent on 8-bit input, exact on grey
images) then rounds the way BasicSR's rounds it, where float64 would move a whole block (on the
CPU the result equals BasicSR's, tests/test_diffjpeg.py). On a GPU the float32 sums run in another
order, so such a coefficient can round the other way there: BasicSR's codec does the same, and the
pipeline's CPU and CUDA results agree within the tolerance stated in tests/test_degrade_device.py.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["diffjpeg", "diffjpeg_steps", "quality_to_factor"]

# ITU-T T.81 Annex K tables, row-major (vertical frequency first).
_LUMA = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
_CHROMA_CORNER = ((17, 18, 24, 47), (18, 21, 26, 66), (24, 26, 56, 99), (47, 66, 99, 99))


def _tables() -> tuple[torch.Tensor, torch.Tensor]:
    luma = torch.tensor(_LUMA, dtype=torch.float32).T  # DiffJPEG's orientation (see the module docstring)
    chroma = torch.full((8, 8), 99.0)
    chroma[:4, :4] = torch.tensor(_CHROMA_CORNER, dtype=torch.float32).T
    return luma, chroma


def quality_to_factor(quality: torch.Tensor) -> torch.Tensor:
    """DiffJPEG's table scale for float qualities (float32): 50/q below 50, 2 - q/50 from 50 on."""
    q = quality.to(torch.float32)
    return torch.where(q < 50, 5000.0 / q, 200.0 - q * 2) / 100.0


def diffjpeg_steps(quality: Sequence[float] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The (luma, chroma) quantisation steps, (B, 8, 8) float32 each, for one quality per image."""
    factor = quality_to_factor(torch.as_tensor(quality, dtype=torch.float32).reshape(-1)).view(-1, 1, 1)
    luma, chroma = _tables()
    return luma * factor, chroma * factor


@functools.lru_cache(maxsize=8)  # constants made once per device: no host-to-device copy per call
def _cosines(dtype: torch.dtype, device) -> torch.Tensor:
    """(64, 64): entry [(x, y), (u, v)] = cos((2x+1)u pi/16) cos((2y+1)v pi/16), rounded once to float32."""
    n = torch.arange(8, dtype=torch.float64)
    c = torch.cos((2 * n[:, None] + 1) * n[None] * math.pi / 16)  # c[x, u]
    return (c[:, None, :, None] * c[None, :, None, :]).reshape(64, 64).to(device, dtype)


@functools.lru_cache(maxsize=8)
def _alpha(dtype: torch.dtype, device) -> torch.Tensor:
    """(64,): C(u) C(v), with C(0) = 1/sqrt(2), else 1."""
    a = torch.tensor([1 / math.sqrt(2)] + [1.0] * 7, dtype=torch.float64)
    return (a[:, None] * a[None]).reshape(64).to(device, dtype)


def _codec(plane: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """Level-shift, DCT, quantise (round half to even), dequantise and inverse-DCT every 8x8 block
    of ``plane`` (B, H, W) float32, H and W multiples of 8, with per-image ``steps`` (B, 8, 8).
    The float32 operations come in BasicSR's order (scale after the sum, steps as divisors), so
    that the roundings of coefficients that fall near a half agree with it."""
    b, h, w = plane.shape
    cos = _cosines(plane.dtype, plane.device)
    alpha = _alpha(plane.dtype, plane.device)
    blocks = (plane - 128).reshape(b, h // 8, 8, w // 8, 8).transpose(2, 3).reshape(b, -1, 64)
    steps = steps.to(plane.device, non_blocking=True).reshape(b, 1, 64)
    coef = alpha * 0.25 * (blocks @ cos)  # orthonormal DCT
    coef = torch.round(coef / steps) * steps
    blocks = 0.25 * ((coef * alpha) @ cos.T) + 128
    return blocks.reshape(b, h // 8, w // 8, 8, 8).transpose(2, 3).reshape(b, h, w)


# JFIF colour transforms, rows = output channel
_TO_YCC = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))
_TO_RGB = ((1.0, 0.0, 1.402), (1.0, -0.344136, -0.714136), (1.0, 1.772, 0.0))


@functools.lru_cache(maxsize=16)
def _matrix(values: tuple, device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).to(device)


def _colour(x: torch.Tensor, matrix) -> torch.Tensor:
    """Per-pixel 3x3 transform of (B, 3, H, W), as one float32 matmul over the channels."""
    m = _matrix(matrix, x.device)
    return (x.permute(0, 2, 3, 1) @ m.T).permute(0, 3, 1, 2)


@contextlib.contextmanager
def _ieee_float32():
    """Full float32 matmuls (no TF32 on GPUs), whatever the process set: TF32's 10-bit mantissa would
    round many coefficients the other way."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def diffjpeg(img: torch.Tensor, quality: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """JPEG-compress each image of ``img`` (B, 3, H, W) in [0, 1] at its own float ``quality`` as
    BasicSR's ``DiffJPEG(differentiable=False)`` does; returns floats in [0, 1] (not 8-bit levels)
    in ``img``'s dtype. Computed in float32, as BasicSR's codec computes."""
    with _ieee_float32():
        return _diffjpeg(img, quality)


def _diffjpeg(img: torch.Tensor, quality: Sequence[float] | torch.Tensor) -> torch.Tensor:
    b, _, h, w = img.shape
    luma_steps, chroma_steps = diffjpeg_steps(quality)
    if luma_steps.shape[0] != b:
        raise ValueError(f"got {luma_steps.shape[0]} qualities for a batch of {b}")
    x = F.pad(img.float(), (0, (-w) % 16, 0, (-h) % 16))  # zeros, to whole 16x16 macroblocks
    shift = _matrix((0.0, 128.0, 128.0), x.device).view(1, 3, 1, 1)
    ycc = _colour(x * 255, _TO_YCC) + shift
    y = _codec(ycc[:, 0], luma_steps)
    chroma = F.avg_pool2d(ycc[:, 1:], 2)
    chroma = torch.stack([_codec(chroma[:, 0], chroma_steps), _codec(chroma[:, 1], chroma_steps)], 1)
    chroma = chroma.repeat_interleave(2, -2).repeat_interleave(2, -1)  # each sample repeated 2x2
    rgb = _colour(torch.cat([y[:, None], chroma], 1) - shift, _TO_RGB)
    return (rgb[..., :h, :w].clamp(0, 255) / 255).to(img.dtype)
