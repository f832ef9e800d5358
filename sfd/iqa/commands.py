"""IQA subcommands: ``sfd iqa``, ``sfd iqa-eval``, ``sfd tsne``, ``sfd features``."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import warnings
from pathlib import Path

from sfd.errors import UsageError
from sfd.options import add_output_option


def _add_metric_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint",
        dest="model",
        metavar="CKPT",
        help="sfd training checkpoint or run folder (Feat-D + TG-D + CLIP record); needed by sfd-iqa",
    )
    p.add_argument("--model", dest="model", help=argparse.SUPPRESS)  # the name before --checkpoint
    p.add_argument(
        "--clip-weights",
        metavar="W",
        help="CLIP weights: openai, a file, or random "
        "(default: the checkpoint's CLIP; clipiqa without --checkpoint: openai)",
    )
    p.add_argument(
        "--dualformer-checkpoint",
        metavar="CKPT",
        help="a DualFormer checkpoint or run folder (configs/dualformer_rrdb_x4.yml); needed by dualformer-iqa",
    )
    p.add_argument("--device", default="auto", help="auto (default: CUDA when available), cpu, cuda, cuda:1, ...")
    g = p.add_argument_group("image protocol (CLIP metrics; see docs/iqa.md)")
    g.add_argument(
        "--mode",
        choices=["auto", "whole", "grid"],
        default="auto",
        help="auto (default): whole image when both sides <= --max-side, else a grid of --crop crops",
    )
    g.add_argument("--max-side", type=int, default=1024)
    g.add_argument("--crop", type=int, default=256)
    g.add_argument(
        "--pad",
        choices=["reflect", "replicate", "crop"],
        default="reflect",
        help="how sides reach multiples of 32 (default reflect)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _protocol(args: argparse.Namespace) -> dict:
    return {"mode": args.mode, "max_side": args.max_side, "crop": args.crop, "pad": args.pad}


def _split(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("iqa", help="score images with SFD-IQA, CLIP-IQA or NIQE (no reference, no opinion scores)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and/or folders")
    p.add_argument(
        "--metric", default="sfd-iqa", help="sfd-iqa, clipiqa, niqe, dualformer-iqa, or several separated by commas"
    )
    p.add_argument("--csv", metavar="FILE", help="also write the per-image scores to this CSV")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --csv file")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--map",
        metavar="DIR",
        help="also write each image's SFD-IQA quality map here: NAME_map.png (with legend), NAME_overlay.png, "
        "NAME_map.npy (Feat-D's real probability per pixel, from the pass that gives the score)",
    )
    _add_metric_options(p)
    p.set_defaults(func=cmd_iqa)

    p = sub.add_parser("iqa-eval", help="correlate metrics with opinion scores: SRCC/KRCC/PLCC table and scatter plots")
    p.add_argument("--images", required=True, metavar="DIR", help="folder of the dataset's images")
    p.add_argument("--mos", required=True, metavar="CSV", help="CSV of image name and opinion score")
    p.add_argument(
        "--metrics",
        default="sfd-iqa,clipiqa,niqe",
        help="comma-separated (default: sfd-iqa,clipiqa,niqe; add dualformer-iqa with --dualformer-checkpoint)",
    )
    p.add_argument("--image-col", default="image", help="MOS file column of image names (default: image)")
    p.add_argument("--mos-col", default="mos", help="MOS file column of scores (default: mos)")
    add_output_option(p, "runs/iqa_eval", "folder for table.md, results.json, scores and plots")
    p.add_argument("--name", help="dataset name in the outputs (default: from the folder)")
    p.add_argument("--limit", type=int, help="only the first N images of the MOS file (quick checks)")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")
    _add_metric_options(p)
    p.set_defaults(func=cmd_iqa_eval)

    p = sub.add_parser("tsne", help="t-SNE of VGG-D / CLIP / Feat-D features on MOS-binned images (supplement Fig. 3)")
    p.add_argument("--images", required=True, metavar="DIR")
    p.add_argument("--mos", required=True, metavar="CSV")
    p.add_argument(
        "--checkpoint", dest="model", required=True, metavar="CKPT", help="sfd checkpoint with a Feat-D (and its CLIP)"
    )
    p.add_argument(
        "--vgg-d", metavar="CKPT", help="lgan checkpoint with the VGG-style D (default: a randomly initialised one)"
    )
    p.add_argument("--clip-weights", metavar="W", help="override the checkpoint's CLIP weights")
    p.add_argument("--image-col", default="image")
    p.add_argument("--mos-col", default="mos")
    p.add_argument("--bins", type=int, default=5, help="number of MOS bins (default 5: 0-20, ..., 80-100)")
    p.add_argument(
        "--mos-range",
        type=_mos_range,
        default=(0.0, 100.0),
        metavar="LO,HI",
        help="the dataset's MOS scale, rescaled to 0-100 for binning (default 0,100; KonIQ raw MOS: 1,5)",
    )
    p.add_argument(
        "--bins-from",
        choices=["range", "data"],
        default="range",
        help="range: the supplement's fixed bins of the 0-100 scale (default); "
        "data: equal bins between the data's min and max",
    )
    p.add_argument("--per-bin", type=int, default=100, help="images sampled per bin, at most (default 100)")
    p.add_argument("--crop", type=int, default=256, help="centre crop fed to the extractors (default 256)")
    p.add_argument("--seed", type=int, default=0)
    add_output_option(p, "runs/tsne", "folder for tsne.png and tsne.json")
    p.add_argument("--device", default="auto", help="auto (default: CUDA when available), cpu, cuda, ...")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier tsne.png/tsne.json in -o")
    p.set_defaults(func=cmd_tsne)

    p = sub.add_parser(
        "features", help="generator feature maps before/after upsampling, side by side (supplement Fig. 2)"
    )
    p.add_argument(
        "generators", nargs="+", metavar="GEN", help="two or more generators: sfd checkpoints, model files or names"
    )
    p.add_argument("--image", required=True, help="input image (LR; with --hr an HR image to downscale)")
    p.add_argument("--hr", action="store_true", help="the image is HR: downscale it by each generator's scale first")
    p.add_argument("--layers", help="BEFORE,AFTER module names (default per architecture, see docs/iqa.md)")
    p.add_argument("--channels", default="0,1,2", help="channel indices to show (default 0,1,2)")
    p.add_argument("--crop", type=int, default=64, help="centre crop of the LR input (default 64)")
    p.add_argument("--labels", help="comma-separated row labels (default: file names)")
    add_output_option(p, "runs/features.png", "the figure")
    p.add_argument("--overwrite", action="store_true", help="replace an existing -o file")
    p.set_defaults(func=cmd_features)


def _build(args: argparse.Namespace, names: list[str]):
    """The registry's metrics for these no-reference commands; their weights' warnings printed once."""
    from sfd import metrics as registry
    from sfd.iqa.evaluate import weights_note

    options = registry.MetricOptions(
        device=args.device,
        checkpoint=args.model,
        clip_weights=args.clip_weights,
        protocol=_protocol(args),
        dualformer_checkpoint=args.dualformer_checkpoint,
    )
    built = {}
    with warnings.catch_warnings():  # the random-CLIP warning is printed below, once, in plain words
        warnings.filterwarnings("ignore", message=".*RANDOM CLIP weights.*")
        for raw in names:
            entry = registry.metric_entry(raw)
            if entry.mode == "fr":
                raise UsageError(
                    f"{entry.name} compares an image with its reference; this command scores images alone "
                    "(use sfd eval --hr for reference metrics)"
                )
            built[entry.name] = registry.build(entry.name, options)
    metrics = {name: m.metric for name, m in built.items()}
    for m in metrics.values():
        if note := weights_note(m):
            print(f"NOTE: {note}", file=sys.stderr)
    return metrics


def _refuse_existing(args: argparse.Namespace, *outputs) -> None:
    """Outputs are never replaced without --overwrite (a user's file may have the same name)."""
    for out in outputs:
        if out and Path(out).exists() and not args.overwrite:
            raise UsageError(f"{out} already exists: choose another output, or add --overwrite to replace it")


def cmd_iqa(args: argparse.Namespace) -> int:
    from sfd.data.io import list_images
    from sfd.iqa.evaluate import score_files

    _refuse_existing(args, args.csv)
    paths = {str(p): p for p in list_images(args.inputs)}
    if not paths:
        raise ValueError(f"no images in {' '.join(args.inputs)}")
    names = _split(args.metric)
    if args.map and "sfd-iqa" not in {registry_name(n) for n in names}:
        raise UsageError("--map draws SFD-IQA's Feat-D map: add sfd-iqa to --metric")
    stems = _map_stems(paths) if args.map else {}
    if args.map:
        _refuse_existing(args, *(Path(args.map) / f"{s}{end}" for s in stems.values() for end in MAP_FILES))
    metrics = _build(args, names)

    results, failed, maps = {}, {}, {}
    for name, metric in metrics.items():
        on_map = _map_writer(args.map, stems, metric, maps) if args.map and name == "sfd-iqa" else None
        results[name], bad = score_files(metric, paths, progress=not args.no_progress, components=True, on_map=on_map)
        for key, msg in bad.items():
            failed.setdefault(key, f"{name}: {msg}")
    for key, msg in failed.items():
        print(f"skipped {key}: {msg}", file=sys.stderr)
    scored = [k for k in paths if all(k in results[n] for n in metrics)]
    if maps:
        print(f"wrote {len(maps)} quality maps to {args.map} (NAME_map.png, _overlay.png, _map.npy)", file=sys.stderr)
    if failed:  # the scores of the rest still print, but the exit status says not all went well
        print(f"sfd iqa: {len(failed)} of {len(paths)} images could not be scored (see above)", file=sys.stderr)
    if not scored:
        print("sfd iqa: no image could be scored", file=sys.stderr)
        return 1
    means = {n: sum(results[n][k]["score"] for k in scored) / len(scored) for n in metrics}

    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["image", *metrics])
            w.writerows([[k, *(f"{results[n][k]['score']:.6f}" for n in metrics)] for k in scored])
    if args.json:
        print(
            json.dumps(
                {
                    "metrics": {n: m.describe() for n, m in metrics.items()},
                    "images": [{"image": k, **{n: results[n][k] for n in metrics}} for k in scored],
                    "mean": means,
                    "skipped": failed,
                    **({"maps": maps} if args.map else {}),
                },
                indent=2,
                default=str,
            )
        )
        return 1 if failed else 0
    width = max(len(k) for k in scored + ["mean"])
    header = "".join(f"  {n + (' ↓' if m.lower_better else ''):>10}" for n, m in metrics.items())
    print(f"{'image':<{width}}{header}")
    for k in scored:
        print(f"{k:<{width}}" + "".join(f"  {results[n][k]['score']:>10.4f}" for n in metrics))
    print(f"{'mean':<{width}}" + "".join(f"  {means[n]:>10.4f}" for n in metrics) + f"   ({len(scored)} images)")
    return 1 if failed else 0


MAP_FILES = ("_map.png", "_overlay.png", "_map.npy")


def registry_name(name: str) -> str:
    from sfd.metrics import canonical_name

    return canonical_name(name)


def _map_stems(paths: dict[str, Path]) -> dict[str, str]:
    """One file stem per image; images of the same name from different folders get _2, _3 ..."""
    stems, seen = {}, {}
    for key, path in paths.items():
        seen[path.stem] = seen.get(path.stem, 0) + 1
        stems[key] = path.stem if seen[path.stem] == 1 else f"{path.stem}_{seen[path.stem]}"
    return stems


def _map_writer(out_dir: str, stems: dict[str, str], metric, written: dict):
    """``on_map`` of ``score_files``: each image's map files, titled with the image and what made them."""
    from sfd.iqa.evaluate import weights_note
    from sfd.iqa.quality_map import write_map

    note = weights_note(metric)
    source = f"checkpoint {Path(metric.checkpoint).name}, iteration {metric.iteration}"

    def on_map(key, img, qmap):
        title = f"{Path(key).name}: SFD-IQA map ({source})"
        written[key] = [str(p) for p in write_map(img, qmap, out_dir, stems[key], title, note)]

    return on_map


def cmd_iqa_eval(args: argparse.Namespace) -> int:
    from sfd.iqa.evaluate import evaluate, markdown_table

    metrics = _build(args, _split(args.metrics))
    report = evaluate(
        args.images,
        args.mos,
        metrics,
        args.out,
        args.image_col,
        args.mos_col,
        args.name,
        args.limit,
        progress=not args.no_progress,
    )
    print(json.dumps(report, indent=2, default=str) if args.json else markdown_table(report))
    print(f"wrote {Path(args.out) / 'table.md'}, results.json, scores_*.csv, scatter_*.png", file=sys.stderr)
    failed = {k for m in report["metrics"].values() for k in m["failed"]}
    for key in sorted(failed):
        print(
            f"skipped {key}: "
            + "; ".join(f"{n}: {m['failed'][key]}" for n, m in report["metrics"].items() if key in m["failed"]),
            file=sys.stderr,
        )
    if report["images_missing"] or failed:  # correlations over fewer images than listed: say so in the status
        print(
            f"sfd iqa-eval: {len(report['images_missing'])} images of the MOS file not found, {len(failed)} could "
            "not be scored",
            file=sys.stderr,
        )
        return 1
    return 0


def _mos_range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI (e.g. 0,100 or 1,5), got {text!r}") from None
    if not hi > lo:
        raise argparse.ArgumentTypeError(f"LO,HI needs HI > LO, got {text!r}")
    return lo, hi


def cmd_tsne(args: argparse.Namespace) -> int:
    from sfd.iqa.tsne import tsne_analysis

    _refuse_existing(args, Path(args.out) / "tsne.png", Path(args.out) / "tsne.json")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*RANDOM CLIP weights.*")
        report = tsne_analysis(
            args.images,
            args.mos,
            args.model,
            args.out,
            args.vgg_d,
            args.clip_weights,
            args.image_col,
            args.mos_col,
            args.bins,
            args.per_bin,
            args.crop,
            args.seed,
            args.device,
            progress=not args.no_progress,
            mos_range=args.mos_range,
            bins_from_data=args.bins_from == "data",
        )
    if note := report.get("note"):
        print(f"NOTE: {note}", file=sys.stderr)
    counts = ", ".join(str(b["images"]) for b in report["bins"])
    print(f"bins: {report['binning']['description']}; images per bin: {counts}", file=sys.stderr)
    print(f"{'panel':<8} {'silhouette':>10} {'kNN (t-SNE)':>12} {'kNN (feat.)':>12} {'chance':>7}  source")
    for key, p in report["panels"].items():
        print(
            f"{key:<8} {p['silhouette_tsne']:>10.3f} {p['knn_accuracy_tsne']:>12.3f} "
            f"{p['knn_accuracy_features']:>12.3f} {p['chance']:>7.3f}  {p['source']}"
        )
    print(f"wrote {Path(args.out) / 'tsne.png'} and tsne.json ({len(report['images'])} images)", file=sys.stderr)
    failed = report["images_unreadable"]
    for name, why in failed.items():
        print(f"skipped {name}: {why}", file=sys.stderr)
    if report["images_missing"] or failed:  # the plot covers fewer images than the MOS file lists: say so
        print(
            f"sfd tsne: {report['images_missing']} images of the MOS file not found, {len(failed)} of the sampled "
            "could not be read",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    from sfd.iqa.tsne import feature_maps

    _refuse_existing(args, args.out)
    layers = tuple(_split(args.layers)) if args.layers else None
    if layers is not None and len(layers) != 2:
        raise UsageError("--layers takes two module names: BEFORE,AFTER")
    channels = [int(c) for c in _split(args.channels)]
    labels = _split(args.labels) if args.labels else None
    info = feature_maps(args.generators, args.image, args.out, layers, channels, args.crop, args.hr, labels)
    for row in info["rows"]:
        print(f"{row['label']}: {row['source']}  layers {', '.join(row['layers'])}")
    print(f"wrote {info['out']}", file=sys.stderr)
    return 0
