"""Pretrained weights: one lookup policy, one error type, one notice for random weights.

Policy: nothing is downloaded behind a user's back. ImageNet backbones (VGG19 for the perceptual
loss, AlexNet/VGG16 for LPIPS and DISTS) come from an explicit path, else an environment
variable, else torchvision's cache; ``sfd fetch-weights NAME`` downloads into that cache when a
user asks. Random weights are an explicit opt-in, and every output made with them says so.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = [
    "WeightsNotFoundError",
    "IMAGENET_BACKBONES",
    "imagenet_weights_path",
    "fetch_imagenet_weights",
    "seeded",
    "random_weights_notice",
    "describe_weights",
    "file_sha256",
]


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights are not on this machine; the message says how to provide them.

    Each case has its own subclass (CLIP, VGG19 of the perceptual loss, LPIPS/DISTS backbones),
    so callers can catch one of them or all of them.
    """


# name -> (torchvision weights enum attribute path, environment variable)
IMAGENET_BACKBONES = {
    "vgg19": ("VGG19_Weights", "SFD_VGG_WEIGHTS"),
    "vgg16": ("VGG16_Weights", "SFD_VGG16_WEIGHTS"),
    "alexnet": ("AlexNet_Weights", "SFD_ALEXNET_WEIGHTS"),
}


def _imagenet_url(name: str) -> str:
    import torchvision

    enum_name, _ = IMAGENET_BACKBONES[name]
    return getattr(torchvision.models, enum_name).IMAGENET1K_V1.url


def imagenet_cache_path(name: str) -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / _imagenet_url(name).rsplit("/", 1)[-1]


def imagenet_weights_path(
    name: str, explicit: str | Path | None = None, error: type[WeightsNotFoundError] = WeightsNotFoundError
) -> Path:
    """The file of torchvision's ImageNet ``name`` weights: ``explicit``, else ``$SFD_..._WEIGHTS``, else
    torchvision's cache. Never downloads; the error names every place looked at and how to fill one."""
    _, env = IMAGENET_BACKBONES[name]
    candidates = [Path(explicit).expanduser()] if explicit else []
    if os.environ.get(env):
        candidates.append(Path(os.environ[env]).expanduser())
    cache = imagenet_cache_path(name)
    candidates.append(cache)
    for path in candidates:
        if path.is_file():
            return path
    raise error(
        f"ImageNet {name} weights not found (looked at: {', '.join(map(str, candidates))}). "
        f"Run `sfd fetch-weights {name}` on a machine with network access (it writes {cache}), "
        f"or download {_imagenet_url(name)} and set {env}=/path/to/it"
    )


def fetch_imagenet_weights(name: str) -> Path:
    """Download torchvision's ImageNet ``name`` weights into its cache (what ``imagenet_weights_path`` reads)."""
    import torch

    path = imagenet_cache_path(name)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(_imagenet_url(name), str(path), hash_prefix=None, progress=True)
    return path


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in chunks (weights and checkpoints are hundreds of MB)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def seeded(seed: int):
    """Build random weights reproducibly without touching the caller's random state."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def random_weights_notice(what: str, consequence: str, how: str = "") -> str:
    """The one wording used wherever random weights stand in for pretrained ones."""
    text = f"{what} uses RANDOM weights, not pretrained ones: {consequence}"
    return text + (f" ({how})" if how else "")


def describe_weights(meta: dict) -> list[str]:
    """Plain statements of which CLIP/VGG weights a run used (random ones called out), from checkpoint meta."""
    notes = []
    if init := meta.get("generator", {}).get("init"):
        notes.append(f"generator init: {init}")
    # "clip_tg_d": TG-D's own CLIP, when the run gave it another extractor than Feat-D's (tg_d.clip_model).
    for key, role in (("clip", " (Feat-D)" if "clip_tg_d" in meta else ""), ("clip_tg_d", " (TG-D)")):
        if key not in meta:
            continue
        c, what = meta[key], f"CLIP {meta[key]['model']}{role}"
        if c["pretrained"]:
            notes.append(f"{what}: pretrained, weights {c['weights']}")
        else:
            notes.append(random_weights_notice(what, "semantic features are meaningless", c["weights"]))
    if "vgg" in meta:
        v = meta["vgg"]
        if v["pretrained"]:
            notes.append(f"VGG19: pretrained, weights {v['weights']}")
        else:
            notes.append(random_weights_notice("VGG19", "the perceptual loss is not perceptual", v["weights"]))
    return notes
