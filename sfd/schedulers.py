"""The LR schedules a config can name (``optim.scheduler``), one per optimizer."""

from __future__ import annotations

import torch

from sfd.config import OptimConfig

__all__ = ["build_scheduler"]


def build_scheduler(opt: torch.optim.Optimizer, cfg: OptimConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per iteration. ``cosine_restart`` is torch's CosineAnnealingWarmRestarts, which
    equals BasicSR's CosineAnnealingRestartLR with equal periods and restart weights of 1."""
    if cfg.scheduler == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(opt, cfg.milestones, cfg.gamma)
    if cfg.scheduler == "cosine_restart":
        return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=cfg.restart_period, eta_min=cfg.eta_min)
    raise ValueError(f"unknown optim.scheduler {cfg.scheduler!r}")
