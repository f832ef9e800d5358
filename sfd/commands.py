"""Core subcommands: ``sfd train``, ``sfd inspect``, ``sfd demo``."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from sfd.errors import UsageError
from sfd.options import add_output_option


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a generator with SFD (or a baseline) from a YAML config")
    p.add_argument(
        "-c",
        "--config",
        help="YAML config: a path, or a shipped config's name such as classic_rrdb_x4 "
        "(optional when resuming a checkpoint path)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set data.batch_size=16 (repeatable)",
    )
    p.add_argument("--resume", metavar="PATH|auto", help="continue from a checkpoint, or the newest of the run folder")
    p.add_argument("--overwrite", action="store_true", help="start the run over, deleting its earlier checkpoints")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs still written)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("inspect", help="describe a training checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser(
        "fetch-weights",
        help="download ImageNet backbone weights into torchvision's cache (asks first)",
        description="Download torchvision's ImageNet weights of NAME into its cache, where the "
        "perceptual loss (vgg19) and LPIPS/DISTS (alexnet, vgg16) look for them. sfd "
        "never downloads them otherwise.",
    )
    p.add_argument(
        "names",
        nargs="+",
        choices=["vgg19", "vgg16", "alexnet"],
        metavar="NAME",
        help="vgg19 (perceptual loss), alexnet (LPIPS), vgg16 (LPIPS-vgg, DISTS)",
    )
    p.set_defaults(func=cmd_fetch_weights)

    p = sub.add_parser("demo", help="train a small SFD model on bundled photos and write an HTML report")
    add_output_option(p, "runs/demo", "output folder")
    p.add_argument("--iterations", type=int, default=None, help="override the demo's iteration count")
    p.set_defaults(func=cmd_demo)


def cmd_train(args: argparse.Namespace) -> int:
    from sfd.config import load_config
    from sfd.train import train
    from sfd.train.guard import process_age

    started = time.monotonic() - process_age()  # train.max_time counts from the process's start
    if not args.config and not (args.resume and args.resume != "auto"):
        raise UsageError("give -c CONFIG (a file or a shipped config name), or --resume CHECKPOINT to continue a run")
    overrides = args.overrides + env_overrides()
    cfg = load_config(args.config, overrides) if args.config else None
    path = train(
        cfg,
        resume=args.resume,
        progress=not args.no_progress,
        overrides=overrides,
        overwrite=args.overwrite,
        started=started,
    )
    print(f"final checkpoint: {path}")
    return 0


def env_overrides() -> list[str]:
    """``$SFD_SET``: extra ``--set`` overrides (space-separated) after the command line's, said aloud.

    For smoke tests of documented commands (tests/test_docs.py runs them with tiny settings)."""
    import os
    import shlex
    import sys

    extra = shlex.split(os.environ.get("SFD_SET", ""))
    if extra:
        print(f"SFD_SET adds: --set {' --set '.join(extra)}", file=sys.stderr)
    return extra


def inspect_checkpoint(path: str) -> dict:
    import torch

    from sfd import checkpoint
    from sfd.models.generators import parameter_sha256

    ckpt = checkpoint.load(path)
    run_dir = Path(ckpt.path).parent.parent  # checkpoints live in RUN/checkpoints/
    count = lambda sd: int(sum(t.numel() for t in sd.values() if torch.is_tensor(t)))  # noqa: E731
    cfg, meta = ckpt.config, ckpt.meta
    return {
        "path": str(path),
        "name": cfg.name,
        "kind": ckpt.kind,
        "iteration": ckpt.iteration,
        "generator": {
            "arch": cfg.generator.arch,
            "scale": cfg.generator.scale,
            "init": meta.get("generator", {}).get("init"),
        },
        "parameters": {
            "generator": count(ckpt.generator),
            "generator_ema": count(ckpt.generator_ema) if ckpt.generator_ema else None,
            **{f"discriminator.{k}": count(v) for k, v in ckpt.discriminators.items()},
        },
        "clip": meta.get("clip"),
        **({"clip_tg_d": meta["clip_tg_d"]} if "clip_tg_d" in meta else {}),  # TG-D's own CLIP, when it had one
        "vgg": meta.get("vgg"),
        "generator_sha256": parameter_sha256(ckpt.generator),
        "generator_ema_sha256": parameter_sha256(ckpt.generator_ema) if ckpt.generator_ema else None,
        "sfd_version": meta.get("sfd_version"),
        "best": checkpoint.read_best(run_dir),  # per validation metric: value, iteration, checkpoint
    }


def cmd_inspect(args: argparse.Namespace) -> int:
    info = inspect_checkpoint(args.checkpoint)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"checkpoint   {info['path']}")
    print(f"config       {info['name']}   iteration {info['iteration']}")
    g = info["generator"]
    print(f"generator    {g['arch']} x{g['scale']}" + (f"   initialised from {g['init']}" if g["init"] else ""))
    for k, v in info["parameters"].items():
        if v is not None:
            print(f"  {k:<24} {v:>12,} parameters")
    for key, label in (("clip", "CLIP"), ("clip_tg_d", "CLIP (TG-D)"), ("vgg", "VGG19")):
        w = info.get(key)
        if w:
            state = "pretrained" if w["pretrained"] else "RANDOM (not pretrained)"
            print(f"{label:<12} {state}: {w['weights']}" + (f" ({w['model']})" if "model" in w else ""))
    print(f"G sha256     {info['generator_sha256']}")
    if info["generator_ema_sha256"]:
        print(f"G-EMA sha256 {info['generator_ema_sha256']}")
    for metric, b in info["best"].items():
        way = "higher" if b["higher_is_better"] else "lower"
        print(
            f"best {metric:<7} {b['value']:.4f} at iteration {b['iteration']} ({way} is better): {b.get('checkpoint')}"
        )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from sfd.demo import run_demo

    report = run_demo(args.out, iterations=args.iterations)
    print(f"report: {report}")
    return 0


def cmd_fetch_weights(args: argparse.Namespace) -> int:
    from sfd.weights import fetch_imagenet_weights

    for name in args.names:
        print(f"{name}: {fetch_imagenet_weights(name)}")
    return 0
