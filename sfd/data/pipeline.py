"""The training loader: HR patches, this process's share of the sample stream, and (for real-world
training) Real-ESRGAN's degradations, run where ``data.degradation.device`` says.

On the CPU they run inside the loader workers (or in the trainer's process with ``data.degrade_in:
trainer``); on a GPU the loader only decodes and crops the HR and ``degrade_batch`` degrades the
whole batch on the training device. Everywhere it is the same ``RealESRGANDegradation`` applied to
the same collated batch with the same per-sample seeds, so a sample's pair depends neither on the
number of workers or processes nor (but for float32 roundings of the DiffJPEG codec, see
docs/realworld.md) on the device (tests/test_pipeline.py, tests/test_degradations.py). The
training-pair pool stays in the trainer, since it mixes batches.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, default_collate

from sfd.data.datasets import HRPatches
from sfd.data.degradations import RealESRGANDegradation
from sfd.distributed import ShardedIterationSampler
from sfd.yamlconfig import ConfigError

__all__ = ["DegradeCollate", "DrawCollate", "build_dataset", "build_degrader", "build_loader", "degrade_batch"]


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


def build_degrader(cfg, train_device: torch.device) -> RealESRGANDegradation:
    """The run's degradations; ``.device`` is where they run (``data.degradation.device`` resolved
    against the training device: "auto" is the training device when it is a GPU, else the CPU)."""
    deg = cfg.data.degradation
    cuda = train_device.type == "cuda"
    if deg.device == "cuda" and not cuda:
        raise ConfigError(f"data.degradation.device=cuda needs a CUDA training device; train.device is {train_device}")
    degrader = RealESRGANDegradation(deg, cfg.generator.scale, patch=cfg.data.patch_size)
    degrader.device = train_device if cuda and deg.device != "cpu" else torch.device("cpu")
    return degrader


def _on_cpu(degrader) -> bool:
    return getattr(degrader, "device", torch.device("cpu")).type == "cpu"


def degrade_batch(degrader, batch: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(LR, HR target, HR) of a real-world loader batch, on ``device``: the loader's own when it
    degraded the batch, else degraded here, batched, on ``degrader.device`` from the batch's seeds."""
    if "target" in batch:  # degraded in the loader
        return tuple(batch[k].to(device, non_blocking=True) for k in ("lr", "target", "hr"))
    where = getattr(degrader, "device", device)
    draws = batch["draws"] if "draws" in batch else degrader.draw(batch["seed"])
    out = degrader.apply(batch["hr"].to(where, non_blocking=True), draws)
    return tuple(t.to(device, non_blocking=True) for t in out)


def _collate(degrader, draws_only: bool):
    if degrader is None:
        return None
    return DegradeCollate(degrader) if _on_cpu(degrader) and not draws_only else DrawCollate(degrader)


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
    draws_only: bool = False,
) -> DataLoader:
    """Batches of ``iterations`` steps from sample ``first_sample`` of the global stream, this process's share.

    ``degrader``: degrade in the loader (in the workers when ``data.num_workers`` > 0) when it runs
    on the CPU; a degrader on a GPU (or ``draws_only``) leaves each batch to ``degrade_batch`` in the
    trainer, with its draws made in the loader.
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
        collate_fn=_collate(degrader, draws_only),
        drop_last=True,
        pin_memory=device.type == "cuda",
        prefetch_factor=data.prefetch_factor if workers else None,
        persistent_workers=workers > 0,
    )
