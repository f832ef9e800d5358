"""Real-ESRGAN's U-Net discriminator with spectral normalisation, the real-world baseline D.

A U-Net gives a real/fake logit per pixel (at the input resolution), so it judges local texture
as well as global structure; spectral norm keeps the stronger D stable on the harder
degradations of real-world training (Wang et al., Real-ESRGAN, ICCVW 2021, section 3.3).

Layout, for width ``f``: conv0 (3x3, f) -> three 4x4 stride-2 convs (2f, 4f, 8f) -> three
[2x bilinear up -> 3x3 conv] stages (4f, 2f, f), each added to the encoder feature of the same
size when ``skip_connection`` -> two 3x3 convs (f) -> 3x3 conv to one logit map. LeakyReLU 0.2
after every conv but the last. As in Real-ESRGAN, spectral norm wraps every conv but the first and
the last, and uses ``torch.nn.utils.spectral_norm`` so that parameter names
(``conv1.weight_orig`` ...) match Real-ESRGAN's released ``net_d`` checkpoints.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import spectral_norm

__all__ = ["UNetDiscriminatorSN"]


def _sn_conv(c_in: int, c_out: int, kernel: int, stride: int) -> nn.Module:
    return spectral_norm(nn.Conv2d(c_in, c_out, kernel, stride, padding=1, bias=False))


class UNetDiscriminatorSN(nn.Module):
    """``UNetDiscriminatorSN(num_in_ch=3, num_feat=64, skip_connection=True)``: (B, C, H, W) ->
    (B, 1, H, W) logits; H and W must be multiples of 8 (three stride-2 levels)."""

    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, skip_connection: bool = True):
        super().__init__()
        f = num_feat
        self.skip_connection = skip_connection
        self.conv0 = nn.Conv2d(num_in_ch, f, 3, 1, 1)
        # encoder: 4x4 stride-2 convs halve the resolution
        self.conv1 = _sn_conv(f, f * 2, 4, 2)
        self.conv2 = _sn_conv(f * 2, f * 4, 4, 2)
        self.conv3 = _sn_conv(f * 4, f * 8, 4, 2)
        # decoder: bilinear 2x then 3x3 conv
        self.conv4 = _sn_conv(f * 8, f * 4, 3, 1)
        self.conv5 = _sn_conv(f * 4, f * 2, 3, 1)
        self.conv6 = _sn_conv(f * 2, f, 3, 1)
        # head
        self.conv7 = _sn_conv(f, f, 3, 1)
        self.conv8 = _sn_conv(f, f, 3, 1)
        self.conv9 = nn.Conv2d(f, 1, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % 8 or w % 8:
            raise ValueError(f"UNetDiscriminatorSN needs H and W divisible by 8, got {h}x{w}")
        act = lambda t: F.leaky_relu(t, 0.2)  # noqa: E731
        x0 = act(self.conv0(x))
        x1 = act(self.conv1(x0))
        x2 = act(self.conv2(x1))
        x3 = act(self.conv3(x2))
        y = x3
        for conv, skip in ((self.conv4, x2), (self.conv5, x1), (self.conv6, x0)):
            y = act(conv(F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)))
            if self.skip_connection:
                y = y + skip
        y = act(self.conv8(act(self.conv7(y))))
        return self.conv9(y)
