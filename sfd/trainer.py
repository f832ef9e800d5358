"""SFD training, top to bottom: build everything from a Config, then alternate G and D steps.

Per iteration (docs/method.md):
  G step: SR = G(LR); loss = l1*L1 + perceptual*VGG + feat_d*adv(Feat-D) + tg_d*adv(TG-D)
          (or image_d*adv(pixel D) for the L_GAN baselines, + clipiqa*CLIPIQA-loss for that ablation)
  D step: Feat-D and the prompt contexts (or the pixel D) learn HR = real vs SR = fake.
CLIP sees each image once per iteration: SR with gradient (to the SR image), HR without; the
D step reuses the detached SR features. Nothing here is global: all state lives in ``Run``.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import os
import random
import signal
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

import sfd
from sfd import checkpoint, distributed
from sfd.baseline_losses import EXTRA_DISCRIMINATORS, discriminator_logits, generator_terms
from sfd.bookkeeping import RunLogger, RunSaver, floats
from sfd.config import Config, config_to_dict, diff_against_shipped
from sfd.data.io import ImageReadError, list_images, load_rgb, probe_images, to_tensor
from sfd.data.pipeline import build_loader
from sfd.data.resize import bicubic_lr, mod_crop
from sfd.device import resolve_device
from sfd.errors import UsageError
from sfd.graphs import GraphedStep
from sfd.guard import (
    BadStepCounter,
    DeviceBadSteps,
    StopSignals,
    TimeLimit,
    TrainingInterrupted,
    bad_losses,
    batches,
    grads_finite,
    grads_finite_on_device,
    named_fault,
)
from sfd.losses import PerceptualLoss, clipiqa_loss, d_adversarial_loss, g_adversarial_loss
from sfd.metrics.psnr_ssim import psnr, ssim
from sfd.models.clip import ImageFeatures, TextEncoder, load_clip
from sfd.models.discriminators import build_discriminators
from sfd.models.generators import build_generator, initialise_from_config, parameter_sha256, resolve_pretrained
from sfd.models.tg_d import tg_d_logits
from sfd.precision import autocast, make_scalers, prepare_models
from sfd.runlock import RunLock
from sfd.schedulers import build_scheduler
from sfd.weights import describe_weights
from sfd.yamlconfig import ConfigError, apply_overrides, config_from_dict

__all__ = ["Run", "build_run", "train_step", "train", "open_run", "save_checkpoint", "restore"]


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
    bad_steps: DeviceBadSteps | None = None  # train.sync_free: skipped steps, counted on the device
    graphed: GraphedStep | None = None  # train.cuda_graph: the step replayed from CUDA graphs


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
        from sfd.data.pipeline import build_degrader

        run_kw["degrader"] = build_degrader(cfg, device)
        if cfg.data.degradation.queue_size > 0:
            run_kw["pool"] = PairPool(cfg.data.degradation.queue_size, seed=cfg.train.seed)

    o = cfg.optim
    graph = use_cuda_graph(cfg, device)
    optimizers = {"g": _adam(g.parameters(), o.lr_g, cfg, device, graph)}
    for name, d in discs.items():
        optimizers[name] = _adam(d.parameters(), o.lr_d, cfg, device, graph)
    schedulers = {k: build_scheduler(opt, o) for k, opt in optimizers.items()}
    run_kw["scalers"] = make_scalers(device, cfg.train.precision, optimizers)
    if cfg.train.sync_free or graph:
        run_kw["bad_steps"] = DeviceBadSteps(device)
    if graph:
        run_kw["graphed"] = GraphedStep(step_core)
    run = Run(cfg, device, g, g_ema, discs, optimizers, schedulers, meta=meta, **run_kw)
    prepare_models(run)
    return run


def _clip_meta(clip) -> dict:
    return {"model": clip.name, "weights": clip.identity, "pretrained": clip.pretrained}


def use_cuda_graph(cfg: Config, device: torch.device) -> bool:
    """``train.cuda_graph``: true, false, or "auto" (the default): on where it was measured to pay and is
    supported (docs/benchmarks.md): CUDA, one process, fp32 or bf16, the fused Adam, no torch.compile."""
    want = cfg.train.cuda_graph
    if want == "auto":
        return (
            device.type == "cuda"
            and distributed.world_size() == 1
            and cfg.train.precision != "fp16"
            and cfg.optim.impl in ("auto", "fused")
            and not cfg.train.compile
        )
    if want and device.type != "cuda":
        raise ConfigError(f"train.cuda_graph needs a CUDA device (train.device resolves to {device})")
    if want and distributed.world_size() > 1:
        raise ConfigError("train.cuda_graph runs in one process: under torchrun set train.cuda_graph=false or auto")
    return bool(want)


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


# ---------------------------------------------------------------- one iteration


def _step(opt: torch.optim.Optimizer, loss: torch.Tensor, params, clip: float | None, scaler) -> bool:
    """One optimizer step; skipped (False) when the loss or a gradient is NaN/Inf.

    Gradients are averaged over processes first, so every process takes the same decision. With fp16
    the gradient scaler skips overflowing steps itself (that is calibration, not a bad step)."""
    opt.zero_grad(set_to_none=True)
    params = list(params)
    scaler.scale(loss).backward()
    distributed.average_gradients(params)  # the same step on every process (sfd.distributed)
    scaler.unscale_(opt)  # fp16: clip and step on the true gradients
    if not torch.isfinite(loss) or (not scaler.is_enabled() and not grads_finite(params)):
        opt.zero_grad(set_to_none=True)
        return False
    if clip:
        torch.nn.utils.clip_grad_norm_(params, clip)
    scaler.step(opt)  # fp16: skipped when a gradient overflowed
    scaler.update()
    return True


def _step_on_device(
    opt: torch.optim.Optimizer, loss: torch.Tensor, params, clip: float | None, skip: torch.Tensor | None = None
) -> torch.Tensor:
    """``_step`` without a host sync (``train.sync_free``): the NaN/Inf decision stays a device tensor,
    which the fused Adam reads to skip its update (its ``found_inf``, as GradScaler uses it). Returns
    that decision (True: stepped); ``skip`` also skips (a D step after a bad G step)."""
    opt.zero_grad(set_to_none=True)
    params = list(params)
    loss.backward()
    distributed.average_gradients(params)
    ok = torch.isfinite(loss) & grads_finite_on_device(params)
    if skip is not None:
        ok = ok & ~skip
    if clip:
        torch.nn.utils.clip_grad_norm_(params, clip, foreach=True)
    opt.found_inf = (~ok).float()
    opt.step()
    return ok


@torch.no_grad()
def _update_ema(ema: nn.Module, model: nn.Module, decay: float, impl: str, ok: torch.Tensor | None = None) -> None:
    """EMA of the generator. ``ok`` (a device bool): leave it unchanged when the step was skipped."""
    e, p = list(ema.parameters()), list(model.parameters())
    if ok is not None:  # e += w (p - e), w = 0 after a skipped step: no host sync
        diff = torch._foreach_sub(p, e)
        torch._foreach_mul_(diff, ok.float() * (1 - decay))
        torch._foreach_add_(e, diff)
    elif impl == "for_loop":
        for a, b in zip(e, p):
            a.lerp_(b, 1 - decay)
    else:
        torch._foreach_lerp_(e, p, 1 - decay)
    for a, b in zip(ema.buffers(), model.buffers()):
        a.copy_(b)


def make_pair(run: Run, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(LR, HR target of the pixel losses, HR shown to the discriminators as real), on the device.

    Bicubic: the loader's LR, and one HR for both. Real-world: Real-ESRGAN's degradations; the
    pixel losses aim at the unsharp-masked HR (when ``use_usm``), the discriminators see the plain HR.
    """
    if run.degrader is None:
        hr = batch["hr"].to(run.device, non_blocking=True)
        return batch["lr"].to(run.device, non_blocking=True), hr, hr
    from sfd.data.pipeline import degrade_batch

    lr, hr_target, hr = degrade_batch(run.degrader, batch, run.device)  # degraded in the loader, or now
    if run.pool is not None:
        lr, hr_target, hr = run.pool(lr, hr_target, hr)
    return lr, hr_target, hr


def train_step(run: Run, lr: torch.Tensor, hr: torch.Tensor, hr_real: torch.Tensor | None = None) -> dict:
    """One generator step, then one discriminator step, then the schedules. Returns the logged scalars:
    floats, or device tensors with ``train.sync_free`` (read them when a line is logged).

    ``hr`` is the target of the pixel losses; ``hr_real`` (default ``hr``) is what CLIP and the
    discriminators see as real. With ``train.cuda_graph`` the device work is replayed from a CUDA graph.
    """
    hr_real = hr if hr_real is None else hr_real
    adversarial = run.iteration >= run.cfg.train.pixel_warmup
    if run.graphed is not None:
        logs = run.graphed(run, lr, hr, hr_real, adversarial)
    else:
        logs = step_core(run, lr, hr, hr_real, adversarial)
    with warnings.catch_warnings():  # D optimizers do not step during the pixel warm-up; schedules still count
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
        for sched in run.schedulers.values():
            sched.step()
    run.iteration += 1
    logs["lr_g"] = run.optimizers["g"].param_groups[0]["lr"]  # a device tensor with CUDA graphs: read when logged
    if len(run.optimizers) > 1:
        logs["lr_d"] = next(opt for k, opt in run.optimizers.items() if k != "g").param_groups[0]["lr"]
    return logs


def step_core(run: Run, lr, hr, hr_real, adversarial: bool) -> dict:
    """The device work of one iteration (what a CUDA graph captures): the G step, then the D step."""
    cfg, gan = run.cfg, run.cfg.loss.gan_type
    sync_free = run.bad_steps is not None  # train.sync_free, or a CUDA graph
    amp = lambda: autocast(run.device, cfg.train.precision, cache=run.graphed is None)  # noqa: E731
    logs: dict = {}
    discs = run.discriminators
    run.generator.train()
    for d in discs.values():
        d.train().requires_grad_(False)  # G step: no gradients into D parameters

    # ---- generator step (forward under autocast for bf16/fp16; backward and optimizer steps outside it)
    with amp():
        sr, loss_g, f_sr, f_hr = _generator_losses(run, lr, hr, hr_real, adversarial, logs)
    logs["l_g_total"] = loss_g.detach()
    g_params, clip = run.generator.parameters(), cfg.optim.grad_clip
    if sync_free:
        ok = ok_g = _step_on_device(run.optimizers["g"], loss_g, g_params, clip)
        if run.generator_ema is not None:
            _update_ema(run.generator_ema, run.generator, cfg.optim.ema_decay, cfg.optim.impl, ok_g)
    else:
        run.bad = []
        if not _step(run.optimizers["g"], loss_g, g_params, clip, run.scalers["g"]):
            run.bad = bad_losses(floats(logs)) or ["gradient of l_g_total"]
        elif run.generator_ema is not None:
            _update_ema(run.generator_ema, run.generator, cfg.optim.ema_decay, cfg.optim.impl)

    # ---- discriminator step (reuses the detached SR features: no second CLIP forward); none after a bad G step
    # (with sync_free it runs, and its optimizers skip the update on the device)
    if adversarial and discs and (sync_free or not run.bad):
        for d in discs.values():
            d.requires_grad_(True)
        for name in ("feat_d", "tg_d", "image_d", *EXTRA_DISCRIMINATORS):
            if name not in discs:
                continue
            with amp():
                real, fake = _discriminator_logits(run, name, sr, f_sr, f_hr, hr_real)
                loss = d_adversarial_loss(real, fake, gan)
            logs[f"l_d_{name}"] = loss.detach()
            logs[f"{name}_real"], logs[f"{name}_fake"] = real.detach().mean(), fake.detach().mean()
            params = discs[name].parameters()
            if sync_free:
                ok = ok & _step_on_device(run.optimizers[name], loss, params, clip, skip=~ok_g)
            elif not _step(run.optimizers[name], loss, params, clip, run.scalers[name]):
                run.bad += bad_losses({f"l_d_{name}": float(logs[f"l_d_{name}"])}) or [f"gradient of l_d_{name}"]
    run.text_features = None
    if sync_free:
        run.bad_steps.update(ok)
        return logs
    return floats(logs)


def _generator_losses(run: Run, lr, hr, hr_real, adversarial: bool, logs: dict):
    """SR and the generator's total loss; also the CLIP features of SR (with gradient) and HR."""
    cfg, lam, gan = run.cfg, run.cfg.loss, run.cfg.loss.gan_type
    discs = run.discriminators
    sr = run.generator(lr)
    loss_g = torch.zeros((), device=run.device)
    if lam.l1:
        logs["l_g_l1"] = (term := F.l1_loss(sr, hr)).detach()
        loss_g = loss_g + lam.l1 * term
    if run.perceptual is not None and adversarial:
        logs["l_g_percep"] = (term := run.perceptual(sr, hr)).detach()
        loss_g = loss_g + lam.perceptual * term
    f_sr = f_hr = None
    if adversarial and run.clip_image is not None:
        need = ("m1", "m2", "m3", "out") if run.clip_image.has_pixel_features else ("out",)
        if "tg_d" not in discs and not cfg.loss.clipiqa_loss.variant:  # Feat-D, SeD-P: no F_out
            need = ("m1", "m2", "m3")
        f_sr = _clip_features(run, sr, need)
        with torch.no_grad():
            f_hr = _clip_features(run, hr_real, need)
        if "feat_d" in discs:
            fake = discs["feat_d"](f_sr)
            real = discs["feat_d"](f_hr) if gan == "ragan" else None
            logs["l_g_feat_d"] = (term := g_adversarial_loss(fake, real, gan)).detach()
            loss_g = loss_g + lam.feat_d * term
        if "tg_d" in discs:
            # The text tower runs once per iteration, with gradient to the contexts, kept for the D step
            # (the contexts do not change in between); the G loss uses the features detached.
            run.text_features = discs["tg_d"].requires_grad_(True).text_features(run.clip_text)
            text = run.text_features.detach()
            scale = run.clip_text.logit_scale
            fake = tg_d_logits(f_sr["out"], text, scale)
            real = tg_d_logits(f_hr["out"], text, scale) if gan == "ragan" else None
            logs["l_g_tg_d"] = (term := g_adversarial_loss(fake, real, gan)).detach()
            loss_g = loss_g + lam.tg_d * term
        if cfg.loss.clipiqa_loss.variant:
            scale = run.clip_text.logit_scale
            s_sr = torch.sigmoid(tg_d_logits(f_sr["out"], run.clipiqa_text, scale))
            s_hr = torch.sigmoid(tg_d_logits(f_hr["out"], run.clipiqa_text, scale))
            logs["l_g_clipiqa"] = (term := clipiqa_loss(s_sr, s_hr, cfg.loss.clipiqa_loss.variant)).detach()
            logs["clipiqa_sr"] = s_sr.detach().mean()
            loss_g = loss_g + lam.clipiqa * term
    if adversarial and "image_d" in discs:
        fake = discs["image_d"](sr)
        real = discs["image_d"](hr_real) if gan == "ragan" else None
        logs["l_g_image_d"] = (term := g_adversarial_loss(fake, real, gan)).detach()
        loss_g = loss_g + lam.image_d * term
    if adversarial and (extra := generator_terms(run, lr, hr, hr_real, sr, f_sr, f_hr, logs)) is not None:
        loss_g = loss_g + extra  # LDL, SeD-P, DualFormer's spectral D (sfd.baseline_losses)
    return sr, loss_g, f_sr, f_hr


def _clip_features(run: Run, x: torch.Tensor, need: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """CLIP features of ``x``: one forward per extractor. With a separate TG-D extractor, F_out ("out",
    read by TG-D and the CLIPIQA loss) comes from it and Feat-D's pixel-wise features from ``clip_image``."""
    if run.clip_image_tg_d is None:
        return run.clip_image(x, need)
    pixel = tuple(k for k in need if k != "out")
    feats = run.clip_image(x, pixel) if pixel else {}
    if "out" in need:
        feats["out"] = run.clip_image_tg_d(x, ("out",))["out"]
    return feats


def _discriminator_logits(run: Run, name: str, sr, f_sr, f_hr, hr_real) -> tuple[torch.Tensor, torch.Tensor]:
    """D logits on real (HR) and fake (SR, detached) for the D step; CLIP features are reused, not recomputed."""
    if name in EXTRA_DISCRIMINATORS:
        return discriminator_logits(run, name, sr, f_sr, f_hr, hr_real)
    d = run.discriminators[name]
    if name == "feat_d":
        return d(f_hr), d({k: v.detach() for k, v in f_sr.items()})
    if name == "tg_d":
        text = run.text_features if run.text_features is not None else d.text_features(run.clip_text)
        scale = run.clip_text.logit_scale
        return tg_d_logits(f_hr["out"], text, scale), tg_d_logits(f_sr["out"].detach(), text, scale)
    return d(hr_real), d(sr.detach())


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
    checkpoint's moments and steps continue under whichever implementation the config now asks for."""
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


# ---------------------------------------------------------------- validation and the loop


@torch.no_grad()
def validate(run: Run) -> dict[str, float]:
    """Mean Y-channel PSNR/SSIM (border = scale) on the validation folder, bicubic LR."""
    s = run.cfg.generator.scale
    model = run.generator_ema or run.generator
    model.eval()
    psnrs, ssims = [], []
    for path in list_images(run.cfg.data.val)[: run.cfg.data.val_max_images]:
        try:
            hr = mod_crop(to_tensor(load_rgb(path)), s)
        except ImageReadError as err:  # one bad validation image must not stop a long run
            warnings.warn(f"validation: skipping {err}", stacklevel=2)
            continue
        lr = bicubic_lr(hr, s)
        sr = model(lr[None].to(run.device)).clamp(0, 1)[0].cpu()
        psnrs.append(float(psnr(sr, hr, border=s)))
        ssims.append(float(ssim(sr, hr, border=s)))
    if not psnrs:
        return {}
    return {"val_psnr": float(np.mean(psnrs)), "val_ssim": float(np.mean(ssims))}


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
    import shutil

    for name in ("checkpoints", "tensorboard"):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in ("log.jsonl", "config.json", "config_diff.txt", "meta.json"):
        (out / name).unlink(missing_ok=True)


def train(
    cfg: Config | None,
    resume: str | None = None,
    progress: bool = True,
    overrides: list[str] | None = None,
    overwrite: bool = False,
    started: float | None = None,
) -> Path:
    """Train ``cfg`` (resuming from a checkpoint path, or "auto" for the newest in the run folder).

    ``overrides`` (``--set`` strings) apply to a resumed checkpoint's own config when ``cfg`` is None.
    A run folder that already holds checkpoints is continued only with ``resume`` and started over
    only with ``overwrite``. Returns the path of the final checkpoint. One process per run folder
    (``sfd.runlock``); SIGINT/SIGTERM write a checkpoint and raise ``TrainingInterrupted``.
    ``train.max_time`` counts from ``started`` (a ``time.monotonic()``; `sfd train` passes its process's
    start), else from this call.
    """
    started = time.monotonic() if started is None else started
    with contextlib.ExitStack() as held:  # the run lock, process group and signal handlers, however we leave
        run, out, last_good = open_run(cfg, resume, overrides, overwrite, held)
        try:
            return _loop(run, out, last_good, progress, held, started)
        except RuntimeError as err:  # a killed loader worker, a lost process: one line, not torch's traceback
            if (fault := named_fault(err, run.iteration, checkpoint.find_latest(out))) is None:
                raise
            raise fault from None


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


def _loop(run: Run, out: Path, last_good: str | None, progress: bool, held: contextlib.ExitStack, started) -> Path:
    """The training loop: a batch, a step, then the bookkeeping that is due (log, validation, checkpoint)."""
    cfg, main = run.cfg, distributed.is_main()
    global_batch = cfg.data.batch_size * distributed.world_size()
    if main and distributed.is_distributed():
        n = distributed.world_size()
        tqdm.write(f"{n} processes x data.batch_size {cfg.data.batch_size} = global batch {global_batch}")
    degrade_in_loader = run.degrader is not None and cfg.data.degrade_in == "workers"
    loader = build_loader(
        cfg,
        run.samples_seen,
        cfg.train.iterations - run.iteration,
        run.device,
        distributed.rank(),
        distributed.world_size(),
        run.degrader if degrade_in_loader else None,
    )
    log = held.enter_context(contextlib.closing(RunLogger(out, cfg, run.iteration, run.device, main, progress)))
    saver = RunSaver(out, cfg, main, last_good)
    bad_steps = BadStepCounter(cfg.train.max_bad_steps)
    stop = held.enter_context(StopSignals())
    limit = TimeLimit(cfg.train.max_time_s, started)
    write = lambda path: save_checkpoint(run, path)  # noqa: E731
    last = None
    waited = time.perf_counter()
    for batch in batches(loader):  # a killed worker: one line (sfd.guard)
        log.step(time.perf_counter() - waited)  # how long this step waited for the loader
        logs = train_step(run, *make_pair(run, batch))
        run.samples_seen += global_batch
        it = run.iteration
        validate_now = cfg.data.val and (it % cfg.train.val_every == 0 or it == cfg.train.iterations)
        log_now = validate_now or it % cfg.train.log_every == 0 or it == cfg.train.iterations
        if run.bad_steps is not None:  # sync_free: read the device's count only when a line is due
            note = run.bad_steps.check(bad_steps, it, saver.last_good) if log_now or saver.due(it) else None
        else:
            note = bad_steps.update(it, run.bad, saver.last_good)  # raises after too many in a row
        if note:
            tqdm.write(note)
            logs["bad_steps"] = float(bad_steps.total)
        if log_now:
            logs = distributed.mean_logs(logs, run.device)  # means over the global batch (all processes call)
            if validate_now and main:
                logs.update(validate(run))
            logs = log.write(it, logs, global_batch)
        best = saver.improved(it, logs) if validate_now else []
        limit.step_took(time.perf_counter() - waited)
        # every process stops (and saves) at the same iteration: a signal reached one of them, time is nearly
        # up, or rank 0's validation found a new best (every rank takes part in the save's agreement)
        agreed = distributed.max_over_processes([stop.signum or 0, limit.up(), bool(best)], run.device)
        signum, time_up, any_best = (int(v) for v in agreed)
        if saver.due(it) or signum or time_up or any_best:
            t0 = time.perf_counter()
            last = saver.save(write, it, best)
            limit.save_took(time.perf_counter() - t0)
        if time_up and it < cfg.train.iterations:
            if main:
                tqdm.write(
                    f"train.max_time={cfg.train.max_time} is nearly up: stopped at iteration {it} of "
                    f"{cfg.train.iterations}; wrote {last}. Continue with the same command and --resume auto "
                    "(a job restarted by torchrun or requeued by SLURM resumes by itself)"
                )
            break
        if signum:
            name = signal.Signals(signum).name
            raise TrainingInterrupted(
                f"stopped by {name} at iteration {it}; wrote {last}. Continue with: "
                f"sfd train --resume {last}  (or -c CONFIG --resume auto)",
                signum,
            )
        waited = time.perf_counter()
    if last is None:  # nothing left to train (resumed at the end)
        last = saver.save(write, run.iteration)
    if main:
        tqdm.write(log.summary(run.iteration, last))
    distributed.barrier()  # every process returns once rank 0's last checkpoint is on disk
    return last
