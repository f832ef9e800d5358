"""Pairing real LR images with their HR partners by file name, as the field's datasets name them.

Each file name (without extension) is reduced to the name the pair shares, by removing one suffix:

| layout | LR | HR | shared name |
|---|---|---|---|
| RealSR V3 (one folder for both) | ``Canon_001_LR4`` | ``Canon_001_HR`` | ``Canon_001`` |
| DRealSR (``test_LR/``, ``test_HR/``) | ``DSC_1454_x4`` | ``DSC_1454_x1`` | ``DSC_1454`` |
| BasicSR ``LR_bicubic/X4`` | ``babyx4`` | ``baby`` | ``baby`` |
| same names | ``0801`` | ``0801`` | ``0801`` |

LR suffixes tried: ``_LR<n>``, ``_x<n>``, ``x<n>``; HR suffixes: ``_HR``, ``_x<n>``. An exact name
match wins over a reduced one. ``--pair-pattern "LR:HR"`` replaces these rules with two templates in
which ``{}`` is the shared name, e.g. ``"{}_LR4:{}_HR"`` or ``"lr_{}:{}"`` (HR defaults to ``{}``).

Problems are collected, one line each, never raised: an LR without HR, an HR without LR, two HR
images claiming one LR, a file the pattern does not fit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Pair", "PairPattern", "pair_images", "split_mixed_folder"]

_LR_SUFFIXES = [re.compile(p) for p in (r"_LR\d+$", r"_x\d+$", r"x\d+$")]
_HR_SUFFIXES = [re.compile(p) for p in (r"_HR$", r"_x\d+$")]


@dataclass(frozen=True)
class Pair:
    name: str  # the name LR and HR share (the LR's stem when there is no HR)
    lr: Path
    hr: Path | None


@dataclass(frozen=True)
class PairPattern:
    """Two templates with one ``{}`` each: how an LR and an HR name are built from the shared name."""

    lr: str
    hr: str = "{}"

    @classmethod
    def parse(cls, text: str) -> PairPattern:
        lr, _, hr = text.partition(":")
        pattern = cls(lr.strip(), hr.strip() or "{}")
        for t in (pattern.lr, pattern.hr):
            if t.count("{}") != 1 or "{" in t.replace("{}", "") or "}" in t.replace("{}", ""):
                raise ValueError(
                    f"--pair-pattern {text!r}: each side needs exactly one {{}} "
                    "(the name LR and HR share), e.g. '{}_LR4:{}_HR'"
                )
        return pattern

    @staticmethod
    def shared(template: str, stem: str) -> str | None:
        before, after = template.split("{}")
        if stem.startswith(before) and stem.endswith(after) and len(stem) > len(before) + len(after):
            return stem[len(before) : len(stem) - len(after)]
        return None


def _reduce(stem: str, suffixes: list[re.Pattern]) -> str:
    for suffix in suffixes:
        reduced = suffix.sub("", stem)
        if reduced != stem and reduced:
            return reduced
    return stem


def split_mixed_folder(files: list[Path]) -> tuple[list[Path], list[Path], list[str]]:
    """RealSR keeps LR and HR side by side: split a folder's files into (LR, HR, problems) by suffix."""
    lr = [p for p in files if re.search(r"_LR\d+$", p.stem)]
    hr = [p for p in files if p.stem.endswith("_HR")]
    problems = [
        f"{p}: in a folder of both LR and HR images the name must end in _LR<n> or _HR; skipped"
        for p in files
        if p not in lr and p not in hr
    ]
    return lr, hr, problems


def pair_images(
    lr_files: list[Path], hr_files: list[Path] | None, pattern: PairPattern | None = None
) -> tuple[list[Pair], list[str]]:
    """(pairs in LR order, problems). Without ``hr_files`` every LR image stands alone."""
    if hr_files is None:
        return [Pair(p.stem, p, None) for p in lr_files], []
    problems: list[str] = []
    reported: set[Path] = set()  # files with a problem line already

    def shared_name(path: Path, template: str | None, suffixes: list[re.Pattern]) -> str | None:
        if pattern is None:
            return _reduce(path.stem, suffixes)
        name = PairPattern.shared(template, path.stem)
        if name is None:
            problems.append(f"{path}: name does not fit --pair-pattern {template!r}; skipped")
            reported.add(path)
        return name

    by_stem = {p.stem: p for p in hr_files}
    by_shared: dict[str, list[Path]] = {}
    for p in hr_files:
        if (name := shared_name(p, pattern and pattern.hr, _HR_SUFFIXES)) is not None:
            by_shared.setdefault(name, []).append(p)

    pairs = []
    for lr in lr_files:
        if pattern is None and lr.stem in by_stem:  # same names: nothing to reduce
            pairs.append(Pair(lr.stem, lr, by_stem[lr.stem]))
            continue
        name = shared_name(lr, pattern and pattern.lr, _LR_SUFFIXES)
        if name is None:
            continue
        found = by_shared.get(name, [])
        if len(found) == 1:
            pairs.append(Pair(name, lr, found[0]))
        elif found:
            problems.append(f"{lr}: {len(found)} HR images claim it ({', '.join(p.name for p in found)}); skipped")
            reported.update(found)
        else:
            where = hr_files[0].parent if hr_files else "the HR folder"
            problems.append(f"{lr}: no HR partner named like {name!r} in {where}; skipped")
    used = {pair.hr for pair in pairs}
    problems += [f"{hr}: no LR partner; skipped" for hr in hr_files if hr not in used and hr not in reported]
    return pairs, problems
