"""The evaluation runner behind ``sfd eval``: metrics, SR methods, datasets, tables, CSV, JSON.

Convention (docs/evaluation.md): HR images are mod-cropped to the scale; LR = MATLAB bicubic of the HR,
stored as 8 bits; every SR result is quantised to 8 bits (as a saved PNG would be) before it is
measured. PSNR/SSIM/NIQE shave ``scale`` pixels at the border; LPIPS/DISTS and the CLIP metrics
see whole images.

Real-world datasets (``DatasetSpec`` with ``lr``) bring their own LR images, paired with HR by name
(``sfd.evaluate.pairing``) or alone (no-reference metrics only). Their HR is cropped at the
bottom/right to the SR size when it is larger by less than the scale (the mod crop BasicSR's
PairedImageDataset applies in testing) and never resized; any other size difference is an error for
that image. Problems with one image are collected in ``EvalResult.errors`` and the run goes on.

Metrics come from the one registry: ``sfd.metrics.build(name, MetricOptions(...))`` gives each one with
its per-image ``compute(sr, hr, border)`` and what the tables print (``ReportMetric``).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from sfd.data.io import list_images, load_rgb, save_png
from sfd.data.resize import bicubic_lr, imresize, mod_crop, quantize_8bit
from sfd.errors import UsageError
from sfd.evaluate.pairing import Pair, PairPattern, pair_images, split_mixed_folder
from sfd.inference import InferenceSettings, Upscaler
from sfd.metrics import ReportMetric as Metric
from sfd.metrics.psnr_ssim import to_uint8_values

__all__ = [
    "Method",
    "bicubic_method",
    "model_method",
    "folder_method",
    "DatasetSpec",
    "EvalResult",
    "check_references",
    "evaluate",
    "evaluate_folders",
]


# --------------------------------------------------------------------------- methods


@dataclass
class Method:
    """Something that turns an LR image into an SR image (both (3, H, W) float, 8-bit values)."""

    name: str
    source: str
    run: Callable[[torch.Tensor], torch.Tensor] | None  # lr -> sr; None for SR folders
    folder: Path | None = None
    scale: int | None = None


def bicubic_method(scale: int) -> Method:
    return Method(
        "bicubic", "MATLAB-compatible bicubic", lambda lr: quantize_8bit(imresize(lr.double(), scale)), scale=scale
    )


def model_method(
    spec: str,
    scale: int | None,
    settings: InferenceSettings | None = None,
    name: str | None = None,
    prefer_ema: bool = True,
    allow_pickle: bool = False,
) -> Method:
    """A generator as a method (``sfd.inference.Upscaler``); ``scale`` None takes the model's own.
    ``prefer_ema`` False measures an sfd checkpoint's raw generator instead of its EMA."""
    up = Upscaler.load(spec, settings, prefer_ema=prefer_ema, allow_pickle=allow_pickle)
    if scale is not None and up.scale != scale:
        raise UsageError(f"model {spec} is x{up.scale}, but the evaluation is x{scale}")

    def run(lr: torch.Tensor) -> torch.Tensor:
        out = up(lr.float(), out_dtype=torch.uint8, progress=f"{name or spec} tiles")
        return out.double() / 255.0

    label = name or (spec if not Path(spec).suffix else Path(spec).stem)
    return Method(label, up.describe(), run, scale=up.scale)


def folder_method(folder: str | Path) -> Method:
    folder = Path(folder)
    return Method(folder.name, f"images in {folder}", None, folder)


# --------------------------------------------------------------------------- datasets


@dataclass
class DatasetSpec:
    """A dataset to super-resolve. Without ``lr``: HR images, LR made by MATLAB bicubic (the classic
    convention). With ``lr``: real LR images, paired by name with ``hr`` or, without ``hr``, alone."""

    name: str
    hr: Path | None = None
    lr: Path | None = None
    pair_pattern: PairPattern | None = None
    shrink_lr: bool = False  # LR registered to the HR's size (RealSR v1/v2): shrink by the scale first

    @property
    def real(self) -> bool:
        return self.lr is not None


def _as_spec(dataset: str | Path | DatasetSpec) -> DatasetSpec:
    return dataset if isinstance(dataset, DatasetSpec) else DatasetSpec(Path(dataset).name, hr=Path(dataset))


def _work_list(spec: DatasetSpec) -> tuple[list[Pair | Path], list[str]]:
    """HR files of a bicubic dataset, or the LR(/HR) pairs of a real one; and the problems found."""
    if not spec.real:
        images = list_images(spec.hr)
        if not images:
            raise FileNotFoundError(f"dataset {spec.hr} has no images")
        return images, []
    lr_files, problems = list_images(spec.lr), []
    hr_files = list_images(spec.hr) if spec.hr else None
    if spec.hr and Path(spec.hr).resolve() == Path(spec.lr).resolve():  # RealSR: LR and HR in one folder
        lr_files, hr_files, problems = split_mixed_folder(lr_files)
    if not lr_files:
        raise FileNotFoundError(f"dataset {spec.name}: no LR images in {spec.lr}")
    pairs, more = pair_images(lr_files, hr_files, spec.pair_pattern)
    return pairs, problems + more


def _load_rgb64(path: Path) -> torch.Tensor:
    """8-bit RGB as exact float64 levels k/255 (EXIF orientation applied, as sfd sr does)."""
    arr = np.asarray(load_rgb(path), dtype=np.float64) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def _size(img: torch.Tensor) -> str:
    return f"{img.shape[-1]}x{img.shape[-2]}"


def _fit_hr(hr: torch.Tensor, lr: torch.Tensor, scale: int, pair: Pair) -> torch.Tensor:
    """The HR at the SR's size: cropped at the bottom/right when larger by < scale, else an error."""
    sh, sw = lr.shape[-2] * scale, lr.shape[-1] * scale
    h, w = hr.shape[-2:]
    if 0 <= h - sh < scale and 0 <= w - sw < scale:
        return hr[..., :sh, :sw]
    hint = (
        " (the LR has the HR's size: LR registered to HR, as in RealSR v1/v2? --shrink-lr shrinks it "
        "by the scale first)"
        if (h, w) == tuple(lr.shape[-2:])
        else ""
    )
    raise ValueError(
        f"{pair.lr} is {_size(lr)}, x{scale} gives {sw}x{sh}, but {pair.hr} is {w}x{h}: the sizes "
        f"differ by more than the mod-{scale} crop and HR is never resized{hint}"
    )


def _load_item(spec: DatasetSpec, item: Pair | Path, scale: int) -> tuple[str, torch.Tensor, torch.Tensor | None]:
    """(image name, LR, HR or None) of one work-list item."""
    if not spec.real:
        hr = mod_crop(_load_rgb64(item), scale)
        return item.stem, bicubic_lr(hr, scale), hr
    lr = _load_rgb64(item.lr)
    if spec.shrink_lr:
        lr = bicubic_lr(mod_crop(lr, scale), scale)
    hr = _fit_hr(_load_rgb64(item.hr), lr, scale, item) if item.hr else None
    return item.name, lr, hr


# --------------------------------------------------------------------------- results


@dataclass
class EvalResult:
    scale: int | None
    metrics: list[Metric]
    methods: list[Method]
    datasets: list[str]
    records: list[dict] = field(default_factory=list)  # one per (dataset, method, image)
    notes: list[str] = field(default_factory=list)
    # (dataset, image) -> {"HR" or method name: uint8 (3, h, w) crop}, for reports
    crops: dict[tuple[str, str], dict[str, torch.Tensor]] = field(default_factory=dict)
    crop_boxes: dict[tuple[str, str], tuple[int, int, int]] = field(default_factory=dict)  # y, x, size
    errors: list[str] = field(default_factory=list)  # one line per image (or pair) that could not be measured

    def means(self) -> dict[str, dict[str, dict[str, float | None]]]:
        """dataset -> method -> metric -> mean over images (NaN values, e.g. NIQE of tiny images, skipped)."""
        out: dict[str, dict[str, dict[str, float | None]]] = {}
        for d in self.datasets:
            out[d] = {}
            for m in self.methods:
                rows = [r for r in self.records if r["dataset"] == d and r["method"] == m.name]
                out[d][m.name] = {}
                for metric in self.metrics:
                    vals = [r[metric.name] for r in rows if not math.isnan(r[metric.name])]
                    out[d][m.name][metric.name] = float(np.mean(vals)) if vals else None
        return out

    def markdown_table(self) -> str:
        """Rows = datasets x metrics, columns = methods (as supplement Table 1); best in bold."""
        means = self.means()
        names = [m.name for m in self.methods]
        lines = ["| dataset | metric | " + " | ".join(names) + " |", "|---|---|" + "---:|" * len(names)]
        for d in self.datasets:
            for metric in self.metrics:
                vals = [means[d][n][metric.name] for n in names]
                present = [v for v in vals if v is not None]
                best = (min if metric.lower_better else max)(present) if len(present) > 1 else None
                cells = []
                for v in vals:
                    text = "n/a" if v is None else f"{v:.{metric.decimals}f}"
                    cells.append(
                        f"**{text}**"
                        if best is not None
                        and v is not None
                        and round(v, metric.decimals) == round(best, metric.decimals)
                        else text
                    )
                lines.append(f"| {d} | {metric.label} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def settings(self) -> dict:
        return {
            "scale": self.scale,
            "metrics": {
                m.name: {
                    "description": m.description,
                    "lower_better": m.lower_better,
                    "random_weights": m.random_weights,
                    "warning": m.warning,
                }
                for m in self.metrics
            },
            "methods": {m.name: m.source for m in self.methods},
            "datasets": self.datasets,
        }

    def to_json(self) -> dict:
        """Everything, JSON-ready: JSON has no NaN or infinity, so NaN (e.g. NIQE of an image under two
        blocks) and infinity (PSNR of an SR identical to its HR) become null, with a note for infinity."""
        finite = lambda v: None if isinstance(v, float) and not math.isfinite(v) else v  # noqa: E731
        records = [{k: finite(v) for k, v in r.items()} for r in self.records]
        means = {d: {m: {k: finite(v) for k, v in x.items()} for m, x in by.items()} for d, by in self.means().items()}
        notes = list(self.notes)
        if any(isinstance(v, float) and math.isinf(v) for r in self.records for v in r.values()):
            notes.append("infinite values (PSNR of an SR identical to its HR) are null here; per_image.csv has inf")
        return {**self.settings(), "means": means, "per_image": records, "notes": notes, "errors": self.errors}

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """per_image.csv, table.md and results.json in ``out_dir``; returns their paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"csv": out / "per_image.csv", "table": out / "table.md", "json": out / "results.json"}
        with open(paths["csv"], "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["dataset", "method", "image"] + [m.name for m in self.metrics])
            writer.writeheader()
            for r in self.records:
                writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()})
        lines = [f"- {n}" for n in self.notes] + [f"- ERROR: {e}" for e in self.errors]
        paths["table"].write_text(self.markdown_table() + "\n\n" + "\n".join(lines) + "\n")
        paths["json"].write_text(json.dumps(self.to_json(), indent=2, allow_nan=False))
        return paths


def _metric_notes(metrics: list[Metric]) -> list[str]:
    notes = [f"{m.name}: {m.description}" for m in metrics]
    notes += [f"WARNING: {m.name}: {m.warning}" for m in metrics if m.warning]
    return notes


def _dataset_notes(specs: list[DatasetSpec], scale: int, border: int) -> list[str]:
    bicubic = [s.name for s in specs if not s.real]
    paired = [s.name for s in specs if s.real and s.hr]
    alone = [s.name for s in specs if s.real and not s.hr]
    notes = []
    if bicubic:
        prefix = f"{', '.join(bicubic)}: " if paired or alone else ""  # the classic note, unchanged, when alone
        notes.append(
            f"{prefix}x{scale}; HR mod-cropped to {scale}; LR by MATLAB-compatible bicubic, stored as 8 bits; "
            "SR quantised to 8 bits before measuring"
        )
    if paired:
        notes.append(
            f"{', '.join(paired)}: real LR images paired with their HR by name, x{scale}; HR cropped at the "
            f"bottom/right to the SR size when larger by less than {scale} px (mod crop), never resized; "
            "SR quantised to 8 bits before measuring"
        )
    if alone:
        notes.append(f"{', '.join(alone)}: real LR images without HR, x{scale}: no-reference metrics only")
    shrunk = [s.name for s in specs if s.shrink_lr]
    if shrunk:
        notes.append(f"{', '.join(shrunk)}: LR shrunk by {scale} with MATLAB bicubic before SR (--shrink-lr)")
    if border != scale:
        notes.append(f"border of {border} px shaved for PSNR/SSIM/NIQE, not the scale (--border)")
    return notes


# --------------------------------------------------------------------------- crops for reports


def choose_crop(hr: torch.Tensor, size: int) -> tuple[int, int]:
    """Top-left (y, x) of the ``size`` window with the most gradient energy: where methods differ."""
    gray = hr.float().mean(0)
    energy = torch.zeros_like(gray)
    energy[:, 1:] += (gray[:, 1:] - gray[:, :-1]).abs()
    energy[1:, :] += (gray[1:, :] - gray[:-1, :]).abs()
    pooled = torch.nn.functional.avg_pool2d(energy[None, None], size, stride=max(1, size // 4))[0, 0]
    iy, ix = divmod(int(pooled.argmax()), pooled.shape[1])
    return iy * max(1, size // 4), ix * max(1, size // 4)


def _crop_box(ref: torch.Tensor, scale: int, ref_scale: int = 1) -> tuple[int, int, int]:
    """(y, x, size) in SR pixels, on a multiple of ``scale`` so the LR crop matches exactly.

    ``ref`` is the HR (``ref_scale`` 1) or, without one, the LR (``ref_scale`` = scale)."""
    scale = max(scale, 1)
    h, w = ref.shape[-2] * ref_scale, ref.shape[-1] * ref_scale
    size = min(max(24, min(h, w) // 8), min(h, w))  # small enough to be shown zoomed
    size = max(size - size % scale, scale)
    y, x = choose_crop(ref, max(1, size // ref_scale))
    y, x = y * ref_scale, x * ref_scale
    return y - y % scale, x - x % scale, size


def _crop_u8(img: torch.Tensor, box: tuple[int, int, int]) -> torch.Tensor:
    y, x, size = box
    return to_uint8_values(img[:, y : y + size, x : x + size]).to(torch.uint8)


def _lr_crop_u8(lr: torch.Tensor, box: tuple[int, int, int], scale: int) -> torch.Tensor:
    """The LR under ``box``, enlarged by nearest neighbour to the SR crop's size."""
    y, x, size = (v // scale for v in box)
    crop = _crop_u8(lr, (y, x, size))
    return crop.repeat_interleave(scale, -2).repeat_interleave(scale, -1)


# --------------------------------------------------------------------------- runners


def _measure(metrics: list[Metric], sr: torch.Tensor, hr: torch.Tensor | None, border: int) -> dict[str, float]:
    return {m.name: m.compute(sr, hr, border) for m in metrics}


def check_references(specs: list[DatasetSpec], metrics: list[Metric]) -> None:
    """Full-reference metrics need HR images: refuse before any work when a dataset has none."""
    needing = ", ".join(m.name for m in metrics if m.needs_reference)
    for spec in specs:
        if spec.real and not spec.hr and needing:
            raise UsageError(
                f"{spec.name} has no HR images, so {needing} cannot be measured; "
                "without HR only no-reference metrics run (e.g. niqe, sfd-iqa, clipiqa)"
            )


def evaluate(
    methods: list[Method],
    datasets: list[str | Path | DatasetSpec],
    scale: int,
    metrics: list[Metric],
    keep_crops: bool = False,
    save_sr: str | Path | None = None,
    border: int | None = None,
    progress: bool = True,
) -> EvalResult:
    """Super-resolve every dataset's LR with every method and measure.

    A folder (or a ``DatasetSpec`` without ``lr``) is an HR set whose LR is made by MATLAB bicubic; a
    spec with ``lr`` brings real LR images. An image that cannot be read, paired or measured adds one
    line to ``errors`` and the others go on. ``border`` (default: the scale) is shaved for PSNR/SSIM/NIQE.
    """
    specs = [_as_spec(d) for d in datasets]
    border = scale if border is None else border
    check_references(specs, metrics)
    result = EvalResult(
        scale,
        metrics,
        methods,
        [s.name for s in specs],
        notes=_dataset_notes(specs, scale, border) + _metric_notes(metrics),
    )
    for spec in specs:
        work, problems = _work_list(spec)
        result.errors += problems
        for item in tqdm(work, desc=f"{spec.name} x{scale}", unit="img", disable=not progress):
            try:
                name, lr, hr = _load_item(spec, item, scale)
            except (OSError, ValueError) as err:
                files = item if isinstance(item, Path) else " / ".join(str(p) for p in (item.lr, item.hr) if p)
                result.errors.append(str(err) if isinstance(err, ValueError) else f"{files}: cannot read: {err}")
                continue
            key = (spec.name, name)
            if keep_crops:
                box = result.crop_boxes[key] = _crop_box(hr, scale) if hr is not None else _crop_box(lr, scale, scale)
                crops = result.crops[key] = {"LR": _lr_crop_u8(lr, box, scale)}
                if hr is not None:
                    crops["HR"] = _crop_u8(hr, box)
            for method in methods:
                try:
                    sr = method.run(lr)
                    if hr is not None and sr.shape != hr.shape:
                        raise ValueError(f"{method.name} made {_size(sr)} from {name} but its HR is {_size(hr)}")
                    values = _measure(metrics, sr, hr, border)
                except (ValueError, RuntimeError) as err:
                    result.errors.append(f"{spec.name}/{name}, {method.name}: {err}")
                    continue
                result.records.append({"dataset": spec.name, "method": method.name, "image": name, **values})
                if keep_crops:
                    crops[method.name] = _crop_u8(sr, box)
                if save_sr:
                    save_png(sr, Path(save_sr) / spec.name / method.name / f"{name}.png")
    return result


def _pair(sr_files: list[Path], hr_files: list[Path], sr_dir: Path) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Match SR files to HR files by name: same stem, or the HR stem plus a suffix (``baby_x4``).
    Returns the pairs and one error line per HR file without an SR partner."""
    by_stem = {p.stem: p for p in sr_files}
    pairs, errors = [], []
    for hr in hr_files:
        match = by_stem.get(hr.stem) or next(
            (p for p in sr_files if p.stem.startswith(hr.stem) and p.stem[len(hr.stem)] in "_-."), None
        )
        if match:
            pairs.append((match, hr))
        else:
            errors.append(f"{hr}: no SR image named like '{hr.stem}' in {sr_dir}; skipped")
    return pairs, errors


def evaluate_folders(
    sr_dirs: list[str | Path],
    hr_dir: str | Path | None,
    scale: int | None,
    metrics: list[Metric],
    keep_crops: bool = False,
    border: int | None = None,
    progress: bool = True,
) -> EvalResult:
    """Measure existing SR images against HR images (or alone, for no-reference metrics)."""
    if hr_dir is None and any(m.needs_reference for m in metrics):
        needing = [m.name for m in metrics if m.needs_reference]
        raise UsageError(f"metrics {', '.join(needing)} need --hr; without it only no-reference metrics run")
    methods = [folder_method(d) for d in sr_dirs]
    dataset = Path(hr_dir).name if hr_dir else "images"
    border = (scale or 0) if border is None else border
    result = EvalResult(scale, metrics, methods, [dataset], notes=_metric_notes(metrics))
    if border:
        result.notes.insert(0, f"border of {border} px shaved for PSNR/SSIM/NIQE")
    else:  # the metric descriptions say "border = scale": here there is none
        result.notes.insert(0, "no border shaved: no --scale (or --border) given")
    hr_files = list_images(hr_dir) if hr_dir else []
    for method in methods:
        sr_files = list_images(method.folder)
        if hr_dir:
            pairs, missing = _pair(sr_files, hr_files, method.folder)
            result.errors += missing
        else:
            pairs = [(p, None) for p in sr_files]
        for sr_path, hr_path in tqdm(pairs, desc=method.name, unit="img", disable=not progress):
            try:
                sr = _load_rgb64(sr_path)
                hr = _load_rgb64(hr_path) if hr_path else None
                if scale and hr is not None:
                    sr, hr = mod_crop(sr, scale), mod_crop(hr, scale)
                if hr is not None and sr.shape != hr.shape:
                    crop = f" after mod-cropping to {scale}" if scale else ""
                    raise ValueError(f"{sr_path} is {_size(sr)} but {hr_path} is {_size(hr)}{crop}; skipped")
                values = _measure(metrics, sr, hr, border)
            except (OSError, ValueError, RuntimeError) as err:
                result.errors.append(str(err))
                continue
            key = (dataset, (hr_path or sr_path).stem)
            if keep_crops:
                if key not in result.crop_boxes:  # the first method fixes the box for all
                    box = result.crop_boxes[key] = _crop_box(hr if hr is not None else sr, 1)
                    result.crops[key] = {"HR": _crop_u8(hr, box)} if hr is not None else {}
                result.crops[key][method.name] = _crop_u8(sr, result.crop_boxes[key])
            result.records.append({"dataset": dataset, "method": method.name, "image": key[1], **values})
    return result
