"""``sfd degrade-preview`` (a sheet of Real-ESRGAN-style degradations of one image, to look at) and
``sfd prepare`` (HR images cut into sub-images for training)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sfd.errors import UsageError
from sfd.options import add_output_option

__all__ = ["register", "cmd_degrade_preview", "cmd_prepare"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "degrade-preview",
        help="sheet of degraded samples of one image, with their parameters",
        description="Degrade the centre patch of IMAGE with seeds S, S+1, ... and save one sheet: the HR "
        "patch, then each LR (enlarged by nearest neighbour) with its degradation parameters below it.",
    )
    p.add_argument("image", help="an image file")
    add_output_option(p, None, "the sheet, a PNG")
    p.add_argument("--n", type=int, default=16, help="number of degraded samples (default 16)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first sample (default 0)")
    p.add_argument("--scale", type=int, default=4, help="SR scale: the LR is patch/scale (default 4)")
    p.add_argument("--patch", type=int, default=256, help="HR patch size, centre crop (default 256)")
    p.add_argument("--cols", type=int, default=None, help="tiles per row (default: a near-square grid)")
    p.add_argument(
        "--codecs",
        nargs="+",
        choices=["diffjpeg", "pillow", "torch"],
        help="JPEG codecs side by side, one row per sample with the same parameters (e.g. --codecs diffjpeg pillow)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument(
        "--config",
        help="YAML with the degradation fields: a training config (its data.degradation), "
        "a file with a top-level 'degradation:' mapping, or the mapping itself (default: Real-ESRGAN's)",
    )
    p.set_defaults(func=cmd_degrade_preview)

    p = sub.add_parser("prepare", help="cut HR images into sub-images for training (BasicSR's extract_subimages)")
    p.add_argument("folders", nargs="+", help="HR image folders")
    add_output_option(p, None, "folder for the sub-images")
    p.add_argument("--crop", type=int, default=480, help="sub-image size (default 480)")
    p.add_argument("--step", type=int, default=240, help="stride between sub-images (default 240)")
    p.add_argument("--thresh", type=int, default=0, help="remainder beyond which a border crop is added (default 0)")
    p.set_defaults(func=cmd_prepare)


def cmd_degrade_preview(args: argparse.Namespace) -> int:
    from sfd.data.io import load_rgb, to_tensor
    from sfd.data.preview import load_degradation_config, preview_sheet

    if args.n < 1 or args.scale < 1 or args.patch < args.scale:
        raise UsageError("--n and --scale must be >= 1 and --patch >= --scale")
    if Path(args.out).exists() and not args.overwrite:
        raise UsageError(f"{args.out} already exists: choose another -o, or add --overwrite to replace it")
    cfg = load_degradation_config(args.config)
    image = to_tensor(load_rgb(args.image))
    texts = preview_sheet(image, args.out, args.n, args.seed, args.scale, args.patch, args.cols, cfg, args.codecs)
    for lines in texts:
        print("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from sfd.data.prepare import extract_subimages

    n = extract_subimages(args.folders, args.out, args.crop, args.step, args.thresh)
    print(f"wrote {n} sub-images to {args.out}; train on them with --set data.train=[{args.out}]")
    return 0
