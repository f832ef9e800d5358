"""Cut large HR images into overlapping sub-images, as BasicSR's extract_subimages
does for DF2K (480x480 crops every 240 pixels). Training then decodes small files on demand, so
the loader's memory and decode time stay small whatever the dataset size.

Note: with sub-images, the bicubic LR of a classic run is computed per sub-image, so the pixels
within ~8 HR pixels of a sub-image's border differ slightly from the whole image's LR.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["crop_starts", "extract_subimages"]


def crop_starts(length: int, crop: int, step: int, thresh: int = 0) -> list[int]:
    """Top-left offsets along one axis (BasicSR's rule: a last crop flush with the border when the
    remainder exceeds ``thresh``)."""
    if length <= crop:
        return [0]
    starts = list(range(0, length - crop + 1, step))
    if length - (starts[-1] + crop) > thresh:
        starts.append(length - crop)
    return starts


def extract_subimages(folders, dest: str | Path, crop: int = 480, step: int = 240, thresh: int = 0) -> int:
    """Write ``NAME_sNNN.png`` sub-images of every image of ``folders`` into ``dest``; returns their number."""
    from sfd.data.io import list_images, load_rgb

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    count = 0
    for path in list_images(folders):
        im = load_rgb(path)
        index = 0
        for top in crop_starts(im.height, crop, step, thresh):
            for left in crop_starts(im.width, crop, step, thresh):
                index += 1
                im.crop((left, top, left + min(crop, im.width), top + min(crop, im.height))).save(
                    dest / f"{path.stem}_s{index:03d}.png", compress_level=1
                )
                count += 1
    return count
