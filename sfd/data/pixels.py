"""Pixel helpers written once: MATLAB's rounding to integer levels, and reflect padding that never fails.

One rounding rule, half up (``floor(x + 0.5)``), as MATLAB's ``uint8()``/``im2uint8`` and
``rgb2ycbcr`` round: the published PSNR/SSIM/NIQE numbers reproduced here depend on it. (Real-ESRGAN's
degradations round half to even with ``torch.round``, as its own code does; they keep that rule.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["round_half_up", "to_levels", "quantize", "pad_reflect"]


def round_half_up(x: torch.Tensor) -> torch.Tensor:
    return torch.floor(x + 0.5)


def to_levels(img: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Floats in [0, 1] -> integer levels 0..2**bits - 1 (still floating point), clamped and rounded half up."""
    top = float(2**bits - 1)
    return round_half_up(img.clamp(0, 1) * top)


def quantize(img: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Floats in [0, 1] rounded to ``bits``-bit levels, as a saved image would hold them, still in [0, 1]."""
    return to_levels(img, bits) / float(2**bits - 1)


def pad_reflect(x: torch.Tensor, left: int = 0, right: int = 0, top: int = 0, bottom: int = 0) -> torch.Tensor:
    """Pad (..., H, W) by reflection (it keeps image statistics; OpenCV's BORDER_REFLECT_101), and by
    replication for whatever reflection cannot cover (a pad as large as the side, tiny images)."""
    h, w = x.shape[-2:]
    if not (left or right or top or bottom):
        return x
    r = [min(left, w - 1), min(right, w - 1), min(top, h - 1), min(bottom, h - 1)]
    if any(r):
        x = F.pad(x, r, mode="reflect")
    rest = [left - r[0], right - r[1], top - r[2], bottom - r[3]]
    return F.pad(x, rest, mode="replicate") if any(rest) else x
