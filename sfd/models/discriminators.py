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
    pixel-space baseline. TG-D needs the frozen CLIP text tower ``text``."""
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
    return discs
