"""The training loader: HR patches, this process's share of the sample stream, and (for real-world
training) Real-ESRGAN's degradations, run where the run's ``DegradationPlan`` says.

Where they run is decided once, by ``plan_degradations``, from ``data.degradation.device``,
``data.degradation.batched`` and ``data.degrade_in``: on the CPU inside the loader workers (or in the
trainer's process with ``data.degrade_in: trainer``); on a GPU the loader only decodes and crops the HR
and draws each sample's parameters, and ``degrade_batch`` degrades the whole batch on the training
device. Everywhere it is the same ``RealESRGANDegradation`` applied to the same collated batch with the
same per-sample seeds, so a sample's pair depends neither on the number of workers or processes nor (but
for float32 roundings of the DiffJPEG codec, see docs/realworld.md) on the device
(tests/test_pipeline.py, tests/test_degradations.py). The training-pair pool stays in the trainer, since
it mixes batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch.utils.data import DataLoader, default_collate

from sfd.data.datasets import HRPatches
from sfd.data.degradation_config import batched_on
from sfd.data.degradations import RealESRGANDegradation
from sfd.distributed import ShardedIterationSampler
from sfd.yamlconfig import ConfigError

__all__ = [
    "DegradationPlan",
    "DegradeCollate",
    "DrawCollate",
    "build_dataset",
    "build_degrader",
    "build_loader",
    "degrade_batch",
    "plan_degradations",
]


@dataclass(frozen=True)
class DegradationPlan:
    """Where a run's degradations run: what the loader's collate does (``loader``: all of it, only each
    sample's draws, or nothing, leaving all to the training process), the device of the stages, and
    whether the stages after the first resize run on one canvas for the batch (``sfd.data.batched``)."""

    loader: Literal["degrade", "draw", "nothing"]
    device: torch.device
    batched: bool


def plan_degradations(cfg, train_device: torch.device) -> DegradationPlan:
    """The one rule: ``data.degradation.device`` "auto" is the training device when it is a GPU, else the
    CPU; on the CPU the loader degrades (``data.degrade_in: workers``), on a GPU it draws; ``batched`` "auto"
    is on for a GPU (hundreds of small launches per sample otherwise), off on the CPU."""
    deg, cuda = cfg.data.degradation, train_device.type == "cuda"
    if deg.device == "cuda" and not cuda:
        raise ConfigError(f"data.degradation.device=cuda needs a CUDA training device; train.device is {train_device}")
    device = train_device if cuda and deg.device != "cpu" else torch.device("cpu")
    in_workers = cfg.data.degrade_in == "workers"
    loader = ("degrade" if device.type == "cpu" else "draw") if in_workers else "nothing"
    return DegradationPlan(loader, device, batched_on(deg.batched, device))


class DegradeCollate:
    """Collate samples, then degrade the batch: adds ``lr`` and ``target`` (the pixel losses' HR), and
    replaces ``hr`` by its paired crop when the degradations crop (``crop_pad_size``)."""

    def __init__(self, degrader):
        self.degrader = degrader

    def __call__(self, samples: list[dict]) -> dict:
        batch = default_collate(samples)
        batch["lr"], batch["target"], batch["hr"] = self.degrader(batch["hr"], batch["seed"])
        return batch


class DrawCollate:
    """Collate samples and add their degradations' ``draws`` (parameters and kernels): host work done
    in the loader workers, for a batch that the training GPU degrades (``degrade_batch``)."""

    def __init__(self, degrader):
        self.degrader = degrader

    def __call__(self, samples: list[dict]) -> dict:
        batch = default_collate(samples)
        batch["draws"] = self.degrader.draw(batch["seed"])
        return batch


def build_degrader(cfg, plan: DegradationPlan) -> RealESRGANDegradation:
    """The run's degradations, run as ``plan`` says (``.plan``)."""
    degrader = RealESRGANDegradation(cfg.data.degradation, cfg.generator.scale, patch=cfg.data.patch_size)
    degrader.plan = plan
    return degrader


def degrade_batch(degrader, batch: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(LR, HR target, HR) of a real-world loader batch, on ``device``: the loader's own when it
    degraded the batch, else degraded here, on the plan's device, from the batch's draws (or seeds)."""
    if "target" in batch:  # degraded in the loader
        return tuple(batch[k].to(device, non_blocking=True) for k in ("lr", "target", "hr"))
    plan = degrader.plan
    draws = batch["draws"] if "draws" in batch else degrader.draw(batch["seed"])
    out = degrader.apply(batch["hr"].to(plan.device, non_blocking=True), draws, batched=plan.batched)
    return tuple(t.to(device, non_blocking=True) for t in out)


def _collate(degrader):
    if degrader is None or degrader.plan.loader == "nothing":
        return None
    return DegradeCollate(degrader) if degrader.plan.loader == "degrade" else DrawCollate(degrader)


def build_dataset(cfg) -> HRPatches:
    data = cfg.data
    crop_pad = data.degradation.crop_pad_size if data.degradation is not None else None
    if crop_pad is not None and (crop_pad < data.patch_size or crop_pad % cfg.generator.scale):
        raise ConfigError(
            f"data.degradation.crop_pad_size={crop_pad} must be at least data.patch_size={data.patch_size} "
            f"and a multiple of generator.scale={cfg.generator.scale}"
        )
    return HRPatches(
        data.train,
        crop_pad or data.patch_size,  # Real-ESRGAN's structure: the HR crop is degraded, then cropped
        cfg.generator.scale,
        cfg.train.seed,
        use_hflip=data.use_hflip,
        use_vflip=data.use_vflip,
        use_rot=data.use_rot,
        bicubic=data.degradation is None,
        cache_mb=data.cache_mb,
        pad_to_patch=crop_pad is not None,
        min_side=data.patch_size,
    )


def build_loader(
    cfg,
    first_sample: int,
    iterations: int,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
    degrader=None,
) -> DataLoader:
    """Batches of ``iterations`` steps from sample ``first_sample`` of the global stream, this process's share.

    ``degrader``: its plan says what the loader (its workers when ``data.num_workers`` > 0) does of the
    degradations; what it leaves, ``degrade_batch`` does in the training process.
    """
    data = cfg.data
    sampler = ShardedIterationSampler(
        first_sample, first_sample + iterations * data.batch_size * world_size, data.batch_size, rank, world_size
    )
    workers = data.num_workers
    return DataLoader(
        build_dataset(cfg),
        batch_size=data.batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=_collate(degrader),
        drop_last=True,
        pin_memory=device.type == "cuda",
        prefetch_factor=data.prefetch_factor if workers else None,
        persistent_workers=workers > 0,
    )
