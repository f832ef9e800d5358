"""Training data: random HR patches from folders, with their MATLAB-bicubic LR.

Every random choice of sample ``k`` (which image, where to crop, flips, rotation) comes from a
generator seeded by (seed, k), never from global state. So the stream of batches is the same
with any number of loader workers, and a resumed run sees exactly the batches an uninterrupted
run would have seen.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from sfd.data.cache import LRUCache
from sfd.data.io import ImageReadError, list_images, load_rgb, probe_images
from sfd.data.pixels import pad_reflect, to_levels
from sfd.data.resize import bicubic_lr, mod_crop

__all__ = ["HRPatches", "IterationSampler"]


class HRPatches(Dataset):
    """Sample ``k`` -> {"hr": (3, P, P), "lr": (3, P/s, P/s) or absent, "seed": int}.

    ``bicubic=True`` pairs each HR patch with the aligned patch of the whole image's MATLAB-bicubic
    LR (8-bit), as precomputed LR folders give. ``bicubic=False`` returns HR patches only, for
    on-the-fly degradations in the trainer. Indices are unbounded: k // len(images) is the epoch.

    Augmentation: ``use_hflip`` (left-right), ``use_vflip`` (upside down), ``use_rot`` (transpose,
    which with both flips gives the 8 orientations of BasicSR's ``use_rot``). Real-ESRGAN uses the
    horizontal flip only: an upside-down photo changes CLIP's semantic features.

    ``cache_mb`` bounds the decoded images kept per process (least recently used go first).

    ``pad_to_patch`` (Real-ESRGAN's ``crop_pad_size``): an image smaller than the patch is padded by
    reflection at the bottom and right instead of refused; images under ``min_side`` are still refused.
    """

    def __init__(
        self,
        folders: list[str | Path],
        patch_size: int,
        scale: int,
        seed: int = 0,
        use_hflip: bool = True,
        use_vflip: bool = True,
        use_rot: bool = True,
        bicubic: bool = True,
        cache_mb: float = 0,
        pad_to_patch: bool = False,
        min_side: int | None = None,
    ):
        self.pad_to_patch = pad_to_patch
        min_side = min_side or patch_size
        self.files, unusable = probe_images(list_images(folders), min_side)  # headers only: cheap
        for path, why in unusable.items():
            warnings.warn(f"training data: skipping {path}: {why}", stacklevel=2)
        if not self.files:
            raise ValueError(f"no usable training images in {[str(f) for f in folders]} ({len(unusable)} unusable)")
        self.skipped: set[Path] = set()  # files that failed to decode during training (per worker process)
        if patch_size % scale:
            raise ValueError(f"patch_size {patch_size} is not a multiple of scale {scale}")
        self.patch, self.scale, self.seed = patch_size, scale, seed
        self.use_hflip, self.use_vflip, self.use_rot, self.bicubic = use_hflip, use_vflip, use_rot, bicubic
        # Decoded images (HR, LR) of this process, bounded in MB (0: decode on every access).
        self._cache = LRUCache(cache_mb)

    def __len__(self) -> int:
        return len(self.files)

    def _image(self, idx: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        if idx not in self._cache:
            arr = np.asarray(load_rgb(self.files[idx]))
            hr = mod_crop(torch.from_numpy(arr.copy()).permute(2, 0, 1), self.scale)
            if self.pad_to_patch:  # Real-ESRGAN: cv2.copyMakeBorder(0, pad_h, 0, pad_w, BORDER_REFLECT_101)
                pad_h, pad_w = max(0, self.patch - hr.shape[1]), max(0, self.patch - hr.shape[2])
                hr = pad_reflect(hr[None].float(), 0, pad_w, 0, pad_h)[0].to(torch.uint8)
            if min(hr.shape[-2:]) < self.patch:
                raise ValueError(
                    f"{self.files[idx]} ({hr.shape[2]}x{hr.shape[1]}) is smaller than the {self.patch} patch"
                )
            lr = None
            if self.bicubic:
                lr = to_levels(bicubic_lr(hr.double() / 255.0, self.scale)).to(torch.uint8)
            self._cache[idx] = (hr, lr)
            return hr, lr
        return self._cache[idx]

    def _usable_image(self, order: np.ndarray, pos: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The image at ``order[pos]``, or the next one in the epoch's order when it cannot be decoded
        (a truncated file passes the header check): skipped, counted and warned about once."""
        for step in range(len(order)):
            idx = int(order[(pos + step) % len(order)])
            try:
                return self._image(idx)
            except ImageReadError as err:
                if self.files[idx] not in self.skipped:
                    self.skipped.add(self.files[idx])
                    warnings.warn(f"training data: skipping {err} ({len(self.skipped)} skipped so far)", stacklevel=2)
        raise ValueError(f"none of the {len(order)} training images could be decoded")

    def __getitem__(self, k: int) -> dict:
        n = len(self.files)
        epoch, pos = divmod(int(k), n)
        order = np.random.default_rng([self.seed, epoch, 1]).permutation(n)
        rng = np.random.default_rng([self.seed, int(k), 2])
        hr, lr = self._usable_image(order, pos)
        s, p = self.scale, self.patch
        top = int(rng.integers(0, (hr.shape[1] - p) // s + 1)) * s  # aligned with the LR grid
        left = int(rng.integers(0, (hr.shape[2] - p) // s + 1)) * s
        crops = [hr[:, top : top + p, left : left + p]]
        if lr is not None:
            crops.append(lr[:, top // s : (top + p) // s, left // s : (left + p) // s])
        # Three draws always, whatever is enabled: a sample's crop and degradation seed never depend on the flags.
        h, v, r = rng.random(3) < 0.5
        hflip, vflip, rot = self.use_hflip and h, self.use_vflip and v, self.use_rot and r
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
