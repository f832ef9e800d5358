"""Training data: random HR patches from folders, with their MATLAB-bicubic LR.

Every random choice of sample ``k`` (which image, where to crop, flips, rotation) comes from a
generator seeded by (seed, k), never from global state. So the stream of batches is the same
with any number of loader workers, and a resumed run sees exactly the batches an uninterrupted
run would have seen.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from sfd.data.cache import LRUCache
from sfd.data.io import list_images, load_rgb
from sfd.data.resize import bicubic_lr, mod_crop

__all__ = ["HRPatches", "IterationSampler"]


class HRPatches(Dataset):
    """Sample ``k`` -> {"hr": (3, P, P), "lr": (3, P/s, P/s) or absent, "seed": int}.

    ``bicubic=True`` pairs each HR patch with the aligned patch of the whole image's MATLAB-bicubic
    LR (8-bit), as precomputed LR folders give. ``bicubic=False`` returns HR patches only, for
    on-the-fly degradations in the trainer. Indices are unbounded: k // len(images) is the epoch.
    ``cache_mb`` bounds the decoded images kept per process (least recently used go first).
    """

    def __init__(
        self,
        folders: list[str | Path],
        patch_size: int,
        scale: int,
        seed: int = 0,
        use_flip: bool = True,
        use_rot: bool = True,
        bicubic: bool = True,
        cache_mb: float = 0,
    ):
        self.files = list_images(folders)
        if not self.files:
            raise ValueError(f"no images found in {[str(f) for f in folders]}")
        if patch_size % scale:
            raise ValueError(f"patch_size {patch_size} is not a multiple of scale {scale}")
        self.patch, self.scale, self.seed = patch_size, scale, seed
        self.use_flip, self.use_rot, self.bicubic = use_flip, use_rot, bicubic
        # Decoded images (HR, LR) of this process, bounded in MB (0: decode on every access).
        self._cache = LRUCache(cache_mb)

    def __len__(self) -> int:
        return len(self.files)

    def _image(self, idx: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        if idx not in self._cache:
            arr = np.asarray(load_rgb(self.files[idx]))
            hr = mod_crop(torch.from_numpy(arr.copy()).permute(2, 0, 1), self.scale)
            if min(hr.shape[-2:]) < self.patch:
                raise ValueError(f"{self.files[idx]} ({hr.shape[2]}x{hr.shape[1]}) is smaller than the {self.patch} patch")
            lr = None
            if self.bicubic:
                lr = (bicubic_lr(hr.double() / 255.0, self.scale) * 255).round().to(torch.uint8)
            self._cache[idx] = (hr, lr)
            return hr, lr
        return self._cache[idx]

    def __getitem__(self, k: int) -> dict:
        n = len(self.files)
        epoch, pos = divmod(int(k), n)
        order = np.random.default_rng([self.seed, epoch, 1]).permutation(n)
        rng = np.random.default_rng([self.seed, int(k), 2])
        hr, lr = self._image(int(order[pos]))
        s, p = self.scale, self.patch
        top = int(rng.integers(0, (hr.shape[1] - p) // s + 1)) * s  # aligned with the LR grid
        left = int(rng.integers(0, (hr.shape[2] - p) // s + 1)) * s
        crops = [hr[:, top : top + p, left : left + p]]
        if lr is not None:
            crops.append(lr[:, top // s : (top + p) // s, left // s : (left + p) // s])
        hflip, vflip = self.use_flip and rng.random() < 0.5, self.use_flip and rng.random() < 0.5
        rot = self.use_rot and rng.random() < 0.5
        out = []
        for c in crops:
            c = c.flip(-1) if hflip else c
            c = c.flip(-2) if vflip else c
            c = c.transpose(-1, -2) if rot else c
            out.append(c.float() / 255.0)
        sample = {"hr": out[0].contiguous(), "seed": int(np.random.default_rng([self.seed, int(k), 3]).integers(2**62))}
        if lr is not None:
            sample["lr"] = out[1].contiguous()
        return sample


class IterationSampler(Sampler[int]):
    """Sample indices start, start+1, ..., for an iteration-based loop (no epochs to resume)."""

    def __init__(self, start: int, stop: int):
        self.start, self.stop = start, stop

    def __iter__(self):
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return max(0, self.stop - self.start)
