"""What ``sfd app`` does, without Gradio: the models it offers, the checks on an upload, upscaling and the
scores (plain functions with plain tests; ``sfd.app.ui`` only lays them out on a page).

Safety rules kept here: the page chooses models by label from a table made at start (``find_models``), never
by a path from the browser; uploads are refused above a size in bytes and pixels (``check_upload``, the
decompression-bomb rule of ``sfd sr`` included) with a one-line reason; each request writes into a folder of
its own (``Session``), so one user's files are never another's outputs.
"""

from __future__ import annotations

import math
import tempfile
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from sfd.data.io import ImageReadError, image_size, read_image, save_image
from sfd.errors import UsageError
from sfd.iqa.quality_map import to_uint8

__all__ = ["Limits", "Rejected", "find_models", "check_upload", "load_upload", "Scorer", "Engine", "Result"]

MB = 2**20
METRICS = ("sfd-iqa", "niqe", "clipiqa")  # the order of the page's table


class Rejected(ValueError):
    """The upload or a choice on the page is refused: the one-line message the page shows."""


@dataclass(frozen=True)
class Limits:
    """What one upload may be: bytes on disk and pixels of the input (checked from the header, before decoding).
    Pillow's decompression-bomb rule (``$SFD_MAX_IMAGE_PIXELS``), as for ``sfd sr``, applies on top."""

    max_bytes: int = 20 * MB
    max_pixels: int = 2_000_000


# ---------------------------------------------------------------- models


def _named_models() -> list[str]:
    from sfd.models.ncnn import NAMED_MODELS

    return list(NAMED_MODELS)


def find_models(specs: list[str], runs: list[str] | None = None) -> dict[str, str]:
    """{label shown on the page: what ``load_generator`` loads}, from the command line only.

    ``specs``: run folders, checkpoints, generator files or named models, labelled as given. ``runs``: folders
    searched (two levels deep) for run folders (a ``checkpoints/`` folder inside), labelled by their path.
    Refuses what does not exist, so that the page offers nothing that cannot load.
    """
    models: dict[str, str] = {}
    for spec in specs:
        path = Path(spec).expanduser()
        if spec not in _named_models() and not path.exists():
            raise UsageError(f"model {spec!r}: no such file or folder, and not a named model")
        if path.is_dir() and not (path / "checkpoints").is_dir():
            raise UsageError(f"{spec} is a folder without checkpoints/: give a run folder (or use --runs DIR)")
        models[spec] = str(path) if path.exists() else spec
    for root in runs or []:
        if not Path(root).is_dir():
            raise UsageError(f"--runs {root}: no such folder")
        found = sorted({p.parent for pattern in ("*/checkpoints", "*/*/checkpoints") for p in Path(root).glob(pattern)})
        for run in found:
            if any(run.glob("checkpoints/*.pth")) or any(run.glob("checkpoints/*.safetensors")):
                models.setdefault(str(run), str(run))
    if not models:
        raise UsageError("no models: give run folders, checkpoints, generator files or named models, or --runs DIR")
    return models


def sfd_checkpoint_with_feat_d(spec: str) -> Path | None:
    """The checkpoint file behind ``spec`` when it is an sfd training checkpoint with a Feat-D (SFD-IQA's)."""
    from sfd import checkpoint

    path = Path(spec)
    if path.is_dir():
        path = checkpoint.find_latest(path) or path
    if not path.is_file() or path.suffix != ".pth":
        return None
    try:
        return path if "feat_d" in checkpoint.load(path).discriminators else None
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------- uploads


def check_upload(path: str | Path, limits: Limits) -> tuple[int, int]:
    """(width, height) of an acceptable upload, else ``Rejected`` with the reason; reads the header only."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise Rejected("the file is empty (0 bytes)")
    if size > limits.max_bytes:
        raise Rejected(
            f"the file has {size / MB:.1f} MB; this page takes files up to {limits.max_bytes / MB:.1f} MB "
            "(sfd app --max-upload-mb)"
        )
    try:
        w, h = image_size(path)
    except ImageReadError as err:
        raise Rejected(_without_path(err, path)) from None
    if w * h > limits.max_pixels:
        raise Rejected(
            f"the image is {w}x{h} = {w * h / 1e6:.1f} MP; this page takes up to {limits.max_pixels / 1e6:.1f} MP "
            "(sfd app --max-pixels)"
        )
    return w, h


def _without_path(err: Exception, path: Path) -> str:
    """The reason alone: the server's temporary path means nothing to the user (and is not theirs to see)."""
    return str(err).replace(f"{path}: ", "").replace(str(path), "the file")


def load_upload(path: str | Path, limits: Limits) -> torch.Tensor:
    """The checked upload as (3, H, W) float RGB in [0, 1] (alpha and 16 bits are not kept: an 8-bit
    preview page); ``Rejected`` for every kind of bad file."""
    check_upload(path, limits)
    try:
        return read_image(path).rgb.contiguous()
    except (ImageReadError, OSError, ValueError) as err:
        raise Rejected(_without_path(err, Path(path))) from None


# ---------------------------------------------------------------- scores


@dataclass
class MetricInfo:
    name: str
    label: str
    weights: str  # what the scores come from, as the page says it
    random: bool  # random weights: the page says so in red
    lower_better: bool
    decimals: int
    metric: Any = None  # None: not available (``error`` says why)
    error: str = ""


class Scorer:
    """SFD-IQA (with its map), NIQE and CLIP-IQA, built once at start; each says what weights it uses."""

    def __init__(self, iqa_checkpoint: str | Path | None, clip_weights: str | None, device: str):
        from sfd import metrics as registry

        self.metrics: dict[str, MetricInfo] = {}
        opts = registry.MetricOptions(device=device, checkpoint=iqa_checkpoint, clip_weights=clip_weights)
        for name in METRICS:
            entry = registry.metric_entry(name)
            info = MetricInfo(name, entry.label, "—", False, entry.lower_better, entry.decimals)
            try:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*RANDOM.*")  # the page says it in red
                    built = registry.build(name, opts)
            except Exception as err:  # no checkpoint, no CLIP weights here: the page says which and why
                info.error = " ".join(str(err).split())[:300]
            else:
                w = built.weights
                info.metric, info.weights, info.random = built.metric, (w.notes or w.short), w.random
                info.label = built.label
            self.metrics[name] = info
        self.lock = threading.Lock()  # one image at a time through the metrics (their modules are shared)

    def score(self, img: torch.Tensor) -> tuple[dict[str, float | str], torch.Tensor | None]:
        """{metric: score, or "n/a: reason"} of one (3, H, W) image and SFD-IQA's map (None without it)."""
        from sfd.metrics.base import TooSmall

        out: dict[str, float | str] = {}
        qmap = None
        with self.lock, torch.no_grad():
            for name, info in self.metrics.items():
                if info.metric is None:
                    out[name] = "n/a"
                    continue
                try:
                    if name == "sfd-iqa" and info.metric.feat_d is not None:
                        parts, qmap = info.metric.quality_map(img)
                        out[name] = parts["score"]
                    else:
                        out[name] = info.metric.score_image(img)
                except (TooSmall, ValueError) as err:
                    out[name] = f"n/a: {err}"
        return out, qmap


# ---------------------------------------------------------------- the work of one request


@dataclass
class Result:
    """What one request made: images (CPU tensors), their scores and maps, and the files to download."""

    folder: Path
    input: torch.Tensor
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)  # model label -> result
    scores: dict[str, dict[str, float | str]] = field(default_factory=dict)  # "input"/label -> metric -> score
    maps: dict[str, Path] = field(default_factory=dict)  # "input"/label -> figure of its SFD-IQA map
    files: list[Path] = field(default_factory=list)  # the outputs as PNG, for download
    described: dict[str, str] = field(default_factory=dict)  # label -> what ran (model, scale, precision)

    def size(self, label: str) -> tuple[int, int]:
        h, w = self.outputs[label].shape[-2:]
        return int(w), int(h)


Progress = Callable[[float, str], Any]


class Engine:
    """The models (loaded on first use, kept), the scorer and the limits; ``run`` serves one request."""

    def __init__(self, models: dict[str, str], scorer: Scorer | None, limits: Limits, device: str, workdir: Path):
        self.models, self.scorer, self.limits, self.device = models, scorer, limits, device
        self.workdir = Path(workdir)
        self._loaded: dict[tuple[str, str, int], Any] = {}
        self._lock = threading.Lock()

    def upscaler(self, label: str, precision: str, tile: int):
        from sfd.inference import InferenceSettings, Upscaler

        if label not in self.models:  # the page offers labels only; anything else is refused
            raise Rejected(f"unknown model {label!r}: choose one of the list")
        key = (label, precision, tile)
        with self._lock:
            if key not in self._loaded:
                settings = InferenceSettings(device=self.device, precision=precision, tile=tile)
                try:
                    self._loaded[key] = Upscaler.load(self.models[label], settings)
                except UsageError as err:  # e.g. a precision this architecture does not run
                    raise Rejected(str(err)) from None
            return self._loaded[key]

    def run(
        self,
        upload: str | Path,
        labels: list[str],
        outscale: float = 0,
        tile: int = 0,
        precision: str = "fp32",
        scores: bool = True,
        progress: Progress | None = None,
    ) -> Result:
        """Upscale the upload with each model of ``labels`` (one or two), score input and outputs."""
        say = progress or (lambda fraction, what: None)
        labels = [x for x in dict.fromkeys(labels) if x]
        if not 1 <= len(labels) <= 2:
            raise Rejected("choose one model, or two to compare")
        if tile < 0 or outscale < 0 or outscale > 8:
            raise Rejected("tile must be 0 (whole image) or more, and scale between 0 (the model's) and 8")
        say(0.0, "reading the image")
        img = load_upload(upload, self.limits)
        folder = Path(tempfile.mkdtemp(prefix="request-", dir=self.workdir))  # this request's own files
        result = Result(folder, img)
        steps = len(labels) * (2 if scores else 1) + (1 if scores else 0)
        done = 0
        for i, label in enumerate(labels):
            say(done / steps, f"upscaling with {label}")
            up = self.upscaler(label, precision, tile)
            out = up(img)
            if outscale and outscale != up.scale:  # Real-ESRGAN's --outscale: resize the model's result
                from sfd.data.resize import imresize

                size = (round(img.shape[-2] * outscale), round(img.shape[-1] * outscale))
                out = imresize(out.double(), size=size).clamp(0, 1).float()
            result.outputs[label] = out
            result.described[label] = up.describe() + (f", resized to x{outscale:g}" if outscale else "")
            path = folder / f"output_{'AB'[i]}_x{outscale or up.scale:g}.png"
            save_image(out, path)
            result.files.append(path)
            done += 1
        if scores and self.scorer is not None:
            for key, img_ in [("input", img), *result.outputs.items()]:
                say(done / steps, f"scoring {key}")
                result.scores[key], qmap = self.scorer.score(img_)
                if qmap is not None:
                    result.maps[key] = self._map_figure(img_, qmap, key, folder)
                done += 1
        say(1.0, "done")
        return result

    def _map_figure(self, img: torch.Tensor, qmap: torch.Tensor, key: str, folder: Path) -> Path:
        import matplotlib.pyplot as plt

        from sfd.iqa.quality_map import figure

        info = self.scorer.metrics["sfd-iqa"]
        note = "RANDOM CLIP weights: this map measures nothing about quality" if info.random else None
        fig = figure(img, qmap, f"SFD-IQA map of {key}", note)
        path = folder / f"map_{len(list(folder.glob('map_*')))}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        return path


def resized_for_view(img: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """An image at (w, h), bicubic, for the before/after slider (display only)."""
    return np.asarray(Image.fromarray(to_uint8(img)).resize(size, Image.BICUBIC))


def fmt(value: float | str, decimals: int) -> str:
    if isinstance(value, str):
        return value
    return "n/a" if math.isnan(value) else f"{value:.{decimals}f}"
