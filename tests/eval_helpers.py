"""Shared pieces of the sr/eval/ncnn tests: small generators, checkpoints, thread setting."""

from __future__ import annotations

import torch
from spandrel.architectures.ESRGAN import ESRGAN as RRDBNet
from spandrel.architectures.SwinIR import SwinIR


def _perturbed(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Seeded, non-trivial weights (default inits give near-constant outputs)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model.eval()


def tiny_rrdbnet(scale: int = 4, seed: int = 0, num_filters: int = 16, num_blocks: int = 1) -> torch.nn.Module:
    torch.manual_seed(seed)
    return _perturbed(RRDBNet(num_filters=num_filters, num_blocks=num_blocks, scale=scale), seed)


def tiny_swinir(scale: int = 2, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = SwinIR(
        img_size=16,
        window_size=4,
        embed_dim=12,
        depths=[1],
        num_heads=[2],
        mlp_ratio=2.0,
        upscale=scale,
        upsampler="pixelshuffledirect",
    )
    return _perturbed(model, seed)


def sfd_checkpoint(generator: torch.nn.Module, ema: torch.nn.Module | None, arch: str, scale: int) -> dict:
    """A checkpoint with the top-level layout the sfd trainer writes (contract with the core)."""
    return {
        "generator": generator.state_dict(),
        "generator_ema": ema.state_dict() if ema is not None else None,
        "discriminators": {},
        "optimizers": {},
        "schedulers": {},
        "iteration": 1234,
        "config": {"generator": {"arch": arch, "scale": scale}},
        "rng": {"torch": torch.get_rng_state()},
        "meta": {"note": "test"},
    }
