"""SeD-P: a PatchGAN discriminator whose features attend to frozen CLIP semantics (Li et al., CVPR 2024,
"SeD: Semantic-Aware Discriminator for Image Super-Resolution"; public code lbc12345/SeD, read, not copied:
it has no licence file).

Semantics: CLIP RN50's layer3 output (our F_m3, 1024 channels at H/16), from the run's one frozen CLIP
forward (``sfd.models.clip.ImageFeatures``). At three depths of the PatchGAN, a *semantic-aware fusion*
block lets the semantic tokens (queries) attend to the image features (keys and values), upsamples the
result to the feature map's grid by pixel shuffle and concatenates it to the features:

    semantic (1024, H/16) -> GroupNorm(32) -> 1x1 conv -> tokens -> self-attention -> cross-attention to
    the image features (1x1-conv'd to the same width) -> GEGLU feed-forward -> 1x1 conv back to 1024 ->
    pixel shuffle by u -> 3x3 conv (4x4 at the last block, to match the stride-1 4x4 conv's grid)

Each transformer sub-layer has no residual connection, as in SeD's code. The PatchGAN (width f):
4x4/2 conv (no spectral norm) -> LReLU -> 4x4/2 conv(2f) -> fuse (u = 4) -> 3x3 conv -> LReLU ->
4x4/2 conv(4f) -> fuse (u = 2) -> 3x3 conv -> LReLU -> 4x4/1 conv(8f) -> fuse (u = 2) -> 3x3 conv ->
LReLU -> 4x4/1 conv to one logit per patch; every conv but the first and the last spectrally
normalised. For a 256 input the logit map is 30 x 30 (SeD's shapes); for 128, 14 x 14.

Two points where we differ from the code, each documented (docs/method.md):
- SeD's D sees the HR's semantics for real and fake alike. ``semantics="self"`` (our default) gives each
  image its own semantics, so that the D can score an image alone; ``"hr"`` is SeD's reading.
- SeD rearranges the channels as ``(c uw uh)`` before placing them; we use ``F.pixel_shuffle``'s ``(c uh
  uw)``. The two differ by a fixed permutation of ``proj_out``'s output channels, a learned 1x1 conv,
  so the family of functions (and its initial distribution) is the same.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import spectral_norm

if TYPE_CHECKING:
    from sfd.config import SeDConfig

__all__ = ["SemanticFusion", "SeDPatchD"]


class _Attention(nn.Module):
    """Multi-head attention of ``x`` (queries) over ``context`` (keys, values); no biases in q, k, v."""

    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        split = lambda t: t.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # noqa: E731  (B, heads, N, d)
        q, k, v = split(self.to_q(x)), split(self.to_k(context)), split(self.to_v(context))
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d)) v
        return self.to_out(out.transpose(1, 2).flatten(2))


class _GEGLUFeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.proj = nn.Linear(dim, dim * mult * 2)
        self.out = nn.Linear(dim * mult, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, gate = self.proj(x).chunk(2, dim=-1)
        return self.out(a * F.gelu(gate))


class SemanticFusion(nn.Module):
    """Semantic tokens attend to image features; returns ``semantic_dim / up**2`` channels on the
    features' grid (one pixel smaller with ``last``: the 4x4 stride-1 conv's grid)."""

    def __init__(
        self, semantic_dim: int, feat_dim: int, up: int, heads: int = 1, head_dim: int = 64, last: bool = False
    ):
        super().__init__()
        inner = heads * head_dim
        if semantic_dim % (up * up):
            raise ValueError(f"semantic_dim {semantic_dim} is not divisible by up^2 = {up * up}")
        self.up = up
        self.norm = nn.GroupNorm(32, semantic_dim, eps=1e-6)
        self.proj_in = nn.Conv2d(semantic_dim, inner, 1)
        self.proj_context = nn.Conv2d(feat_dim, inner, 1)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(inner), nn.LayerNorm(inner), nn.LayerNorm(inner)
        self.self_attn = _Attention(inner, heads, head_dim)
        self.cross_attn = _Attention(inner, heads, head_dim)
        self.ff = _GEGLUFeedForward(inner)
        self.proj_out = nn.Conv2d(inner, semantic_dim, 1)
        self.out_channels = semantic_dim // (up * up)
        c = self.out_channels
        self.conv_out = nn.Conv2d(c, c, 4, 1, 1) if last else nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, semantic: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        h, w = semantic.shape[-2:]
        x = self.proj_in(self.norm(semantic)).flatten(2).transpose(1, 2)  # (B, h*w, inner)
        ctx = self.proj_context(feat).flatten(2).transpose(1, 2)  # (B, H*W, inner)
        y = self.norm1(x)
        x = self.self_attn(y, y)
        x = self.cross_attn(self.norm2(x), ctx)
        x = self.ff(self.norm3(x))
        x = self.proj_out(x.transpose(1, 2).unflatten(2, (h, w)))
        return self.conv_out(F.pixel_shuffle(x, self.up))


def _sn(conv: nn.Conv2d) -> nn.Module:
    return spectral_norm(conv)


class SeDPatchD(nn.Module):
    """``SeDPatchD(num_feat=64)(image, semantic)`` -> (B, 1, H/8 - 2, W/8 - 2) logits. ``image``: RGB in
    [0, 1], H and W multiples of 32 (CLIP's stride); ``semantic``: CLIP RN50's F_m3 of an image of that size."""

    def __init__(self, num_feat: int = 64, semantic_dim: int = 1024, heads: int = 1, head_dim: int = 64):
        super().__init__()
        f = num_feat
        self.conv_first = nn.Conv2d(3, f, 4, 2, 1)
        self.conv1 = _sn(nn.Conv2d(f, 2 * f, 4, 2, 1))
        self.fuse1 = SemanticFusion(semantic_dim, 2 * f, 4, heads, head_dim)
        self.conv11 = _sn(nn.Conv2d(2 * f + self.fuse1.out_channels, 2 * f, 3, 1, 1))
        self.conv2 = _sn(nn.Conv2d(2 * f, 4 * f, 4, 2, 1))
        self.fuse2 = SemanticFusion(semantic_dim, 4 * f, 2, heads, head_dim)
        self.conv21 = _sn(nn.Conv2d(4 * f + self.fuse2.out_channels, 4 * f, 3, 1, 1))
        self.conv3 = _sn(nn.Conv2d(4 * f, 8 * f, 4, 1, 1))
        self.fuse3 = SemanticFusion(semantic_dim, 8 * f, 2, heads, head_dim, last=True)
        self.conv31 = _sn(nn.Conv2d(8 * f + self.fuse3.out_channels, 8 * f, 3, 1, 1))
        self.conv_last = nn.Conv2d(8 * f, 1, 4, 1, 1)
        self._init_normal()

    def _init_normal(self, std: float = 0.02) -> None:
        """SeD's initialisation (pix2pix's "normal"): every conv and linear weight N(0, 0.02), biases 0
        (its zero-initialised proj_out is re-drawn too); norm layers keep torch's defaults."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                w = m.weight_orig if hasattr(m, "weight_orig") else m.weight
                with torch.no_grad():
                    w.normal_(0.0, std)
                    if m.bias is not None:
                        m.bias.zero_()

    @classmethod
    def from_config(cls, cfg: SeDConfig) -> SeDPatchD:
        return cls(num_feat=cfg.num_feat, heads=cfg.heads, head_dim=cfg.head_dim)

    def forward(self, image: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
        h, w = image.shape[-2:]
        if h % 32 or w % 32 or semantic.shape[-2:] != (h // 16, w // 16):
            raise ValueError(
                f"SeD-P needs H, W multiples of 32 and CLIP's F_m3 at H/16: image {h}x{w}, "
                f"semantics {tuple(semantic.shape[-2:])}"
            )
        act = lambda t: F.leaky_relu(t, 0.2)  # noqa: E731
        x = act(self.conv_first(image))
        x = self.conv1(x)
        x = act(self.conv11(torch.cat([x, self.fuse1(semantic, x)], 1)))
        x = self.conv2(x)
        x = act(self.conv21(torch.cat([x, self.fuse2(semantic, x)], 1)))
        x = self.conv3(x)
        x = act(self.conv31(torch.cat([x, self.fuse3(semantic, x)], 1)))
        return self.conv_last(x)
