"""Real-ESRGAN's degradations from the first resize on, in one place: each sample's draws (``OrderParams``,
``DegradationParams``) and the order of the stages (``second_order``), which two implementations of the
stages run: ``SampleStages`` (sfd.data.degradations: one sample at its own size, as Real-ESRGAN) and
``CanvasStages`` (sfd.data.batched: the whole batch on one zero canvas, for GPUs).

A stage implementation gives ``start`` (the first-blurred batch in its own form), ``resize``, ``noise``,
``jpeg``, ``filter`` (``sizes[i]`` None: sample i is not filtered), ``rows`` (kernels of some samples) and
``per_group`` (a function run on the samples of each flag value, results gathered in sample order, as a
tensor), each taking the per-sample values of the samples it holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sfd.data.kernels import KernelSpec

__all__ = ["OrderParams", "DegradationParams", "second_order"]


@dataclass
class OrderParams:
    """The random draws of one degradation order."""

    kernel: KernelSpec  # "identity" where the second-order blur is skipped
    resize: str  # "up", "down" or "keep"
    scale: float  # first order: of the HR size; second order: of the LR size
    mode: str  # interpolation
    noise: str  # "gaussian" or "poisson"
    noise_level: float  # Gaussian sigma (0-255 scale) or Poisson scale
    gray: bool
    jpeg_quality: float  # first order: its JPEG; second order: the final JPEG (an integer unless diffjpeg)
    noise_seed: int  # seeds the noise map

    def summary(self, of: str) -> str:
        noise = f"gauss s={self.noise_level:.1f}" if self.noise == "gaussian" else f"poisson {self.noise_level:.2f}"
        return f"{self.resize} x{self.scale:.2f}{of} {self.mode} | {noise}{' gray' if self.gray else ''}"


@dataclass
class DegradationParams:
    seed: int
    first: OrderParams
    second: OrderParams
    sinc: KernelSpec  # the final filter ("identity" when not applied)
    final_mode: str  # interpolation of the final resize to the LR size
    resize_first: bool  # True: [resize + sinc] -> JPEG; False: JPEG -> [resize + sinc]
    crop: tuple[float, float] = (0.0, 0.0)  # the paired crop's top and left, as fractions of their ranges

    def summary(self) -> list[str]:
        """A few short lines for a preview sheet."""
        sinc = "no sinc" if self.sinc.type == "identity" else self.sinc.summary()
        blur2 = "no blur" if self.second.kernel.type == "identity" else self.second.kernel.summary()
        resize = f"resize {self.final_mode} + {sinc}"
        jpeg_text = f"jpeg q{self.second.jpeg_quality:.0f}"
        final = f"{resize} > {jpeg_text}" if self.resize_first else f"{jpeg_text} > {resize}"
        return [
            f"seed {self.seed}",
            f"1: {self.first.kernel.summary()}",
            f"   {self.first.summary('')} | jpeg q{self.first.jpeg_quality:.0f}",
            f"2: {blur2}",
            f"   {self.second.summary(' of LR')}",
            f"3: {final}",
        ]


def second_order(
    blurred: torch.Tensor,
    params: list[DegradationParams],
    kernels: tuple[torch.Tensor, torch.Tensor],
    stages,
    scale: int,
    first_resize: str,
) -> torch.Tensor:
    """``blurred`` (B, C, H, W) after the first blur, to the LR images (B, C, H / scale, W / scale) before the
    final rounding. ``kernels``: the second-order blur's and the final sinc's, (B, k, k) each (``Draws``)."""
    h, w = blurred.shape[-2:]
    lr_h, lr_w = h // scale, w // scale
    x = stages.start(blurred)
    # First order: resize (of the HR size; Real-ESRGAN's interpolate(scale_factor) or to the size), noise, JPEG.
    first = [p.first for p in params]
    factors = [p.scale for p in first] if first_resize == "scale_factor" else None
    x = stages.resize(x, [(int(h * p.scale), int(w * p.scale)) for p in first], [p.mode for p in first], factors)
    x = stages.jpeg(stages.noise(x, first), [p.jpeg_quality for p in first])
    # Second order: blur, resize relative to the LR size, noise.
    second = [p.second for p in params]
    blur2, sinc = kernels
    x = stages.filter(x, blur2, [None if p.kernel.type == "identity" else p.kernel.size for p in second])
    x = stages.resize(x, [(int(lr_h * p.scale), int(lr_w * p.scale)) for p in second], [p.mode for p in second], None)
    x = stages.noise(x, second)

    # Final: [resize to the LR size + sinc] and JPEG, in the order each sample drew.
    def final(x, idx: list[int], resize_first: bool):
        ps = [params[i] for i in idx]

        def resize_sinc(t):
            t = stages.resize(t, [(lr_h, lr_w)] * len(ps), [p.final_mode for p in ps], None)
            sizes = [None if p.sinc.type == "identity" else p.sinc.size for p in ps]
            return stages.filter(t, stages.rows(sinc, idx), sizes)

        quality = [p.second.jpeg_quality for p in ps]
        return stages.jpeg(resize_sinc(x), quality) if resize_first else resize_sinc(stages.jpeg(x, quality))

    return stages.per_group(x, [p.resize_first for p in params], final)
