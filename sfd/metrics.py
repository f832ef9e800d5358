"""The one registry of image quality metrics, with pyiqa's API; ``sfd eval``, ``sfd iqa`` and
``sfd iqa-eval`` all build their metrics here.

    import sfd.metrics
    sfd.metrics.list_metrics()           # every name; list_metrics("fr") / list_metrics("nr")
    psnr = sfd.metrics.create_metric("psnr", border=4)
    psnr(sr, hr)                         # (N,) scores: full-reference metrics take the image and its reference
    niqe = sfd.metrics.create_metric("niqe")
    niqe(sr)                             # no-reference metrics take the image alone
    iqa = sfd.metrics.create_metric("sfd-iqa", checkpoint="runs/iqa/checkpoints/iter_00400000.pth")

Inputs: (N, 3, H, W) or (3, H, W) tensors in [0, 1], image paths, or lists of these. Every metric is a
``torch.nn.Module`` with ``name``, ``lower_better``, ``score_range`` (pyiqa's string), ``needs_reference``
(True for full-reference "fr" metrics, False for no-reference "nr" ones) and
``score_image(img, ref=None, border=None) -> float`` for one (3, H, W) image, which ``sfd eval`` calls per
image (``border``: pixels shaved by PSNR, SSIM and NIQE; the CLIP metrics and LPIPS/DISTS see whole images).
Other metrics join with ``register_metric``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from sfd.device import resolve_device

__all__ = [
    "MetricEntry",
    "FullReferenceMetric",
    "register_metric",
    "unregister_metric",
    "list_metrics",
    "metric_entry",
    "canonical_name",
    "create_metric",
]

MODES = ("fr", "nr")


@dataclass(frozen=True)
class MetricEntry:
    name: str
    factory: Callable[..., nn.Module]  # factory(device=, as_loss=, **options) -> metric
    mode: str  # "fr" (needs a reference image) or "nr"
    lower_better: bool
    score_range: str
    description: str
    takes_checkpoint: bool = False


_REGISTRY: dict[str, MetricEntry] = {}
_ALIASES: dict[str, str] = {}


def _key(name: str) -> str:
    """ "SFD_IQA", " Clip-IQA " ... -> lower case with dashes."""
    return name.strip().lower().replace("_", "-")


def register_metric(
    name: str,
    factory: Callable[..., nn.Module],
    *,
    mode: str,
    lower_better: bool,
    score_range: str,
    description: str,
    aliases: tuple[str, ...] = (),
    takes_checkpoint: bool = False,
) -> None:
    """Add metric ``name``; ``factory(device=..., as_loss=..., **options)`` builds it when asked for."""
    if mode not in MODES:
        raise ValueError(f"mode must be 'fr' or 'nr', not {mode!r}")
    _REGISTRY[name] = MetricEntry(name, factory, mode, lower_better, score_range, description, takes_checkpoint)
    for alias in aliases:
        _ALIASES[_key(alias)] = name


def unregister_metric(name: str) -> None:
    _REGISTRY.pop(name, None)
    for alias in [a for a, n in _ALIASES.items() if n == name]:
        del _ALIASES[alias]


def list_metrics(mode: str | None = None) -> list[str]:
    """Registered names, sorted; ``mode`` "fr" or "nr" keeps full- or no-reference metrics only."""
    if mode is not None and mode not in MODES:
        raise ValueError(f"mode must be None, 'fr' or 'nr', not {mode!r}")
    return sorted(n for n, e in _REGISTRY.items() if mode is None or e.mode == mode)


def canonical_name(name: str) -> str:
    key = _key(name)
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise ValueError(f"unknown metric {name!r}; available: {', '.join(list_metrics())}")
    return key


def metric_entry(name: str) -> MetricEntry:
    return _REGISTRY[canonical_name(name)]


def create_metric(
    name: str,
    device: str | torch.device | None = None,
    as_loss: bool = False,
    checkpoint: str | Path | dict | None = None,
    **options: Any,
) -> nn.Module:
    """Build metric ``name`` (see ``list_metrics()``) as a ``torch.nn.Module``.

    ``device``: default CUDA when available. ``as_loss``: a differentiable, lower-is-better scalar instead
    of scores (sfd-iqa and clipiqa). ``checkpoint``: the sfd training checkpoint sfd-iqa is built from.
    Options: PSNR/SSIM/NIQE ``border``; LPIPS/DISTS ``weights`` (None: ImageNet files, "random": tests);
    NIQE ``color``, ``model``; the CLIP metrics' image protocol (``mode``, ``max_side``, ``crop``, ``pad``,
    or ``protocol=ImageProtocol(...)``) and ``weights`` (CLIP: "openai", a file, "random"); sfd-iqa
    ``alpha_feat``, ``alpha_text``; clipiqa ``prompts``, ``clip_model``, ``seed``, ``pos_embed``.
    """
    entry = metric_entry(name)
    if checkpoint is not None:
        if not entry.takes_checkpoint:
            raise ValueError(f"{entry.name} takes no checkpoint")
        options["checkpoint"] = checkpoint
    return entry.factory(device=device, as_loss=as_loss, **options)


# ---------------------------------------------------------------- full-reference metrics


def _images(inputs) -> list[torch.Tensor]:
    from sfd.iqa.metrics import load_inputs  # the same input handling as the no-reference metrics

    return load_inputs(inputs)


class FullReferenceMetric(nn.Module, ABC):
    """A metric of an image against its reference: ``metric(images, references)`` -> (N,) float64 scores."""

    name = ""
    lower_better = False
    score_range = "0, 1"
    needs_reference = True

    def __init__(self, device: str | torch.device | None = None, as_loss: bool = False, border: int = 0):
        super().__init__()
        if as_loss:
            raise ValueError(f"{self.name} has no as_loss mode (it is measured without gradients here)")
        self.device = resolve_device(device)
        self.border = border

    @abstractmethod
    def score_pair(self, img: torch.Tensor, ref: torch.Tensor, border: int) -> float:
        """The score of one (3, H, W) image against its reference."""

    def score_image(self, img: torch.Tensor, ref: torch.Tensor | None = None, border: int | None = None) -> float:
        if ref is None:
            raise ValueError(f"{self.name} is a full-reference metric: it needs the reference image")
        return self.score_pair(img, ref, self.border if border is None else border)

    def forward(self, inputs, references) -> torch.Tensor:
        images, refs = _images(inputs), _images(references)
        if len(images) != len(refs):
            raise ValueError(f"{len(images)} images but {len(refs)} references")
        return torch.tensor([self.score_image(a, b) for a, b in zip(images, refs)], dtype=torch.float64)

    def describe(self) -> dict[str, Any]:
        return {"metric": self.name, "lower_better": self.lower_better, "score_range": self.score_range}

    def extra_repr(self) -> str:
        return f"name={self.name!r}, lower_better={self.lower_better}, border={self.border}"


class PSNR(FullReferenceMetric):
    """PSNR (dB) on BT.601 Y rounded like MATLAB, ``border`` pixels shaved, float64 (docs/evaluation.md)."""

    name = "psnr"
    score_range = "0, inf"

    def score_pair(self, img, ref, border):
        from sfd.evaluate.metrics import psnr

        return float(psnr(img, ref, border=border))


class SSIM(FullReferenceMetric):
    """SSIM (Wang et al. 2004) on BT.601 Y rounded like MATLAB, ``border`` pixels shaved, float64."""

    name = "ssim"

    def score_pair(self, img, ref, border):
        from sfd.evaluate.metrics import ssim

        return float(ssim(img, ref, border=border))


class Perceptual(FullReferenceMetric):
    """LPIPS ("lpips" = LPIPS's default AlexNet, "lpips-alex", "lpips-vgg") or DISTS ("dists") on whole
    RGB images; ``weights``: the backbone file (None: the ImageNet files, see perceptual.py) or "random"."""

    lower_better = True

    def __init__(self, name: str, device=None, as_loss: bool = False, weights: str | Path | None = None):
        from sfd.evaluate.perceptual import DISTS, LPIPS

        self.name = name
        super().__init__(device, as_loss)
        self.net = (DISTS(weights) if name == "dists" else LPIPS(name[6:] or "alex", weights)).to(self.device)
        self.random_weights = self.net.random_weights
        self.description = self.net.description

    def score_pair(self, img, ref, border):
        return float(self.net(img[None].float().to(self.device), ref[None].float().to(self.device))[0])

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"backbone": self.description, "random_weights": self.random_weights}


# ---------------------------------------------------------------- no-reference metrics (sfd.iqa.metrics)


def _with_protocol(options: dict) -> dict:
    """The CLIP metrics' image protocol may come as its fields (mode, max_side, crop, pad)."""
    from sfd.iqa.metrics import ImageProtocol

    fields = {k: options.pop(k) for k in ("mode", "max_side", "crop", "pad") if k in options}
    if fields:
        if "protocol" in options:
            raise ValueError(f"give either protocol= or its fields {sorted(fields)}, not both")
        options["protocol"] = ImageProtocol(**fields)
    return options


def _sfd_iqa(device=None, as_loss=False, checkpoint=None, **options):
    from sfd.iqa.metrics import SFDIQA

    if checkpoint is None:
        raise ValueError("sfd-iqa needs checkpoint=: an sfd training checkpoint (e.g. trained with configs/iqa.yml)")
    return SFDIQA(checkpoint, device=device, as_loss=as_loss, **_with_protocol(options))


def _clipiqa(device=None, as_loss=False, **options):
    from sfd.iqa.metrics import CLIPIQA

    return CLIPIQA(device=device, as_loss=as_loss, **_with_protocol(options))


def _niqe(device=None, as_loss=False, **options):
    from sfd.iqa.metrics import NIQE

    return NIQE(device=device, as_loss=as_loss, **options)


register_metric(
    "psnr",
    PSNR,
    mode="fr",
    lower_better=False,
    score_range=PSNR.score_range,
    description="PSNR (dB) on BT.601 Y like MATLAB, border shaved",
)
register_metric(
    "ssim",
    SSIM,
    mode="fr",
    lower_better=False,
    score_range=SSIM.score_range,
    description="SSIM on BT.601 Y like MATLAB, border shaved",
)
for _name, _what in (
    ("lpips", "LPIPS v0.1, AlexNet"),
    ("lpips-alex", "LPIPS v0.1, AlexNet"),
    ("lpips-vgg", "LPIPS v0.1, VGG16"),
    ("dists", "DISTS"),
):
    register_metric(
        _name,
        lambda _n=_name, **kw: Perceptual(_n, **kw),
        mode="fr",
        lower_better=True,
        score_range="0, 1",
        description=f"{_what} (needs ImageNet backbone weights)",
    )
register_metric(
    "niqe",
    _niqe,
    mode="nr",
    lower_better=True,
    score_range="0, ~100",
    description="NIQE (MATLAB algorithm), opinion-unaware",
)
register_metric(
    "sfd-iqa",
    _sfd_iqa,
    mode="nr",
    lower_better=False,
    score_range="0, 1",
    aliases=("sfdiqa",),
    description="SFD-IQA from a trained checkpoint's Feat-D and prompt pairs",
    takes_checkpoint=True,
)
register_metric(
    "clipiqa",
    _clipiqa,
    mode="nr",
    lower_better=False,
    score_range="0, 1",
    aliases=("clip-iqa",),
    description="zero-shot CLIP-IQA (antonym prompts)",
)
