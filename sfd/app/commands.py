"""``sfd app``: the command line of the local page (Gradio is imported only when it runs)."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from sfd.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "app",
        help="a local web page: upscale a photo with one or two models, compare, score (needs sfd[app])",
        description="Serve a page on 127.0.0.1 (no share link, no analytics): upload a photo or pick an example, "
        "choose one or two of the models given here, and get the result on a before/after slider with SFD-IQA "
        "(and its map), NIQE and CLIP-IQA of input and outputs.",
    )
    p.add_argument(
        "models", nargs="*", metavar="MODEL", help="run folders, checkpoints, generator files or named models"
    )
    p.add_argument("--runs", action="append", default=[], metavar="DIR", help="also offer every run folder in DIR")
    p.add_argument(
        "--iqa-checkpoint",
        metavar="CKPT",
        help="sfd checkpoint for SFD-IQA (default: the first MODEL that is an sfd checkpoint with a Feat-D)",
    )
    p.add_argument("--clip-weights", metavar="W", help="CLIP weights for the CLIP metrics (default: the checkpoint's)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--device", default="auto", help="auto (default: CUDA when available), cpu, cuda, ...")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest upload in MB (default 20)")
    p.add_argument(
        "--max-pixels", type=float, default=2.0, help="largest input in megapixels (default 2; x4 makes 32 MP)"
    )
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    p.set_defaults(func=cmd_app)


def cmd_app(args: argparse.Namespace) -> int:
    from sfd.app.ui import quiet_environment

    quiet_environment()  # before anything imports gradio
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UsageError("sfd app needs Gradio: pip install 'sfd[app]'") from None
    if args.max_upload_mb <= 0 or args.max_pixels <= 0:
        raise UsageError("--max-upload-mb and --max-pixels must be positive")
    import torch

    from sfd.app.core import MB, Engine, Limits, Scorer, find_models, sfd_checkpoint_with_feat_d
    from sfd.app.ui import launch
    from sfd.device import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = str(resolve_device(args.device))
    models = find_models(args.models, args.runs)
    iqa = args.iqa_checkpoint
    if iqa is None:
        iqa = next((c for c in map(sfd_checkpoint_with_feat_d, models.values()) if c is not None), None)
    scorer = Scorer(iqa, args.clip_weights, device)
    for info in scorer.metrics.values():
        state = info.weights if info.metric is not None else f"not available: {info.error}"
        print(f"{info.name}: {state}" + (" (RANDOM weights)" if info.random else ""), file=sys.stderr)
    limits = Limits(max_bytes=int(args.max_upload_mb * MB), max_pixels=int(args.max_pixels * 1e6))
    with tempfile.TemporaryDirectory(prefix="sfd-app-") as work:
        engine = Engine(models, scorer, limits, device, Path(work))
        print(f"sfd app: {len(models)} models: {', '.join(models)}", file=sys.stderr)
        launch(engine, args.host, args.port)
    return 0
