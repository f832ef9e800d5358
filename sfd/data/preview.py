"""A sheet of Real-ESRGAN-style degradations of one image, to look at (``sfd degrade-preview``)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from sfd.data.degradations import DegradationConfig, RealESRGANDegradation
from sfd.yamlconfig import ConfigError, config_from_dict, find_config, read_yaml

__all__ = ["load_degradation_config", "preview_sheet"]


def load_degradation_config(path: str | Path | None) -> DegradationConfig:
    """The ``DegradationConfig`` in a YAML file (see ``--config``), validated strictly."""
    if path is None:
        return DegradationConfig()
    path = find_config(path)
    data = read_yaml(path)
    prefix = ""
    if isinstance(data.get("data"), dict) and data["data"].get("degradation") is not None:
        data, prefix = data["data"]["degradation"], "data.degradation."
    elif "degradation" in data:
        data, prefix = data["degradation"], "degradation."
    elif {"generator", "data", "train", "loss", "clip"} & set(data):
        raise ConfigError(
            f"{path} is a training config without data.degradation (its LR is bicubic): nothing to preview; "
            "give a real-world config such as realworld_rrdb_x4, or none for Real-ESRGAN's defaults"
        )
    return config_from_dict(data or {}, DegradationConfig, prefix=prefix)


def _centre_patch(img: torch.Tensor, patch: int, scale: int) -> torch.Tensor:
    h, w = img.shape[-2:]
    size = min(patch, h, w) // scale * scale
    top, left = (h - size) // 2, (w - size) // 2
    return img[..., top : top + size, left : left + size]


def preview_sheet(
    image: torch.Tensor,
    output: str | Path,
    n: int = 16,
    seed: int = 0,
    scale: int = 4,
    patch: int = 256,
    cols: int | None = None,
    cfg: DegradationConfig | None = None,
    codecs: list[str] | None = None,
) -> list[list[str]]:
    """Save the sheet for a (3, H, W) image; returns each sample's parameter lines.

    ``codecs`` (JPEG backends, e.g. ["diffjpeg", "pillow"]): one row per sample, the HR patch then
    the LR through each codec with the same parameters (qualities rounded for the integer codecs)."""
    from matplotlib.figure import Figure  # no pyplot: leaves the user's backend alone

    cfg = cfg or DegradationConfig()
    hr = _centre_patch(image, patch, scale)[None]
    degrade = RealESRGANDegradation(cfg, scale)
    seeds = list(range(seed, seed + n))
    params = [degrade.sample(s) for s in seeds]
    info = [f"{hr.shape[-1]}px, LR x1/{scale}"]

    def enlarged(backend: str) -> list[torch.Tensor]:
        codec = RealESRGANDegradation(dataclasses.replace(cfg, jpeg_backend=backend), scale)
        lr = codec.apply(hr.expand(n, -1, -1, -1), params)[0]
        return list(F.interpolate(lr, scale_factor=scale, mode="nearest"))

    if not codecs:
        tiles = [hr[0]] + enlarged(cfg.jpeg_backend)
        texts = [["HR patch (input)", *info]] + [p.summary() for p in params]
    else:
        per_codec = [enlarged(c) for c in codecs]
        tiles, texts, cols = [], [], len(codecs) + 1
        for i, p in enumerate(params):
            tiles += [hr[0]] + [lrs[i] for lrs in per_codec]
            texts += [["HR patch (input)", *info]] + [[f"jpeg: {c}", *p.summary()] for c in codecs]

    # Every tile at its native pixel size, parameters in small monospace type under it.
    dpi, size = 100, hr.shape[-1]
    img_in = size / dpi
    cell_w, cell_h = max(img_in, 2.7) + 0.15, img_in + (1.05 if codecs else 0.95)
    cols = cols or math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    fig = Figure(figsize=(cols * cell_w, rows * cell_h), dpi=dpi)
    fig_w, fig_h = cols * cell_w, rows * cell_h
    for i, (tile, lines) in enumerate(zip(tiles, texts)):
        r, c = divmod(i, cols)
        x0 = c * cell_w + (cell_w - img_in) / 2
        y0 = fig_h - r * cell_h - 0.05 - img_in
        ax = fig.add_axes((x0 / fig_w, y0 / fig_h, img_in / fig_w, img_in / fig_h))
        ax.imshow(tile.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
        ax.set_axis_off()
        text_x, text_y = (c * cell_w + 0.08) / fig_w, (y0 - 0.04) / fig_h
        fig.text(text_x, text_y, "\n".join(lines), fontsize=6, family="monospace", va="top")
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=dpi, facecolor="white")
    return [t for t in texts if t[0] != "HR patch (input)"]
