"""The discriminators a config asks for, built in one place for training and for SFD-IQA alike."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch.nn as nn

from sfd.models.clip import TextEncoder
from sfd.models.feat_d import FeatD
from sfd.models.tg_d import TGD

if TYPE_CHECKING:
    from sfd.config import Config

__all__ = ["build_discriminators"]


def build_discriminators(cfg: Config, text: TextEncoder | None = None) -> dict[str, nn.Module]:
    """``{"feat_d": FeatD, "tg_d": TGD}`` for SFD (each when enabled), or ``{"image_d": ...}`` for a
    pixel-space baseline; ``"sed_d"`` (SeD-P) and ``"spectral_d"`` (DualFormer's) when enabled. TG-D needs
    the frozen CLIP text tower ``text``."""
    discs: dict[str, nn.Module] = {}
    if cfg.feat_d.enabled:
        discs["feat_d"] = FeatD.from_config(cfg.feat_d)
    if cfg.tg_d.enabled:
        if text is None:
            raise ValueError("TG-D needs CLIP's text tower")
        discs["tg_d"] = TGD.from_config(cfg.tg_d, text)
    if cfg.image_d.type == "vgg":
        from sfd.models.vgg_d import VGGStyleDiscriminator

        discs["image_d"] = VGGStyleDiscriminator(num_feat=cfg.image_d.num_feat, input_size=cfg.image_d.input_size)
    elif cfg.image_d.type == "unet":
        from sfd.models.unet_d import UNetDiscriminatorSN

        discs["image_d"] = UNetDiscriminatorSN(num_in_ch=3, num_feat=cfg.image_d.num_feat)
    elif cfg.image_d.type == "transformer":
        from sfd.models.spectral_d import SwinStyleD

        discs["image_d"] = SwinStyleD(cfg.image_d.input_size, **_transformer_kwargs(cfg))
    if cfg.sed_d.enabled:
        from sfd.models.sed_d import SeDPatchD

        discs["sed_d"] = SeDPatchD.from_config(cfg.sed_d)
    if cfg.spectral_d.enabled:
        from sfd.models.spectral_d import SpectralD

        discs["spectral_d"] = SpectralD(cfg.data.patch_size, **_transformer_kwargs(cfg))
    return discs


def _transformer_kwargs(cfg: Config) -> dict:
    """DualFormer's two Transformers share their settings (``spectral_d``'s section)."""
    s = cfg.spectral_d
    return dict(
        patch_size=s.patch_size,
        embed_dim=s.embed_dim,
        depths=s.depths,
        heads=s.heads,
        window=s.window,
        drop_path=s.drop_path,
    )
