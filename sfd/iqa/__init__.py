"""SFD-IQA and its baselines, with pyiqa's conventions.

import sfd.iqa
metric = sfd.iqa.create_metric("sfd-iqa", checkpoint="runs/iqa/checkpoints/iter_00400000.pth")
scores = metric(images)            # (N,) in [0, 1], higher is better (metric.lower_better is False)
loss = sfd.iqa.create_metric("sfd-iqa", checkpoint=..., as_loss=True)(sr)  # differentiable, lower is better
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from sfd.iqa.metrics import IQAMetric

__all__ = ["create_metric", "list_metrics", "IQAMetric", "ImageProtocol", "SFDIQA", "CLIPIQA", "NIQE"]

_METRICS = {"sfd-iqa": "SFDIQA", "clipiqa": "CLIPIQA", "niqe": "NIQE"}


def __getattr__(name: str):  # the metric classes load on first use: `sfd --help` imports no torch
    if name in ("IQAMetric", "ImageProtocol", "SFDIQA", "CLIPIQA", "NIQE"):
        from sfd.iqa import metrics

        return getattr(metrics, name)
    raise AttributeError(f"module 'sfd.iqa' has no attribute {name!r}")
_PROTOCOL_OPTIONS = ("mode", "max_side", "crop", "pad")


def list_metrics() -> list[str]:
    return list(_METRICS)


def canonical_name(name: str) -> str:
    """ "SFD_IQA", "sfdiqa", "clip-iqa" ... -> the registered name."""
    key = name.strip().lower().replace("_", "-")
    aliases = {"sfdiqa": "sfd-iqa", "clip-iqa": "clipiqa"}
    key = aliases.get(key, key)
    if key not in _METRICS:
        raise ValueError(f"unknown metric {name!r}; available: {', '.join(_METRICS)}")
    return key


def create_metric(
    name: str,
    checkpoint: str | Path | dict | None = None,
    device: str | torch.device | None = None,
    as_loss: bool = False,
    **options: Any,
) -> IQAMetric:
    """Build metric ``name`` ("sfd-iqa", "clipiqa" or "niqe") as a ``torch.nn.Module``.

    ``checkpoint``: an sfd training checkpoint (required by sfd-iqa). ``device``: default CUDA when
    available. ``as_loss``: return a differentiable, lower-is-better scalar instead of scores.
    Options: the image protocol (``mode``, ``max_side``, ``crop``, ``pad``, or ``protocol=ImageProtocol(...)``),
    ``weights`` (CLIP weights: "openai", a file, "random"), and per metric: sfd-iqa ``alpha_feat``,
    ``alpha_text``; clipiqa ``prompts`` (list of (positive, negative) pairs), ``clip_model``, ``seed``,
    ``pos_embed``.
    """
    from sfd.iqa import metrics

    key = canonical_name(name)
    proto = {k: options.pop(k) for k in _PROTOCOL_OPTIONS if k in options}
    if proto:
        if "protocol" in options:
            raise ValueError(f"give either protocol= or its fields {sorted(proto)}, not both")
        options["protocol"] = metrics.ImageProtocol(**proto)
    if key == "sfd-iqa":
        if checkpoint is None:
            raise ValueError(
                "sfd-iqa needs checkpoint=: an sfd training checkpoint (e.g. trained with configs/iqa.yml)"
            )
        return metrics.SFDIQA(checkpoint, device=device, as_loss=as_loss, **options)
    if checkpoint is not None:
        raise ValueError(f"{key} takes no checkpoint")
    return getattr(metrics, _METRICS[key])(device=device, as_loss=as_loss, **options)
