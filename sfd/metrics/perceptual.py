"""LPIPS (AlexNet / VGG16) and DISTS, with the published heads and explicit backbone loading.

The learned parts ship in the registry packages: LPIPS's linear heads in ``lpips``
(``weights/v0.1/{alex,vgg}.pth``) and DISTS's alpha/beta in ``dists-pytorch`` (``weights.pt``).
The ImageNet backbones are torchvision's AlexNet / VGG16 weight files, which those packages
download at run time. Here they are looked up, in order, at

1. an explicit ``weights=PATH``;
2. ``$SFD_ALEXNET_WEIGHTS`` / ``$SFD_VGG16_WEIGHTS``;
3. torchvision's cache, ``$TORCH_HOME/hub/checkpoints/<file>`` (where torchvision puts them).

Nothing is downloaded; a missing file raises ``BackboneWeightsMissing`` naming the file, its
URL and both ways to supply it. ``weights="random"`` builds a seeded random backbone instead:
for tests only, and every score it gives is flagged (``.random_weights``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from sfd.metrics.base import FullReferenceMetric, Weights
from sfd.weights import WeightsNotFoundError, imagenet_weights_path, seeded

__all__ = ["BackboneWeightsMissing", "backbone_weights_path", "LPIPS", "DISTS", "Perceptual"]

_BACKBONES = {"alexnet": torchvision.models.alexnet, "vgg16": torchvision.models.vgg16}
RANDOM_SEED = 0


class BackboneWeightsMissing(WeightsNotFoundError):
    """ImageNet AlexNet/VGG16 weights for LPIPS or DISTS are not on this machine."""


def _package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the package providing {package} is not installed")
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed {package}")
    return path


def backbone_weights_path(arch: str, weights: str | Path | None = None) -> Path:
    """Where the ImageNet weights of ``arch`` ('alexnet' or 'vgg16') are (the policy of ``sfd.weights``)."""
    return imagenet_weights_path(arch, weights, error=BackboneWeightsMissing)


def _features(arch: str, weights: str | Path | None) -> tuple[nn.Sequential, bool, str]:
    """torchvision ``arch``.features, frozen, with (is_random, description).

    Only the convolutional part is used: it is built without initialising the big classifier
    (which would cost seconds), then filled from the file or from a seeded random init.
    """
    with torch.device("meta"):
        net = _BACKBONES[arch](weights=None)
    features = net.features.to_empty(device="cpu")
    if weights == "random":
        with seeded(RANDOM_SEED):
            for layer in features:
                if isinstance(layer, nn.Conv2d):
                    layer.reset_parameters()
        random, desc = True, f"{arch} RANDOM weights (seed {RANDOM_SEED}; not a real perceptual metric)"
    else:
        path = backbone_weights_path(arch, weights)
        state = torch.load(path, map_location="cpu", weights_only=True)
        conv_state = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
        try:
            features.load_state_dict(conv_state)
        except RuntimeError as err:
            raise ValueError(f"{path} is not a torchvision {arch} state dict: {err}") from err
        random, desc = False, f"{arch} ImageNet weights from {path}"
    features.eval()
    for p in features.parameters():
        p.requires_grad_(False)
    return features, random, desc


def _run_taps(layers: nn.Sequential, x: torch.Tensor, taps: list[int]) -> list[torch.Tensor]:
    """Outputs of ``layers`` after each index in ``taps``."""
    outs = []
    for i, layer in enumerate(layers[: max(taps) + 1]):
        x = layer(x)
        if i in taps:
            outs.append(x)
    return outs


class LPIPS(nn.Module):
    """LPIPS v0.1 (Zhang et al. 2018): ``net`` 'alex' or 'vgg'. Inputs (N, 3, H, W) in [0, 1]."""

    _TAPS = {"alex": ("alexnet", [1, 4, 7, 9, 11]), "vgg": ("vgg16", [3, 8, 15, 22, 29])}

    def __init__(self, net: str = "alex", weights: str | Path | None = None):
        super().__init__()
        if net not in self._TAPS:
            raise ValueError(f"LPIPS net must be 'alex' or 'vgg', not {net!r}")
        arch, self.taps = self._TAPS[net]
        self.features, self.random_weights, backbone = _features(arch, weights)
        heads = torch.load(
            _package_file("lpips", "weights", "v0.1", f"{net}.pth"), map_location="cpu", weights_only=True
        )
        self.heads = nn.ParameterList(
            [nn.Parameter(heads[f"lin{i}.model.1.weight"], requires_grad=False) for i in range(5)]
        )
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.description = f"LPIPS-{net} v0.1 (heads from lpips; backbone: {backbone})"

    @torch.no_grad()
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        def feats(img):
            h = ((img * 2 - 1) - self.shift) / self.scale  # LPIPS takes [-1, 1], then its scaling layer
            return [f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-10) for f in _run_taps(self.features, h, self.taps)]

        total = 0
        for head, fx, fy in zip(self.heads, feats(x), feats(y)):
            total = total + F.conv2d((fx - fy) ** 2, head).mean(dim=(2, 3))
        return total.flatten()


class _L2Pool(nn.Module):
    """DISTS's replacement for max-pooling: L2 pooling with a 3x3 Hann window, stride 2."""

    def __init__(self, channels: int):
        super().__init__()
        a = np.hanning(5)[1:-1]
        g = torch.tensor(a[:, None] * a[None, :], dtype=torch.float32)
        self.register_buffer("window", (g / g.sum()).expand(channels, 1, 3, 3).contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(x**2, self.window, stride=2, padding=1, groups=x.shape[1])
        return (out + 1e-12).sqrt()


class DISTS(nn.Module):
    """DISTS (Ding et al. 2020) with the published alpha/beta. Inputs (N, 3, H, W) in [0, 1].

    Images are used at their own size (the official demo's optional resize to 256 is not applied).
    """

    _TAPS = [3, 8, 15, 22, 29]
    _CHANNELS = [3, 64, 128, 256, 512, 512]

    def __init__(self, weights: str | Path | None = None):
        super().__init__()
        features, self.random_weights, backbone = _features("vgg16", weights)
        for i, layer in enumerate(features):
            if isinstance(layer, nn.MaxPool2d):
                features[i] = _L2Pool(features[i - 2].out_channels)
        self.features = features
        ab = torch.load(_package_file("DISTS_pytorch", "weights.pt"), map_location="cpu", weights_only=True)
        self.register_buffer("alpha", ab["alpha"])
        self.register_buffer("beta", ab["beta"])
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.description = f"DISTS (alpha/beta from dists-pytorch; backbone: {backbone} with L2 pooling)"

    @torch.no_grad()
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx = [x] + _run_taps(self.features, (x - self.mean) / self.std, self._TAPS)
        fy = [y] + _run_taps(self.features, (y - self.mean) / self.std, self._TAPS)
        w_sum = self.alpha.sum() + self.beta.sum()
        alphas = torch.split(self.alpha / w_sum, self._CHANNELS, dim=1)
        betas = torch.split(self.beta / w_sum, self._CHANNELS, dim=1)
        structure = texture = 0
        c1 = c2 = 1e-6
        for a, b, f0, f1 in zip(alphas, betas, fx, fy):
            m0, m1 = f0.mean((2, 3), keepdim=True), f1.mean((2, 3), keepdim=True)
            v0, v1 = ((f0 - m0) ** 2).mean((2, 3), keepdim=True), ((f1 - m1) ** 2).mean((2, 3), keepdim=True)
            cov = (f0 * f1).mean((2, 3), keepdim=True) - m0 * m1
            texture = texture + (a * (2 * m0 * m1 + c1) / (m0**2 + m1**2 + c1)).sum(1, keepdim=True)
            structure = structure + (b * (2 * cov + c2) / (v0 + v1 + c2)).sum(1, keepdim=True)
        return (1 - (texture + structure)).flatten()


# ---------------------------------------------------------------- the registry's metrics


class Perceptual(FullReferenceMetric):
    """LPIPS ("lpips": ``net`` "alex" [choice, LPIPS's own default] or "vgg"; "lpips-alex", "lpips-vgg" fix
    it) or DISTS ("dists") on whole RGB images; ``weights``: the backbone file (None: the ImageNet
    files, see the module docstring) or "random" (tests only)."""

    lower_better = True

    def __init__(
        self, name: str, device=None, as_loss: bool = False, weights: str | Path | None = None, net: str | None = None
    ):
        self.name = name
        super().__init__(device, as_loss)
        if name == "dists":
            if net is not None:
                raise ValueError("dists has no net option (its backbone is VGG16)")
            self.net = DISTS(weights)
        else:
            fixed = name[len("lpips-") :] or None
            if net is not None and fixed is not None and net != fixed:
                raise ValueError(f"{name} is LPIPS-{fixed}; net={net!r} contradicts it (use lpips with net=)")
            self.net = LPIPS(fixed or net or "alex", weights)
        self.net_name = "vgg16" if name == "dists" else fixed or net or "alex"
        self.net.to(self.device)
        self.random_weights = self.net.random_weights
        self.description = self.net.description

    def weights(self) -> Weights:
        what = "DISTS" if self.name == "dists" else "LPIPS"
        return Weights(
            notes=self.description,
            short=self.description.split("backbone: ", 1)[-1].rstrip(")"),
            # "lpips" says its network when it is not the default: its label is the same for both
            tag=(" (vgg)" if self.name == "lpips" and self.net_name == "vgg" else "")
            + (" (RANDOM weights)" if self.random_weights else ""),
            random=self.random_weights,
            warning=f"RANDOM backbone weights: its values are not {what}" if self.random_weights else None,
        )

    def score_pair(self, img, ref, border):
        return float(self.net(img[None].float().to(self.device), ref[None].float().to(self.device))[0])

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"backbone": self.description, "random_weights": self.random_weights}
