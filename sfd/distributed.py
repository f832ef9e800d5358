"""Data-parallel training over the processes ``torchrun`` starts (one node or several).

    torchrun --nproc_per_node=N -m sfd train -c CONFIG ...

Each process holds a full copy of the generator, the discriminators and the frozen CLIP/VGG;
``data.batch_size`` is per process, so the global batch is N x batch_size. After every backward
the gradients of the trained modules (generator, Feat-D, TG-D's contexts, a pixel D) are averaged
over the processes by one bucketed all-reduce, before clipping and the optimizer step, so every
process takes the same step and the parameters stay identical (what DDP does, written out: the
trainer calls models through methods such as ``text_features`` that a DDP wrapper would not see).
Frozen CLIP and VGG get no gradients and are not synchronised. Spectral norm's power-iteration
vectors ``u`` depend on the weights alone, so they stay equal too; they are broadcast from rank 0
at the start with everything else.

Losses are means over each process's batch; averaging the gradients over processes gives the
gradient of the mean over the global batch, as one process with the whole batch would. The one
exception is RaGAN (the ESRGAN baseline), whose relativistic terms subtract the mean logit of the
process's own batch, as every DDP ESRGAN trainer does.

Without torchrun's environment (``WORLD_SIZE`` unset or 1) every function here is a no-op.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

__all__ = [
    "init",
    "shutdown",
    "is_distributed",
    "rank",
    "world_size",
    "is_main",
    "barrier",
    "average_gradients",
    "broadcast_modules",
    "mean_logs",
    "ShardedIterationSampler",
]


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init(device: torch.device) -> bool:
    """Join torchrun's process group (NCCL for CUDA, gloo for the CPU); False when not under torchrun."""
    if env_world_size() <= 1 or dist.is_initialized():
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    # Rank 0 validates and writes checkpoints while the others wait in the next all-reduce.
    dist.init_process_group(backend, timeout=timedelta(minutes=60))
    return True


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Rank 0: the one process that logs, validates and writes files."""
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


_BUCKET_ELEMENTS = 8 * 1024 * 1024  # 32 MB of fp32 per all-reduce: few calls, bounded extra memory


def average_gradients(params) -> None:
    """Replace each gradient by its mean over the processes (parameters without a gradient are skipped:
    the same ones on every process, since all run the same code)."""
    if not is_distributed():
        return
    buckets: list[list[torch.Tensor]] = [[]]
    size = 0
    for g in (p.grad for p in params if p.grad is not None):
        if buckets[-1] and (g.dtype != buckets[-1][0].dtype or size + g.numel() > _BUCKET_ELEMENTS):
            buckets.append([])
            size = 0
        buckets[-1].append(g)
        size += g.numel()
    for bucket in buckets:
        if not bucket:
            continue
        flat = torch.cat([g.reshape(-1) for g in bucket])
        dist.all_reduce(flat)
        flat /= world_size()
        offset = 0
        for g in bucket:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()


@torch.no_grad()
def broadcast_modules(*modules: torch.nn.Module | None) -> None:
    """Rank 0's parameters and buffers to every process (same seeds make them equal already; this
    makes sure, e.g. after a restore)."""
    if not is_distributed():
        return
    for m in modules:
        if m is None:
            continue
        for t in list(m.parameters()) + list(m.buffers()):
            dist.broadcast(t.data, src=0)


def mean_logs(logs: dict[str, float], device: torch.device) -> dict[str, float]:
    """The logged scalars averaged over the processes (every process must call it, with the same keys)."""
    if not is_distributed():
        return logs
    keys = sorted(logs)
    values = torch.tensor([float(logs[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(values)
    values /= world_size()
    return dict(zip(keys, values.tolist()))


class ShardedIterationSampler(Sampler[int]):
    """This process's share of one global stream of sample indices ``start, start+1, ... < stop``.

    The stream is cut into global batches of ``batch_size * world_size`` samples; process r takes
    the r-th ``batch_size`` slice of each. So sample k (and its crop and degradation seed, which come
    from k alone) is the same whatever the number of processes, and one global batch holds the same
    samples as one process with the whole batch would draw. Incomplete global batches are dropped.
    """

    def __init__(self, start: int, stop: int, batch_size: int, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside a world of {world_size}")
        self.start, self.stop, self.batch_size = start, stop, batch_size
        self.rank, self.world_size = rank, world_size

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    def __iter__(self):
        g = self.global_batch
        for first in range(self.start, self.stop - g + 1, g):
            own = first + self.rank * self.batch_size
            yield from range(own, own + self.batch_size)

    def __len__(self) -> int:
        return max(0, (self.stop - self.start) // self.global_batch) * self.batch_size
