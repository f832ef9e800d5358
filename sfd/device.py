"""Which torch device a run uses."""

from __future__ import annotations

import os

import torch

__all__ = ["resolve_device"]


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """ "auto" (or None): this process's GPU (``$LOCAL_RANK`` under torchrun) when CUDA is available, else the CPU."""
    if name is None or name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name}: torch sees no CUDA device here (use auto or cpu)")
    return device
