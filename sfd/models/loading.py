"""One entry point for every generator a user may name: ``load_generator(spec)``.

``spec`` is one of
* a named model (``realesrgan-x4plus``, ``realsr-df2k-x4``, ``realesr-animevideov3-x4``): ncnn files
  inside registry packages;
* an ncnn model (RRDBNet or Compact): a ``.param`` or ``.bin`` path (its sibling is found by name);
* an sfd training checkpoint (a dict with ``generator``; its EMA is preferred when present);
* anything spandrel loads: ``.pth``/``.pt``/``.ckpt``/``.safetensors`` in ESRGAN old/new layouts,
  BasicSR ``params``/``params_ema``, SwinIR, and the other architectures spandrel knows.

The returned module is spandrel's own architecture class (for RRDBNet:
``spandrel.architectures.ESRGAN.ESRGAN``, for SwinIR: ``spandrel.architectures.SwinIR.SwinIR``),
so its ``state_dict()`` seeds an sfd generator and round-trips through spandrel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from sfd import checkpoint
from sfd.models import ncnn

__all__ = ["LoadedGenerator", "load_generator", "generator_weights"]

CHECKPOINT_SUFFIXES = {".pth", ".pt", ".ckpt", ".safetensors"}


@dataclass
class LoadedGenerator:
    model: nn.Module  # in eval mode, on the requested device
    scale: int
    architecture: str  # spandrel's architecture id, e.g. "ESRGAN", "SwinIR"
    source: str  # human-readable: what was loaded from where
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    size_multiple: int = 1  # input H and W must be multiples of this (we pad)
    min_size: int = 0
    supports_half: bool = True
    supports_bfloat16: bool = True


def generator_weights(obj: dict, path: Path, prefer_ema: bool = True) -> tuple[dict, str]:
    """The generator's state dict in a loaded model file, and where it came from (for ``source``).

    An sfd training checkpoint is read by ``sfd.checkpoint`` (its EMA first); anything else is
    unwrapped by spandrel's own canonicalisation (``params_ema`` before ``params``, ``module.`` prefixes...).
    """
    import spandrel

    if isinstance(obj.get("generator"), dict) and "config" in obj:  # an sfd training checkpoint
        ckpt = checkpoint.from_dict(obj, str(path))
        use_ema = prefer_ema and ckpt.generator_ema is not None
        entry = "generator_ema" if use_ema else "generator"
        it = f", iteration {ckpt.iteration}" if "iteration" in obj else ""
        return (ckpt.generator_ema if use_ema else ckpt.generator), f"{path} (sfd checkpoint, {entry}{it})"
    if isinstance(obj.get("generator"), dict):  # another project's {"generator": ..., ...} layout
        obj = {"generator": obj["generator"]}
    elif not prefer_ema and isinstance(obj.get("params"), dict):  # BasicSR's raw weights, not its EMA
        obj = {"params": obj["params"]}
    sd = spandrel.canonicalize_state_dict(obj)
    # Which entry spandrel unwrapped: the one whose tensors are the chosen ones (prefixes aside).
    first = next(iter(sd.values()), None)
    entry = next((k for k, v in obj.items() if isinstance(v, dict) and any(t is first for t in v.values())), None)
    return sd, f"{path} ({entry})" if entry else str(path)


def _from_state_dict(sd: dict, source: str, device: str | torch.device) -> LoadedGenerator:
    import spandrel

    try:
        desc = spandrel.ModelLoader().load_from_state_dict(sd)
    except spandrel.UnsupportedModelError as err:
        keys = ", ".join(list(sd)[:5])
        raise ValueError(f"{source}: spandrel does not recognise this architecture (first keys: {keys})") from err
    if not isinstance(desc, spandrel.ImageModelDescriptor):
        raise ValueError(f"{source}: {desc.architecture.id} is not an image-to-image model")
    if desc.input_channels != 3 or desc.output_channels != 3:
        raise ValueError(f"{source}: {desc.input_channels}->{desc.output_channels} channels; sfd runs RGB models")
    req = desc.size_requirements
    if req.square:
        raise ValueError(f"{source}: {desc.architecture.id} needs square inputs, which sfd does not support")
    from sfd.models.archs import protect_input

    model = protect_input(desc.model.to(device).eval())  # RCAN scales its input in place
    for p in model.parameters():
        p.requires_grad_(False)
    return LoadedGenerator(
        model=model,
        scale=desc.scale,
        architecture=desc.architecture.id,
        source=source,
        hyperparameters=dict(getattr(model, "hyperparameters", {}) or {}),
        size_multiple=req.multiple_of,
        min_size=req.minimum,
        supports_half=desc.supports_half,
        supports_bfloat16=desc.supports_bfloat16,
    )


def _ncnn_pair(path: Path) -> tuple[Path, Path]:
    param, bin_ = path.with_suffix(".param"), path.with_suffix(".bin")
    for p in (param, bin_):
        if not p.is_file():
            raise FileNotFoundError(f"ncnn model needs both {param.name} and {bin_.name}; {p} is missing")
    return param, bin_


def _from_ncnn(param: Path, bin_: Path, source: str, device) -> LoadedGenerator:
    sd, what = ncnn.convert(param, bin_)
    return _from_state_dict(sd, f"{source} ({what})", device)


def _check_sfd_config(loaded: LoadedGenerator, config: dict, source: str) -> None:
    """The generator spandrel detected must be the one the training config describes."""
    gen = (config or {}).get("generator") or {}
    from sfd.models.archs import ARCHS

    spec = ARCHS.get(str(gen.get("arch", "")).lower())  # None for arch: auto (the file decided)
    arch = spec.spandrel_id if spec else None
    if arch and arch != loaded.architecture:
        raise ValueError(f"{source}: config says {gen['arch']} but the weights load as {loaded.architecture}")
    if gen.get("scale") and int(gen["scale"]) != loaded.scale:
        raise ValueError(
            f"{source}: config scale x{gen['scale']} but spandrel detects x{loaded.scale} "
            "(spandrel 0.4 cannot detect x3 RRDBNet)"
        )


def load_generator(
    spec: str | Path, device: str | torch.device = "cpu", prefer_ema: bool = True, allow_pickle: bool = False
) -> LoadedGenerator:
    """Load a generator by name or path; see the module docstring for what ``spec`` may be."""
    spec_str = str(spec)
    if spec_str in ncnn.NAMED_MODELS:
        param, bin_ = ncnn.named_model_files(spec_str)
        return _from_ncnn(param, bin_, spec_str, device)
    path = Path(spec_str).expanduser()
    if path.is_dir() and Path(path, "checkpoints").is_dir():  # a run folder: its newest checkpoint
        path = checkpoint.find_latest(path) or path
    if path.suffix.lower() in (".param", ".bin"):
        return _from_ncnn(*_ncnn_pair(path), str(path), device)
    if not path.is_file():
        raise FileNotFoundError(
            f"model {spec_str!r}: no such file, and not a named model ({', '.join(ncnn.NAMED_MODELS)})"
        )
    if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise ValueError(f"{path}: unsupported model file type; use {sorted(CHECKPOINT_SUFFIXES)} or .param/.bin")
    obj = checkpoint.load_model_file(path, allow_pickle=allow_pickle)
    sd, source = generator_weights(obj, path, prefer_ema)
    loaded = _from_state_dict(sd, source, device)
    if "config" in obj and isinstance(obj.get("generator"), dict):
        _check_sfd_config(loaded, obj["config"] or {}, source)
    return loaded
