"""SFD-IQA's quality map drawn: where Feat-D finds an image real or fake (``sfd iqa --map``, ``sfd app``).

The map itself comes from ``SFDIQA.quality_map`` (the pass that gives the score); this module only draws
it: a figure with a colour bar (the legend), an overlay on the image at its own size, and the raw values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

__all__ = ["CMAP", "to_uint8", "colourise", "overlay", "figure", "write_map"]

CMAP = "RdYlBu"  # red: Feat-D says fake, blue: real; a diverging map without red/green pairs
ALPHA = 0.55  # the map's share of each overlay pixel
CAPTION = 'Feat-D "real" probability (SFD-IQA map)'


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8."""
    return (img.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def colourise(qmap: torch.Tensor | np.ndarray) -> np.ndarray:
    """(H, W) probabilities -> (H, W, 3) uint8 colours of ``CMAP`` on the fixed range [0, 1] (the same colour
    means the same probability in every image); NaN (pixels no view covered) is grey."""
    import matplotlib

    values = np.asarray(qmap, dtype=np.float64)
    rgba = matplotlib.colormaps[CMAP](np.nan_to_num(np.clip(values, 0, 1), nan=0.5))
    rgb = (rgba[..., :3] * 255 + 0.5).astype(np.uint8)
    rgb[np.isnan(values)] = 128
    return rgb


def overlay(img: torch.Tensor, qmap: torch.Tensor | np.ndarray) -> np.ndarray:
    """The image with its map blended over it, at the image's size: (H, W, 3) uint8."""
    blend = (1 - ALPHA) * to_uint8(img).astype(np.float64) + ALPHA * colourise(qmap).astype(np.float64)
    return (blend + 0.5).astype(np.uint8)


def figure(img: torch.Tensor, qmap: torch.Tensor | np.ndarray, title: str, note: str | None = None):
    """A matplotlib figure: the image, the overlay, the map with its colour bar; ``note`` (random CLIP
    weights) in red under the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = np.asarray(qmap, dtype=np.float64)
    h, w = values.shape
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.6 * h / w + 1.2), constrained_layout=True)
    panels = (("image", to_uint8(img)), ("overlay", overlay(img, values)), ("map", None))
    for ax, (name, pixels) in zip(axes, panels):
        ax.set_axis_off()
        ax.set_title(name, fontsize=10)
        if pixels is not None:
            ax.imshow(pixels, interpolation="nearest")
    shown = axes[2].imshow(values, cmap=CMAP, vmin=0, vmax=1, interpolation="nearest")
    bar = fig.colorbar(shown, ax=axes, shrink=0.85, pad=0.01)
    bar.set_label(CAPTION + "\nlow: looks fake, high: looks real", fontsize=9)
    stats = f"map mean {np.nanmean(values):.4f}, min {np.nanmin(values):.4f}, max {np.nanmax(values):.4f}"
    fig.suptitle(f"{title}\n{stats}", fontsize=10)
    if note:
        fig.text(0.5, 0.005, note, color="red", ha="center", va="bottom", fontsize=9)
    return fig


def write_map(
    img: torch.Tensor, qmap: torch.Tensor, out_dir: str | Path, stem: str, title: str, note: str | None = None
) -> list[Path]:
    """``STEM_map.png`` (figure with the legend), ``STEM_overlay.png`` (image size) and ``STEM_map.npy``
    (float32 probabilities at image size) in ``out_dir``; returns the paths."""
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}_map.png", out / f"{stem}_overlay.png", out / f"{stem}_map.npy"]
    fig = figure(img, qmap, title, note)
    fig.savefig(paths[0], dpi=100)
    plt.close(fig)
    Image.fromarray(overlay(img, qmap)).save(paths[1])
    np.save(paths[2], np.asarray(qmap, dtype=np.float32))
    return paths
