"""ESRGAN's image-space VGG-style discriminator: the "RRDB/SwinIR + L_GAN" baseline."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

__all__ = ["VGGStyleDiscriminator"]


class VGGStyleDiscriminator(nn.Module):
    """Stages of (3x3 conv, 4x4 stride-2 conv) with BatchNorm and LeakyReLU, down to 4x4, then two linears.

    ``input_size`` must be the HR patch size (128 in ESRGAN). Channels: 64, 128, 256, 512, 512, ...
    """

    def __init__(self, in_channels: int = 3, num_feat: int = 64, input_size: int = 128):
        super().__init__()
        stages = int(math.log2(input_size // 4))
        if input_size != 4 * 2**stages:
            raise ValueError(f"input_size must be 4 * 2^k, got {input_size}")
        self.input_size = input_size
        layers: list[nn.Module] = [nn.Conv2d(in_channels, num_feat, 3, 1, 1), nn.LeakyReLU(0.2, True)]
        layers += [
            nn.Conv2d(num_feat, num_feat, 4, 2, 1, bias=False),
            nn.BatchNorm2d(num_feat),
            nn.LeakyReLU(0.2, True),
        ]
        c = num_feat
        for i in range(1, stages):
            c_out = num_feat * min(2**i, 8)
            layers += [nn.Conv2d(c, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2, True)]
            layers += [nn.Conv2d(c_out, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2, True)]
            c = c_out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Linear(c * 4 * 4, 100), nn.LeakyReLU(0.2, True), nn.Linear(100, 1))
        bns = [i for i, m in enumerate(layers) if isinstance(m, nn.BatchNorm2d)]
        self._second_bn = bns[1]  # supplement §3 visualises the features after the 2nd BN

    def _check(self, x: torch.Tensor) -> None:
        if tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            raise ValueError(f"VGG-style D takes {self.input_size}x{self.input_size} inputs, got {tuple(x.shape[-2:])}")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map right after the 2nd BatchNorm (before its activation)."""
        self._check(x)
        return self.features[: self._second_bn + 1](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self.classifier(self.features(x).flatten(1))
