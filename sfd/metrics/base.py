"""What every metric of the registry shares: its inputs, its calling convention, how it says what
its scores come from (``Weights``), and the two base classes (full-reference and no-reference)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from sfd.data.io import load_rgb, to_tensor
from sfd.device import resolve_device

__all__ = ["Inputs", "load_inputs", "Weights", "NO_WEIGHTS", "TooSmall", "FullReferenceMetric", "IQAMetric"]

Inputs = torch.Tensor | str | Path | Sequence[torch.Tensor | str | Path]


def load_inputs(inputs: Inputs) -> list[torch.Tensor]:
    """Any accepted input -> a list of (3, H, W) float tensors (images stay separate: sizes may differ)."""
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    if isinstance(inputs, torch.Tensor):
        if inputs.dim() == 3:
            inputs = inputs[None]
        if inputs.dim() != 4:
            raise ValueError(f"expected an (N, 3, H, W) or (3, H, W) tensor, got shape {tuple(inputs.shape)}")
        inputs = list(inputs)
    images = []
    for item in inputs:
        img = to_tensor(load_rgb(item)) if isinstance(item, (str, Path)) else item
        if img.dim() == 4 and img.shape[0] == 1:
            img = img[0]
        if img.dim() != 3 or img.shape[0] not in (1, 3):
            raise ValueError(f"expected an RGB image (3, H, W), got shape {tuple(img.shape)}")
        images.append(img.expand(3, -1, -1) if img.shape[0] == 1 else img)
    return images


class TooSmall(ValueError):
    """An image too small for a metric (NIQE needs two 96x96 blocks): "n/a" in tables, not an error."""


@dataclass(frozen=True)
class Weights:
    """What a built metric's scores come from, said the same way by every command that prints them.

    ``notes``: the metric's line in a report's notes (what it measures, with which weights);
    ``short``: the weights alone, for a table column; ``tag``: appended to the metric's label
    (e.g. " (RANDOM CLIP)"); ``random``: random weights, whose scores measure nothing;
    ``warning``: why the scores are not the published metric's (None when they are).
    """

    notes: str = ""
    short: str = "—"
    tag: str = ""
    random: bool = False
    warning: str | None = None


NO_WEIGHTS = Weights()


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

    def weights(self) -> Weights:
        return NO_WEIGHTS

    def score_image(self, img: torch.Tensor, ref: torch.Tensor | None = None, border: int | None = None) -> float:
        if ref is None:
            raise ValueError(f"{self.name} is a full-reference metric: it needs the reference image")
        return self.score_pair(img, ref, self.border if border is None else border)

    def forward(self, inputs: Inputs, references: Inputs) -> torch.Tensor:
        images, refs = load_inputs(inputs), load_inputs(references)
        if len(images) != len(refs):
            raise ValueError(f"{len(images)} images but {len(refs)} references")
        return torch.tensor([self.score_image(a, b) for a, b in zip(images, refs)], dtype=torch.float64)

    def describe(self) -> dict[str, Any]:
        return {"metric": self.name, "lower_better": self.lower_better, "score_range": self.score_range}

    def extra_repr(self) -> str:
        return f"name={self.name!r}, lower_better={self.lower_better}, border={self.border}"


class IQAMetric(nn.Module, ABC):
    """A no-reference metric; subclasses implement ``score_one`` for one (3, H, W) image.

    ``forward(inputs)`` returns one score per image, or with ``as_loss=True`` a differentiable scalar
    that is lower for better images. Images are scored one at a time, so a score never depends on
    the other images of a batch.
    """

    name: str = ""
    lower_better: bool = False
    score_range: str = "0, 1"  # pyiqa's notation: "min, max", "~" for rough bounds
    needs_reference = False

    def __init__(self, device: str | torch.device | None = None, as_loss: bool = False):
        super().__init__()
        self.device = resolve_device(device)
        self.as_loss = as_loss

    @abstractmethod
    def score_one(self, img: torch.Tensor) -> dict[str, torch.Tensor]:
        """Scores of one image on the device: ``{"score": ..., other components}``, 0-d tensors."""

    def weights(self) -> Weights:
        return NO_WEIGHTS

    def describe(self) -> dict[str, Any]:
        """What produced the scores (for output files): name, direction, weights, options."""
        return {"metric": self.name, "lower_better": self.lower_better, "score_range": self.score_range}

    def components(self, inputs: Inputs) -> list[dict[str, float]]:
        """Per image, the score and its parts (e.g. S_feat and S_text of SFD-IQA), as floats."""
        with torch.no_grad():
            return [{k: float(v) for k, v in self.score_one(self._prepare(img)).items()} for img in load_inputs(inputs)]

    def score_image(self, img: torch.Tensor, ref: torch.Tensor | None = None, border: int | None = None) -> float:
        """The score of one (3, H, W) image, as ``sfd eval`` asks every registry metric (``ref`` is unused)."""
        with torch.no_grad():
            return float(self.score_one(self._prepare(img))["score"])

    def _prepare(self, img: torch.Tensor) -> torch.Tensor:
        img = img.to(self.device, torch.float32)
        if not self.as_loss and img.numel() and float(img.max()) > 1.5:
            raise ValueError("image values go above 1.5: metrics take RGB in [0, 1], not 0-255")
        return img

    def forward(self, inputs: Inputs) -> torch.Tensor:
        with torch.set_grad_enabled(self.as_loss and torch.is_grad_enabled()):
            scores = torch.stack([self.score_one(self._prepare(img))["score"] for img in load_inputs(inputs)])
        if not self.as_loss:
            return scores.detach()
        # A lower-is-better quantity for optimisation; [0, 1] scores become 1 - score (>= 0).
        return scores.mean() if self.lower_better else (1 - scores).mean()

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, lower_better={self.lower_better}, "
            f"score_range={self.score_range!r}, as_loss={self.as_loss}"
        )
