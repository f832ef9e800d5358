"""``DegradationConfig``: every probability and range of the real-world degradation pipeline.

Plain data, no torch: ``sfd.config`` (and with it ``sfd --help`` and config validation) imports it
without the pipeline (``sfd.data.degradations``) that runs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["DegradationConfig", "KERNEL_TYPES", "RESIZE_MODES"]

# The Gaussian-family blur kernels of Real-ESRGAN (``sfd.data.kernels`` builds them).
KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
RESIZE_MODES = ("area", "bilinear", "bicubic")


def _kernel_types() -> list[str]:
    return list(KERNEL_TYPES)


def _kernel_probs() -> list[float]:
    return [0.45, 0.25, 0.12, 0.03, 0.12, 0.03]


@dataclass
class DegradationConfig:
    """Every probability and range of the pipeline; defaults are Real-ESRGAN's x4plus recipe
    (``options/train_realesrgan_x4plus.yml``). Field names follow Real-ESRGAN's options.
    Noise sigmas are on the 0-255 scale; resize factors are relative sizes."""

    # -- first order: blur kernel (its size is drawn from the odd sizes 7..blur_kernel_size)
    blur_kernel_size: int = 21
    kernel_list: list[str] = field(default_factory=_kernel_types)
    kernel_prob: list[float] = field(default_factory=_kernel_probs)
    sinc_prob: float = 0.1  # probability that the blur is a 2-D sinc instead
    blur_sigma: list[float] = field(default_factory=lambda: [0.2, 3.0])
    betag_range: list[float] = field(default_factory=lambda: [0.5, 4.0])  # generalised Gaussian shape
    betap_range: list[float] = field(default_factory=lambda: [1.0, 2.0])  # plateau shape
    # -- first order: resize, noise, JPEG
    resize_prob: list[float] = field(default_factory=lambda: [0.2, 0.7, 0.1])  # up, down, keep
    resize_range: list[float] = field(default_factory=lambda: [0.15, 1.5])  # factor of the HR size
    gaussian_noise_prob: float = 0.5  # else Poisson noise
    noise_range: list[float] = field(default_factory=lambda: [1.0, 30.0])  # Gaussian sigma, 0-255 scale
    poisson_scale_range: list[float] = field(default_factory=lambda: [0.05, 3.0])
    gray_noise_prob: float = 0.4  # the same noise on all three channels
    jpeg_range: list[int] = field(default_factory=lambda: [30, 95])  # JPEG quality, inclusive

    # -- second order
    second_blur_prob: float = 0.8
    blur_kernel_size2: int = 21
    kernel_list2: list[str] = field(default_factory=_kernel_types)
    kernel_prob2: list[float] = field(default_factory=_kernel_probs)
    sinc_prob2: float = 0.1
    blur_sigma2: list[float] = field(default_factory=lambda: [0.2, 1.5])
    betag_range2: list[float] = field(default_factory=lambda: [0.5, 4.0])
    betap_range2: list[float] = field(default_factory=lambda: [1.0, 2.0])
    resize_prob2: list[float] = field(default_factory=lambda: [0.3, 0.4, 0.3])
    resize_range2: list[float] = field(default_factory=lambda: [0.3, 1.2])  # factor of the LR size
    gaussian_noise_prob2: float = 0.5
    noise_range2: list[float] = field(default_factory=lambda: [1.0, 25.0])
    poisson_scale_range2: list[float] = field(default_factory=lambda: [0.05, 2.5])
    gray_noise_prob2: float = 0.4
    jpeg_range2: list[int] = field(default_factory=lambda: [30, 95])

    # -- final stage
    final_sinc_prob: float = 0.8  # else no final filter
    resize_first_prob: float = 0.5  # [resize + sinc] -> JPEG; else JPEG -> [resize + sinc]
    resize_modes: list[str] = field(default_factory=lambda: list(RESIZE_MODES))  # drawn uniformly

    # -- JPEG codec: "diffjpeg" (BasicSR's DiffJPEG, as Real-ESRGAN: float qualities, 2x2-repeated
    #    chroma), "pillow" (libjpeg, a real codec, integer qualities) or "torch" (libjpeg-like approximation)
    jpeg_backend: Literal["diffjpeg", "pillow", "torch"] = "diffjpeg"
    # -- first-order resize: "scale_factor" as Real-ESRGAN (interpolate(scale_factor=s): the output
    #    grid is the input's scaled by s exactly), or "size" (to int(H s) x int(W s), the grid stretched to fit)
    first_resize: Literal["scale_factor", "size"] = "scale_factor"
    # -- Real-ESRGAN's crop structure: the loader crops (or reflect-pads) the HR to crop_pad_size, the
    #    whole of it is degraded, then a paired random crop of data.patch_size is taken. null: the
    #    patch is degraded whole. The recipes set 400, as Real-ESRGAN.
    crop_pad_size: int | None = None
    # -- where the degradations run: "cpu" (the loader workers, or the trainer's process per
    #    data.degrade_in), "cuda" (batched on the training device, which must be a GPU; the loader
    #    only decodes and crops), "auto" (the training device when it is a GPU, else the CPU). Default
    #    cpu: on an H200 the first GPU path (sample by sample) made 93 patches/s (12 of 256², crop 400)
    #    in the training process, adding to each step, while CPU workers overlap it; the batched path
    #    below has not been measured on a GPU yet (docs/realworld.md)
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    # -- the stages after the first resize, where sizes differ per sample: one sample at a time, or
    #    the whole batch at once on one zero canvas (sfd.data.batched; equal up to float64 rounding).
    #    "auto": batched on a GPU (hundreds of small launches per sample otherwise), per sample on the CPU
    #    (the canvas's dense resize matrices cost more arithmetic there than they save)
    batched: Literal["auto", True, False] = "auto"

    # -- unsharp masking of the HR (Real-ESRGAN's USMSharp): sharpens the target and the image
    #    that is degraded, as Real-ESRGAN does with l1_gt_usm / percep_gt_usm.
    use_usm: bool = True
    usm_weight: float = 0.5
    usm_radius: int = 50  # Gaussian of size radius+1 (odd), sigma by OpenCV's rule (8.0 for 51)
    usm_threshold: float = 10.0  # 0-255 scale: only edges whose residual exceeds it are sharpened

    # -- the training-pair pool (Real-ESRGAN's queue); 0 disables it
    queue_size: int = 180

    def __post_init__(self) -> None:
        for suffix in ("", "2"):
            kinds, probs = getattr(self, "kernel_list" + suffix), getattr(self, "kernel_prob" + suffix)
            unknown = set(kinds) - set(KERNEL_TYPES)
            if unknown:
                raise ValueError(f"kernel_list{suffix}: unknown types {sorted(unknown)}; use {list(KERNEL_TYPES)}")
            if len(kinds) != len(probs):
                raise ValueError(f"kernel_list{suffix} and kernel_prob{suffix} must have the same length")
            size = getattr(self, "blur_kernel_size" + suffix)
            if size % 2 != 1 or size < 7:
                raise ValueError(f"blur_kernel_size{suffix} must be odd and >= 7, got {size}")
            if len(getattr(self, "resize_prob" + suffix)) != 3:
                raise ValueError(f"resize_prob{suffix} must be three probabilities: [up, down, keep]")
            low, high = getattr(self, "jpeg_range" + suffix)
            if not 1 <= low <= high <= 100:
                raise ValueError(f"jpeg_range{suffix} must satisfy 1 <= low <= high <= 100")
        for name in ("blur_sigma", "betag_range", "betap_range", "resize_range", "noise_range", "poisson_scale_range"):
            for suffix in ("", "2"):
                low, high = getattr(self, name + suffix)
                if low > high:
                    raise ValueError(f"{name}{suffix}: low {low} > high {high}")
        if self.crop_pad_size is not None and self.crop_pad_size < 32:
            raise ValueError(f"crop_pad_size must be at least 32 (or null), got {self.crop_pad_size}")
        bad_modes = set(self.resize_modes) - set(RESIZE_MODES)
        if bad_modes or not self.resize_modes:
            raise ValueError(f"resize_modes must be a non-empty subset of {list(RESIZE_MODES)}")

    def kernel_sizes(self, order: int) -> list[int]:
        """The odd kernel supports drawn from: 7, 9, ..., blur_kernel_size (Real-ESRGAN: 7..21)."""
        top = self.blur_kernel_size if order == 1 else self.blur_kernel_size2
        return list(range(7, top + 1, 2))


def batched_on(mode, device) -> bool:
    """``batched`` resolved for ``device``: "auto" is on for a GPU, off on the CPU (the one rule; a run's
    ``DegradationPlan`` and a degrader used alone both read it)."""
    return device.type != "cpu" if mode == "auto" else bool(mode)
