"""SFD-IQA and its baselines, with pyiqa's conventions.

import sfd.iqa
metric = sfd.iqa.create_metric("sfd-iqa", checkpoint="runs/iqa/checkpoints/iter_00400000.pth")
scores = metric(images)            # (N,) in [0, 1], higher is better (metric.lower_better is False)
loss = sfd.iqa.create_metric("sfd-iqa", checkpoint=..., as_loss=True)(sr)  # differentiable, lower is better

The metrics live in the one registry of ``sfd.metrics``; ``create_metric`` here is an alias of
``sfd.metrics.create_metric`` that keeps ``checkpoint`` as its second argument, and ``list_metrics``
lists the no-reference metrics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sfd import metrics as _registry
from sfd.iqa.metrics import CLIPIQA, NIQE, SFDIQA, ImageProtocol, IQAMetric
from sfd.metrics import canonical_name

__all__ = ["create_metric", "list_metrics", "canonical_name", "IQAMetric", "ImageProtocol", "SFDIQA", "CLIPIQA",
           "NIQE"]


def list_metrics() -> list[str]:
    """The no-reference metrics (``sfd.metrics.list_metrics("nr")``)."""
    return _registry.list_metrics("nr")


def create_metric(
    name: str,
    checkpoint: str | Path | dict | None = None,
    device: str | torch.device | None = None,
    as_loss: bool = False,
    **options: Any,
):
    """``sfd.metrics.create_metric`` (see there), with ``checkpoint`` allowed as the second argument."""
    return _registry.create_metric(name, device=device, as_loss=as_loss, checkpoint=checkpoint, **options)
