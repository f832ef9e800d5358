"""``sfd degrade-preview``: a sheet of Real-ESRGAN-style degradations of one image, to look at."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from sfd.data.degradations import DegradationConfig, RealESRGANDegradation
from sfd.data.io import load_rgb, to_tensor

__all__ = ["register", "load_degradation_config", "preview_sheet"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "degrade-preview",
        help="sheet of degraded samples of one image, with their parameters",
        description="Degrade the centre patch of IMAGE with seeds S, S+1, ... and save one sheet: the HR "
        "patch, then each LR (enlarged by nearest neighbour) with its degradation parameters below it.",
    )
    p.add_argument("image", help="an image file")
    p.add_argument("-o", "--output", required=True, help="the sheet, a PNG")
    p.add_argument("--n", type=int, default=16, help="number of degraded samples (default 16)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first sample (default 0)")
    p.add_argument("--scale", type=int, default=4, help="SR scale: the LR is patch/scale (default 4)")
    p.add_argument("--patch", type=int, default=256, help="HR patch size, centre crop (default 256)")
    p.add_argument("--cols", type=int, default=None, help="tiles per row (default: a near-square grid)")
    p.add_argument(
        "--config",
        help="YAML with the degradation fields: a training config (its data.degradation), "
        "a file with a top-level 'degradation:' mapping, or the mapping itself (default: Real-ESRGAN's)",
    )
    p.set_defaults(func=_run)


def load_degradation_config(path: str | Path | None) -> DegradationConfig:
    """The ``DegradationConfig`` in a YAML file (see ``--config``), validated strictly."""
    if path is None:
        return DegradationConfig()
    import yaml

    from sfd.config import config_from_dict

    data = yaml.safe_load(Path(path).read_text()) or {}
    prefix = ""
    if isinstance(data.get("data"), dict) and "degradation" in data["data"]:
        data, prefix = data["data"]["degradation"], "data.degradation."
    elif "degradation" in data:
        data, prefix = data["degradation"], "degradation."
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
) -> list[list[str]]:
    """Save the sheet for a (3, H, W) image; returns each sample's parameter lines."""
    from matplotlib.figure import Figure  # no pyplot: leaves the user's backend alone

    hr = _centre_patch(image, patch, scale)[None]
    degrade = RealESRGANDegradation(cfg, scale)
    seeds = list(range(seed, seed + n))
    lr, _ = degrade(hr.expand(n, -1, -1, -1), seeds)
    tiles = [hr[0]] + list(F.interpolate(lr, scale_factor=scale, mode="nearest"))
    texts = [["HR patch (input)", f"{hr.shape[-1]}px, LR x1/{scale}"]] + [degrade.sample(s).summary() for s in seeds]

    # Every tile at its native pixel size, parameters in small monospace type under it.
    dpi, size = 100, hr.shape[-1]
    img_in = size / dpi
    cell_w, cell_h = max(img_in, 2.7) + 0.15, img_in + 0.95
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
    return texts[1:]


def _run(args: argparse.Namespace) -> int:
    if args.n < 1 or args.scale < 1 or args.patch < args.scale:
        print("sfd degrade-preview: --n and --scale must be >= 1 and --patch >= --scale", file=sys.stderr)
        return 2
    try:
        cfg = load_degradation_config(args.config)
        image = to_tensor(load_rgb(args.image))
    except (OSError, ValueError) as err:  # missing/unreadable files, config errors
        print(f"sfd degrade-preview: {err}", file=sys.stderr)
        return 2
    texts = preview_sheet(image, args.output, args.n, args.seed, args.scale, args.patch, args.cols, cfg)
    for lines in texts:
        print("\n".join(lines))
    print(f"wrote {args.output}")
    return 0
