"""Tiled super-resolution with overlap: large images with bounded accelerator memory.

The whole image stays on the CPU; each tile, widened by ``tile_pad`` pixels of real context on
every side (clipped at the image border, where the untiled model also sees its zero padding),
goes to the device alone, and only the tile's own part of the output is kept. With enough
context the seams vanish: tests check tiled == untiled within 1/255 on every pixel.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from sfd.data.pixels import pad_reflect, to_levels

__all__ = ["PRECISIONS", "pad_to_requirements", "run_model", "tiled_upscale", "bicubic_upscale"]

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

UpscaleFn = Callable[[torch.Tensor], torch.Tensor]


def pad_to_requirements(x: torch.Tensor, multiple: int = 1, minimum: int = 0) -> torch.Tensor:
    """Pad (N, C, H, W) at the bottom/right so H, W >= ``minimum`` and are multiples of ``multiple``.

    Reflection first (it keeps image statistics), replicate for what reflection cannot cover.
    """
    h, w = x.shape[-2:]
    target_h = math.ceil(max(h, minimum) / multiple) * multiple
    target_w = math.ceil(max(w, minimum) / multiple) * multiple
    pad_h, pad_w = target_h - h, target_w - w
    if not (pad_h or pad_w):
        return x
    return pad_reflect(x, 0, pad_w, 0, pad_h)


def run_model(model: torch.nn.Module, scale: int, multiple: int = 1, minimum: int = 0) -> UpscaleFn:
    """A function (N, C, h, w) -> (N, C, h*scale, w*scale) that pads for the model's size needs."""

    @torch.inference_mode()
    def fn(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        y = model(pad_to_requirements(x, multiple, minimum))
        return y[..., : h * scale, : w * scale]

    return fn


def bicubic_upscale(scale: int) -> UpscaleFn:
    """Plain bicubic (torch's, a = -0.75): used for alpha channels, tile by tile."""

    def fn(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)

    return fn


def _quantise(y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``y`` made ready, on its own device, for the copy into a ``dtype`` result: 8-bit levels move a quarter
    of the bytes and round off the CPU; floats convert in the copy."""
    if dtype.is_floating_point:
        return y
    # int32 for 16-bit levels: few uint16 operators exist off the CPU; the copy into the result converts
    return to_levels(y, 16 if dtype == torch.uint16 else 8).to(torch.uint8 if dtype == torch.uint8 else torch.int32)


def tiled_upscale(
    fn: UpscaleFn,
    image: torch.Tensor,
    scale: int,
    tile: int = 0,
    tile_pad: int = 32,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    out_dtype: torch.dtype = torch.float32,
    progress: bool | str = False,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> torch.Tensor:
    """Upscale (C, H, W) or (1, C, H, W) ``image`` (CPU, [0, 1]) by ``scale`` with ``fn``.

    ``tile`` = 0 runs the whole image at once. Otherwise tiles of at most ``tile`` x ``tile`` input
    pixels (the image split evenly) run one by one with ``tile_pad`` pixels of context. Inputs are cast to ``dtype`` on
    ``device``; the output is assembled on the CPU as ``out_dtype`` (uint8/uint16 outputs are
    quantised per tile, which keeps an 8000x8000 x4 result at 3 bytes per pixel instead of 12).
    Output values are clamped to [0, 1]. ``progress`` (True or a label) shows a tile bar.
    """
    batched = image.dim() == 4
    x = image if batched else image[None]
    if x.shape[0] != 1:
        raise ValueError("tiled_upscale takes one image at a time")
    _, c, h, w = x.shape
    if out_dtype.is_floating_point:
        out = torch.empty(1, c, h * scale, w * scale, dtype=out_dtype)
    else:  # integer results are for image files: assembled channels-last (H, W, C), as files store pixels
        out = torch.empty(1, h * scale, w * scale, c, dtype=out_dtype).permute(0, 3, 1, 2)
    # Equal tiles of at most ``tile`` (600 px at tile 512: two of 300, not 512 + 88, whose context would cost more)
    tile_h, tile_w = (h, w) if tile <= 0 else (math.ceil(h / math.ceil(h / tile)), math.ceil(w / math.ceil(w / tile)))
    pad = tile_pad if tile > 0 else 0
    boxes = [(y0, x0) for y0 in range(0, h, tile_h) for x0 in range(0, w, tile_w)]
    bar = tqdm(
        boxes,
        desc=progress if isinstance(progress, str) else "tiles",
        unit="tile",
        disable=not progress or len(boxes) == 1,
        leave=False,
    )
    for y0, x0 in bar:
        y1, x1 = min(y0 + tile_h, h), min(x0 + tile_w, w)
        # Context around the tile, clipped to the image.
        cy0, cx0, cy1, cx1 = max(y0 - pad, 0), max(x0 - pad, 0), min(y1 + pad, h), min(x1 + pad, w)
        patch = x[..., cy0:cy1, cx0:cx1].to(device=device, dtype=dtype).contiguous(memory_format=memory_format)
        y = fn(patch).float().clamp(0, 1)
        oy, ox = (y0 - cy0) * scale, (x0 - cx0) * scale
        core = y[..., oy : oy + (y1 - y0) * scale, ox : ox + (x1 - x0) * scale]
        out[..., y0 * scale : y1 * scale, x0 * scale : x1 * scale] = _quantise(core, out_dtype)  # one copy to the CPU
    return out if batched else out[0]
