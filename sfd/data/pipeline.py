"""The training loader: HR patches, this process's share of the sample stream, and (for real-world
training) Real-ESRGAN's degradations run inside the loader workers.

The degradations in a worker are the trainer's own ``RealESRGANDegradation`` applied to the same
collated batch with the same per-sample seeds, so a batch is identical wherever it is degraded
(tests/test_pipeline.py); only the training-pair pool stays in the trainer, since it mixes batches.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, default_collate

from sfd.data.datasets import HRPatches
from sfd.distributed import ShardedIterationSampler

__all__ = ["DegradeCollate", "build_dataset", "build_loader"]


class DegradeCollate:
    """Collate samples, then degrade the batch: adds ``lr`` and ``target`` (the pixel losses' HR)."""

    def __init__(self, degrader):
        self.degrader = degrader

    def __call__(self, samples: list[dict]) -> dict:
        batch = default_collate(samples)
        batch["lr"], batch["target"] = self.degrader(batch["hr"], batch["seed"])
        return batch


def build_dataset(cfg) -> HRPatches:
    data = cfg.data
    return HRPatches(
        data.train,
        data.patch_size,
        cfg.generator.scale,
        cfg.train.seed,
        use_hflip=data.use_hflip,
        use_vflip=data.use_vflip,
        use_rot=data.use_rot,
        bicubic=data.degradation is None,
        cache_mb=data.cache_mb,
    )


def build_loader(
    cfg, first_sample: int, iterations: int, device: torch.device, rank: int = 0, world_size: int = 1, degrader=None
) -> DataLoader:
    """Batches of ``iterations`` steps from sample ``first_sample`` of the global stream, this process's share.

    ``degrader``: degrade in the loader (in the workers when ``data.num_workers`` > 0), else the
    trainer degrades each batch itself.
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
        collate_fn=DegradeCollate(degrader) if degrader is not None else None,
        drop_last=True,
        pin_memory=device.type == "cuda",
        prefetch_factor=data.prefetch_factor if workers else None,
        persistent_workers=workers > 0,
    )
