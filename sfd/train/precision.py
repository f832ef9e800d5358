"""Mixed precision, memory format and compilation for training (``train.precision``,
``train.channels_last``, ``train.compile``).

bf16 and fp16 run the forward passes under ``torch.autocast``; weights, gradients, Adam states and
the EMA stay float32. fp16's narrow range needs loss scaling: each optimizer (the generator's and
every discriminator's) has its own ``GradScaler``, since their losses differ by orders of
magnitude. For bf16 and fp32 the scalers are disabled and pass everything through unchanged.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch

__all__ = ["AUTOCAST_DTYPES", "autocast", "make_scalers", "prepare_models"]

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str, cache: bool = True):
    """The context the forward passes run in: autocast for bf16/fp16, nothing for fp32. ``cache=False``
    under CUDA graph capture (autocast's weight-cast cache must not outlive the capture)."""
    dtype = AUTOCAST_DTYPES.get(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype, cache_enabled=cache)


def make_scalers(device: torch.device, precision: str, names) -> dict[str, torch.amp.GradScaler]:
    return {name: torch.amp.GradScaler(device.type, enabled=precision == "fp16") for name in names}


def prepare_models(run) -> None:
    """Channels-last weights (convolutions then keep activations NHWC) and torch.compile, as configured."""
    cfg = run.cfg.train
    # "auto": with CUDA graphs, where it was measured to pay (H200, bf16: SFD 0.094 -> 0.081 s/it); eagerly
    # it was slower there (0.244 -> 0.262), the host being the bottleneck (docs/benchmarks.md).
    if cfg.channels_last is True or (cfg.channels_last == "auto" and run.step.name == "graphed"):
        nets = [run.generator, run.generator_ema, run.clip_image, run.clip_image_tg_d, run.perceptual]
        nets += run.discriminators.values()
        for m in nets:
            if m is not None:
                m.to(memory_format=torch.channels_last)
    if cfg.compile:
        # Inductor's caches survive the run (and a reboot) here, so a resumed run skips most of the warm-up.
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path.home() / ".cache" / "sfd" / "inductor"))
        kw = {"backend": cfg.compile} | ({"mode": cfg.compile_mode} if cfg.compile_mode != "default" else {})
        # In place (nn.Module.compile): parameter names and state dicts stay as they are.
        run.generator.compile(**kw)
        for clip in (run.clip_image, run.clip_image_tg_d):
            if clip is not None:
                clip.compile(**kw)
