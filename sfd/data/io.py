"""Finding and reading images: folders or files, any case of extension."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}

__all__ = ["IMAGE_EXTENSIONS", "list_images", "load_rgb", "to_tensor", "save_png"]


def list_images(inputs: str | Path | Iterable[str | Path]) -> list[Path]:
    """Image files among ``inputs`` (files and/or folders, folders not recursed), sorted per folder."""
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    return found


def load_rgb(path: str | Path) -> Image.Image:
    """An 8-bit RGB PIL image, EXIF orientation applied (grayscale and palette become RGB)."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        return im.convert("RGB")


def to_tensor(im: Image.Image) -> torch.Tensor:
    """PIL RGB/L image -> float32 (C, H, W) tensor in [0, 1]."""
    arr = np.asarray(im, dtype=np.float32) / 255.0
    if arr.ndim == 2:
        arr = arr[..., None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def save_png(img: torch.Tensor, path: str | Path) -> None:
    """(3, H, W) tensor in [0, 1] -> 8-bit PNG (rounded, clipped)."""
    arr = (img.detach().float().clamp(0, 1) * 255.0).round().byte().permute(1, 2, 0).cpu().numpy()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.squeeze(-1) if arr.shape[-1] == 1 else arr).save(path)
