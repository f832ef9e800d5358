"""Training checkpoints: one layout, one loader that returns a described checkpoint.

In the spirit of spandrel's loader returning a described model, ``load(path)`` gives a
``Checkpoint``: the typed ``Config``, the state dicts, the generator to use (EMA first), the CLIP
record and the iteration. Inference (``sr``, ``eval``, ``iqa``, the demo) reads checkpoints
through this module and never imports the trainer. Layout (a plain dict, so that
``torch.load(weights_only=True)`` reads it; see docs/training.md):

    generator, generator_ema (or None), discriminators {feat_d, tg_d | image_d}, optimizers,
    schedulers, iteration, config (a dict of the Config), rng, meta {sfd_version, generator,
    clip, vgg, ...}, and optional extras (e.g. the real-world training-pair pool).
"""

from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sfd.config import Config
from sfd.weights import file_sha256
from sfd.yamlconfig import ConfigError, config_from_dict

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "CorruptCheckpoint",
    "load",
    "load_model_file",
    "from_dict",
    "save",
    "find_latest",
    "list_checkpoints",
    "load_latest_good",
    "prune",
    "read_best",
    "checksum_path",
    "verify_checksum",
]

# Names used by earlier versions -> today's names (old checkpoints keep loading).
_LEGACY_PARTS = {"lpp": "tg_d"}


class CheckpointError(ValueError):
    """A file that is not a readable sfd checkpoint (missing, truncated, corrupt or of another kind)."""


class CorruptCheckpoint(CheckpointError):
    """A file whose bytes do not read back (truncated, corrupt): not just of another kind or version."""


@dataclass
class Checkpoint:
    path: str
    config: Config
    iteration: int
    generator: dict  # the raw generator's state dict
    generator_ema: dict | None
    discriminators: dict[str, dict]  # "feat_d", "tg_d", "image_d", "sed_d", "spectral_d"
    optimizers: dict[str, dict] = field(default_factory=dict)
    schedulers: dict[str, dict] = field(default_factory=dict)
    rng: dict | None = None
    meta: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # other entries, e.g. "pair_pool"

    @property
    def inference_generator(self) -> dict:
        """The weights to super-resolve with: the EMA when the run kept one."""
        return self.generator_ema if self.generator_ema is not None else self.generator

    @property
    def clip(self) -> dict | None:
        """What CLIP the run trained with: {"model", "weights" (identity), "pretrained"}, or None."""
        return self.meta.get("clip")

    @property
    def clip_tg_d(self) -> dict | None:
        """TG-D's CLIP when the run gave it its own extractor (``tg_d.clip_model``), else None (it used ``clip``)."""
        return self.meta.get("clip_tg_d")

    def clip_weights(self, part: str = "clip") -> tuple[str, int]:
        """The ``load_clip(weights=..., seed=...)`` arguments that rebuild the CLIP the run trained with;
        ``part="clip_tg_d"``: TG-D's own CLIP (the run's ``clip`` when it had none)."""
        if part == "clip_tg_d" and self.clip_tg_d is None:
            part = "clip"
        identity = (self.meta.get(part) or {}).get("weights")
        seed = self.config.clip.seed
        if identity:
            if m := re.fullmatch(r"random\(seed=(-?\d+)\)", identity):
                return "random", int(m.group(1))
            if identity == "openai":
                return "openai", seed
            if m := re.fullmatch(r"file:(.*) sha256:[0-9a-f]+", identity):
                return m.group(1), seed
        if part == "clip_tg_d" and self.config.tg_d.clip_weights:
            return self.config.tg_d.clip_weights, seed
        return self.config.clip.weights, seed

    @property
    def kind(self) -> str:
        """ "sfd" (Feat-D and/or TG-D), "image_d" (a baseline D on pixels: ESRGAN's, Real-ESRGAN's, SeD-P,
        DualFormer's) or "generator-only"."""
        if {"feat_d", "tg_d"} & set(self.discriminators):
            return "sfd"
        return "image_d" if {"image_d", "sed_d", "spectral_d"} & set(self.discriminators) else "generator-only"


def _rename_legacy(parts: dict) -> dict:
    return {_LEGACY_PARTS.get(k, k): v for k, v in (parts or {}).items()}


def load(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read an sfd training checkpoint (no pickled code runs); clear errors for anything else.

    ``path`` may be a run folder: its newest checkpoint is read."""
    path = Path(path)
    if path.is_dir():
        latest = find_latest(path)
        if latest is None:
            raise CheckpointError(
                f"{path} is a folder without checkpoints/iter_*.pth (not a run folder, or no checkpoint yet)"
            )
        path = latest
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    verify_checksum(path)
    try:
        raw = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, random bytes, pickled objects: all the same to a user
        reason = f"{type(err).__name__}: {str(err)[:120]}"
        raise CorruptCheckpoint(f"{path} is not a readable checkpoint ({reason})") from None
    return from_dict(raw, str(path))


def load_model_file(path: str | Path, allow_pickle: bool = False) -> dict:
    """Any model file (``.safetensors`` or torch) as a dict, loaded without running pickled code by default.
    ``load`` reads sfd training checkpoints; this reads what ``load_generator`` accepts, checkpoints included."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # SafetensorError on a truncated or foreign file
            reason = " ".join(str(err).split())[:160]
            raise ValueError(f"{path} is not a readable .safetensors file ({reason})") from err
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


def checksum_path(path: str | Path) -> Path:
    """``NAME.sha256`` beside a checkpoint: the SHA-256 of its bytes, written by ``save``."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def verify_checksum(path: str | Path) -> None:
    """Raise ``CorruptCheckpoint`` when ``path`` has a checksum file that its bytes do not match.
    torch.load reads flipped bits in tensor data without complaint; a file without one is not checked."""
    path, side = Path(path), checksum_path(path)
    if not side.is_file():
        return
    expected = (side.read_text().split() or [""])[0]
    if file_sha256(path) != expected:
        raise CorruptCheckpoint(
            f"{path} is corrupt: its bytes do not match {side.name}, written with it "
            f"(if you changed the file on purpose, delete {side.name})"
        )


def from_dict(raw: dict, path: str = "<dict>") -> Checkpoint:
    """Describe a checkpoint already read into a dict (e.g. edited in memory)."""
    if not isinstance(raw, dict) or "generator" not in raw or "config" not in raw:
        raise CheckpointError(f"{path} is not an sfd training checkpoint (no generator and config entries)")
    known = {
        "generator",
        "generator_ema",
        "discriminators",
        "optimizers",
        "schedulers",
        "iteration",
        "config",
        "rng",
        "meta",
    }
    try:
        config = config_from_dict(raw["config"], Config)
    except ConfigError as err:
        raise CheckpointError(f"{path}: its config does not load with this sfd version: {err}") from None
    return Checkpoint(
        path=path,
        config=config,
        iteration=int(raw.get("iteration", 0)),
        generator=raw["generator"],
        generator_ema=raw.get("generator_ema"),
        discriminators=_rename_legacy(raw.get("discriminators")),
        optimizers=_rename_legacy(raw.get("optimizers")),
        schedulers=_rename_legacy(raw.get("schedulers")),
        rng=raw.get("rng"),
        meta=raw.get("meta") or {},
        extra={k: v for k, v in raw.items() if k not in known},
    )


def save(state: dict, path: str | Path) -> Path:
    """Write ``state`` atomically and durably: a temporary file, flushed and fsynced, renamed over
    ``path``, then the folder fsynced. A crash or a full disk leaves the previous file intact.
    Then ``NAME.sha256`` (``checksum_path``) records the file's SHA-256 for ``load`` to check."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    side = checksum_path(path)
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        digest = file_sha256(tmp)
        if delay := os.environ.get("SFD_TEST_SAVE_DELAY"):  # test hook: a window in which to kill a write
            import time

            time.sleep(float(delay))
        side.unlink(missing_ok=True)  # a crash from here on leaves a checkpoint without checksum, never a stale one
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _write_durably(side, f"{digest}  {path.name}\n")
    _fsync_dir(path.parent)
    return path


def _write_durably(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not possible on every platform; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """The run's ``checkpoints/iter_*.pth``, oldest first."""
    return sorted(Path(run_dir, "checkpoints").glob("iter_*.pth"))


def find_latest(run_dir: str | Path) -> Path | None:
    """The newest ``iter_*.pth`` of a run folder (in its ``checkpoints/``, else in the folder itself, e.g. a
    copied-out checkpoints folder), or None. The one rule for "the newest checkpoint of a run"."""
    found = list_checkpoints(run_dir) or sorted(Path(run_dir).glob("iter_*.pth"))
    return found[-1] if found else None


def load_latest_good(run_dir: str | Path, say=print) -> Checkpoint | None:
    """The newest checkpoint of the run that loads, or None when there is none.

    A truncated or corrupt one (a disk error, a copy cut short) is renamed ``*.corrupt`` (kept for
    inspection, never picked again) and the previous one is tried; ``say`` reports each such step.
    """
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return load(path)
        except CorruptCheckpoint as err:  # not one of another version: that error reaches the user as it is
            bad = path.with_name(path.name + ".corrupt")
            os.replace(path, bad)
            checksum_path(path).unlink(missing_ok=True)
            say(f"warning: {err}; moved it to {bad.name} and trying the previous checkpoint")
    return None


BEST_FILE = "best.json"  # beside the checkpoints: {metric: {value, iteration, checkpoint, higher_is_better}}


def read_best(run_dir: str | Path) -> dict:
    """The run's best validation values and the checkpoints that hold them ({} when none)."""
    import json

    path = Path(run_dir) / "checkpoints" / BEST_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def best_checkpoints(run_dir: str | Path) -> set[str]:
    return {v["checkpoint"] for v in read_best(run_dir).values() if "checkpoint" in v}


def prune(run_dir: str | Path, keep: int | None, keep_every: int = 0) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints (None: keep all). Checkpoints whose iteration
    is a multiple of ``keep_every`` (> 0) are kept too, as are the ones beside a ``NAME.keep`` marker
    file and the best ones named in best.json. Returns the deleted paths."""
    if keep is None:
        return []
    found = list_checkpoints(run_dir)
    old = found[: max(0, len(found) - keep)]
    best = best_checkpoints(run_dir)
    deleted = []
    for path in old:
        m = re.fullmatch(r"iter_(\d+)\.pth", path.name)
        marked = path.with_name(path.name + ".keep").exists() or path.name in best
        if marked or (keep_every > 0 and m and int(m.group(1)) % keep_every == 0):
            continue
        path.unlink(missing_ok=True)
        checksum_path(path).unlink(missing_ok=True)
        deleted.append(path)
    return deleted
