"""A training run's state (``Run``) and its checkpoint I/O: everything needed to resume, score or export, in
the layout ``sfd.checkpoint`` reads and writes."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from sfd import checkpoint
from sfd.config import Config, config_to_dict
from sfd.losses import PerceptualLoss
from sfd.models.clip import ImageFeatures, TextEncoder
from sfd.models.generators import parameter_sha256

__all__ = ["Run", "save_checkpoint", "restore"]


@dataclass
class Run:
    """Everything a training run holds. Discriminators and optimizers are keyed by name."""

    cfg: Config
    device: torch.device
    generator: nn.Module
    generator_ema: nn.Module | None
    discriminators: dict[str, nn.Module]  # "feat_d", "tg_d" (its prompt contexts) or "image_d"
    optimizers: dict[str, torch.optim.Optimizer]  # "g" and one per discriminator
    schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler]
    clip_image: ImageFeatures | None = None
    clip_text: TextEncoder | None = None  # TG-D's text tower (from clip_image_tg_d's CLIP when that is set)
    clip_image_tg_d: ImageFeatures | None = None  # TG-D's own F_out extractor, when tg_d.clip_model differs
    perceptual: PerceptualLoss | None = None
    clipiqa_text: torch.Tensor | None = None  # fixed (1, 2, D) prompt features for the CLIPIQA loss
    degrader: object | None = None  # Real-ESRGAN degradations, when configured
    pool: object | None = None  # Real-ESRGAN's training-pair pool (decorrelates a batch)
    meta: dict = field(default_factory=dict)
    iteration: int = 0
    bad: list[str] = field(default_factory=list)  # what was NaN/Inf in the last step (it was skipped)
    scalers: dict[str, torch.amp.GradScaler] = field(default_factory=dict)  # per optimizer; active for fp16
    samples_seen: int = 0  # position in the global sample stream (any number of processes)
    text_features: torch.Tensor | None = None  # TG-D's prompt features of this iteration (G step -> D step)
    step: object = None  # how each step runs: sfd.train.modes' EagerStep, SyncFreeStep or GraphedStep


# ---------------------------------------------------------------- checkpoints


def _rng_state() -> dict:
    # Plain types and tensors only, so that checkpoints load with torch.load(weights_only=True).
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = {
        "name": name,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "gauss": float(gauss),
    }
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run: Run, path: str | Path) -> Path:
    """Everything needed to resume, score or export, in the layout ``sfd.checkpoint`` reads."""
    meta = dict(run.meta, generator_sha256=parameter_sha256(run.generator.state_dict()))
    state = {
        "generator": run.generator.state_dict(),
        "generator_ema": run.generator_ema.state_dict() if run.generator_ema is not None else None,
        "discriminators": {k: d.state_dict() for k, d in run.discriminators.items()},
        "optimizers": {k: o.state_dict() for k, o in run.optimizers.items()},
        "schedulers": {k: s.state_dict() for k, s in run.schedulers.items()},
        "iteration": run.iteration,
        "samples_seen": run.samples_seen,
        "scalers": {k: s.state_dict() for k, s in run.scalers.items()},
        "config": config_to_dict(run.cfg),
        "rng": _rng_state(),
        "meta": meta,
    }
    if run.pool is not None:  # the real-world pair pool: a resumed run draws the same batches
        state["pair_pool"] = run.pool.state_dict()
    return checkpoint.save(state, path)


def _load_optimizer(opt: torch.optim.Optimizer, state: dict) -> None:
    """``load_state_dict`` that keeps this run's Adam implementation (``optim.impl``, CUDA graphs): the
    checkpoint's moments and steps continue under whichever implementation the config now asks for, in
    the memory layout of this run's parameters (a checkpoint written without channels-last, resumed with
    it, or the other way round)."""
    impl = [{k: g[k] for k in ("fused", "foreach", "capturable")} for g in opt.param_groups]
    lrs = [g["lr"] for g in opt.param_groups]
    opt.load_state_dict(state)
    for group, keep, lr in zip(opt.param_groups, impl, lrs):
        group.update(keep)
        if torch.is_tensor(lr):  # a captured graph reads the learning rate from this very tensor
            group["lr"] = lr.fill_(float(group["lr"]))
        else:
            group["lr"] = float(group["lr"])
        for p in group["params"]:
            st = opt.state.get(p, {})
            for k, v in st.items():  # moments in the parameter's memory layout (the fused Adam needs it)
                if k != "step" and torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                    st[k] = torch.empty_like(p, dtype=v.dtype).copy_(v)
            if "step" in st and (keep["fused"] or keep["capturable"]):
                st["step"] = st["step"].to(device=p.device, dtype=torch.float32)
            elif "step" in st:
                st["step"] = st["step"].to(device="cpu", dtype=torch.float32)


def restore(run: Run, ckpt: checkpoint.Checkpoint) -> None:
    run.generator.load_state_dict(ckpt.generator)
    if run.generator_ema is not None and ckpt.generator_ema is not None:
        run.generator_ema.load_state_dict(ckpt.generator_ema)
    for k, d in run.discriminators.items():
        d.load_state_dict(ckpt.discriminators[k])
    for k, o in run.optimizers.items():
        _load_optimizer(o, ckpt.optimizers[k])
    for k, s in run.schedulers.items():
        s.load_state_dict(ckpt.schedulers[k])
    run.iteration = ckpt.iteration
    run.samples_seen = ckpt.extra.get("samples_seen", ckpt.iteration * run.cfg.data.batch_size)
    for k, s in ckpt.extra.get("scalers", {}).items():
        if k in run.scalers and s:
            run.scalers[k].load_state_dict(s)
    _set_rng_state(ckpt.rng)
    if run.pool is not None and "pair_pool" in ckpt.extra:
        run.pool.load_state_dict(ckpt.extra["pair_pool"])
    if init := ckpt.meta.get("generator", {}).get("init"):  # what the run started from, not loaded again
        run.meta["generator"]["init"] = init
