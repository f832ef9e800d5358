"""Benchmark datasets by name: ``resolve_dataset("B100", data_root)`` -> the folder of HR images.

A data root holds one folder per dataset, named as below (any listed alias, any letter case),
with the HR images in it or in its ``HR/`` subfolder:

    DATA_ROOT/Set5/         baby.png, bird.png, ...
    DATA_ROOT/B100/         (or BSDS100/, BSD100/)
    DATA_ROOT/DIV2K100/     DIV2K's validation HR images 0801-0900 (or DIV2K_valid_HR/, DIV2K/DIV2K_valid_HR/)

The data root is ``--data-root`` or, when not given, ``$SFD_DATA``.
"""

from __future__ import annotations

import os
from pathlib import Path

from sfd.data.io import list_images

__all__ = ["DATASETS", "DatasetNotFound", "canonical_name", "data_root", "resolve_dataset", "resolve_dataset_arg"]

ENV_DATA = "SFD_DATA"

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
        raise DatasetNotFound(f"unknown dataset {name!r}; known: {', '.join(DATASETS)} (or give a folder path)")
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
    raise DatasetNotFound(f"dataset {canonical} not found under {base}: expected its HR images in {expected} "
                          "(or in an HR/ subfolder of it)")


def resolve_dataset_arg(value: str, root: str | Path | None = None) -> Path:
    """A ``--dataset`` value: an existing folder as it is, otherwise a dataset name under the data root."""
    path = Path(value).expanduser()
    if path.is_dir():
        return path
    if canonical_name(value) is None:
        raise DatasetNotFound(f"--dataset {value}: no such folder, and not a known dataset name "
                              f"({', '.join(DATASETS)})")
    return resolve_dataset(value, root)
