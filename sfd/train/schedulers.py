"""The LR schedules a config can name (``optim.scheduler``), one per optimizer."""

from __future__ import annotations

import warnings

import torch

from sfd.config import OptimConfig

__all__ = ["build_scheduler", "step_schedules"]


def build_scheduler(opt: torch.optim.Optimizer, cfg: OptimConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per iteration. ``cosine_restart`` is torch's CosineAnnealingWarmRestarts, which
    equals BasicSR's CosineAnnealingRestartLR with equal periods and restart weights of 1."""
    if cfg.scheduler == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(opt, cfg.milestones, cfg.gamma)
    if cfg.scheduler == "cosine_restart":
        return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=cfg.restart_period, eta_min=cfg.eta_min)
    raise ValueError(f"unknown optim.scheduler {cfg.scheduler!r}")


def step_schedules(run) -> None:
    """Step every schedule once. A learning rate that is a device tensor (CUDA graphs read it from memory at
    each replay) stays that very tensor: torch's schedules fill it in place, and should a schedule assign a
    number instead, the number is copied into the tensor, so that the captured step never trains on a stale
    rate while the log shows the new one."""
    with warnings.catch_warnings():  # D optimizers do not step during the pixel warm-up; schedules still count
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
        for name, sched in run.schedulers.items():
            groups = run.optimizers[name].param_groups
            before = [g["lr"] for g in groups]
            sched.step()
            for group, lr in zip(groups, before):
                if torch.is_tensor(lr) and group["lr"] is not lr:
                    lr.fill_(float(group["lr"]))
                    group["lr"] = lr
