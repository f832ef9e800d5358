"""DualFormer's discriminators (Luo, Zhu, Xu, Liu, ICCV 2023, "On the Effectiveness of Spectral
Discriminators for Perceptual Quality Improvement"; code Luciennnnnnn/DualFormer, MIT, read, not copied).

Both discriminators are Swin-style Transformers over 32 x 32 patches: the *spatial* one embeds pixel
patches, the *spectral* one embeds each patch's Fourier power spectrum, so that it judges the frequency
content of every patch while the Transformer aggregates the patches (the paper's section 3):

    spectrum of a patch = |fftshift(FFT2(patch))|^2 per RGB channel, min-max normalised per patch over its
                          three channels (their ``spec_type: power``, ``fix_normalize: True``)

Transformer (their ``SwinTransformer`` settings for 128 x 128 inputs): 32 x 32 patch embedding to 96
channels + LayerNorm; stage 1: 8 blocks, 3 heads; patch merging (2 x 2 -> 192 channels); stage 2: 2 blocks,
6 heads; LayerNorm, mean over tokens, one linear logit. Blocks are pre-norm attention + MLP (ratio 4, GELU)
with residuals, relative position bias and stochastic depth rising to 0.1.

Our reading [choice]: at 128 x 128 the token grid (4 x 4, then 2 x 2) fits in one attention window
(window 4), where Swin shifts nothing; so attention here is global over the grid and larger inputs are
refused, not windowed. Scoring a larger image (the IQA metric) averages the D over a grid of crops of the
training size (``sfd.metrics.dualformer_iqa``).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["patch_power_spectra", "relative_position_index", "SwinStyleD", "SpectralD"]


def patch_power_spectra(x: torch.Tensor, patch: int = 32) -> torch.Tensor:
    """(B, C, H, W) -> the same shape, each ``patch`` x ``patch`` tile replaced by its centred power spectrum,
    min-max normalised over the tile's channels (H and W multiples of ``patch``). Computed in float32."""
    b, c, h, w = x.shape
    if h % patch or w % patch:
        raise ValueError(f"the spectral D needs H and W multiples of {patch}, got {h}x{w}")
    t = x.float().reshape(b, c, h // patch, patch, w // patch, patch).permute(0, 2, 4, 1, 3, 5)  # B, gh, gw, C, p, p
    f = torch.fft.fftshift(torch.fft.fft2(t), dim=(-2, -1))
    power = f.real**2 + f.imag**2
    lo, hi = power.amin(dim=(-3, -2, -1), keepdim=True), power.amax(dim=(-3, -2, -1), keepdim=True)
    power = (power - lo) / (hi - lo + 1e-5)
    return power.permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w).to(x.dtype)


def relative_position_index(n: int) -> torch.Tensor:
    """Swin's (n*n, n*n) index into a ((2n-1)^2)-entry bias table: (dy + n - 1) * (2n - 1) + dx + n - 1."""
    ys, xs = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    coords = torch.stack([ys.flatten(), xs.flatten()])  # 2, n*n
    rel = (coords[:, :, None] - coords[:, None, :]) + (n - 1)
    return rel[0] * (2 * n - 1) + rel[1]


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int, grid: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.bias_table = nn.Parameter(torch.zeros((2 * grid - 1) ** 2, heads))
        nn.init.trunc_normal_(self.bias_table, std=0.02)
        self.register_buffer("index", relative_position_index(grid), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        bias = self.bias_table[self.index].permute(2, 0, 1)  # heads, n, n
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, grid: int, mlp_ratio: float, drop_path: float):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = _Attention(dim, heads, grid)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.drop_path = drop_path

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        """Stochastic depth: the residual branch of a random subset of samples is dropped in training."""
        if not self.training or self.drop_path == 0:
            return x
        keep = 1 - self.drop_path
        mask = x.new_empty(x.shape[0], 1, 1).bernoulli_(keep)
        return x * mask / keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self._drop(self.attn(self.norm1(x)))
        return x + self._drop(self.mlp(self.norm2(x)))


class _PatchMerging(nn.Module):
    """2 x 2 neighbouring tokens concatenated (Swin's order; an odd grid is zero-padded, as Swin does),
    LayerNorm, linear 4C -> 2C."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor, grid: int) -> torch.Tensor:
        b, _, c = x.shape
        x = x.reshape(b, grid, grid, c)
        if grid % 2:
            x = F.pad(x, (0, 0, 0, 1, 0, 1))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.reshape(b, -1, 4 * c)))


class SwinStyleD(nn.Module):
    """DualFormer's spatial discriminator: (B, 3, S, S) images, S = ``input_size`` -> (B, 1) logits."""

    def __init__(
        self,
        input_size: int = 128,
        patch_size: int = 32,
        embed_dim: int = 96,
        depths: tuple[int, ...] | list[int] = (8, 2),
        heads: tuple[int, ...] | list[int] = (3, 6),
        window: int = 4,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.1,
    ):
        super().__init__()
        if input_size % patch_size:
            raise ValueError(f"input_size {input_size} is not a multiple of patch_size {patch_size}")
        grid = input_size // patch_size
        if grid > window:
            raise ValueError(
                f"a {input_size} input gives a {grid}x{grid} token grid: it must fit one {window}x{window} window; "
                f"score larger images by crops of {input_size}"
            )
        self.input_size, self.patch_size = input_size, patch_size
        self.patch_embed = nn.Conv2d(3, embed_dim, patch_size, patch_size)
        self.embed_norm = nn.LayerNorm(embed_dim)
        rates = torch.linspace(0, drop_path, sum(depths)).tolist()
        self.stages, self.merges, self.grids = nn.ModuleList(), nn.ModuleList(), []
        dim, i = embed_dim, 0
        for s, (depth, h) in enumerate(zip(depths, heads)):
            self.stages.append(nn.ModuleList([_Block(dim, h, grid, mlp_ratio, rates[i + j]) for j in range(depth)]))
            self.grids.append(grid)
            i += depth
            if s < len(depths) - 1:
                self.merges.append(_PatchMerging(dim))
                dim, grid = 2 * dim, (grid + 1) // 2
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 1)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        """Swin's: linear weights truncated N(0, 0.02), biases 0; LayerNorm 1 and 0."""
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def _check(self, x: torch.Tensor) -> None:
        if tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            name = type(self).__name__
            raise ValueError(f"{name} takes {self.input_size}x{self.input_size} inputs, got {tuple(x.shape[-2:])}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        x = self.embed_norm(self.patch_embed(x).flatten(2).transpose(1, 2))
        for s, blocks in enumerate(self.stages):
            for block in blocks:
                x = block(x)
            if s < len(self.merges):
                x = self.merges[s](x, self.grids[s])
        return self.head(self.norm(x).mean(1))


class SpectralD(SwinStyleD):
    """DualFormer's spectral discriminator: the same Transformer on each patch's power spectrum."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return super().forward(patch_power_spectra(x, self.patch_size))
