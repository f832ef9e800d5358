"""LDL: the locally discriminative artifact loss (Liang, Zeng, Zhang, CVPR 2022, "Details or Artifacts").

An SR pixel is a likely GAN artifact where the residual |HR - SR| is locally irregular (high local
variance) and where the generator's EMA, a more stable model, is closer to HR than the generator is.
The map (the paper's Eq. 5-7, as its code ``csjliang/LDL`` computes it):

    r      = sum over RGB of |HR - SR|                  (one channel)
    r_ema  = sum over RGB of |HR - SR_ema|
    sigma  = unbiased variance of r in each k x k window (reflect padding), per pixel
    delta  = (unbiased variance of r over the whole patch) ** (1 / exponent)
    M      = delta * sigma, and M = 0 where r < r_ema  (the EMA is no better there: not an artifact)

and the loss ``|M * SR - M * HR|`` averaged over pixels and channels, weighted by ``loss.ldl.weight``
(1.0 in the paper's synthetic x4 recipe), with k = 7 and exponent 5.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["local_variance", "artifact_map", "ldl_loss"]


def local_variance(x: torch.Tensor, window: int) -> torch.Tensor:
    """Unbiased variance of each ``window`` x ``window`` neighbourhood of (N, 1, H, W) ``x``, reflect-padded
    at the borders (H and W must exceed window // 2). Same shape as ``x``."""
    pad = window // 2
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    n = window * window
    mean = F.avg_pool2d(xp, window, stride=1)
    mean_sq = F.avg_pool2d(xp * xp, window, stride=1)
    return (mean_sq - mean * mean).clamp_min(0) * (n / (n - 1))


def artifact_map(
    hr: torch.Tensor, sr: torch.Tensor, sr_ema: torch.Tensor, window: int = 7, exponent: float = 5.0
) -> torch.Tensor:
    """LDL's refined artifact map M, (N, 1, H, W), in float32 at least (variances of bf16 values lose their
    digits). Gradient flows through it to ``sr`` (as in the reference code, which does not detach it);
    ``sr_ema`` carries none."""
    if window % 2 == 0 or window < 3:
        raise ValueError(f"LDL window must be odd and at least 3, got {window}")
    wide = torch.promote_types(sr.dtype, torch.float32)
    hr, sr, sr_ema = hr.to(wide), sr.to(wide), sr_ema.detach().to(wide)
    residual = (hr - sr).abs().sum(1, keepdim=True)
    residual_ema = (hr - sr_ema).abs().sum(1, keepdim=True)
    patch = residual.flatten(1).var(dim=1, unbiased=True).view(-1, 1, 1, 1) ** (1.0 / exponent)
    weight = patch * local_variance(residual, window)
    return weight.masked_fill(residual < residual_ema, 0.0)


def ldl_loss(
    hr: torch.Tensor,
    sr: torch.Tensor,
    sr_ema: torch.Tensor,
    window: int = 7,
    exponent: float = 5.0,
    detach_map: bool = False,
) -> torch.Tensor:
    """Mean |M * SR - M * HR| over (N, C, H, W); ``detach_map`` stops the gradient through M [choice]."""
    m = artifact_map(hr, sr, sr_ema, window, exponent)
    if detach_map:
        m = m.detach()
    return F.l1_loss(m * sr, m * hr)
