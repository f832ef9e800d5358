"""Generators: spandrel's SR architectures (sfd.models.archs), built from config, saved in layouts spandrel loads."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from sfd.checkpoint import find_latest
from sfd.config import Config, GeneratorConfig
from sfd.errors import UsageError
from sfd.models import archs

__all__ = [
    "PretrainedError",
    "build_generator",
    "init_generator",
    "resolve_pretrained",
    "initialise_from_config",
    "parameter_sha256",
]

RANDOM = "random"  # generator.pretrained value that opts into random initialisation


class PretrainedError(UsageError):
    """``generator.pretrained`` is unset or names a first stage that has no checkpoint yet (one-line message)."""


def build_generator(cfg: GeneratorConfig) -> nn.Module:
    """A randomly initialised generator (``generator.arch`` and ``generator.params``; sfd.models.archs), or,
    for ``arch: auto``, the network of ``generator.pretrained`` with its weights. Its ``state_dict()`` is what
    spandrel's loader detects."""
    if cfg.arch == archs.AUTO:
        return _pretrained_network(cfg)
    # rrdbnet and swinir from their own fields are known to round-trip (tests/test_archs.py); skip the rebuild
    legacy = cfg.arch in ("rrdbnet", "swinir") and not cfg.params
    return archs.build(cfg, check_roundtrip=not legacy)


def _pretrained_network(cfg: GeneratorConfig) -> nn.Module:
    """``arch: auto``: the architecture and hyperparameters of the file ``generator.pretrained`` names."""
    from sfd.models.loading import load_generator  # lazy: pulls in the ncnn converter

    spec = cfg.pretrained
    if spec in (None, RANDOM) or spec.startswith("run:") or Path(spec).expanduser().is_dir():
        raise UsageError(
            f"generator.arch=auto takes the architecture from a model file or a named model, not "
            f"generator.pretrained={spec}; name the architecture (sfd archs) or a file"
        )
    source = resolve_pretrained(spec)
    try:
        loaded = load_generator(source)
    except FileNotFoundError as err:
        raise PretrainedError(f"generator.pretrained={spec}: {err}") from err
    try:
        model, _ = archs.trainable_copy(loaded.model)
    except KeyError:
        raise UsageError(
            f"generator.pretrained={spec} is a {loaded.architecture} ({type(loaded.model).__name__}), which sfd "
            "does not train (sfd archs lists the architectures it does)"
        ) from None
    # generator.params may stay (e.g. a config written for this architecture) if the file agrees with them
    differ = [
        k
        for k, v in cfg.params.items()
        if k not in model.hyperparameters or not archs.same_value(v, model.hyperparameters[k])
    ]
    if differ:
        k = differ[0]
        raise UsageError(
            f"generator.arch=auto takes its hyperparameters from generator.pretrained={spec}, which has "
            f"{k}={model.hyperparameters.get(k)!r}, not generator.params.{k}={cfg.params[k]!r}: unset generator.params"
        )
    if loaded.scale != cfg.scale:
        raise UsageError(
            f"generator.pretrained={spec} is a x{loaded.scale} {loaded.architecture}, but generator.scale={cfg.scale}: "
            f"set generator.scale={loaded.scale}"
        )
    return model


def init_generator(model: nn.Module, spec: str) -> str:
    """Load weights from ``spec`` (any spandrel file, an sfd checkpoint, a named model) into ``model``.

    Returns a description of the source. Shapes must match the config's architecture exactly.
    """
    from sfd.models.loading import load_generator  # lazy: pulls in the ncnn converter

    loaded = load_generator(spec)
    state = loaded.model.state_dict()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(
            f"generator.pretrained={spec} ({loaded.architecture}, x{loaded.scale}) does not fit the configured "
            f"generator: {str(err).splitlines()[0]}"
        ) from err
    return loaded.source


def parameter_sha256(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over a state dict's names and tensor bytes (sorted by name): a generator's fingerprint."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


# ---------------------------------------------------------------- generator.pretrained


def _first_stage_command(name: str, output_dir: Path) -> str:
    # A run is named after its config file (configs/NAME.yml -> runs/NAME), so the command follows from the name.
    command = f"sfd train -c configs/{name}.yml"
    if output_dir != Path("runs"):
        command += f" --set train.output_dir={output_dir}"
    return command


def resolve_pretrained(spec: str | None, output_dir: str | Path = "runs") -> str | None:
    """What ``generator.pretrained`` loads: None for ``random``, else a spec ``load_generator`` takes.

    ``run:NAME`` and a run folder resolve to the run's newest checkpoint (whose EMA weights are
    then loaded). Raises ``PretrainedError`` when the value is unset or the run has no checkpoint.
    """
    if spec is None:
        raise PretrainedError(
            "generator.pretrained is not set: name the fidelity-oriented first stage (e.g. run:psnr_rrdb_x4), "
            "a checkpoint file or a named model, or set it to 'random' to start from random weights"
        )
    if spec == RANDOM:
        return None
    output_dir = Path(output_dir)
    if spec.startswith("run:"):
        name = spec[len("run:") :]
        run_dir = output_dir / name
        ckpt = find_latest(run_dir)
        if ckpt is None:
            raise PretrainedError(
                f"generator.pretrained={spec}: no checkpoint under {run_dir / 'checkpoints'}; "
                f"train the first stage first: {_first_stage_command(name, output_dir)}"
            )
        return str(ckpt)
    path = Path(spec).expanduser()
    if path.is_dir():
        ckpt = find_latest(path)
        if ckpt is None:
            raise PretrainedError(
                f"generator.pretrained={spec}: no checkpoint under {path / 'checkpoints'}; "
                f"train the first stage first: {_first_stage_command(path.name, path.parent)}"
            )
        return str(ckpt)
    from sfd.models import ncnn

    if spec not in ncnn.NAMED_MODELS and not path.is_file():
        raise PretrainedError(
            f"generator.pretrained={spec}: no such file, run folder (run:NAME) or named model "
            f"({', '.join(ncnn.NAMED_MODELS)})"
        )
    return spec


def initialise_from_config(model: nn.Module, cfg: Config) -> str:
    """Initialise ``model`` as ``cfg.generator.pretrained`` says; returns the source (``meta.generator.init``).

    Random weights are taken only when the config asks for them, and then an adversarial or
    perceptual run warns: the supplement starts those from a fidelity-oriented model.
    """
    from sfd.models import ncnn

    spec = cfg.generator.pretrained
    source = resolve_pretrained(spec, cfg.train.output_dir)
    first_stage = not (cfg.uses_clip or cfg.image_d.type or cfg.loss.perceptual > 0)
    if source is None:
        if not first_stage:
            warmup = f" (after {cfg.train.pixel_warmup} L1 warm-up iterations)" if cfg.train.pixel_warmup else ""
            warnings.warn(
                f"generator.pretrained=random: this run trains a randomly initialised generator{warmup}, "
                "not one initialised from a fidelity-oriented first stage as the supplement does",
                stacklevel=2,
            )
        return "random initialisation (generator.pretrained=random)"
    if spec in ncnn.NAMED_MODELS and not first_stage:
        warnings.warn(
            f"generator.pretrained={spec} is a GAN-trained model: a quick start, not the supplement's "
            "fidelity-oriented first stage",
            stacklevel=2,
        )
    try:
        described = init_generator(model, source)
    except FileNotFoundError as err:  # a mistyped path or a missing named-model package: one line for the CLI
        raise PretrainedError(f"generator.pretrained={spec}: {err}") from err
    return f"{described} [generator.pretrained={spec}]" if spec.startswith("run:") else described
