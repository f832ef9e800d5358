"""The frozen CLIP semantic extractor: image features F_m1, F_m2, F_m3, F_out, and the text tower.

Built on open_clip's modules (OpenAI weight layout). CLIP is never trained here: it stays in
eval mode whatever its parent does (SeD leaves BatchNorm on batch statistics; we do not), its
parameters need no gradient, but gradients flow to the *input* so the generator learns through it.
"""

from __future__ import annotations

import logging
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
import torch.nn as nn
import torch.nn.functional as F

from sfd.models.frozen import FrozenModule
from sfd.weights import WeightsNotFoundError, file_sha256, seeded

log = logging.getLogger(__name__)

__all__ = [
    "CLIPWeightsError",
    "LoadedCLIP",
    "load_clip",
    "ImageFeatures",
    "TextEncoder",
    "CLIP_MEAN",
    "CLIP_STD",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# OpenAI's CLIP was trained with QuickGELU; open_clip's "-quickgelu" configs build that exactly.
_ARCH = {"RN50": "RN50-quickgelu", "ViT-B-16": "ViT-B-16-quickgelu"}
ENV_WEIGHTS = "SFD_CLIP_WEIGHTS"


class CLIPWeightsError(WeightsNotFoundError):
    """Pretrained CLIP weights are not on this machine; the message says how to provide them."""


@dataclass
class LoadedCLIP:
    model: nn.Module  # open_clip CLIP, frozen, eval
    name: str  # "RN50" or "ViT-B-16"
    identity: str  # where the weights came from, e.g. "openai", "file:<path> sha256:<...>", "random(seed=0)"
    pretrained: bool


def _how_to_provide(name: str) -> str:
    """One line: the ways to give CLIP weights (``--set clip.weights`` in training; sfd iqa says ``--clip-weights``)."""
    return (
        f"provide OpenAI's {name}.pt (or an open_clip state dict) with ${ENV_WEIGHTS}=PATH or --set clip.weights=PATH, "
        f"or cache it once on a machine with network access: "
        f"python -c \"import open_clip; open_clip.create_model('{_ARCH[name]}', pretrained='openai')\"; "
        "for tests and demos only: clip.weights=random"
    )


def _hub_reachable(host: str = "huggingface.co", timeout: float = 2.0) -> bool:
    """Whether a download could work at all: no retries for a minute on a machine without network."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes"):
        return False
    import socket

    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any("/code/" in name for name in z.namelist())


def _read_state_dict(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        if _is_torchscript(path):  # OpenAI's original .pt files are TorchScript archives
            state = torch.jit.load(str(path), map_location="cpu").state_dict()
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
            state = state.get("state_dict", state)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    for key in ("input_resolution", "context_length", "vocab_size"):
        state.pop(key, None)
    return state


def _cached_openai_file(name: str) -> str | None:
    """The open_clip cache's file for the OpenAI weights, without touching the network."""
    cfg = open_clip.get_pretrained_cfg(_ARCH[name], "openai")
    repo = (cfg.get("hf_hub") or "").rstrip("/")
    if not repo:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        found = try_to_load_from_cache(repo, filename)
        if isinstance(found, str):
            return found
    return None


def load_clip(name: str = "RN50", weights: str = "openai", seed: int = 0) -> LoadedCLIP:
    """Build CLIP ``name`` with ``weights``: "openai", a file path, "random" or "auto".

    "openai" uses ``$SFD_CLIP_WEIGHTS`` when set, else open_clip's download and cache.
    "auto" is "openai" when the weights are on this machine, else "random" with a warning.
    """
    if name not in _ARCH:
        raise ValueError(f"unknown CLIP model '{name}'; choose from {sorted(_ARCH)}")
    arch = _ARCH[name]
    env_file = os.environ.get(ENV_WEIGHTS)

    if weights == "auto":
        if env_file:
            weights = env_file
        else:
            cached = _cached_openai_file(name)
            weights = cached if cached else "random"
            if not cached:
                warnings.warn(
                    f"No pretrained CLIP {name} weights on this machine: using RANDOM CLIP weights. "
                    "Semantic features are then meaningless; " + _how_to_provide(name),
                    stacklevel=2,
                )
    if weights == "openai" and env_file:
        weights = env_file

    if weights == "random":
        with seeded(seed):
            model = open_clip.create_model(arch, pretrained=None)
        identity, pretrained = f"random(seed={seed})", False
    elif weights == "openai":
        # Already in open_clip's cache: load the file directly (no network round trip, no retries).
        source = _cached_openai_file(name)
        if source is None and not _hub_reachable():
            raise CLIPWeightsError(
                f"OpenAI CLIP {name} weights are not on this machine and huggingface.co cannot be reached; "
                + _how_to_provide(name)
            )
        try:
            model = open_clip.create_model(arch, pretrained=source or "openai")
        except Exception as err:  # download or cache failure: one clear error
            reason = " ".join(str(err).split())[:160]
            raise CLIPWeightsError(
                f"could not load OpenAI CLIP {name} weights ({reason}); " + _how_to_provide(name)
            ) from None
        identity, pretrained = "openai", True
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise CLIPWeightsError(f"CLIP weights file not found: {path}; " + _how_to_provide(name))
        model = open_clip.create_model(arch, pretrained=None)
        missing, unexpected = model.load_state_dict(_read_state_dict(path), strict=False)
        if missing or unexpected:
            raise CLIPWeightsError(
                f"{path} is not a CLIP {name} checkpoint: {len(missing)} missing keys (e.g. {missing[:3]}), "
                f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
            )
        identity, pretrained = f"file:{path} sha256:{file_sha256(path)[:16]}", True

    model.eval().requires_grad_(False)
    return LoadedCLIP(model=model, name=name, identity=identity, pretrained=pretrained)


class ImageFeatures(FrozenModule):
    """CLIP image tower -> {"m1", "m2", "m3", "out"} (RN50) or {"out"} (ViT-B/16).

    Input: RGB in [0, 1], (N, 3, H, W) with H and W multiples of 32, fed at native size (no
    resize); CLIP's normalisation happens here. For a 128x128 input, RN50 gives m1 (256, 32, 32),
    m2 (512, 16, 16), m3 (1024, 8, 8) and out (1024,).
    """

    def __init__(self, clip: LoadedCLIP, pos_embed: str = "interpolate"):
        super().__init__()
        if pos_embed not in ("interpolate", "drop"):
            raise ValueError(f"pos_embed must be 'interpolate' or 'drop', got {pos_embed!r}")
        self.visual = clip.model.visual
        if hasattr(self.visual, "transformer"):  # ViT
            _sequence_first(self.visual.transformer)
        self.name = clip.name
        self.pos_embed = pos_embed
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)
        self.eval()

    @property
    def has_pixel_features(self) -> bool:
        return self.name == "RN50"

    def forward(self, x: torch.Tensor, need: tuple[str, ...] = ("m1", "m2", "m3", "out")) -> dict[str, torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected an (N, 3, H, W) RGB batch, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % 32 or w % 32:
            raise ValueError(f"CLIP features need H and W to be multiples of 32, got {h}x{w}: crop or pad the input")
        x = (x - self.mean) / self.std
        if self.name == "RN50":
            return self._resnet(x, need)
        return {"out": self._vit(x)}

    def _resnet(self, x: torch.Tensor, need: tuple[str, ...]) -> dict[str, torch.Tensor]:
        v = self.visual
        x = v.stem(x.to(v.conv1.weight.dtype))
        feats = {"m1": v.layer1(x)}
        feats["m2"] = v.layer2(feats["m1"])
        feats["m3"] = v.layer3(feats["m2"])
        if "out" in need:
            feats["out"] = self._attnpool(v.layer4(feats["m3"]))
        return feats

    def _grid_pos(self, pos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Positional embedding (1 + g*g, C) resized to ``grid`` by bicubic interpolation [choice]."""
        cls_pos, grid_pos = pos[:1], pos[1:]
        g = int(round(grid_pos.shape[0] ** 0.5))
        if (g, g) == tuple(grid):
            return pos
        grid_pos = grid_pos.reshape(1, g, g, -1).permute(0, 3, 1, 2)
        grid_pos = F.interpolate(grid_pos, size=grid, mode="bicubic", align_corners=False)
        return torch.cat([cls_pos, grid_pos.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1)])

    def _attnpool(self, x: torch.Tensor) -> torch.Tensor:
        # open_clip's AttentionPool2d, with the positional embedding fitted to any grid.
        pool = self.visual.attnpool
        n, c, h, w = x.shape
        x = x.flatten(2).permute(2, 0, 1)  # (HW, N, C)
        x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)
        if self.pos_embed == "interpolate":
            x = x + self._grid_pos(pool.positional_embedding, (h, w))[:, None, :].to(x.dtype)
        out, _ = F.multi_head_attention_forward(
            query=x[:1],
            key=x,
            value=x,
            embed_dim_to_check=c,
            num_heads=pool.num_heads,
            q_proj_weight=pool.q_proj.weight,
            k_proj_weight=pool.k_proj.weight,
            v_proj_weight=pool.v_proj.weight,
            in_proj_weight=None,
            in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
            bias_k=None,
            bias_v=None,
            add_zero_attn=False,
            dropout_p=0.0,
            out_proj_weight=pool.c_proj.weight,
            out_proj_bias=pool.c_proj.bias,
            use_separate_proj_weight=True,
            training=False,
            need_weights=False,
        )
        return out[0]

    def _vit(self, x: torch.Tensor) -> torch.Tensor:
        v = self.visual
        x = v.conv1(x.to(v.conv1.weight.dtype))
        grid = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1)
        if self.pos_embed == "interpolate":
            x = x + self._grid_pos(v.positional_embedding, tuple(grid)).to(x.dtype)
        else:
            x = x + v.positional_embedding[:1].to(x.dtype)
        x = v.ln_pre(x)
        x = v.transformer(x)
        pooled, _ = v._pool(x)
        return pooled @ v.proj if v.proj is not None else pooled


def _sequence_first(transformer: nn.Module) -> None:
    """Run an open_clip transformer sequence-first (LND), as OpenAI's CLIP does: the same math, but
    ``nn.MultiheadAttention(batch_first=True)`` hands its in-projection a transposed view, which torch
    computes as a broadcast ``bmm``: the text tower's forward and backward took 35% longer on the CPU."""
    if getattr(transformer, "batch_first", False):
        transformer.batch_first = False  # open_clip's Transformer.forward then transposes to a contiguous LND
        for block in transformer.resblocks:
            block.attn.batch_first = False


class TextEncoder(FrozenModule):
    """CLIP's text tower, taking token embeddings so that prompt contexts can be learned (CoOp)."""

    def __init__(self, clip: LoadedCLIP):
        super().__init__()
        m = clip.model
        self.token_embedding = m.token_embedding
        self.positional_embedding = m.positional_embedding
        self.transformer = m.transformer
        _sequence_first(self.transformer)
        self.ln_final = m.ln_final
        self.text_projection = m.text_projection
        self.register_buffer("attn_mask", m.attn_mask, persistent=False)
        self.logit_scale = m.logit_scale  # frozen; exp() gives CLIP's temperature (100 for OpenAI weights)
        self.tokenizer = open_clip.get_tokenizer(_ARCH[clip.name])
        self.eval()

    @property
    def width(self) -> int:
        return self.token_embedding.embedding_dim

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts).to(self.token_embedding.weight.device)

    def encode_embeddings(self, embeddings: torch.Tensor, tokens: torch.Tensor, n: int | None = None) -> torch.Tensor:
        """(B, 77, width) token embeddings + their token ids (for the EOT position) -> (B, D), unnormalised.
        ``n``: 1 + the last EOT position, when the caller knows it (reading it from ``tokens`` syncs)."""
        eot = tokens.argmax(dim=-1)  # EOT has the largest id
        # The mask is causal: positions after the last EOT cannot change it, so leave them out (exact, faster).
        n = int(eot.max()) + 1 if n is None else n
        x = embeddings[:, :n] + self.positional_embedding[:n].to(embeddings.dtype)
        x = self.transformer(x, attn_mask=self.attn_mask[:n, :n])
        x = self.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eot]
        return x @ self.text_projection if not isinstance(self.text_projection, nn.Linear) else self.text_projection(x)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenize(texts)
        return self.encode_embeddings(self.token_embedding(tokens), tokens)
