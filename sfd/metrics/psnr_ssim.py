"""PSNR and SSIM with the SR literature's MATLAB convention [choice: the supplement states none].

Inputs are float images in [0, 1] (or uint8 tensors), shaped (3, H, W), (1, H, W) or (N, C, H, W).
Both are quantised to 8 bits, converted to BT.601 luma rounded to integers (MATLAB's
``rgb2ycbcr`` on uint8), cropped by ``border`` pixels and measured in float64.
"""

from __future__ import annotations

import torch

from sfd.data.pixels import round_half_up, to_levels
from sfd.metrics.base import FullReferenceMetric

__all__ = ["to_uint8_values", "rgb_to_y", "psnr", "ssim", "PSNR", "SSIM"]


def to_uint8_values(img: torch.Tensor) -> torch.Tensor:
    """Floats in [0, 1] (or a uint8 tensor) -> float64 integers 0..255, rounded half up as MATLAB."""
    if img.dtype == torch.uint8:
        return img.to(torch.float64)
    return to_levels(img.detach().to(torch.float64))


def rgb_to_y(img255: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) 0..255 -> (..., 1, H, W) luma rounded like MATLAB's rgb2ycbcr on uint8.

    A one-channel image is taken as its own luma.
    """
    if img255.shape[-3] == 1:
        return img255
    r, g, b = img255.unbind(-3)
    y = 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0
    return round_half_up(y).unsqueeze(-3)


def _prepare(sr: torch.Tensor, hr: torch.Tensor, border: int, y_channel: bool):
    if sr.shape != hr.shape:
        raise ValueError(f"SR {tuple(sr.shape)} and HR {tuple(hr.shape)} differ in shape")
    sr, hr = to_uint8_values(sr), to_uint8_values(hr)
    if sr.dim() == 3:
        sr, hr = sr[None], hr[None]
    if y_channel:
        sr, hr = rgb_to_y(sr), rgb_to_y(hr)
    if border:
        sr = sr[..., border:-border, border:-border]
        hr = hr[..., border:-border, border:-border]
    return sr, hr


def psnr(sr: torch.Tensor, hr: torch.Tensor, border: int = 0, y_channel: bool = True) -> torch.Tensor:
    """PSNR in dB per image (a tensor of N values; N = 1 for a single image)."""
    sr, hr = _prepare(sr, hr, border, y_channel)
    mse = ((sr - hr) ** 2).mean(dim=(-3, -2, -1))
    return 10.0 * torch.log10(255.0**2 / mse)  # inf for identical images, as MATLAB


def _gaussian_1d(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def _valid_filter_matrix(n: int, taps: torch.Tensor) -> torch.Tensor:
    """(n - k + 1, n) banded matrix whose product with a signal is its 'valid' correlation."""
    k = taps.numel()
    rows = torch.arange(n - k + 1, device=taps.device)
    matrix = torch.zeros(n - k + 1, n, dtype=taps.dtype, device=taps.device)
    matrix.scatter_(1, rows[:, None] + torch.arange(k, device=taps.device), taps.expand(n - k + 1, k).contiguous())
    return matrix


def _gaussian_filter_valid(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """'valid' 2-D Gaussian filtering of every (H, W) plane of ``x``, as two banded matmuls.

    The 11x11 window is separable. A dense float64 conv2d builds a huge im2col buffer and is
    ~20x slower (mostly page faults); the matmuls use BLAS and agree with it to 1e-13.
    """
    h, w = x.shape[-2:]
    return _valid_filter_matrix(h, g) @ x @ _valid_filter_matrix(w, g).T


def ssim(sr: torch.Tensor, hr: torch.Tensor, border: int = 0, y_channel: bool = True) -> torch.Tensor:
    """SSIM per image (Wang et al. 2004: 11x11 Gaussian, sigma 1.5, 'valid' filtering).

    Colour images measured without ``y_channel`` average SSIM over channels.
    """
    sr, hr = _prepare(sr, hr, border, y_channel)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    # Filter the five maps in one call: means, second moments and the cross moment.
    stacked = torch.stack([sr, hr, sr * sr, hr * hr, sr * hr], dim=1)  # (N, 5, C, H, W)
    mu1, mu2, e11, e22, e12 = _gaussian_filter_valid(stacked, _gaussian_1d().to(sr.device)).unbind(1)
    s11, s22, s12 = e11 - mu1**2, e22 - mu2**2, e12 - mu1 * mu2
    ssim_map = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s11 + s22 + c2))
    return ssim_map.mean(dim=(-3, -2, -1))


# ---------------------------------------------------------------- the registry's metrics


class PSNR(FullReferenceMetric):
    """PSNR (dB) on BT.601 Y rounded like MATLAB, ``border`` pixels shaved, float64 (docs/evaluation.md)."""

    name = "psnr"
    score_range = "0, inf"

    def score_pair(self, img, ref, border):
        return float(psnr(img, ref, border=border))


class SSIM(FullReferenceMetric):
    """SSIM (Wang et al. 2004) on BT.601 Y rounded like MATLAB, ``border`` pixels shaved, float64."""

    name = "ssim"

    def score_pair(self, img, ref, border):
        return float(ssim(img, ref, border=border))
