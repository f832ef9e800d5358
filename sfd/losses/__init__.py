"""Losses: VGG19 perceptual, adversarial (vanilla/lsgan/hinge/ragan), and the CLIPIQA-loss ablation."""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.vgg import cfgs, make_layers

from sfd.models.frozen import FrozenModule
from sfd.weights import WeightsNotFoundError, imagenet_cache_path, imagenet_weights_path, random_weights_notice, seeded

__all__ = [
    "VGGWeightsError",
    "PerceptualLoss",
    "vgg19_layer_names",
    "d_adversarial_loss",
    "g_adversarial_loss",
    "clipiqa_loss",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGGWeightsError(WeightsNotFoundError):
    """ImageNet VGG19 weights for the perceptual loss are not on this machine."""


def _vgg19_features() -> nn.Sequential:
    """torchvision's VGG19 ``features`` alone (the 120M-parameter classifier is never needed)."""
    return make_layers(cfgs["E"], batch_norm=False)


def vgg19_layer_names() -> list[str]:
    """Names of torchvision's vgg19().features modules: conv1_1, relu1_1, ..., pool5."""
    names, block, idx = [], 1, 1
    for m in _vgg19_features():
        if isinstance(m, nn.Conv2d):
            names.append(f"conv{block}_{idx}")
        elif isinstance(m, nn.ReLU):
            names.append(f"relu{block}_{idx}")
            idx += 1
        else:
            names.append(f"pool{block}")
            block, idx = block + 1, 1
    return names


def _vgg_state_dict(weights: str, seed: int = 0) -> tuple[dict | None, str]:
    """(state dict or None for random, identity string). Never downloads: see ``sfd.weights``."""
    if weights == "auto":  # demos: pretrained when on this machine, else random (and said so)
        try:
            weights = str(imagenet_weights_path("vgg19", error=VGGWeightsError))
        except VGGWeightsError:
            weights = "random"
    if weights == "random":
        return None, f"random(seed={seed})"
    path = imagenet_weights_path("vgg19", None if weights == "imagenet" else weights, error=VGGWeightsError)
    state = torch.load(path, map_location="cpu", weights_only=True)
    identity = "torchvision:IMAGENET1K_V1" if path == imagenet_cache_path("vgg19") else f"file:{path}"
    return state, identity


class PerceptualLoss(FrozenModule):
    """Weighted L1 distance between VGG19 features of SR and HR (inputs RGB in [0, 1]).

    ``layers`` maps layer names to weights. A ``convX_Y`` layer is compared before its activation
    (as ESRGAN and Real-ESRGAN do), a ``reluX_Y`` layer after it.
    """

    def __init__(self, layers: dict[str, float], weights: str = "imagenet", seed: int = 0):
        super().__init__()
        names = vgg19_layer_names()
        unknown = [n for n in layers if n not in names]
        if unknown:
            raise ValueError(f"unknown VGG19 layers {unknown}; valid: {names}")
        state, self.identity = _vgg_state_dict(weights, seed)
        self.pretrained = state is not None
        with seeded(seed):
            features = _vgg19_features()
        if state is not None:
            features.load_state_dict(
                {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
            )
        else:
            notice = random_weights_notice(
                "the VGG19 perceptual loss", "it is not perceptual", f"loss.vgg_weights={weights}"
            )
            warnings.warn(notice, stacklevel=2)
        last = max(names.index(n) for n in layers)
        self.features = features[: last + 1].eval().requires_grad_(False)
        for m in self.features:  # an in-place ReLU would overwrite the conv output tapped just before it
            if isinstance(m, nn.ReLU):
                m.inplace = False
        self.index = {names.index(n): w for n, w in layers.items()}
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def _features(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        x = (x - self.mean) / self.std
        out = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.index:
                out[i] = x
        return out

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        f_sr = self._features(sr)
        with torch.no_grad():
            f_hr = self._features(hr)
        return sum(w * F.l1_loss(f_sr[i], f_hr[i]) for i, w in self.index.items())


# ---------------------------------------------------------------- adversarial


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def d_adversarial_loss(real: torch.Tensor, fake: torch.Tensor, gan_type: str) -> torch.Tensor:
    """Discriminator loss on logits of real (HR) and fake (SR, detached) inputs; any shape."""
    if gan_type == "vanilla":
        return _bce(real, 1.0) + _bce(fake, 0.0)
    if gan_type == "lsgan":
        return F.mse_loss(real, torch.ones_like(real)) + F.mse_loss(fake, torch.zeros_like(fake))
    if gan_type == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    if gan_type == "ragan":  # ESRGAN's relativistic average GAN
        return 0.5 * (_bce(real - fake.mean(), 1.0) + _bce(fake - real.mean(), 0.0))
    raise ValueError(f"unknown gan_type {gan_type!r}")


def g_adversarial_loss(fake: torch.Tensor, real: torch.Tensor | None, gan_type: str) -> torch.Tensor:
    """Generator loss on the D logits of SR; ``real`` (HR logits, no gradient) is needed by ragan only."""
    if gan_type == "vanilla":
        return _bce(fake, 1.0)
    if gan_type == "lsgan":
        return F.mse_loss(fake, torch.ones_like(fake))
    if gan_type == "hinge":
        return -fake.mean()
    if gan_type == "ragan":
        if real is None:
            raise ValueError("ragan needs the real logits")
        real = real.detach()
        return 0.5 * (_bce(real - fake.mean(), 0.0) + _bce(fake - real.mean(), 1.0))
    raise ValueError(f"unknown gan_type {gan_type!r}")


def clipiqa_loss(score_sr: torch.Tensor, score_hr: torch.Tensor | None, variant: str) -> torch.Tensor:
    """Supplement §4 "CLIPIQA loss": scores are P(positive prompt) in [0, 1]."""
    if variant == "maximize":
        return (1 - score_sr).mean()
    if variant == "match_hr":
        if score_hr is None:
            raise ValueError("match_hr needs the HR score")
        return (score_sr - score_hr.detach()).abs().mean()
    raise ValueError(f"unknown CLIPIQA-loss variant {variant!r}")
