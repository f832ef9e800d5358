"""One entry point for every generator a user may name: ``load_generator(spec)``.

``spec`` is one of
* a named model (``realesrgan-x4plus``, ``realsr-df2k-x4``): ncnn files inside registry packages;
* an ncnn model: a ``.param`` or ``.bin`` path (its sibling is found by name);
* an sfd training checkpoint (a dict with ``generator``; its EMA is preferred when present);
* anything spandrel loads: ``.pth``/``.pt``/``.ckpt``/``.safetensors`` in ESRGAN old/new layouts,
  BasicSR ``params``/``params_ema``, SwinIR, and the other architectures spandrel knows.

The returned module is spandrel's own architecture class (for RRDBNet:
``spandrel.architectures.ESRGAN.ESRGAN``, for SwinIR: ``spandrel.architectures.SwinIR.SwinIR``),
so its ``state_dict()`` seeds an sfd generator and round-trips through spandrel.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from sfd.models import ncnn

__all__ = ["LoadedGenerator", "load_generator", "load_checkpoint_file", "generator_state_dict"]

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


def load_checkpoint_file(path: str | Path, allow_pickle: bool = False) -> dict:
    """A ``.safetensors`` or torch file as a dict, loaded without running pickled code by default."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # SafetensorError on a truncated or foreign file
            reason = " ".join(str(err).split())[:160]
            raise ValueError(f"{path} is not a readable .safetensors file ({reason})") from err
    from sfd.checkpoint import verify_checksum

    verify_checksum(path)  # an sfd checkpoint's NAME.sha256: flipped bits load silently otherwise
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path} holds pickled Python objects that torch's safe loader refuses ({err}). "
            "If you trust the file, load it with allow_pickle=True (CLI: --allow-pickle)."
        ) from err
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as err:  # truncated zip, random bytes (struct.error, EOFError, RuntimeError, ...)
        reason = " ".join(str(err).split())[:120] or type(err).__name__
        raise ValueError(f"{path} is not a model file torch can read ({type(err).__name__}: {reason})") from err
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a state dict or checkpoint dict")
    return obj


def _strip_prefixes(sd: dict, prefixes=("module.", "netG.")) -> dict:
    for prefix in prefixes:
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


def generator_state_dict(obj: dict, prefer_ema: bool = True) -> tuple[dict, str]:
    """The generator's state dict inside a checkpoint dict, and which entry it came from."""
    if "generator" in obj and isinstance(obj["generator"], dict):  # sfd training checkpoint
        if prefer_ema and isinstance(obj.get("generator_ema"), dict):
            return obj["generator_ema"], "generator_ema"
        return obj["generator"], "generator"
    order = ["params_ema", "params-ema", "params"] if prefer_ema else ["params", "params_ema", "params-ema"]
    for key in order + ["model_state_dict", "state_dict", "model", "net"]:
        if isinstance(obj.get(key), dict):
            return _strip_prefixes(obj[key]), key
    if len(obj) == 1 and isinstance(next(iter(obj.values())), dict):
        key = next(iter(obj))
        return _strip_prefixes(obj[key]), key
    return _strip_prefixes(obj), "state dict"


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
    model = desc.model.to(device).eval()
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
    sd, info = ncnn.rrdbnet_state_dict(param, bin_)
    storage = "/".join(info["weight_storage"])
    return _from_state_dict(sd, f"{source} (ncnn RRDBNet {info['num_blocks']} blocks, {storage} weights)", device)


def _check_sfd_config(loaded: LoadedGenerator, config: dict, source: str) -> None:
    """The generator spandrel detected must be the one the training config describes."""
    gen = (config or {}).get("generator") or {}
    arch = {"rrdbnet": "ESRGAN", "swinir": "SwinIR"}.get(str(gen.get("arch", "")).lower())
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
        from sfd.checkpoint import find_latest

        path = find_latest(path) or path
    if path.suffix.lower() in (".param", ".bin"):
        return _from_ncnn(*_ncnn_pair(path), str(path), device)
    if not path.is_file():
        raise FileNotFoundError(
            f"model {spec_str!r}: no such file, and not a named model ({', '.join(ncnn.NAMED_MODELS)})"
        )
    if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise ValueError(f"{path}: unsupported model file type; use {sorted(CHECKPOINT_SUFFIXES)} or .param/.bin")
    obj = load_checkpoint_file(path, allow_pickle=allow_pickle)
    sd, entry = generator_state_dict(obj, prefer_ema)
    if "generator" in obj and isinstance(obj["generator"], dict):
        it = obj.get("iteration")
        source = f"{path} (sfd checkpoint, {entry}" + (f", iteration {it})" if it is not None else ")")
        loaded = _from_state_dict(sd, source, device)
        _check_sfd_config(loaded, obj.get("config") or {}, source)
        return loaded
    return _from_state_dict(sd, f"{path} ({entry})" if entry != "state dict" else str(path), device)
