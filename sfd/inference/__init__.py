"""Inference: a generator made ready to upscale images, the same way for every command.

    from sfd.inference import Upscaler, InferenceSettings
    up = Upscaler.load("runs/classic_rrdb_x4", InferenceSettings(tile=512, precision="fp16", device="cuda"))
    sr = up(lr)                                  # (3, H, W) in [0, 1] -> (3, H*s, W*s), float32 on the CPU
    png = up(lr, out_dtype=torch.uint8)          # quantised tile by tile: large images at 1 byte per value

``Upscaler`` is built from ``sfd.models.loading.load_generator`` (any generator sfd can load) and does
what every caller needs once: refuse a precision the architecture does not support, cast the weights,
optionally store them channels-last and replay the forward from CUDA graphs (``sfd.inference.graphs``),
and run the image whole or in tiles (``sfd.inference.tiling``).
``sfd sr``, ``sfd eval`` (and ``--paper-table``), ``sfd bench sr``, ``sfd demo`` and ``sfd features`` use it.
"""

from __future__ import annotations

__all__ = ["InferenceSettings", "Upscaler", "PRECISIONS"]


def __getattr__(name: str):
    # Lazy, so that ``sfd --help`` (which imports sfd.inference.commands) does not import torch.
    if name in ("InferenceSettings", "Upscaler"):
        from sfd.inference import upscaler

        return getattr(upscaler, name)
    if name == "PRECISIONS":
        from sfd.inference.tiling import PRECISIONS

        return PRECISIONS
    raise AttributeError(f"module 'sfd.inference' has no attribute {name!r}")
