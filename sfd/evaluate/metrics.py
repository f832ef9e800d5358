"""PSNR and SSIM with the SR literature's MATLAB convention.

Inputs are float images in [0, 1] (or uint8 tensors), shaped (3, H, W), (1, H, W) or (N, C, H, W).
Both are quantised to 8 bits, converted to BT.601 luma rounded to integers (MATLAB's
``rgb2ycbcr`` on uint8), cropped by ``border`` pixels and measured in float64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["to_uint8_values", "rgb_to_y", "psnr", "ssim"]


def to_uint8_values(img: torch.Tensor) -> torch.Tensor:
    """Floats in [0, 1] (or a uint8 tensor) -> float64 integers 0..255, rounded half up as MATLAB."""
    if img.dtype == torch.uint8:
        return img.to(torch.float64)
    img = img.detach().to(torch.float64) * 255.0
    return torch.floor(img.clamp(0, 255) + 0.5)


def rgb_to_y(img255: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) 0..255 -> (..., 1, H, W) luma rounded like MATLAB's rgb2ycbcr on uint8.

    A one-channel image is taken as its own luma.
    """
    if img255.shape[-3] == 1:
        return img255
    r, g, b = img255.unbind(-3)
    y = 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0
    return torch.floor(y + 0.5).unsqueeze(-3)


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


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(sr: torch.Tensor, hr: torch.Tensor, border: int = 0, y_channel: bool = True) -> torch.Tensor:
    """SSIM per image (Wang et al. 2004: 11x11 Gaussian, sigma 1.5, 'valid' filtering).

    Colour images measured without ``y_channel`` average SSIM over channels.
    """
    sr, hr = _prepare(sr, hr, border, y_channel)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    channels = sr.shape[1]
    window = _gaussian_window().to(sr.device).expand(channels, 1, 11, 11)

    def filt(x):
        return F.conv2d(x, window, groups=channels)

    mu1, mu2 = filt(sr), filt(hr)
    s11 = filt(sr * sr) - mu1**2
    s22 = filt(hr * hr) - mu2**2
    s12 = filt(sr * hr) - mu1 * mu2
    ssim_map = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s11 + s22 + c2))
    return ssim_map.mean(dim=(-3, -2, -1))
