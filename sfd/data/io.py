"""Finding, reading and writing images: folders or files, any case of extension.

``load_rgb``/``to_tensor``/``save_png`` are the simple 8-bit RGB path used for datasets.
``read_image``/``save_image`` are what ``sfd sr`` uses on users' files: grayscale, palette,
RGBA (alpha kept apart), 16-bit and EXIF orientation all survive the round trip.
Pillow reads 16-bit colour PNG/TIFF as 8-bit without warning, so those go through OpenCV.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from sfd.data.pixels import round_half_up, to_levels

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageData",
    "ImageReadError",
    "list_images",
    "probe_images",
    "image_size",
    "load_rgb",
    "to_tensor",
    "save_png",
    "read_image",
    "save_image",
]


class ImageReadError(OSError, ValueError):
    """A file that exists but is not a readable image (empty, truncated, corrupt, not an image).
    Both an OSError and a ValueError, so that either kind of handler reports it as the user's file."""


def _reason(path: Path, err: Exception) -> str:
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
    except OSError:
        pass
    if isinstance(err, Image.UnidentifiedImageError):
        return "not an image, or a format Pillow cannot read"
    if isinstance(err, Image.DecompressionBombError):
        return (
            f"{err} If the image is yours, allow it with SFD_MAX_IMAGE_PIXELS=N (pixels), "
            "or SFD_MAX_IMAGE_PIXELS=0 for no limit"
        )
    text = " ".join(str(err).split())[:160] or type(err).__name__
    if "truncated" in text.lower() or isinstance(err, (SyntaxError, EOFError)):
        return f"truncated or corrupt ({text})"
    return f"unreadable ({type(err).__name__}: {text})"


@contextmanager
def _reading(path: str | Path):
    """Turn whatever a decoder raises on a bad file into one ``ImageReadError`` naming the file and why.
    A missing file, a permission problem or a missing optional package keep their own errors.
    ``$SFD_MAX_IMAGE_PIXELS`` replaces Pillow's decompression-bomb limit (about 179 MP refused) while
    sfd reads, for users' own very large photos; 0 means no limit."""
    limit, allowed = Image.MAX_IMAGE_PIXELS, os.environ.get("SFD_MAX_IMAGE_PIXELS", "").strip()
    if allowed:
        if not allowed.isdigit():
            raise ValueError(f"SFD_MAX_IMAGE_PIXELS must be a whole number of pixels (0: no limit), got {allowed!r}")
        Image.MAX_IMAGE_PIXELS = int(allowed) // 2 or None  # Pillow refuses images over twice this
    try:
        with warnings.catch_warnings():
            if allowed:  # the user raised the limit: no "could be decompression bomb" warning under it
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    except (FileNotFoundError, IsADirectoryError, PermissionError, ImportError, ImageReadError):
        raise
    except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError, struct.error, ... on bad bytes
        raise ImageReadError(f"{path}: {_reason(Path(path), err)}") from err
    finally:
        Image.MAX_IMAGE_PIXELS = limit


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


def probe_images(files: Iterable[str | Path], min_side: int = 1) -> tuple[list[Path], dict[Path, str]]:
    """Split ``files`` into usable ones and {file: reason} for the others, from their headers only
    (cheap: no pixels decoded). Too small: the shorter side is under ``min_side``. A file whose pixel
    data is cut short passes; ``load_rgb`` raises ``ImageReadError`` for it later."""
    ok, bad = [], {}
    for path in map(Path, files):
        try:
            with _reading(path), Image.open(path) as im:
                w, h = im.size
        except (OSError, ImportError) as err:
            bad[path] = str(err).removeprefix(f"{path}: ")
            continue
        if min(w, h) < min_side:
            bad[path] = f"{w}x{h} is smaller than {min_side} pixels on a side"
        else:
            ok.append(path)
    return ok, bad


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the header alone, under the decompression-bomb rule of every read (``_reading``);
    ``ImageReadError`` for a file that is not a readable image."""
    with _reading(path), Image.open(path) as im:
        return im.size


def load_rgb(path: str | Path) -> Image.Image:
    """An 8-bit RGB PIL image, EXIF orientation applied (grayscale and palette become RGB).
    A bad file raises ``ImageReadError`` (see ``_reading``)."""
    with _reading(path), Image.open(path) as im:
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
    arr = to_levels(img.detach().float()).byte().permute(1, 2, 0).cpu().numpy()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.squeeze(-1) if arr.shape[-1] == 1 else arr).save(path)


@dataclass
class ImageData:
    """An image as the model sees it, plus what is needed to write the result back alike."""

    rgb: torch.Tensor  # (3, H, W) float32 in [0, 1]; grayscale is replicated to 3 channels
    alpha: torch.Tensor | None  # (1, H, W) float32 in [0, 1], or None
    bit_depth: int  # 8 or 16
    grayscale: bool  # the source had no colour: write the result as grayscale


_OPENCV_HINT = "16-bit colour and YCbCr TIFF images need OpenCV: pip install opencv-python-headless"


def _png_16bit_colour(path: Path) -> bool:
    """True for a 16-bit PNG with colour or alpha, which Pillow would truncate to 8 bits."""
    with open(path, "rb") as f:
        head = f.read(26)
    # signature (8) + chunk length (4) + b"IHDR" (4) + width (4) + height (4), then depth, colour type
    return head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR" and head[24] == 16 and head[25] in (2, 4, 6)


def _tiff_16bit_colour(im: Image.Image) -> bool:
    bits = getattr(im, "tag_v2", {}).get(258) if im.format == "TIFF" else None
    return bits is not None and len(bits) >= 2 and all(b == 16 for b in bits)


# EXIF orientation -> the Pillow transpose that undoes it (as ImageOps.exif_transpose).
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _exif_orient(arr: np.ndarray, im: Image.Image) -> np.ndarray:
    """Apply ``im``'s EXIF orientation to ``arr`` (H, W, ...) exactly as Pillow would."""
    method = _ORIENTATION.get(im.getexif().get(0x0112, 1))
    if method is None:
        return arr
    h, w = arr.shape[:2]
    # Let Pillow move an image of pixel indices, then gather: any dtype, any channel count.
    index = np.asarray(Image.fromarray(np.arange(h * w, dtype=np.int32).reshape(h, w)).transpose(method))
    return arr.reshape(h * w, *arr.shape[2:])[index]


def _read_with_opencv(path: Path, im: Image.Image) -> np.ndarray:
    try:
        import cv2
    except ImportError as err:
        raise ImportError(f"{path}: {_OPENCV_HINT}") from err
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ValueError(f"{path}: OpenCV could not read this image")
    if arr.ndim == 3 and arr.shape[2] >= 3:  # OpenCV keeps BGR(A)
        arr = arr[..., [2, 1, 0] + list(range(3, arr.shape[2]))]
    return _exif_orient(arr, im)


def read_image(path: str | Path) -> ImageData:
    """Read any supported image for super-resolution (see ``ImageData``); ``ImageReadError`` for a bad file."""
    path = Path(path)
    with _reading(path):
        return _read_image(path)


def _read_image(path: Path) -> ImageData:
    with Image.open(path) as im:
        if _png_16bit_colour(path) or _tiff_16bit_colour(im):
            arr, bit_depth = _read_with_opencv(path, im).astype(np.float32), 16
            arr /= 65535.0
        elif im.format == "TIFF" and im.tag_v2.get(262) == 6:  # PhotometricInterpretation: YCbCr
            # Pillow before 13.0 reports uncompressed YCbCr TIFFs as truncated; libtiff (OpenCV) reads them
            arr, bit_depth = _read_with_opencv(path, im).astype(np.float32), 8
            arr /= 255.0
        else:
            im = ImageOps.exif_transpose(im)
            if im.mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr, bit_depth = np.asarray(im, dtype=np.float32), 16
                arr /= 65535.0  # in place: an 8000 x 8000 photo is 768 MB as float32
            else:
                if im.mode not in ("L", "LA", "RGB", "RGBA"):
                    im = im.convert("RGBA" if "A" in im.getbands() else ("L" if im.mode == "1" else "RGB"))
                arr, bit_depth = np.asarray(im, dtype=np.float32), 8
                arr /= 255.0
    if arr.ndim == 2:
        arr = arr[..., None]
    grayscale = arr.shape[2] in (1, 2)
    colour, alpha = (arr[..., :1], arr[..., 1:]) if grayscale else (arr[..., :3], arr[..., 3:])
    # (C, H, W) views of the (H, W, C) pixels, clamped in place: no copy of a large image
    rgb = torch.from_numpy(colour).permute(2, 0, 1).clamp_(0, 1)
    rgb = rgb.expand(3, -1, -1) if grayscale else rgb  # a view too: the tiles are made contiguous one by one
    a = torch.from_numpy(np.ascontiguousarray(alpha)).permute(2, 0, 1).clip(0, 1) if alpha.shape[2] else None
    return ImageData(rgb, a, bit_depth, grayscale)


def _quantise(img: torch.Tensor, bit_depth: int) -> np.ndarray:
    if img.is_floating_point():
        img = to_levels(img.detach().float(), bit_depth)
    return img.cpu().numpy().astype(np.uint16 if bit_depth == 16 else np.uint8, copy=False)


def save_image(
    rgb: torch.Tensor,
    path: str | Path,
    alpha: torch.Tensor | None = None,
    bit_depth: int = 8,
    grayscale: bool = False,
) -> None:
    """Write (3, H, W) ``rgb`` (+ (1, H, W) ``alpha``) as PNG with ``bit_depth`` 8 or 16 bits.

    Floats in [0, 1] are rounded; uint8/uint16 tensors are written as they are. ``grayscale``
    writes the mean of the channels (a grayscale input's result is near-gray anyway).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = rgb
    if grayscale:
        mean = rgb.float().mean(0, keepdim=True)
        colour = mean if rgb.is_floating_point() else round_half_up(mean).to(rgb.dtype)
    planes = [_quantise(colour, bit_depth)]
    if alpha is not None:
        planes.append(_quantise(alpha, bit_depth))
    # One plane (no alpha) is written without concatenating: a channels-last result (as sfd sr's tiles
    # assemble it) then reaches Pillow without a transposed copy.
    arr = (np.concatenate(planes, axis=0) if len(planes) > 1 else planes[0]).transpose(1, 2, 0)
    if bit_depth == 8 or arr.shape[2] == 1:
        arr = arr[..., 0] if arr.shape[2] == 1 else arr
        Image.fromarray(np.ascontiguousarray(arr)).save(path)  # uint16 2-D arrays become 16-bit grayscale PNGs
        return
    try:
        import cv2
    except ImportError as err:
        raise ImportError(f"writing {path}: {_OPENCV_HINT}") from err
    if arr.shape[2] >= 3:
        arr = arr[..., [2, 1, 0] + list(range(3, arr.shape[2]))]
    if not cv2.imwrite(str(path), np.ascontiguousarray(arr)):
        raise OSError(f"OpenCV could not write {path}")
