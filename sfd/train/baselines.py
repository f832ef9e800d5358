"""The training-step terms of the systems Supp. Table 1 compares with: LDL, SeD-P and DualFormer's spectral D.

The step (``sfd.train.step``) calls two functions: ``generator_terms`` adds their generator losses, and
``discriminator_logits`` gives the real/fake logits of their discriminators for the D step. Both reuse the
step's one CLIP forward per image (SeD-P reads F_m3 from it) and the generator's EMA (LDL).
"""

from __future__ import annotations

import torch

from sfd.losses import g_adversarial_loss
from sfd.losses.ldl import ldl_loss

__all__ = ["EXTRA_DISCRIMINATORS", "generator_terms", "discriminator_logits"]

EXTRA_DISCRIMINATORS = ("sed_d", "spectral_d")


def _sed_semantics(run, f_sr, f_hr) -> tuple[torch.Tensor, torch.Tensor]:
    """(semantics shown with SR, with HR): each image's own F_m3, or the HR's for both (SeD's code)."""
    if run.cfg.sed_d.semantics == "hr":
        return f_hr["m3"], f_hr["m3"]
    return f_sr["m3"], f_hr["m3"]


def generator_terms(run, lr, hr, hr_real, sr, f_sr, f_hr, logs: dict) -> torch.Tensor | None:
    """The weighted sum of the enabled LDL, SeD-P and spectral-D generator terms (None when none is on);
    each term is logged. Called in the adversarial phase only, inside the step's autocast."""
    lam, gan = run.cfg.loss, run.cfg.loss.gan_type
    discs, total = run.discriminators, None

    def add(name: str, weight: float, term: torch.Tensor) -> None:
        nonlocal total
        logs[name] = term.detach()
        total = weight * term if total is None else total + weight * term

    if lam.ldl.weight:
        with torch.no_grad():
            sr_ema = run.generator_ema(lr)
        add("l_g_ldl", lam.ldl.weight, ldl_loss(hr, sr, sr_ema, lam.ldl.window, lam.ldl.exponent, lam.ldl.detach_map))
    if "sed_d" in discs:
        sem_sr, sem_hr = _sed_semantics(run, f_sr, f_hr)
        fake = discs["sed_d"](sr, sem_sr)
        real = discs["sed_d"](hr_real, sem_hr) if gan == "ragan" else None
        add("l_g_sed_d", lam.sed_d, g_adversarial_loss(fake, real, gan))
    if "spectral_d" in discs:
        fake = discs["spectral_d"](sr)
        real = discs["spectral_d"](hr_real) if gan == "ragan" else None
        add("l_g_spectral_d", lam.spectral_d, g_adversarial_loss(fake, real, gan))
    return total


def discriminator_logits(run, name: str, sr, f_sr, f_hr, hr_real) -> tuple[torch.Tensor, torch.Tensor]:
    """(real, fake) logits of discriminator ``name`` in ``EXTRA_DISCRIMINATORS``; SR and its features detached."""
    d = run.discriminators[name]
    if name == "sed_d":
        sem_sr, sem_hr = _sed_semantics(run, f_sr, f_hr)
        return d(hr_real, sem_hr), d(sr.detach(), sem_sr.detach())
    return d(hr_real), d(sr.detach())
