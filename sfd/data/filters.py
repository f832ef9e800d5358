"""Filtering helpers of the degradations, shared by the per-sample and the batched pipelines."""

from __future__ import annotations

import functools
import math

import torch

from sfd.data.pixels import pad_reflect

__all__ = ["filter2d", "fft_correlate", "rgb_to_gray"]


def filter2d(img: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Filter each image of ``img`` (B, C, H, W) with its own kernel ``kernels`` (B, k, k), or one
    shared kernel (k, k), as ``F.conv2d`` would (correlation, reflect padding, same size out).
    Done by FFT: exact in float64 (which the pipeline uses) and much faster there than a
    direct float64 convolution on the CPU; batched over samples and channels."""
    k = kernels.shape[-1]
    h, w = img.shape[-2:]
    p = k // 2
    padded = pad_reflect(img, p, p, p, p)  # OpenCV's BORDER_REFLECT_101, as Real-ESRGAN
    return fft_correlate(padded, kernels.to(img, non_blocking=True), h, w)  # (no wait for the device)


def fft_correlate(padded: torch.Tensor, kernels: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The (h, w) top-left outputs of correlating ``padded`` (B, C, >= h + k - 1, >= w + k - 1; the
    image padded by k // 2 on every side) with ``kernels`` (B, k, k) or (k, k)."""
    k = kernels.shape[-1]
    # FFT sizes with factors 2, 3 and 5 only (zeros beyond the padded image change nothing): a
    # size with a large prime factor, frequent after random resizes, is several times slower.
    size = (_fast_length(padded.shape[-2]), _fast_length(padded.shape[-1]))
    kernels = kernels.reshape(-1, 1, k, k).flip(-2, -1)  # flipped: correlation
    spectrum = torch.fft.rfft2(padded, s=size) * torch.fft.rfft2(kernels, s=size)
    # Linear convolution of the padded image: outputs k-1 ... k-2+H (and W) never wrap around.
    return torch.fft.irfft2(spectrum, s=size)[..., k - 1 : k - 1 + h, k - 1 : k - 1 + w]


@functools.cache
def _fast_length(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n."""
    best = 2 ** math.ceil(math.log2(n))
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35 * 2 ** max(0, math.ceil(math.log2(n / p35)))
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def rgb_to_gray(img: torch.Tensor) -> torch.Tensor:
    weights = img.new_tensor([0.2989, 0.587, 0.114]).view(1, 3, 1, 1)  # ITU-R 601, as torchvision
    return (img * weights).sum(1, keepdim=True)
