"""Typed configuration: dataclasses loaded from YAML, strictly.

A config file names only the fields it changes; everything else keeps the defaults below.
An unknown key is an error that names it (with the closest valid name), so a typo never
silently falls back to a default. ``--set a.b=value`` overrides any field from the command line.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sfd.data.degradation_config import DegradationConfig
from sfd.yamlconfig import (  # noqa: F401 (CONFIG_DIR, list_configs: sfd.config's names too)
    CONFIG_DIR,
    ConfigError,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    find_config,
    list_configs,
    read_yaml,
)

__all__ = [
    "ConfigError",
    "CLIPConfig",
    "GeneratorConfig",
    "FeatDConfig",
    "TGDConfig",
    "ImageDConfig",
    "SeDConfig",
    "SpectralDConfig",
    "LDLConfig",
    "CLIPIQALossConfig",
    "LossConfig",
    "DataConfig",
    "OptimConfig",
    "TrainConfig",
    "Config",
    "load_config",
    "find_config",
    "list_configs",
    "diff_against_shipped",
    "parse_duration",
    "config_from_dict",
    "config_to_dict",
    "apply_overrides",
]


@dataclass
class CLIPConfig:
    """The frozen CLIP that provides semantic features (docs/method.md)."""

    model: Literal["RN50", "ViT-B-16"] = "RN50"
    # "openai" (open_clip's download/cache, or the file in $SFD_CLIP_WEIGHTS), a file path,
    # "random" (explicit opt-in: tests/demos only), or "auto" (pretrained if available, else random).
    weights: str = "openai"
    # F_out for inputs other than 224x224: bicubic-interpolate the attention-pool positional
    # embedding to the input's grid [choice], or drop it (as CLIP-IQA does).
    pos_embed: Literal["interpolate", "drop"] = "interpolate"
    seed: int = 0  # makes "random" weights reproducible (the IQA metric rebuilds the same CLIP)


# generator.arch's values: the entries of sfd.models.archs.ARCHS (tests/test_archs.py keeps the two equal), "auto"
GENERATOR_ARCHS = ("rrdbnet", "swinir", "compact", "span", "plksr", "realplksr", "omnisr", "safmn", "dat", "hat")
GENERATOR_ARCHS += ("swin2sr", "rgt", "atd", "drct", "craft", "ditn", "dctlsa", "seemore", "mosr", "rcan", "grl")
GENERATOR_ARCHS += ("swiftsrgan", "moesr", "fdat", "auto")


@dataclass
class GeneratorConfig:
    # Any architecture of `sfd archs` (spandrel's SR networks; docs/architectures.md), or "auto": the
    # architecture and hyperparameters of the file generator.pretrained names (fine-tuning a community model).
    arch: Literal[GENERATOR_ARCHS] = "rrdbnet"
    scale: int = 4
    # The architecture's own keyword hyperparameters (spandrel's class), e.g. {feature_channels: 48} for SPAN;
    # an unknown name is an error that lists the valid ones. rrdbnet and swinir also read the fields below.
    params: dict[str, Any] = field(default_factory=dict)
    # RRDBNet (ESRGAN)
    num_feat: int = 64
    num_blocks: int = 23
    # SwinIR (classical x4, "SwinIR-M")
    embed_dim: int = 180
    depths: list[int] = field(default_factory=lambda: [6, 6, 6, 6, 6, 6])
    num_heads: list[int] = field(default_factory=lambda: [6, 6, 6, 6, 6, 6])
    window_size: int = 8
    mlp_ratio: float = 2.0
    img_size: int = 64
    drop_path_rate: float = 0.1
    # Initialisation. The supplement starts SFD from a fidelity-oriented (L1) first stage:
    #   "run:NAME"  the newest checkpoint (EMA weights) of run NAME under train.output_dir
    #               (e.g. run:psnr_rrdb_x4, trained by configs/psnr_rrdb_x4.yml);
    #   a run folder, any file spandrel loads, an sfd checkpoint, or a named model (realesrgan-x4plus);
    #   "random"    random weights: an explicit opt-in (first stages, quick tests); warns in adversarial runs.
    # Unset (null) is an error at `sfd train`: every config says where its generator starts.
    pretrained: str | None = None


@dataclass
class FeatDConfig:
    """Feat-D on CLIP's layer1-3 features (supplement §2)."""

    enabled: bool = True
    widths: list[int] = field(default_factory=lambda: [512, 256, 128, 64])  # [choice]
    kernel_size: int = 3  # [choice]
    negative_slope: float = 0.2  # LeakyReLU [choice]
    # How the 2x bilinear upsampling (align_corners=False) is computed: "interpolate" (F.interpolate, the
    # reference) or "separable" (the same values from shifted copies: no atomics in its backward on CUDA;
    # measured slower on an H200, with and without CUDA graphs: docs/benchmarks.md).
    upsample: Literal["interpolate", "separable"] = "interpolate"


@dataclass
class TGDConfig:
    """TG-D: learnable prompt pairs on CLIP's F_out (supplement §4-5)."""

    enabled: bool = True
    n_pairs: int = 5  # N: 5 classic, 1 real-world / IQA
    length: int = 32  # L: 32 classic, 64 real-world / IQA
    init_std: float = 0.02  # context init N(0, std) [choice]
    init_words: list[str] | None = None  # e.g. ["a sharp photo", "a blurry photo"]: words fill the first tokens
    seed: int = 0
    # TG-D's own extractor (F_out and the text tower) [choice: Supp. Table 2's mixed reading, docs/method.md]:
    # null = the run's clip.model. When it differs, a second frozen CLIP is built for TG-D (and the CLIPIQA
    # loss, which reads the same F_out); Feat-D keeps clip.model's (RN50) pixel-wise features.
    clip_model: Literal["RN50", "ViT-B-16"] | None = None
    clip_weights: str | None = None  # null = clip.weights (clip.seed too); a file here when clip.weights is a file


@dataclass
class ImageDConfig:
    """A pixel-space baseline discriminator, used instead of Feat-D/TG-D when ``type`` is set."""

    # vgg: ESRGAN's VGG-style; unet: Real-ESRGAN's U-Net SN; transformer: DualFormer's spatial (Swin-style) D
    type: Literal["vgg", "unet", "transformer"] | None = None
    num_feat: int = 64
    input_size: int = 128  # vgg, transformer: the HR patch size (their layers depend on it)


@dataclass
class SeDConfig:
    """SeD-P (Li et al., CVPR 2024): a PatchGAN attending to CLIP RN50's F_m3 (docs/method.md)."""

    enabled: bool = False
    num_feat: int = 64
    heads: int = 1
    head_dim: int = 64
    # Which image's semantics condition the D [choice]: "self" (each image its own: the D scores an image
    # alone) or "hr" (SeD's code: real and fake both see the HR's semantics).
    semantics: Literal["self", "hr"] = "self"


@dataclass
class SpectralDConfig:
    """DualFormer's spectral D (Luo et al., ICCV 2023): a Transformer over 32x32 patches' power spectra."""

    enabled: bool = False
    patch_size: int = 32
    embed_dim: int = 96
    depths: list[int] = field(default_factory=lambda: [8, 2])
    heads: list[int] = field(default_factory=lambda: [3, 6])
    window: int = 4
    drop_path: float = 0.1  # Swin's stochastic depth (their SwinTransformer's default)


@dataclass
class LDLConfig:
    """LDL's artifact loss (Liang et al., CVPR 2022): |M * SR - M * HR|, M from the EMA generator."""

    weight: float = 0.0  # 0 = off; 1.0 in LDL's synthetic x4 recipe
    window: int = 7  # the local-variance window (the paper's 7)
    exponent: float = 5.0  # the patch-level variance's root (the paper's 1/5 power)
    detach_map: bool = False  # [choice] LDL's code lets the gradient flow through the map; true stops it


@dataclass
class CLIPIQALossConfig:
    """The supplement §4 "CLIPIQA loss" ablation: fixed antonym prompts on F_out."""

    variant: Literal["maximize", "match_hr"] | None = None  # None = off
    prompts: list[str] = field(default_factory=lambda: ["Good photo.", "Bad photo."])


@dataclass
class LossConfig:
    l1: float = 0.01  # lambda1
    perceptual: float = 1.0  # lambda2
    feat_d: float = 0.01  # lambda3: adversarial through Feat-D [choice: which lambda weights which term]
    tg_d: float = 0.005  # lambda4: adversarial through TG-D
    image_d: float = 0.005  # adversarial weight of a baseline pixel-space D (ESRGAN uses 0.005)
    clipiqa: float = 0.0  # weight of the CLIPIQA-loss ablation term
    sed_d: float = 0.01  # adversarial through SeD-P (SeD's 0.01)
    spectral_d: float = 0.0025  # adversarial through DualFormer's spectral D (half of ESRGAN's 0.005)
    gan_type: Literal["vanilla", "lsgan", "hinge", "ragan"] = "vanilla"  # [choice]
    # VGG19 layers and weights; ESRGAN's conv5_4 before activation by default.
    perceptual_layers: dict[str, float] = field(default_factory=lambda: {"conv5_4": 1.0})
    # "imagenet" (torchvision's cache, or the file in $SFD_VGG_WEIGHTS), a file path, "random" (opt-in),
    # or "auto" (imagenet when on this machine, else random; for demos).
    vgg_weights: str = "imagenet"
    clipiqa_loss: CLIPIQALossConfig = field(default_factory=CLIPIQALossConfig)
    ldl: LDLConfig = field(default_factory=LDLConfig)


@dataclass
class DataConfig:
    train: list[str] = field(default_factory=list)  # HR folders
    patch_size: int = 128  # HR patch
    # The batch of one training process. Under torchrun (sfd.distributed: data-parallel, one process per
    # device) the global batch is batch_size x processes; in a single process it is batch_size.
    batch_size: int = 32
    num_workers: int = 4
    # Augmentation. Classic SISR (BasicSR's use_hflip + use_rot): all three, the 8 orientations.
    # Real-world (Real-ESRGAN): horizontal flips only; an upside-down photo changes CLIP's semantics.
    use_hflip: bool = True  # left-right flip, p = 0.5
    use_vflip: bool = True  # upside-down flip, p = 0.5
    use_rot: bool = True  # transpose (90° rotation with the flips), p = 0.5
    use_flip: bool | None = None  # deprecated (configs before use_hflip/use_vflip): sets both flips
    val: str | None = None  # HR folder for validation PSNR/SSIM
    val_max_images: int = 10
    # None: LR by MATLAB bicubic (classic SISR). Set it for Real-ESRGAN's second-order degradations.
    degradation: DegradationConfig | None = None
    # Where the degradations run: in the loader workers (CPU, overlapped with training) or in the
    # trainer (on its device). Both give the same pairs for the same seeds.
    degrade_in: Literal["workers", "trainer"] = "workers"
    # Decoded images kept per loader process, least recently used dropped first (0: decode every time).
    cache_mb: float = 512
    prefetch_factor: int = 2  # batches each worker prepares ahead


@dataclass
class OptimConfig:
    lr_g: float = 1e-4
    lr_d: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])  # [choice]
    weight_decay: float = 0.0
    # LR schedule of every optimizer. multistep: x gamma at each milestone. cosine_restart: cosine
    # from lr to eta_min over restart_period iterations, then restart (BasicSR's CosineAnnealingRestartLR
    # with equal periods and restart weights 1, as its RRDBNet PSNR recipe).
    scheduler: Literal["multistep", "cosine_restart"] = "multistep"
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.5
    restart_period: int = 250_000
    eta_min: float = 1e-7
    grad_clip: float | None = None  # max global norm, per optimizer
    ema_decay: float | None = 0.999  # EMA of the generator; None = off
    # Adam's implementation: "fused" (one kernel per step), "foreach", or "for_loop" (torch's per-tensor
    # reference); "auto" = fused. The same update up to float rounding (docs/benchmarks.md: speed).
    impl: Literal["auto", "fused", "foreach", "for_loop"] = "auto"


@dataclass
class TrainConfig:
    iterations: int = 400_000
    seed: int = 0
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1"
    # bf16/fp16: forward passes under torch.autocast (weights, optimizer states and EMA stay fp32);
    # fp16 also scales each loss (one GradScaler per optimizer). See docs/benchmarks.md for speeds.
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    # NHWC memory format for the conv nets (G, CLIP, VGG, Ds) and their inputs; "auto": with CUDA graphs.
    channels_last: Literal["auto", True, False] = "auto"
    # torch.compile the generator and the CLIP image tower with this backend ("inductor", torch's
    # default; "aot_eager" compiles nothing to C++), or null: not compiled.
    compile: str | None = None
    # torch.compile's mode with inductor: "reduce-overhead" replays the compiled parts from CUDA graphs.
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    # Keep losses and the NaN/Inf guard on the device: no host sync inside a step. Losses are read when
    # a line is logged; skipped steps are skipped on the device and reported at the next log line.
    # Needs optim.impl fused (or auto) and fp32/bf16.
    sync_free: bool = False
    # Replay each step from a CUDA graph (implies sync_free; CUDA, one process, static shapes). The
    # first 3 steps of each phase run eagerly, then the step is captured once. "auto": on for CUDA in
    # one process with fp32/bf16 and the fused Adam, without train.compile (with channels-last 3.3x faster
    # on an H200: docs/benchmarks.md).
    cuda_graph: Literal["auto", True, False] = "auto"
    output_dir: str = "runs"
    log_every: int = 100
    val_every: int = 5000
    save_every: int = 5000
    # Mirror the log to this Weights & Biases project (pip install wandb; WANDB_MODE=offline works
    # without a network); null: TensorBoard and log.jsonl only.
    wandb: str | None = None
    # Iterations of L1-only warm-up before adversarial training (0: start adversarial at once,
    # as the supplement does from a PSNR checkpoint).
    pixel_warmup: int = 0
    # Checkpoint retention (docs/reliability.md): keep the newest K (None: all), plus every one whose
    # iteration is a multiple of keep_every (0: none), plus any with a NAME.keep marker file beside it.
    keep_checkpoints: int | None = None
    keep_every: int = 0
    # A step whose loss or gradient is NaN/Inf is skipped; this many in a row stop the run.
    max_bad_steps: int = 10
    # Wall-clock limit of this run, a duration ("23h30m", "90m", "1d", "45s"; null: none): the run stops
    # with a checkpoint before it, every process at the same iteration. The clock starts with the training
    # process; set it a few minutes below a scheduler's limit (docs/scaling.md).
    max_time: str | None = None
    # Under torchrun: a process not heard from for this long (its node died or hangs) stops the others,
    # with the last good checkpoint named (sfd.distributed.Heartbeat).
    dist_timeout: str = "60s"

    @property
    def max_time_s(self) -> float | None:
        return None if self.max_time is None else parse_duration(self.max_time, "train.max_time")

    @property
    def dist_timeout_s(self) -> float:
        return parse_duration(self.dist_timeout, "train.dist_timeout")


_DURATION_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str, key: str = "duration") -> float:
    """Seconds in a duration such as ``23h30m``, ``1d12h``, ``90m``, ``45s`` or ``1.5h`` (units d, h, m, s)."""
    compact = re.sub(r"\s", "", str(text).lower())
    parts = re.findall(r"(\d+(?:\.\d*)?)([dhms])", compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise ConfigError(f"{key}={text!r} is not a duration: write it like 23h30m, 90m or 45s")
    seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ConfigError(f"{key}={text!r} must be longer than zero")
    return seconds


@dataclass
class Config:
    name: str = "sfd"
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    clip: CLIPConfig = field(default_factory=CLIPConfig)
    feat_d: FeatDConfig = field(default_factory=FeatDConfig)
    tg_d: TGDConfig = field(default_factory=TGDConfig)
    image_d: ImageDConfig = field(default_factory=ImageDConfig)
    sed_d: SeDConfig = field(default_factory=SeDConfig)
    spectral_d: SpectralDConfig = field(default_factory=SpectralDConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> Config:
        if self.data.use_flip is not None:  # old configs and checkpoints: one switch for both flips
            self.data.use_hflip = self.data.use_vflip = self.data.use_flip
            self.data.use_flip = None
        if self.image_d.type and (self.feat_d.enabled or self.tg_d.enabled):
            raise ConfigError("image_d.type is set: disable feat_d.enabled and tg_d.enabled (one D family per run)")
        if self.clip.model != "RN50" and self.feat_d.enabled:
            raise ConfigError(
                f"feat_d needs CLIP RN50's pixel-wise features; clip.model={self.clip.model} is TG-D only"
            )
        if self.tg_d.clip_model is not None or self.tg_d.clip_weights is not None:
            if not self.tg_d.enabled:
                raise ConfigError("tg_d.clip_model/clip_weights are set but tg_d.enabled is false: unset them")
            if self.separate_tg_d_clip and not self.feat_d.enabled:
                raise ConfigError(
                    "tg_d.clip_model/clip_weights give TG-D its own CLIP, which only matters beside Feat-D: "
                    f"with feat_d off, set clip.model={self.tg_d_clip_model} instead"
                )
            if self.separate_tg_d_clip and self.tg_d.clip_weights is None and _is_weights_file(self.clip.weights):
                raise ConfigError(
                    f"tg_d.clip_model={self.tg_d.clip_model} differs from clip.model={self.clip.model} and "
                    f"clip.weights is a file ({self.clip.weights}): give TG-D's file in tg_d.clip_weights"
                )
        self._check_ranges()
        _ = self.train.max_time_s, self.train.dist_timeout_s  # a malformed duration names its key
        if self.data.patch_size % 32:
            raise ConfigError(f"data.patch_size={self.data.patch_size} must be a multiple of 32 (CLIP's stride)")
        if self.data.patch_size % self.generator.scale:
            raise ConfigError(
                f"data.patch_size={self.data.patch_size} is not a multiple of generator.scale="
                f"{self.generator.scale}: the LR patch would not align"
            )
        if self.image_d.type in ("vgg", "transformer") and self.image_d.input_size != self.data.patch_size:
            raise ConfigError(f"image_d.input_size must equal data.patch_size for image_d.type={self.image_d.type}")
        if self.spectral_d.enabled or self.image_d.type == "transformer":
            sd, p = self.spectral_d, self.data.patch_size
            if p % sd.patch_size or p // sd.patch_size > sd.window:
                raise ConfigError(
                    f"data.patch_size={p} does not fit DualFormer's Transformers: it must be a multiple of "
                    f"spectral_d.patch_size={sd.patch_size} with at most spectral_d.window={sd.window} patches a side "
                    f"(one attention window; raise spectral_d.window to {-(-p // sd.patch_size)} for this patch)"
                )
        if self.sed_d.enabled and self.clip.model != "RN50":
            raise ConfigError(f"sed_d needs CLIP RN50's F_m3; clip.model={self.clip.model} has no pixel-wise features")
        if self.loss.ldl.weight and not self.optim.ema_decay:
            raise ConfigError("loss.ldl needs the EMA generator: set optim.ema_decay (LDL uses 0.999)")
        if self.loss.ldl.weight and (self.loss.ldl.window % 2 == 0 or self.loss.ldl.window < 3):
            raise ConfigError(f"loss.ldl.window={self.loss.ldl.window} must be odd and at least 3")
        if self.loss.clipiqa_loss.variant and len(self.loss.clipiqa_loss.prompts) != 2:
            raise ConfigError("loss.clipiqa_loss.prompts must be two prompts: [positive, negative]")
        deg = self.data.degradation
        if deg is not None and deg.queue_size > 0 and deg.queue_size % self.data.batch_size:
            raise ConfigError(
                f"data.degradation.queue_size={deg.queue_size} must be a multiple of "
                f"data.batch_size={self.data.batch_size}"
            )
        if self.optim.scheduler == "cosine_restart" and self.optim.restart_period < 1:
            raise ConfigError(f"optim.restart_period={self.optim.restart_period} must be positive")
        if self.generator.pretrained is not None and self.generator.pretrained.strip() in ("", "run:"):
            raise ConfigError(f"generator.pretrained={self.generator.pretrained!r} names nothing")
        if self.tg_d.length + 2 > 77:
            raise ConfigError(f"tg_d.length={self.tg_d.length} does not fit CLIP's 77-token context")
        if self.tg_d.enabled and self.tg_d.init_words is not None:
            if len(self.tg_d.init_words) != 2:
                raise ConfigError("tg_d.init_words takes two phrases: [positive, negative]")
            _check_prompts("tg_d.init_words", self.tg_d.init_words, self.tg_d.length)
        if self.loss.clipiqa_loss.variant:
            _check_prompts("loss.clipiqa_loss.prompts", self.loss.clipiqa_loss.prompts, 75)
        return self

    def _check_ranges(self) -> None:
        """Numbers that no run can use, named by their key."""
        at_least = {
            "generator.scale": (self.generator.scale, 1),
            "data.patch_size": (self.data.patch_size, 32),
            "data.batch_size": (self.data.batch_size, 1),
            "data.num_workers": (self.data.num_workers, 0),
            "data.val_max_images": (self.data.val_max_images, 1),
            "train.iterations": (self.train.iterations, 1),
            "train.log_every": (self.train.log_every, 1),
            "train.val_every": (self.train.val_every, 1),
            "train.save_every": (self.train.save_every, 1),
            "train.pixel_warmup": (self.train.pixel_warmup, 0),
            "train.keep_every": (self.train.keep_every, 0),
            "train.max_bad_steps": (self.train.max_bad_steps, 1),
            "tg_d.n_pairs": (self.tg_d.n_pairs, 1),
            "tg_d.length": (self.tg_d.length, 1),
        }
        if self.train.keep_checkpoints is not None:
            at_least["train.keep_checkpoints"] = (self.train.keep_checkpoints, 1)
        for key, (value, low) in at_least.items():
            if value < low:
                raise ConfigError(f"{key}={value} must be at least {low}")
        o = self.optim
        for key, value in (("optim.lr_g", o.lr_g), ("optim.lr_d", o.lr_d), ("optim.gamma", o.gamma)):
            if not value > 0:
                raise ConfigError(f"{key}={value} must be positive")
        if o.grad_clip is not None and not o.grad_clip > 0:
            raise ConfigError(f"optim.grad_clip={o.grad_clip} must be positive (or null for none)")
        if o.ema_decay is not None and not 0 < o.ema_decay < 1:
            raise ConfigError(f"optim.ema_decay={o.ema_decay} must lie in (0, 1) (or null for no EMA)")
        if len(o.betas) != 2 or not all(0 <= b < 1 for b in o.betas):
            raise ConfigError(f"optim.betas={o.betas} must be two numbers in [0, 1)")
        if any(n < 0 for n in self.loss.__dict__.values() if isinstance(n, (int, float)) and not isinstance(n, bool)):
            raise ConfigError("loss weights (loss.l1, loss.perceptual, loss.feat_d, ...) must not be negative")

    @property
    def tg_d_clip_model(self) -> str:
        """The CLIP TG-D reads F_out and text from: ``tg_d.clip_model``, else ``clip.model``."""
        return self.tg_d.clip_model or self.clip.model

    @property
    def separate_tg_d_clip(self) -> bool:
        """Whether TG-D has its own extractor: another model, or other weights, than ``clip``."""
        weights = self.tg_d.clip_weights
        return self.tg_d_clip_model != self.clip.model or (weights is not None and weights != self.clip.weights)

    @property
    def uses_clip(self) -> bool:
        return self.feat_d.enabled or self.tg_d.enabled or self.sed_d.enabled or bool(self.loss.clipiqa_loss.variant)


@functools.lru_cache(maxsize=1)
def _is_weights_file(weights: str) -> bool:
    return weights not in ("openai", "random", "auto")


def _tokenizer():
    from open_clip.tokenizer import SimpleTokenizer  # only when a config has prompts: it takes ~0.5 s

    return SimpleTokenizer()


def _check_prompts(key: str, prompts: list[str], room: int) -> None:
    """Each prompt must fit in ``room`` tokens of CLIP's context (77 with SOS and EOT)."""
    tokenizer = _tokenizer()
    for text in prompts:
        n = len(tokenizer.encode(text))
        if n > room:
            raise ConfigError(f"{key}: '{text[:40]}...' is {n} tokens, more than the {room} that fit CLIP's context")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config by path or shipped name (``None``: all defaults), apply ``--set`` overrides, validate."""
    data: dict = {}
    if path is not None:
        path = find_config(path)
        data = read_yaml(path)
        data.setdefault("name", path.stem)
    apply_overrides(data, overrides or [])
    return config_from_dict(data, Config).validate()


def _show(value: object) -> str:
    value = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return json.dumps(value, separators=(", ", ": "), ensure_ascii=False)


def _differences(old: object, new: object, prefix: str = "") -> list[str]:
    """``key: old -> new`` for each differing field of two configs (in field order); a section that
    is set on one side only (``data.degradation``: null vs set) is one line."""
    lines = []
    for f in dataclasses.fields(old):
        a, b = getattr(old, f.name), getattr(new, f.name)
        if dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b):
            lines += _differences(a, b, f"{prefix}{f.name}.")
        elif a != b:
            lines.append(f"{prefix}{f.name}: {_show(a)} -> {_show(b)}")
    return lines


def diff_against_shipped(cfg: Config, base: str | None = None) -> list[str]:
    """How resolved config ``cfg`` differs from the shipped config it started from, as text lines.

    The first line names that shipped config and how it was chosen: ``base`` when given (a shipped
    name), else the shipped config named ``cfg.name`` (``load_config`` names a config after its file,
    so a run of ``-c classic_rrdb_x4`` is named so unless its YAML sets ``name``), else the shipped
    config with the fewest differences. Then one line per differing field, ``key: shipped -> cfg``
    (values as JSON); defaults the shipped file does not spell out count as its values. A run folder
    writes these lines to ``config_diff.txt`` at start.
    """
    names = list_configs()
    if base is not None:
        if Path(base).stem not in names:
            raise ConfigError(f"--base {base}: not a shipped config ({', '.join(names)})")
        base, how = Path(base).stem, "given"
        diff = _differences(load_config(base), cfg)
    elif cfg.name in names:
        base, how = cfg.name, "by name"
        diff = _differences(load_config(base), cfg)
    else:
        scored = [(_differences(load_config(n), cfg), n) for n in names]
        diff, base = min(scored, key=lambda pair: len(pair[0]))
        how = f"the nearest: no shipped config is named {cfg.name!r}"
    header = f"config {cfg.name!r} against shipped {base} ({how}): {len(diff)} difference(s)"
    return [header, *diff]
