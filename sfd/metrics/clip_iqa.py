"""The metrics on CLIP features: SFD-IQA (from a trained checkpoint) and zero-shot CLIP-IQA.

The networks run in float32 in eval mode, so scores are deterministic.

How an image of any size reaches CLIP (which needs sides that are multiples of 32) is the
``ImageProtocol`` [choice, docs/iqa.md]; the default, ``mode="auto"``, feeds the whole image,
reflect-padded at the bottom/right to multiples of 32, when both sides are <= 1024 pixels, and
otherwise averages over a deterministic grid of 256x256 crops that covers the image. Feat-D's
score map is averaged over the original (unpadded) pixels only.
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from sfd.data.pixels import pad_reflect
from sfd.metrics.base import IQAMetric, Weights
from sfd.models.clip import CLIPWeightsError, ImageFeatures, LoadedCLIP, TextEncoder, load_clip
from sfd.models.discriminators import build_discriminators
from sfd.models.tg_d import tg_d_logits

__all__ = ["ImageProtocol", "SFDIQA", "CLIPIQA", "RANDOM_CLIP_WARNING", "with_protocol"]

# Said once, for every output made with random CLIP weights (tables, notes, JSON, stderr, warnings).
RANDOM_CLIP_WARNING = "RANDOM CLIP weights ({identity}): these scores measure nothing about quality"


# ---------------------------------------------------------------- image protocol


@dataclass(frozen=True)
class ImageProtocol:
    """How an image of any size is fed to CLIP [choice]; see the module docstring.

    mode: "whole" (the whole image, padded or cropped to multiples of 32), "grid" (the mean over
    a deterministic grid of ``crop`` x ``crop`` crops covering the image, overlapping where the
    side is not a multiple of ``crop``), or "auto" (whole when both sides <= ``max_side``, else grid).
    pad: how a side reaches a multiple of 32: "reflect" or "replicate" padding at the bottom/right
    (the padded pixels are left out of Feat-D's mean), or "crop" (centre crop down to a multiple).
    """

    mode: Literal["auto", "whole", "grid"] = "auto"
    max_side: int = 1024
    crop: int = 256
    pad: Literal["reflect", "replicate", "crop"] = "reflect"

    def __post_init__(self) -> None:
        if self.mode not in ("auto", "whole", "grid"):
            raise ValueError(f"protocol mode must be auto, whole or grid, got {self.mode!r}")
        if self.pad not in ("reflect", "replicate", "crop"):
            raise ValueError(f"protocol pad must be reflect, replicate or crop, got {self.pad!r}")
        if self.crop <= 0 or self.crop % 32:
            raise ValueError(f"protocol crop must be a positive multiple of 32, got {self.crop}")

    def views(self, img: torch.Tensor) -> list[tuple[torch.Tensor, tuple[int, int]]]:
        """(3, H, W) -> [(view (1, 3, h', w') with h', w' multiples of 32, (valid h, valid w))]."""
        return [(view, valid) for view, valid, _ in self.placed_views(img)]

    def placed_views(self, img: torch.Tensor) -> list[tuple[torch.Tensor, tuple[int, int], tuple[int, int]]]:
        """``views`` with where each view's valid pixels lie in the image: (view, (h, w), (top, left))."""
        h, w = img.shape[-2:]
        whole = self.mode == "whole" or (self.mode == "auto" and max(h, w) <= self.max_side)
        if whole:
            return [self._fit(img, 0, 0)]
        return [
            self._fit(img[:, y : y + self.crop, x : x + self.crop], y, x)
            for y in _starts(h, self.crop)
            for x in _starts(w, self.crop)
        ]

    def _fit(self, img: torch.Tensor, y: int, x: int):
        h, w = img.shape[-2:]
        if self.pad == "crop":
            ch, cw = h // 32 * 32, w // 32 * 32
            if not ch or not cw:
                raise ValueError(f"a {h}x{w} image is smaller than 32x32: use pad='reflect' or 'replicate'")
            top, left = (h - ch) // 2, (w - cw) // 2
            return img[None, :, top : top + ch, left : left + cw], (ch, cw), (y + top, x + left)
        ph, pw = -h % 32, -w % 32
        if self.pad == "replicate":
            return F.pad(img[None], (0, pw, 0, ph), mode="replicate"), (h, w), (y, x)
        return pad_reflect(img[None], 0, pw, 0, ph), (h, w), (y, x)


def with_protocol(options: dict) -> dict:
    """The image protocol may come as its fields (mode, max_side, crop, pad) instead of ``protocol=``."""
    fields = {k: options.pop(k) for k in ("mode", "max_side", "crop", "pad") if k in options}
    if fields:
        if "protocol" in options:
            raise ValueError(f"give either protocol= or its fields {sorted(fields)}, not both")
        options["protocol"] = ImageProtocol(**fields)
    return options


def _starts(length: int, crop: int) -> list[int]:
    """Evenly spaced crop starts covering [0, length): the first at 0, the last flush with the end."""
    if length <= crop:
        return [0]
    n = math.ceil(length / crop)
    return [round(i * (length - crop) / (n - 1)) for i in range(n)]


class _CLIPMetric(IQAMetric):
    """A metric on CLIP features: holds the image tower, the protocol and the weights' identity."""

    def __init__(self, clip: LoadedCLIP, pos_embed: str, protocol: ImageProtocol, device, as_loss: bool):
        super().__init__(device, as_loss)
        self.clip = ImageFeatures(clip, pos_embed)
        self.protocol = protocol
        self.clip_model = clip.name
        self.clip_identity = clip.identity
        self.clip_pretrained = clip.pretrained
        if not clip.pretrained:
            warnings.warn(f"{self.name}: {self.weights().warning} (fine for tests and demos only)", stacklevel=3)

    def weights(self) -> Weights:
        random = not self.clip_pretrained
        notes = f"CLIP {self.clip_model} {self.clip_identity}, fp32, image protocol {asdict(self.protocol)}" + (
            f"; checkpoint {self.checkpoint}" if getattr(self, "checkpoint", None) else ""
        )
        return Weights(
            notes=notes,
            short=self.clip_identity + (" (RANDOM)" if random else ""),
            tag=" (RANDOM CLIP)" if random else "",
            random=random,
            warning=RANDOM_CLIP_WARNING.format(identity=self.clip_identity) if random else None,
        )

    def describe(self) -> dict[str, Any]:
        return super().describe() | {
            "clip": {"model": self.clip_model, "weights": self.clip_identity, "pretrained": self.clip_pretrained},
            "precision": "fp32",
            "protocol": asdict(self.protocol),
        }


# ---------------------------------------------------------------- SFD-IQA


def _load_clip_for_metric(model: str, weights: str, seed: int, context: str = "") -> LoadedCLIP:
    """``load_clip`` whose missing-weights error names the options of the metrics (not training's ``--set``)."""
    try:
        return load_clip(model, weights, seed=seed)
    except CLIPWeightsError as err:
        message = str(err).replace("--set clip.weights=PATH", "weights=PATH (sfd iqa/eval: --clip-weights PATH)")
        message = message.replace("clip.weights=random", "--clip-weights random")
        raise CLIPWeightsError(context + message) from None


def _same_weights(a: str, b: str) -> bool:
    """Provably the same CLIP weights: the same identity, or files with the same SHA-256 prefix."""
    if a == b:
        return True
    sha_a, sha_b = (re.search(r"sha256:([0-9a-f]+)", s) for s in (a, b))
    return bool(sha_a and sha_b and sha_a.group(1) == sha_b.group(1))


class SFDIQA(_CLIPMetric):
    """SFD-IQA = alpha_feat * S_feat + alpha_text * S_text, in [0, 1], higher is better (docs/iqa.md).

    S_feat: the mean of sigmoid(Feat-D logits) over the image's pixels; S_text: the mean over
    prompt pairs of sigmoid(d_i), the probability of the positive learned prompt. Over a grid of
    crops, both are averaged over the crops. Built from an sfd training checkpoint: its Feat-D,
    its prompt contexts and the CLIP it was trained with (rebuilt from the checkpoint's record;
    ``weights`` overrides where the CLIP weights come from).
    """

    name = "sfd-iqa"

    def __init__(
        self,
        checkpoint: str | Path | dict,
        device: str | torch.device | None = None,
        as_loss: bool = False,
        alpha_feat: float = 0.9,
        alpha_text: float = 0.1,
        weights: str | None = None,
        protocol: ImageProtocol | None = None,
    ):
        from sfd import checkpoint as ckpt_io

        if isinstance(checkpoint, dict):
            checkpoint = ckpt_io.from_dict(checkpoint)
        ckpt = checkpoint if isinstance(checkpoint, ckpt_io.Checkpoint) else ckpt_io.load(checkpoint)
        source = ckpt.path
        discs, cfg = ckpt.discriminators, ckpt.config
        if ckpt.kind != "sfd":
            raise ValueError(
                f"{source} has neither a Feat-D nor TG-D (discriminators: {sorted(discs) or 'none'}): "
                "SFD-IQA needs a checkpoint trained with feat_d and/or tg_d enabled, e.g. configs/iqa.yml"
            )
        alphas = {"feat": alpha_feat if "feat_d" in discs else 0.0, "text": alpha_text if "tg_d" in discs else 0.0}
        if sum(alphas.values()) <= 0:
            raise ValueError(f"alpha weights {alphas} leave nothing to score with the parts this checkpoint has")
        for part, key in (("Feat-D", "feat_d"), ("TG-D", "tg_d")):
            if key not in discs:
                warnings.warn(f"{source} has no {part}: SFD-IQA scores with the other part alone", stacklevel=2)

        clip = text_clip = self._rebuild_clip(ckpt, weights)
        if "tg_d" in discs and ckpt.clip_tg_d is not None:  # TG-D was trained on its own CLIP (tg_d.clip_model)
            text_clip = self._rebuild_clip(ckpt, weights, part="clip_tg_d")
        super().__init__(clip, cfg.clip.pos_embed, protocol or ImageProtocol(), device, as_loss)
        self.clip_tg_d = None  # TG-D's F_out extractor when it is not self.clip
        if text_clip is not clip:
            self.clip_tg_d = ImageFeatures(text_clip, cfg.clip.pos_embed)
            self.clip_tg_d_info = {"model": text_clip.name, "weights": text_clip.identity}
            self.clip_tg_d_info["pretrained"] = text_clip.pretrained
            if not text_clip.pretrained:
                warnings.warn(f"{self.name}: {self.weights().warning} (fine for tests and demos only)", stacklevel=2)
        total = sum(alphas.values())
        self.alphas = {k: v / total for k, v in alphas.items()}  # renormalised: the score stays in [0, 1]
        self.checkpoint = source
        self.iteration = ckpt.iteration

        text = TextEncoder(text_clip) if "tg_d" in discs else None
        present = dataclasses.replace(  # build only the parts the checkpoint holds
            cfg,
            feat_d=dataclasses.replace(cfg.feat_d, enabled="feat_d" in discs),
            tg_d=dataclasses.replace(cfg.tg_d, enabled="tg_d" in discs),
            image_d=dataclasses.replace(cfg.image_d, type=None),
        )
        built = build_discriminators(present, text)
        self.feat_d = None
        if "feat_d" in discs:
            self.feat_d = built["feat_d"]
            self.feat_d.load_state_dict(discs["feat_d"])
            self.feat_d.eval().requires_grad_(False)  # eval: spectral norm uses its stored vectors, no power step
        if "tg_d" in discs:
            tg_d = built["tg_d"]
            tg_d.load_state_dict(discs["tg_d"])
            with torch.no_grad():  # the prompts are fixed now: encode them once
                self.register_buffer("text_feats", tg_d.text_features(text).float())
            self.register_buffer("logit_scale", text.logit_scale.detach().clone())
        else:
            self.text_feats = None
        self.to(self.device)

    @staticmethod
    def _rebuild_clip(ckpt, weights: str | None, part: str = "clip") -> LoadedCLIP:
        """The run's CLIP (``part="clip"``) or TG-D's own (``"clip_tg_d"``); ``weights`` overrides either."""
        record = ckpt.meta.get(part) or {}
        model = record.get("model") or (ckpt.config.tg_d_clip_model if part == "clip_tg_d" else ckpt.config.clip.model)
        trained = record.get("weights")
        arg, seed = (weights, ckpt.config.clip.seed) if weights else ckpt.clip_weights(part)
        context = (
            f"{ckpt.path} was trained on the features of CLIP {model} with weights {trained or arg}; "
            "SFD-IQA needs those same weights: "
        )
        clip = _load_clip_for_metric(model, arg, seed, context)
        if trained and not _same_weights(clip.identity, trained):
            warnings.warn(
                f"{ckpt.path} was trained with CLIP weights {trained} but scores with {clip.identity}: "
                "unless these are the same weights, Feat-D and TG-D see features they were not trained on",
                stacklevel=3,
            )
        return clip

    def weights(self) -> Weights:
        w = super().weights()
        tg = self.clip_tg_d_info if getattr(self, "clip_tg_d", None) is not None else None
        if tg is None:
            return w
        random = w.random or not tg["pretrained"]
        identity = f"Feat-D {self.clip_identity}, TG-D {tg['model']} {tg['weights']}"
        return dataclasses.replace(
            w,
            notes=w.notes + f"; TG-D on CLIP {tg['model']} {tg['weights']}",
            short=identity + (" (RANDOM)" if random else ""),
            tag=" (RANDOM CLIP)" if random else "",
            random=random,
            warning=RANDOM_CLIP_WARNING.format(identity=identity) if random else None,
        )

    def describe(self) -> dict[str, Any]:
        out = super().describe() | {"checkpoint": self.checkpoint, "iteration": self.iteration, "alpha": self.alphas}
        if self.clip_tg_d is not None:
            out["clip_tg_d"] = dict(self.clip_tg_d_info)
        return out

    def score_one(self, img: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._score(img)[0]

    def _score(self, img: torch.Tensor) -> tuple[dict[str, torch.Tensor], list]:
        """The score and its parts, and per view of the protocol Feat-D's probability map over the view's
        valid pixels with the view's place in the image: [(map (h/2, w/2 rounded up), (h, w), (top, left))]."""
        need = ("m1", "m2", "m3") + (("out",) if self.text_feats is not None else ())
        maps, s_text = [], []
        for view, (h, w), place in self.protocol.placed_views(img):
            if self.clip_tg_d is None:
                feats = self.clip(view, need)
            else:  # Feat-D's pixel-wise features from the run's CLIP, F_out from TG-D's
                feats = self.clip(view, need[:3]) if self.feat_d is not None else {}
                if self.text_feats is not None:
                    feats["out"] = self.clip_tg_d(view, ("out",))["out"]
            if self.feat_d is not None:
                prob = torch.sigmoid(self.feat_d(feats))  # (1, 1, H/2, W/2)
                maps.append((prob[0, 0, : math.ceil(h / 2), : math.ceil(w / 2)], (h, w), place))
            if self.text_feats is not None:
                s_text.append(torch.sigmoid(tg_d_logits(feats["out"], self.text_feats, self.logit_scale)).mean())
        s_feat = [m.mean() for m, _, _ in maps]
        out = {}
        score = torch.zeros((), device=img.device)
        for key, parts in (("feat", s_feat), ("text", s_text)):
            if parts:
                out[f"s_{key}"] = torch.stack(parts).mean()
                score = score + self.alphas[key] * out[f"s_{key}"]
        return {"score": score, **out}, maps

    def quality_map(self, img: torch.Tensor) -> tuple[dict[str, float], torch.Tensor]:
        """The scores of one (3, H, W) image and Feat-D's "real" probability map at image size, (H, W) float32
        on the CPU, from the very pass that gives the score (docs/iqa.md, "Where the image looks fake").

        Feat-D judges every pixel of its H/2 output: each of its values covers a 2 x 2 block of image pixels
        (nearest, so no value is invented). Where grid crops overlap, a pixel gets the mean of the crops that
        cover it; pixels no view covers (``pad="crop"`` margins) are NaN.
        """
        if self.feat_d is None:
            raise ValueError(f"{self.checkpoint} has no Feat-D: SFD-IQA has no pixel-wise map without it")
        with torch.no_grad():
            out, maps = self._score(self._prepare(img))
        total = torch.zeros(img.shape[-2:], dtype=torch.float64)
        count = torch.zeros_like(total)
        for m, (h, w), (y, x) in maps:
            full = m.double().cpu().repeat_interleave(2, 0).repeat_interleave(2, 1)[:h, :w]
            total[y : y + h, x : x + w] += full
            count[y : y + h, x : x + w] += 1
        return {k: float(v) for k, v in out.items()}, (total / count).float()


# ---------------------------------------------------------------- CLIP-IQA


class CLIPIQA(_CLIPMetric):
    """Zero-shot CLIP-IQA (Wang et al., AAAI 2023), re-implemented: the softmax probability of the
    positive prompt of an antonym pair, averaged over pairs, with CLIP's logit scale.

    As in CLIP-IQA, the attention pool's positional embedding is dropped so that any size works
    (``pos_embed="interpolate"`` keeps it instead). Precision is fp32 (the official numbers come
    from an fp16 CLIP, pyiqa's from fp32: scores differ slightly).
    """

    name = "clipiqa"

    def __init__(
        self,
        device: str | torch.device | None = None,
        as_loss: bool = False,
        prompts: Sequence[Sequence[str]] = (("Good photo.", "Bad photo."),),
        clip_model: str = "RN50",
        weights: str = "openai",
        seed: int = 0,
        pos_embed: str = "drop",
        protocol: ImageProtocol | None = None,
    ):
        pairs = [tuple(p) for p in prompts]
        if not pairs or any(len(p) != 2 for p in pairs):
            raise ValueError(f"prompts must be a list of (positive, negative) pairs, got {prompts!r}")
        clip = _load_clip_for_metric(clip_model, weights, seed)
        super().__init__(clip, pos_embed, protocol or ImageProtocol(), device, as_loss)
        self.prompts = pairs
        text = TextEncoder(clip)
        with torch.no_grad():
            feats = F.normalize(text.encode_text([t for pair in pairs for t in pair]), dim=-1)
        self.register_buffer("text_feats", feats.reshape(len(pairs), 2, -1).float())
        self.register_buffer("logit_scale", text.logit_scale.detach().clone())
        self.to(self.device)

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"prompts": [list(p) for p in self.prompts]}

    def score_one(self, img: torch.Tensor) -> dict[str, torch.Tensor]:
        probs = [
            torch.sigmoid(tg_d_logits(self.clip(view, ("out",))["out"], self.text_feats, self.logit_scale)).mean()
            for view, _ in self.protocol.views(img)
        ]
        return {"score": torch.stack(probs).mean()}
