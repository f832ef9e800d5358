"""One training iteration: the generator's losses and step, then the discriminators' (``step_core``), and the
schedules (``train_step``). CLIP sees each image once per iteration: SR with gradient (to the SR image), HR
without; the D step reuses the detached SR features. How each optimizer step is taken (eager, sync-free,
graphed) is ``sfd.train.modes``' business.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from sfd.losses import clipiqa_loss, d_adversarial_loss, g_adversarial_loss
from sfd.models.tg_d import tg_d_logits
from sfd.train.baselines import EXTRA_DISCRIMINATORS, discriminator_logits, generator_terms
from sfd.train.schedulers import step_schedules
from sfd.train.state import Run

__all__ = ["train_step", "step_core", "make_pair"]


@torch.no_grad()
def _update_ema(ema: nn.Module, model: nn.Module, decay: float, impl: str, ok: bool | torch.Tensor) -> None:
    """EMA of the generator, left unchanged when the step was skipped (``ok``: a bool, or a device bool)."""
    if ok is False:
        return
    e, p = list(ema.parameters()), list(model.parameters())
    if torch.is_tensor(ok):  # e += w (p - e), w = 0 after a skipped step: no host sync
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


def train_step(
    run: Run, lr: torch.Tensor, hr: torch.Tensor, hr_real: torch.Tensor | None = None, uncaptured: bool = False
) -> dict:
    """One generator step, then one discriminator step, then the schedules, run as ``run.step`` says (eager,
    sync-free or graphed: ``sfd.train.modes``). Returns the logged scalars: floats, or device tensors without
    the eager step (read them when a line is logged).

    ``hr`` is the target of the pixel losses; ``hr_real`` (default ``hr``) is what CLIP and the
    discriminators see as real. ``uncaptured``: a graphed run's step run without its graph (what ``sfd bench
    step`` counts operators in: a replay dispatches nothing).
    """
    hr_real = hr if hr_real is None else hr_real
    step = run.step.uncaptured if uncaptured else run.step
    logs = step(run, lr, hr, hr_real, run.iteration >= run.cfg.train.pixel_warmup)
    step_schedules(run)
    run.iteration += 1
    logs["lr_g"] = run.optimizers["g"].param_groups[0]["lr"]  # a device tensor with CUDA graphs: read when logged
    if len(run.optimizers) > 1:
        logs["lr_d"] = next(opt for k, opt in run.optimizers.items() if k != "g").param_groups[0]["lr"]
    return logs


def step_core(run: Run, mode, lr, hr, hr_real, adversarial: bool) -> dict:
    """The device work of one iteration (what a CUDA graph captures): the G step, then the D step. ``mode``
    (``sfd.train.modes``) takes each optimizer step and decides what a bad step skips."""
    cfg, gan = run.cfg, run.cfg.loss.gan_type
    logs: dict = {}
    discs = run.discriminators
    run.generator.train()
    for d in discs.values():
        d.train().requires_grad_(False)  # G step: no gradients into D parameters

    # ---- generator step (forward under autocast for bf16/fp16; backward and optimizer steps outside it)
    with mode.autocast(run):
        sr, loss_g, f_sr, f_hr = _generator_losses(run, lr, hr, hr_real, adversarial, logs)
    logs["l_g_total"] = loss_g.detach()
    ok = ok_g = mode.optimizer_step(run, "g", loss_g, run.generator.parameters(), logs)
    if run.generator_ema is not None:
        _update_ema(run.generator_ema, run.generator, cfg.optim.ema_decay, cfg.optim.impl, ok_g)

    # ---- discriminator step (reuses the detached SR features: no second CLIP forward); none after a bad G step
    if adversarial and discs and mode.d_step_due(ok_g):
        for d in discs.values():
            d.requires_grad_(True)
        with mode.unchanged_unless(ok_g, discs.values()):
            for name in ("feat_d", "tg_d", "image_d", *EXTRA_DISCRIMINATORS):
                if name not in discs:
                    continue
                with mode.autocast(run):
                    real, fake = _discriminator_logits(run, name, sr, f_sr, f_hr, hr_real)
                    loss = d_adversarial_loss(real, fake, gan)
                logs[f"l_d_{name}"] = loss.detach()
                logs[f"{name}_real"], logs[f"{name}_fake"] = real.detach().mean(), fake.detach().mean()
                ok = ok & mode.optimizer_step(run, name, loss, discs[name].parameters(), logs, g_ok=ok_g)
    run.text_features = None
    mode.finish(run, ok)
    return logs


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
        loss_g = loss_g + extra  # LDL, SeD-P, DualFormer's spectral D (sfd.train.baselines)
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
