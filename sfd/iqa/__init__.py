"""SFD-IQA and its baselines, with pyiqa's conventions: the metrics are those of ``sfd.metrics``.

import sfd.iqa
metric = sfd.iqa.create_metric("sfd-iqa", checkpoint="runs/iqa/checkpoints/iter_00400000.pth")
scores = metric(images)            # (N,) in [0, 1], higher is better (metric.lower_better is False)
loss = sfd.iqa.create_metric("sfd-iqa", checkpoint=..., as_loss=True)(sr)  # differentiable, lower is better

``create_metric``, ``list_metrics`` and ``canonical_name`` are ``sfd.metrics``' own (this package adds no
rule of its own); this package holds what is IQA beyond the metrics: ``sfd iqa``/``iqa-eval``,
correlation with opinion scores and the t-SNE analysis. Nothing heavy is imported until used.
"""

from __future__ import annotations

__all__ = ["create_metric", "list_metrics", "canonical_name", "IQAMetric", "ImageProtocol", "SFDIQA", "CLIPIQA", "NIQE"]

_HOMES = {
    "create_metric": "sfd.metrics",
    "list_metrics": "sfd.metrics",
    "canonical_name": "sfd.metrics",
    "IQAMetric": "sfd.metrics.base",
    "ImageProtocol": "sfd.metrics.clip_iqa",
    "SFDIQA": "sfd.metrics.clip_iqa",
    "CLIPIQA": "sfd.metrics.clip_iqa",
    "NIQE": "sfd.metrics.niqe",
}


def __getattr__(name: str):
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'sfd.iqa' has no attribute {name!r}")
