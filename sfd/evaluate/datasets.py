"""Named evaluation datasets: ``sfd eval --dataset NAME`` resolved under ``--data-root`` (or ``$SFD_DATA``).

One table, ``DATASETS``: each name maps to the folders it is expected in, relative to the data root,
as the dataset's own release unpacks them. A dataset with only ``hr`` is a bicubic set (LR made from
HR by MATLAB bicubic); one with ``lr`` holds real captured LR images, paired with ``hr`` by name
(``sfd.evaluate.pairing``). ``roots`` lists the top folder names the release is found under, first
the one its download unpacks to. ``resolve_dataset`` finds the folders or raises one error that
names the expected layout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DatasetLayout", "ResolvedDataset", "DATASETS", "DATA_ROOT_ENV", "resolve_dataset", "dataset_names"]

DATA_ROOT_ENV = "SFD_DATA"


@dataclass(frozen=True)
class DatasetLayout:
    roots: tuple[str, ...]  # top folder names under the data root, the release's own first
    hr: str | None  # HR folder inside the root
    lr: str | None = None  # real LR folder inside the root (None: LR made from HR by bicubic)
    scale: int | None = None  # the SR factor of a real dataset's pairs
    example: str = ""  # how one pair is named, for the error message
    source: str = ""


DATASETS: dict[str, DatasetLayout] = {
    # RealSR V3 (Cai et al., ICCV 2019; github.com/csjcai/RealSR): LR and HR of a scene side by side in
    # one folder per camera and scale; V3's LR are smaller than HR (V1/V2's were registered to HR size).
    "RealSR-Canon": DatasetLayout(
        ("RealSR(V3)", "RealSR_V3", "RealSR"), "Canon/Test/4", "Canon/Test/4", 4,
        "Canon_001_LR4.png with Canon_001_HR.png", "RealSR V3, Canon 5D3 test set, x4"),
    "RealSR-Nikon": DatasetLayout(
        ("RealSR(V3)", "RealSR_V3", "RealSR"), "Nikon/Test/4", "Nikon/Test/4", 4,
        "Nikon_001_LR4.png with Nikon_001_HR.png", "RealSR V3, Nikon D810 test set, x4"),
    # DRealSR (Wei et al., ECCV 2020; github.com/xiezw5/Component-Divide-and-Conquer-for-Real-World-Image-
    # Super-Resolution): separate LR and HR folders per scale.
    "DRealSR": DatasetLayout(
        ("DRealSR",), "Test_x4/test_HR", "Test_x4/test_LR", 4,
        "test_LR/DSC_1454_x4.png with test_HR/DSC_1454_x1.png", "DRealSR test set, x4"),
}


@dataclass(frozen=True)
class ResolvedDataset:
    name: str
    hr: Path | None
    lr: Path | None
    scale: int | None
    layout: DatasetLayout


def dataset_names() -> list[str]:
    return list(DATASETS)


def _expected(name: str, layout: DatasetLayout, root: Path) -> str:
    parts = [f"{root / layout.roots[0] / p}/" for p in dict.fromkeys(x for x in (layout.lr, layout.hr) if x)]
    where = " and ".join(parts)
    others = f" (or with {', '.join(layout.roots[1:])} in place of {layout.roots[0]})" if len(layout.roots) > 1 else ""
    pairs = f", pairs named like {layout.example}" if layout.example else ""
    return f"{name} expected at {where}{others}{pairs}"


def resolve_dataset(name: str, data_root: str | Path | None = None) -> ResolvedDataset:
    """The folders of dataset ``name`` (any case) under ``data_root`` or ``$SFD_DATA``."""
    key = {k.lower(): k for k in DATASETS}.get(name.lower())
    if key is None:
        raise ValueError(f"unknown dataset {name!r}: give a folder, or one of {', '.join(DATASETS)}")
    layout = DATASETS[key]
    root = data_root or os.environ.get(DATA_ROOT_ENV)
    if not root:
        raise FileNotFoundError(f"dataset {key} needs --data-root DIR (or ${DATA_ROOT_ENV}); "
                                f"{_expected(key, layout, Path('DIR'))}")
    root = Path(root).expanduser()
    for top in layout.roots:
        base = root / top
        lr, hr = (base / layout.lr if layout.lr else None), (base / layout.hr if layout.hr else None)
        if all(p.is_dir() for p in (lr, hr) if p is not None):
            return ResolvedDataset(key, hr, lr, layout.scale, layout)
    raise FileNotFoundError(f"dataset {key} not found: {_expected(key, layout, root)}")
