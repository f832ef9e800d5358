"""Evaluation datasets by name: ``sfd eval --dataset NAME`` resolved under ``--data-root`` (or ``$SFD_DATA``).

Two kinds, one entry point (``resolve``):

* bicubic sets (``DATASETS``): HR images only, LR made by MATLAB bicubic. A data root holds one
  folder per dataset, named as below (any listed alias, any letter case), with the HR images in it
  or in its ``HR/`` subfolder:

      DATA_ROOT/Set5/         baby.png, bird.png, ...
      DATA_ROOT/B100/         (or BSDS100/, BSD100/)
      DATA_ROOT/DIV2K100/     DIV2K's validation HR images 0801-0900 (or DIV2K_valid_HR/, DIV2K/DIV2K_valid_HR/)

* real-world sets (``REAL_DATASETS``): captured LR images paired with HR by name
  (``sfd.evaluate.pairing``), found where the dataset's own release unpacks them.

A name that is not there is one error (``DatasetNotFound``) naming the expected layout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sfd.data.io import list_images

__all__ = [
    "DATASETS",
    "REAL_DATASETS",
    "DatasetLayout",
    "ResolvedDataset",
    "DatasetNotFound",
    "ENV_DATA",
    "canonical_name",
    "data_root",
    "dataset_names",
    "resolve",
    "resolve_dataset",
    "resolve_real_dataset",
    "resolve_dataset_arg",
]

ENV_DATA = "SFD_DATA"
DATA_ROOT_ENV = ENV_DATA


# canonical name -> folder names looked for under the data root, in order
DATASETS: dict[str, list[str]] = {
    "Set5": ["Set5"],
    "Set14": ["Set14"],
    "BSDS100": ["BSDS100", "B100", "BSD100"],
    "Manga109": ["Manga109"],
    "Urban100": ["Urban100"],
    "DIV2K100": ["DIV2K100", "DIV2K_valid_HR", "DIV2K/DIV2K_valid_HR"],
}


class DatasetNotFound(FileNotFoundError):
    """A named dataset is not under the data root; the message gives the expected layout."""


def canonical_name(name: str) -> str | None:
    """``"b100"`` -> ``"BSDS100"``; None for a name that is no known dataset."""
    key = name.lower()
    for canonical, aliases in DATASETS.items():
        if key == canonical.lower() or key in (a.lower() for a in aliases):
            return canonical
    return None


def data_root(root: str | Path | None = None) -> Path | None:
    """``root``, else ``$SFD_DATA``, else None."""
    root = root or os.environ.get(ENV_DATA)
    return Path(root).expanduser() if root else None


def _find_folder(parent: Path, relative: str) -> Path | None:
    """``parent/relative``, matching each part's letter case loosely (``set5`` finds ``Set5``)."""
    path = parent
    for part in Path(relative).parts:
        exact = path / part
        if exact.is_dir():
            path = exact
            continue
        found = [p for p in path.iterdir() if p.is_dir() and p.name.lower() == part.lower()] if path.is_dir() else []
        if not found:
            return None
        path = found[0]
    return path


def resolve_dataset(name: str, root: str | Path | None = None) -> Path:
    """The folder of ``name``'s HR images under the data root (see the module docstring)."""
    canonical = canonical_name(name)
    if canonical is None:
        raise DatasetNotFound(f"unknown dataset {name!r}; known: {', '.join(dataset_names())} (or give a folder path)")
    base = data_root(root)
    if base is None:
        raise DatasetNotFound(f"dataset {name}: give --data-root DIR (or set ${ENV_DATA}) holding {canonical}/")
    for alias in DATASETS[canonical]:
        folder = _find_folder(base, alias)
        if folder is None:
            continue
        hr = _find_folder(folder, "HR")
        for candidate in (folder, hr):
            if candidate is not None and list_images(candidate):
                return candidate
    expected = " or ".join(f"{base / a}/" for a in DATASETS[canonical])
    raise DatasetNotFound(
        f"dataset {canonical} not found under {base}: expected its HR images in {expected} "
        "(or in an HR/ subfolder of it)"
    )


def dataset_names() -> list[str]:
    return [*DATASETS, *REAL_DATASETS]


def resolve(name: str, root: str | Path | None = None) -> ResolvedDataset:
    """Any named dataset: a bicubic set (``lr`` None) or a real-world one with its LR folder."""
    if canonical_name(name) is not None:
        return ResolvedDataset(canonical_name(name), resolve_dataset(name, root), None, None, None)
    return resolve_real_dataset(name, root)


def resolve_dataset_arg(value: str, root: str | Path | None = None) -> Path:
    """A ``--dataset`` value: an existing folder as it is, otherwise a dataset name under the data root."""
    path = Path(value).expanduser()
    if path.is_dir():
        return path
    if canonical_name(value) is None:
        raise DatasetNotFound(
            f"--dataset {value}: no such folder, and not a known dataset name ({', '.join(DATASETS)})"
        )
    return resolve_dataset(value, root)


# ---------------------------------------------------------------- real-world sets


@dataclass(frozen=True)
class DatasetLayout:
    roots: tuple[str, ...]  # top folder names under the data root, the release's own first
    hr: str | None  # HR folder inside the root
    lr: str | None = None  # real LR folder inside the root (None: LR made from HR by bicubic)
    scale: int | None = None  # the SR factor of a real dataset's pairs
    example: str = ""  # how one pair is named, for the error message
    source: str = ""


REAL_DATASETS: dict[str, DatasetLayout] = {
    # RealSR V3 (Cai et al., ICCV 2019; github.com/csjcai/RealSR): LR and HR of a scene side by side in
    # one folder per camera and scale; V3's LR are smaller than HR (V1/V2's were registered to HR size).
    "RealSR-Canon": DatasetLayout(
        ("RealSR(V3)", "RealSR_V3", "RealSR"),
        "Canon/Test/4",
        "Canon/Test/4",
        4,
        "Canon_001_LR4.png with Canon_001_HR.png",
        "RealSR V3, Canon 5D3 test set, x4",
    ),
    "RealSR-Nikon": DatasetLayout(
        ("RealSR(V3)", "RealSR_V3", "RealSR"),
        "Nikon/Test/4",
        "Nikon/Test/4",
        4,
        "Nikon_001_LR4.png with Nikon_001_HR.png",
        "RealSR V3, Nikon D810 test set, x4",
    ),
    # DRealSR (Wei et al., ECCV 2020; github.com/xiezw5/Component-Divide-and-Conquer-for-Real-World-Image-
    # Super-Resolution): separate LR and HR folders per scale.
    "DRealSR": DatasetLayout(
        ("DRealSR",),
        "Test_x4/test_HR",
        "Test_x4/test_LR",
        4,
        "test_LR/DSC_1454_x4.png with test_HR/DSC_1454_x1.png",
        "DRealSR test set, x4",
    ),
}


@dataclass(frozen=True)
class ResolvedDataset:
    name: str
    hr: Path | None
    lr: Path | None
    scale: int | None
    layout: DatasetLayout | None  # None for a bicubic set


def _expected(name: str, layout: DatasetLayout, root: Path) -> str:
    parts = [f"{root / layout.roots[0] / p}/" for p in dict.fromkeys(x for x in (layout.lr, layout.hr) if x)]
    where = " and ".join(parts)
    others = f" (or with {', '.join(layout.roots[1:])} in place of {layout.roots[0]})" if len(layout.roots) > 1 else ""
    pairs = f", pairs named like {layout.example}" if layout.example else ""
    return f"{name} expected at {where}{others}{pairs}"


def resolve_real_dataset(name: str, root: str | Path | None = None) -> ResolvedDataset:
    """The folders of dataset ``name`` (any case) under ``data_root`` or ``$SFD_DATA``."""
    key = {k.lower(): k for k in REAL_DATASETS}.get(name.lower())
    if key is None:
        raise DatasetNotFound(f"unknown dataset {name!r}: give a folder, or one of {', '.join(dataset_names())}")
    layout = REAL_DATASETS[key]
    base = data_root(root)
    if base is None:
        raise DatasetNotFound(
            f"dataset {key} needs --data-root DIR (or ${ENV_DATA}); {_expected(key, layout, Path('DIR'))}"
        )
    root = base
    for top in layout.roots:
        base = root / top
        lr, hr = (base / layout.lr if layout.lr else None), (base / layout.hr if layout.hr else None)
        if all(p.is_dir() for p in (lr, hr) if p is not None):
            return ResolvedDataset(key, hr, lr, layout.scale, layout)
    raise DatasetNotFound(f"dataset {key} not found: {_expected(key, layout, root)}")
