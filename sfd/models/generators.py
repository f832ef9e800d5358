"""Generators: spandrel's RRDBNet (ESRGAN) and SwinIR, built from config, saved in layouts spandrel loads."""

from __future__ import annotations

import hashlib

import torch
import torch.nn as nn
from spandrel.architectures.ESRGAN import ESRGAN
from spandrel.architectures.SwinIR import SwinIR

from sfd.config import GeneratorConfig

__all__ = ["build_generator", "init_generator", "parameter_sha256"]


def build_generator(cfg: GeneratorConfig) -> nn.Module:
    """A randomly initialised generator. Its ``state_dict()`` is what spandrel's loader detects."""
    if cfg.arch == "rrdbnet":
        return ESRGAN(in_nc=3, out_nc=3, num_filters=cfg.num_feat, num_blocks=cfg.num_blocks, scale=cfg.scale)
    if cfg.arch == "swinir":
        return SwinIR(
            upscale=cfg.scale,
            in_chans=3,
            img_size=cfg.img_size,
            window_size=cfg.window_size,
            img_range=1.0,
            depths=list(cfg.depths),
            embed_dim=cfg.embed_dim,
            num_heads=list(cfg.num_heads),
            mlp_ratio=cfg.mlp_ratio,
            drop_path_rate=cfg.drop_path_rate,
            upsampler="pixelshuffle",
            resi_connection="1conv",
        )
    raise ValueError(f"unknown generator arch {cfg.arch!r}")


def init_generator(model: nn.Module, spec: str) -> str:
    """Load weights from ``spec`` (any spandrel file, an sfd checkpoint, a named model) into ``model``.

    Returns a description of the source. Shapes must match the config's architecture exactly.
    """
    from sfd.models.loading import load_generator  # lazy: pulls in the ncnn converter

    loaded = load_generator(spec)
    state = loaded.model.state_dict()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(
            f"generator.pretrained={spec} ({loaded.architecture}, x{loaded.scale}) does not fit the configured "
            f"generator: {str(err).splitlines()[0]}"
        ) from err
    return loaded.source


def parameter_sha256(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over a state dict's names and tensor bytes (sorted by name): a generator's fingerprint."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()
