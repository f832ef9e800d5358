"""SFD-IQA and its baselines, with pyiqa's conventions.

import sfd.iqa
metric = sfd.iqa.create_metric("sfd-iqa", checkpoint="runs/iqa/checkpoints/iter_00400000.pth")
scores = metric(images)            # (N,) in [0, 1], higher is better (metric.lower_better is False)
loss = sfd.iqa.create_metric("sfd-iqa", checkpoint=..., as_loss=True)(sr)  # differentiable, lower is better

The metrics live in the one registry of ``sfd.metrics``; ``create_metric`` here is an alias of
``sfd.metrics.create_metric`` that keeps ``checkpoint`` as its second argument, and ``list_metrics``
lists the no-reference metrics. Nothing heavy is imported until used, so ``sfd --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["create_metric", "list_metrics", "canonical_name", "IQAMetric", "ImageProtocol", "SFDIQA", "CLIPIQA", "NIQE"]


def __getattr__(name: str):
    if name in ("IQAMetric", "ImageProtocol", "SFDIQA", "CLIPIQA", "NIQE"):
        from sfd.iqa import metrics

        return getattr(metrics, name)
    if name == "canonical_name":
        from sfd.metrics import canonical_name

        return canonical_name
    raise AttributeError(f"module 'sfd.iqa' has no attribute {name!r}")


def list_metrics() -> list[str]:
    """The no-reference metrics (``sfd.metrics.list_metrics("nr")``)."""
    from sfd import metrics

    return metrics.list_metrics("nr")


def create_metric(
    name: str,
    checkpoint: str | Path | dict | None = None,
    device: str | torch.device | None = None,
    as_loss: bool = False,
    **options: Any,
):
    """``sfd.metrics.create_metric`` (see there), with ``checkpoint`` allowed as the second argument."""
    from sfd import metrics

    return metrics.create_metric(name, device=device, as_loss=as_loss, checkpoint=checkpoint, **options)
