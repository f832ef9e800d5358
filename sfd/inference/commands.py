"""``sfd sr`` and ``sfd export``, and the inference options ``sfd eval`` shares with ``sfd sr``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from sfd.errors import UsageError
from sfd.options import add_output_option

__all__ = [
    "register",
    "add_inference_options",
    "add_speed_options",
    "setup_runtime",
    "inference_settings",
    "cmd_sr",
    "cmd_export",
]


def add_inference_options(p: argparse.ArgumentParser) -> None:
    """Where and how a generator runs (``InferenceSettings``), plus threads, progress and pickle loading."""
    p.add_argument("--tile", type=int, default=0, help="tile size in input pixels (0: whole image at once)")
    p.add_argument("--tile-pad", type=int, default=32, help="context pixels around each tile (default 32)")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    p.add_argument("--device", default="auto", help="auto (default: CUDA when available), cpu, cuda, cuda:1, ...")
    add_speed_options(p)
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--allow-pickle", action="store_true", help="load .pth files that need full pickle (only for files you trust)"
    )


CUDA_GRAPH = {"auto": "auto", "on": True, "off": False}  # --cuda-graph -> InferenceSettings.cuda_graph


def add_speed_options(p: argparse.ArgumentParser) -> None:
    """``InferenceSettings.channels_last`` and ``cuda_graph`` (``sfd sr``, ``sfd eval``, ``sfd bench sr``)."""
    p.add_argument("--channels-last", action="store_true", help="NHWC weights and tiles (faster convolutions on GPUs)")
    p.add_argument(
        "--cuda-graph",
        choices=list(CUDA_GRAPH),
        default="off",
        help="replay the forward from CUDA graphs, one per input shape (auto: on CUDA for RRDBNet and Compact; "
        "default off)",
    )


def setup_runtime(args: argparse.Namespace) -> None:
    """Apply --threads and resolve --device (auto: CUDA when available) in one place."""
    import torch

    from sfd.device import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        args.device = str(resolve_device(args.device))
    except ValueError as err:
        raise UsageError(str(err)) from None


def inference_settings(args: argparse.Namespace):
    from sfd.inference import InferenceSettings

    return InferenceSettings(
        device=args.device,
        precision=args.precision,
        tile=args.tile,
        tile_pad=args.tile_pad,
        channels_last=args.channels_last,
        cuda_graph=CUDA_GRAPH[args.cuda_graph],
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sr",
        help="super-resolve images with a generator",
        description="Super-resolve image files and/or folders; writes PNGs.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and/or folders")
    add_output_option(p, None, "output folder")
    p.add_argument(
        "--model",
        required=True,
        help="sfd checkpoint, .pth/.safetensors, ncnn .param/.bin, or realesrgan-x4plus / realsr-df2k-x4",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: skip them)")
    p.add_argument("--no-ema", action="store_true", help="use the raw generator of an sfd checkpoint, not its EMA")
    add_inference_options(p)
    p.set_defaults(func=cmd_sr)

    p = sub.add_parser(
        "export",
        help="write a generator as a .safetensors (spandrel/chaiNNer/ComfyUI) or .onnx file",
        description="Export the generator (EMA by default) of a checkpoint or any loadable model.",
    )
    p.add_argument("checkpoint", metavar="CKPT")
    add_output_option(p, None, "output .safetensors or .onnx file")
    p.add_argument(
        "--format",
        choices=["safetensors", "onnx"],
        help="file format (default: onnx for a .onnx output, else safetensors)",
    )
    p.add_argument("--precision", choices=["fp32", "fp16"], default="fp32", help="ONNX weights and input/output")
    p.add_argument("--check-image", metavar="IMG", help="ONNX: check on this image's centre crop (default: synthetic)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (17 or later; default 17)")
    p.add_argument("--no-ema", action="store_true", help="export the raw generator instead of its EMA")
    p.add_argument("--allow-pickle", action="store_true", help="load .pth files that need full pickle")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=cmd_export)


# --------------------------------------------------------------------------- sr


def _output_paths(images: list[Path], out_dir: Path) -> dict[Path, Path]:
    outputs: dict[Path, Path] = {}
    taken: dict[Path, Path] = {}
    for img in images:
        target = out_dir / f"{img.stem}.png"
        if target in taken:
            raise ValueError(f"{img} and {taken[target]} would both be written to {target}; rename one")
        taken[target] = img
        outputs[img] = target
    return outputs


def cmd_sr(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from sfd.data.io import IMAGE_EXTENSIONS, list_images, read_image, save_image
    from sfd.inference import Upscaler
    from sfd.inference.tiling import bicubic_upscale, tiled_upscale

    setup_runtime(args)
    settings = inference_settings(args)  # a usage error before any file is read
    images = list_images(args.inputs)
    if not images:  # a folder with no images (or only other files) is a mistake, not a success
        raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {' '.join(args.inputs)}")
    outputs = _output_paths(images, Path(args.out))
    up = Upscaler.load(args.model, settings, prefer_ema=not args.no_ema, allow_pickle=args.allow_pickle)
    print(f"model: {up.describe()} on {args.device}", file=sys.stderr)

    start, written, skipped, failed = time.time(), 0, 0, []
    for img_path in tqdm(images, desc="images", unit="img", disable=args.no_progress):
        target = outputs[img_path]
        if target.exists() and not args.overwrite:
            skipped += 1
            continue
        try:
            data = read_image(img_path)
            out_dtype = torch.uint16 if data.bit_depth == 16 else torch.uint8
            rgb = up(data.rgb, out_dtype=out_dtype, progress=not args.no_progress and img_path.name)
            # Alpha is not image content: plain bicubic, clamped, never through the generator.
            alpha = (
                tiled_upscale(
                    bicubic_upscale(up.scale),
                    data.alpha,
                    up.scale,
                    tile=args.tile,
                    tile_pad=args.tile_pad,
                    out_dtype=out_dtype,
                )
                if data.alpha is not None
                else None
            )
            bit_depth, grayscale = data.bit_depth, data.grayscale
            del data  # free the input before the result is written (Pillow copies it once more)
            save_image(rgb, target, alpha=alpha, bit_depth=bit_depth, grayscale=grayscale)
            written += 1
        except (OSError, ValueError, ImportError, RuntimeError) as err:
            failed.append(f"{img_path}: {err}")
            tqdm.write(f"failed: {img_path}: {err}", file=sys.stderr)
    summary = f"sfd sr: {written} written to {args.out}"
    if skipped:
        summary += f", {skipped} skipped (already there; --overwrite replaces them)"
    if failed:
        summary += f", {len(failed)} failed"
    print(f"{summary}; x{up.scale} in {time.time() - start:.1f} s", file=sys.stderr)
    return 1 if failed else 0


# --------------------------------------------------------------------------- export


def cmd_export(args: argparse.Namespace) -> int:
    from sfd.models.export import export_safetensors

    if Path(args.out).exists() and not args.overwrite:
        raise UsageError(f"{args.out} already exists: choose another -o, or add --overwrite to replace it")
    fmt = args.format or ("onnx" if Path(args.out).suffix.lower() == ".onnx" else "safetensors")
    if fmt == "onnx":
        from sfd.inference.onnx_export import export_onnx, report_lines

        done = export_onnx(
            args.checkpoint, args.out, args.precision, args.check_image, not args.no_ema, args.allow_pickle, args.opset
        )
        print("\n".join(report_lines(done)))
        return 0
    if args.precision != "fp32" or args.check_image:
        raise UsageError("--precision and --check-image apply to --format onnx")
    info = export_safetensors(args.checkpoint, args.out, prefer_ema=not args.no_ema, allow_pickle=args.allow_pickle)
    print(
        f"wrote {args.out}: {info['architecture']} x{info['scale']} from {info['source']}; "
        "verified: spandrel loads it with the same architecture, scale and outputs"
    )
    return 0
