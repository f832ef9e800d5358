"""Building a run: the models, optimizers and step mode from a config (``build_run``), and everything before
the first step (``open_run``: the config and checkpoint to resume, the run lock, the process group, the
run folder's files)."""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import os
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

import sfd
from sfd import checkpoint, distributed
from sfd.config import Config, config_to_dict, diff_against_shipped
from sfd.data.io import list_images, probe_images
from sfd.device import resolve_device
from sfd.errors import UsageError
from sfd.losses import PerceptualLoss
from sfd.models.clip import ImageFeatures, TextEncoder, load_clip
from sfd.models.discriminators import build_discriminators
from sfd.models.generators import build_generator, initialise_from_config, resolve_pretrained
from sfd.train.modes import make_step, step_mode
from sfd.train.precision import make_scalers, prepare_models
from sfd.train.runlock import RunLock
from sfd.train.schedulers import build_scheduler
from sfd.train.state import Run, restore
from sfd.weights import describe_weights
from sfd.yamlconfig import ConfigError, apply_overrides, config_from_dict

__all__ = ["build_run", "open_run", "run_dir_for"]


def build_run(cfg: Config, load_pretrained: bool = True) -> Run:
    """``load_pretrained=False`` when resuming: the checkpoint's weights replace ``generator.pretrained``'s."""
    device = resolve_device(cfg.train.device)
    torch.manual_seed(cfg.train.seed)
    g = build_generator(cfg.generator)
    meta: dict = {
        "sfd_version": sfd.__version__,
        "generator": {"arch": cfg.generator.arch, "scale": cfg.generator.scale},
    }
    if load_pretrained:
        meta["generator"]["init"] = initialise_from_config(g, cfg)
    g.to(device)
    g_ema = copy.deepcopy(g).eval().requires_grad_(False) if cfg.optim.ema_decay else None

    run_kw: dict = {}
    if cfg.uses_clip:
        clip = text_clip = load_clip(cfg.clip.model, cfg.clip.weights, seed=cfg.clip.seed)
        meta["clip"] = _clip_meta(clip)
        run_kw["clip_image"] = ImageFeatures(clip, cfg.clip.pos_embed).to(device)
        if cfg.separate_tg_d_clip:  # TG-D on another extractor (Supp. Table 2, mixed reading)
            text_clip = load_clip(cfg.tg_d_clip_model, cfg.tg_d.clip_weights or cfg.clip.weights, seed=cfg.clip.seed)
            meta["clip_tg_d"] = _clip_meta(text_clip)
            run_kw["clip_image_tg_d"] = ImageFeatures(text_clip, cfg.clip.pos_embed).to(device)
        if cfg.tg_d.enabled or cfg.loss.clipiqa_loss.variant:
            run_kw["clip_text"] = TextEncoder(text_clip).to(device)
        if cfg.loss.clipiqa_loss.variant:
            with torch.no_grad():
                t = run_kw["clip_text"].encode_text(cfg.loss.clipiqa_loss.prompts)
            run_kw["clipiqa_text"] = F.normalize(t, dim=-1)[None]
    discs = build_discriminators(cfg, run_kw.get("clip_text"))
    for d in discs.values():
        d.to(device)

    if cfg.loss.perceptual > 0:
        run_kw["perceptual"] = PerceptualLoss(cfg.loss.perceptual_layers, cfg.loss.vgg_weights).to(device)
        meta["vgg"] = {"weights": run_kw["perceptual"].identity, "pretrained": run_kw["perceptual"].pretrained}
    if cfg.data.degradation is not None:
        from sfd.data.degradations import PairPool
        from sfd.data.pipeline import build_degrader, plan_degradations

        run_kw["degrader"] = build_degrader(cfg, plan_degradations(cfg, device))  # where they run: decided here
        if cfg.data.degradation.queue_size > 0:
            run_kw["pool"] = PairPool(cfg.data.degradation.queue_size, seed=cfg.train.seed)

    o = cfg.optim
    mode = step_mode(cfg, device)  # eager, sync_free or graphed: decided here, once
    graph = mode == "graphed"
    optimizers = {"g": _adam(g.parameters(), o.lr_g, cfg, device, graph)}
    for name, d in discs.items():
        optimizers[name] = _adam(d.parameters(), o.lr_d, cfg, device, graph)
    schedulers = {k: build_scheduler(opt, o) for k, opt in optimizers.items()}
    run_kw["scalers"] = make_scalers(device, cfg.train.precision, optimizers)
    run = Run(cfg, device, g, g_ema, discs, optimizers, schedulers, meta=meta, step=make_step(mode, device), **run_kw)
    prepare_models(run)
    return run


def _clip_meta(clip) -> dict:
    return {"model": clip.name, "weights": clip.identity, "pretrained": clip.pretrained}


def _adam(params, lr: float, cfg: Config, device: torch.device, graph: bool) -> torch.optim.Adam:
    """Adam as ``optim.impl`` says: "fused" (one kernel for all tensors; the default, ``auto``),
    "foreach" (a few kernels per step) or "for_loop" (torch's per-tensor reference). The same update up
    to float rounding. CUDA graphs need the learning rate as a tensor on the device (schedules fill it in
    place; a CPU tensor would be read once, at capture)."""
    impl = "fused" if cfg.optim.impl == "auto" else cfg.optim.impl
    kw = {"fused": impl == "fused", "foreach": impl == "foreach"}
    if graph:
        kw["capturable"], lr = True, torch.tensor(lr, device=device)
    o = cfg.optim
    return torch.optim.Adam(params, lr=lr, betas=tuple(o.betas), weight_decay=o.weight_decay, **kw)


def run_dir_for(cfg: Config) -> Path:
    return Path(cfg.train.output_dir) / cfg.name


def _check_before_work(cfg: Config, resuming: bool) -> None:
    """Mistakes that would otherwise surface minutes later, as one-line errors."""
    if not resuming:
        resolve_pretrained(cfg.generator.pretrained, cfg.train.output_dir)  # e.g. the first stage is missing
    if not cfg.data.train:
        raise ConfigError("data.train lists no HR folders: add --set data.train=[DIR] (or set it in the config)")
    missing = [d for d in cfg.data.train if not Path(d).exists()]
    if missing:
        raise ConfigError(f"data.train: no such folder: {', '.join(map(str, missing))}")
    usable, _ = probe_images(list_images(cfg.data.train), cfg.data.patch_size)
    if not usable:
        raise ConfigError(
            f"data.train: no usable training images (readable, at least {cfg.data.patch_size} pixels "
            f"on a side) in {', '.join(map(str, cfg.data.train))}"
        )
    if cfg.data.val and not Path(cfg.data.val).exists():  # else the first validation would fail, hours in
        raise ConfigError(f"data.val: no such folder: {cfg.data.val} (set data.val=null to skip validation)")
    if cfg.train.wandb and importlib.util.find_spec("wandb") is None:
        raise ConfigError(f"train.wandb={cfg.train.wandb}: the wandb package is not installed (pip install wandb)")
    if str(cfg.train.device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"train.device={cfg.train.device}, but torch sees no CUDA device: use train.device=auto or cpu"
        )


def _clear_run(out: Path) -> None:
    """Remove what a run writes (checkpoints, logs), nothing else the folder may hold."""
    for name in ("checkpoints", "tensorboard"):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in ("log.jsonl", "config.json", "config_diff.txt", "meta.json"):
        (out / name).unlink(missing_ok=True)


def resume_after_restart(cfg: Config | None, resume: str | None, overwrite: bool) -> tuple[str | None, bool]:
    """A job restarted with its command line unchanged (torchrun ``--max-restarts``, a SLURM requeue) resumes
    from the newest good checkpoint of its run folder, as ``--resume auto`` (none there: it starts fresh),
    and never honours ``--overwrite`` again, which would delete what the first start trained."""
    why = distributed.restarted()
    if why is None or cfg is None:  # a first start; or --resume PATH alone, which names its checkpoint
        return resume, overwrite
    if os.environ.get("RANK", "0") == "0":
        tqdm.write(f"{why}: resuming from the newest good checkpoint in {run_dir_for(cfg)}, if any")
    return "auto", False


def open_run(cfg, resume, overrides, overwrite, held: contextlib.ExitStack) -> tuple[Run, Path, str | None]:
    """Everything before the first step: the config and checkpoint to resume, the run lock, the process
    group, the run folder's files. Returns the built (and restored) run, its folder and its checkpoint."""
    ckpt, locked = None, False
    resume, overwrite = resume_after_restart(cfg, resume, overwrite)
    if resume == "auto":
        if cfg is None:
            raise UsageError("--resume auto needs the config (-c), to find its run folder")
        locked = held.enter_context(RunLock(run_dir_for(cfg)))  # before it reads (and may set aside) checkpoints
        ckpt = checkpoint.load_latest_good(run_dir_for(cfg), say=tqdm.write)  # skips a corrupt newest one
        if ckpt is None:
            tqdm.write(f"starting from scratch: no checkpoint in {run_dir_for(cfg) / 'checkpoints'}")
        else:
            tqdm.write(f"resuming from {ckpt.path}")
        resume = None
    if resume:
        tqdm.write(f"resuming from {resume}")
        ckpt = checkpoint.load(resume)
        if cfg is None:  # resuming a path alone: the checkpoint carries its config; --set still applies
            data = apply_overrides(config_to_dict(ckpt.config), overrides or [])
            cfg = config_from_dict(data, Config).validate()
    out = run_dir_for(cfg)
    _check_before_work(cfg, resuming=ckpt is not None)
    if not locked:
        held.enter_context(RunLock(out))
    joined = distributed.init(resolve_device(cfg.train.device))  # under torchrun: one process of many
    if joined:  # a process that dies or hangs on another node stops this one (train.dist_timeout)
        held.callback(distributed.shutdown)
        beat = distributed.Heartbeat(cfg.train.dist_timeout_s, lambda: checkpoint.find_latest(out))
        held.callback(beat.start().stop)
    main = distributed.is_main()  # rank 0 alone writes files, logs and validates
    if ckpt is None and (latest := checkpoint.find_latest(out)) is not None:
        if not overwrite:
            raise UsageError(
                f"{out} already holds a run (newest checkpoint {latest.name}): continue it with --resume auto, "
                "or start over with --overwrite"
            )
        tqdm.write(f"--overwrite: removing the earlier run's checkpoints and logs in {out}")
        if main:
            _clear_run(out)
    distributed.barrier()
    run = build_run(cfg, load_pretrained=ckpt is None)
    if ckpt is not None:
        restore(run, ckpt)
        run.meta["generator"]["init"] = ckpt.meta.get("generator", {}).get("init")
    distributed.broadcast_modules(run.generator, run.generator_ema, *run.discriminators.values())
    notes = describe_weights(run.meta)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(config_to_dict(cfg), indent=2))
        (out / "config_diff.txt").write_text("\n".join(diff_against_shipped(cfg)) + "\n")  # sfd config diff RUN
        (out / "meta.json").write_text(json.dumps({**run.meta, "notes": notes}, indent=2))
        for note in notes:
            tqdm.write(note)
    return run, out, ckpt.path if ckpt is not None else None
