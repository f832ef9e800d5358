"""DualFormer-IQA: the opinion-unaware quality score of a trained DualFormer's two discriminators (Luo et al.,
ICCV 2023, section 5; their ``test_iqa`` script, MIT, read, not copied).

The score of an image is the mean spatial-D logit plus the mean spectral-D logit over a grid of crops:
raw logits, summed without weights, as their ensemble does. Higher is better (a D's "real"), unbounded.
Crops [choice]: the discriminators' training size (``image_d.input_size``, 128 in
``configs/dualformer_rrdb_x4.yml``) every ``stride`` pixels (default half a crop), the last flush with the
border; their script crops 192 x 192 every 64 pixels with a Swin built for 192 inputs, which our
one-window Transformers refuse (``sfd.models.spectral_d``). Images smaller than a crop cannot be scored.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from sfd.metrics.base import IQAMetric, TooSmall, Weights
from sfd.models.discriminators import build_discriminators

__all__ = ["DualFormerIQA", "crop_starts"]


def crop_starts(length: int, crop: int, stride: int) -> list[int]:
    """0, stride, 2 stride, ... while a crop fits, then one flush with the end if the last left a gap."""
    if length < crop:
        return []
    starts = list(range(0, length - crop + 1, stride))
    return starts if starts[-1] == length - crop else [*starts, length - crop]


class DualFormerIQA(IQAMetric):
    """``create_metric("dualformer-iqa", weights=CKPT)``: CKPT is an sfd checkpoint (or run folder) trained
    with a Transformer ``image_d`` and/or a ``spectral_d`` (``configs/dualformer_rrdb_x4.yml``)."""

    name = "dualformer-iqa"
    lower_better = False
    score_range = "-inf, inf"

    def __init__(
        self,
        weights: str | Path | None = None,
        device: str | torch.device | None = None,
        as_loss: bool = False,
        stride: int | None = None,
        batch: int = 16,
    ):
        super().__init__(device, as_loss)
        if weights is None:
            raise ValueError(
                "dualformer-iqa needs a DualFormer checkpoint (weights=CKPT; --dualformer-checkpoint on the command "
                "line), trained with configs/dualformer_rrdb_x4.yml"
            )
        from sfd import checkpoint as ckpt_io

        ckpt = ckpt_io.load(weights)
        cfg = ckpt.config
        parts = [k for k in ("image_d", "spectral_d") if k in ckpt.discriminators]
        if cfg.image_d.type != "transformer":
            parts = [k for k in parts if k != "image_d"]
        if not parts:
            raise ValueError(
                f"{ckpt.path} has neither DualFormer discriminator (a transformer image_d or a spectral_d; "
                f"it has {sorted(ckpt.discriminators) or 'none'}): train one with configs/dualformer_rrdb_x4.yml"
            )
        present = dataclasses.replace(  # build only the discriminators scored here
            cfg,
            feat_d=dataclasses.replace(cfg.feat_d, enabled=False),
            tg_d=dataclasses.replace(cfg.tg_d, enabled=False),
            sed_d=dataclasses.replace(cfg.sed_d, enabled=False),
            image_d=dataclasses.replace(cfg.image_d, type="transformer" if "image_d" in parts else None),
            spectral_d=dataclasses.replace(cfg.spectral_d, enabled="spectral_d" in parts),
        )
        built = build_discriminators(present)
        self.discs = torch.nn.ModuleDict({k: built[k] for k in parts})
        for k, d in self.discs.items():
            d.load_state_dict(ckpt.discriminators[k])
        self.discs.eval().requires_grad_(False)  # eval: no stochastic depth
        self.crop = cfg.data.patch_size
        self.stride = stride or self.crop // 2
        self.batch = batch
        self.checkpoint, self.iteration = ckpt.path, ckpt.iteration
        self.to(self.device)

    def weights(self) -> Weights:
        parts = " + ".join({"image_d": "spatial", "spectral_d": "spectral"}[k] for k in self.discs)
        return Weights(
            notes=f"DualFormer's {parts} D logits from {self.checkpoint} (iteration {self.iteration}), "
            f"{self.crop} px crops every {self.stride} px",
            short=f"{Path(str(self.checkpoint)).name} ({parts})",
        )

    def describe(self) -> dict[str, Any]:
        return super().describe() | {
            "checkpoint": str(self.checkpoint),
            "iteration": self.iteration,
            "discriminators": list(self.discs),
            "crop": self.crop,
            "stride": self.stride,
        }

    def crops(self, img: torch.Tensor) -> torch.Tensor:
        """(K, 3, crop, crop): the grid of crops this metric scores."""
        _, h, w = img.shape
        ys, xs = crop_starts(h, self.crop, self.stride), crop_starts(w, self.crop, self.stride)
        if not ys or not xs:
            raise TooSmall(f"{self.name} needs images of at least {self.crop}x{self.crop}, got {h}x{w}")
        c = self.crop
        return torch.stack([img[:, y : y + c, x : x + c] for y in ys for x in xs])

    def score_one(self, img: torch.Tensor) -> dict[str, torch.Tensor]:
        crops = self.crops(img)
        out = {}
        for k, d in self.discs.items():
            logits = torch.cat([d(part) for part in crops.split(self.batch)])
            out["s_spatial" if k == "image_d" else "s_spectral"] = logits.mean()
        return {"score": sum(out.values()), **out}
