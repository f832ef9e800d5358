"""Real-ESRGAN's second-order degradation model: LR training images made on the fly from HR alone.

The order of operations is Real-ESRGAN's (``RealESRGANModel.feed_data``):

1. first order:  blur -> random resize (up / down / keep) -> Gaussian or Poisson noise -> JPEG
2. second order: blur (with ``second_blur_prob``) -> random resize (relative to the LR size) -> noise
3. final, either order with probability ``resize_first_prob`` / 1 - it:
   [resize to LR size + sinc filter] -> JPEG,  or  JPEG -> [resize to LR size + sinc filter]
4. clamp to [0, 1] and round to 8-bit levels.

Unlike Real-ESRGAN, which draws the resize factor, interpolation and noise type once per batch,
every random choice here is drawn per sample from a ``torch.Generator`` seeded with that sample's
seed (on the CPU), and the noise maps from a counter-based generator keyed by a seed drawn there
(sfd.data.counter_rng: the same numbers on every device, made on the image's device), so one
seed gives one degradation whatever the batch and whatever the device.
The arithmetic is float64, so device differences stay far below the 8-bit roundings (before
JPEG, Poisson noise and at the end); the DiffJPEG codec computes in float32 as BasicSR's, where a
rare coefficient can round the other way on another device (sfd.data.diffjpeg).
``RealESRGANDegradation.describe(seed)`` returns the parameters a seed gives.

JPEG is BasicSR's DiffJPEG by default (``jpeg_backend: diffjpeg``, sfd.data.diffjpeg), the codec
Real-ESRGAN trains with: float qualities, 2x2-repeated chroma, no 8-bit rounding. ``pillow`` runs
a real codec (libjpeg: interpolated chroma, smoother colour, integer qualities); ``torch`` is a
libjpeg-like approximation in PyTorch that can be made differentiable.

Real-ESRGAN's crop structure (``crop_pad_size``): the loader crops or pads the HR to 400x400, the
whole crop is degraded, then a paired random crop of ``data.patch_size`` (and its LR) is taken,
so blur kernels see image, not padding, at the patch border. ``crop_pad_size: null`` degrades the
patch itself.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from sfd.data import counter_rng
from sfd.data.batched import CanvasStages
from sfd.data.degradation_config import DegradationConfig, batched_on
from sfd.data.diffjpeg import diffjpeg
from sfd.data.filters import filter2d, rgb_to_gray
from sfd.data.kernels import KernelSpec, choice, crop_kernel, gaussian_kernel, sample_kernel, sample_sinc, uniform
from sfd.data.stages import DegradationParams, OrderParams, second_order

__all__ = [
    "DegradationConfig",
    "OrderParams",
    "DegradationParams",
    "Draws",
    "sample_params",
    "RealESRGANDegradation",
    "PairPool",
    "filter2d",
    "add_gaussian_noise",
    "add_poisson_noise",
    "jpeg",
    "jpeg_encode",
    "jpeg_pillow",
    "jpeg_torch",
    "jpeg_quant_tables",
    "paired_crop",
    "usm_sharp",
]

# ---------------------------------------------------------------- per-sample parameters


def _sample_order(gen: torch.Generator, cfg: DegradationConfig, order: int) -> OrderParams:
    sfx = "" if order == 1 else "2"
    get = lambda name: getattr(cfg, name + sfx)  # noqa: E731  (the first- or second-order field)
    if order == 1 or uniform(gen, 0, 1) < cfg.second_blur_prob:
        kernel = sample_kernel(
            gen,
            cfg.kernel_sizes(order),
            get("kernel_list"),
            get("kernel_prob"),
            get("blur_sigma"),
            get("betag_range"),
            get("betap_range"),
            get("sinc_prob"),
        )
    else:
        kernel = KernelSpec("identity", 1)
    resize = choice(gen, ["up", "down", "keep"], get("resize_prob"))
    low, high = get("resize_range")
    scale = uniform(gen, 1.0, high) if resize == "up" else uniform(gen, low, 1.0) if resize == "down" else 1.0
    mode = choice(gen, cfg.resize_modes)
    gaussian = uniform(gen, 0, 1) < get("gaussian_noise_prob")
    level = uniform(gen, *get("noise_range" if gaussian else "poisson_scale_range"))
    gray = uniform(gen, 0, 1) < get("gray_noise_prob")
    q_low, q_high = get("jpeg_range")
    if cfg.jpeg_backend == "diffjpeg":  # Real-ESRGAN: uniform_(*jpeg_range), a float
        quality = uniform(gen, q_low, q_high)
    else:
        quality = int(torch.randint(q_low, q_high + 1, (), generator=gen))
    noise_seed = int(torch.randint(0, 2**62, (), generator=gen))
    noise = "gaussian" if gaussian else "poisson"
    return OrderParams(kernel, resize, scale, mode, noise, level, gray, quality, noise_seed)


def sample_params(cfg: DegradationConfig, seed: int) -> DegradationParams:
    """Every random choice of one sample's degradation, from its seed alone."""
    gen = torch.Generator().manual_seed(int(seed))
    first = _sample_order(gen, cfg, 1)
    second = _sample_order(gen, cfg, 2)
    if uniform(gen, 0, 1) < cfg.final_sinc_prob:
        sinc = sample_sinc(gen, cfg.kernel_sizes(2), omega_low=math.pi / 3)
    else:
        sinc = KernelSpec("identity", 1)
    final_mode = choice(gen, cfg.resize_modes)
    resize_first = uniform(gen, 0, 1) < cfg.resize_first_prob
    crop = (uniform(gen, 0, 1), uniform(gen, 0, 1))  # drawn last: the draws above do not depend on it
    return DegradationParams(int(seed), first, second, sinc, final_mode, resize_first, crop)


@dataclass
class Draws:
    """A batch's parameters and their blur kernels, (B, k, k) each: made where the HR is loaded (the
    loader workers), so that the process that degrades the batch on a GPU only launches pixel work.
    ``second`` and ``sinc`` hold a unit pulse where that filter is skipped."""

    params: list[DegradationParams]
    first: torch.Tensor
    second: torch.Tensor
    sinc: torch.Tensor

    @classmethod
    def of(cls, params: Sequence[DegradationParams], cfg: DegradationConfig) -> Draws:
        size, size2 = cfg.blur_kernel_size, cfg.blur_kernel_size2

        def stack(specs, pad_to):
            return torch.stack([k.build(pad_to=pad_to) for k in specs])

        return cls(
            list(params),
            stack([p.first.kernel for p in params], size),
            stack([p.second.kernel for p in params], size2),
            stack([p.sinc for p in params], size2),
        )


# ---------------------------------------------------------------- stages


def _resize(img: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    size = (max(1, size[0]), max(1, size[1]))
    if mode == "area":
        return F.interpolate(img, size=size, mode="area")
    return F.interpolate(img, size=size, mode=mode, align_corners=False)


def _resize_by(img: torch.Tensor, factor: float, mode: str) -> torch.Tensor:
    """Real-ESRGAN's first-order resize, ``interpolate(scale_factor=factor)``: output side int(side *
    factor), sampled on the input grid scaled by ``factor`` exactly (not stretched to the rounded size)."""
    if mode == "area":
        return F.interpolate(img, scale_factor=factor, mode="area")
    return F.interpolate(img, scale_factor=factor, mode=mode, align_corners=False)


def add_gaussian_noise(img: torch.Tensor, sigma: float, gray: bool, seed: int) -> torch.Tensor:
    """``img`` + N(0, (sigma/255)^2), clipped to [0, 1]. Gray: one noise map for all channels.
    The noise is stream ``seed`` of sfd.data.counter_rng, made on ``img``'s device (the same
    values on every device)."""
    b, c, h, w = img.shape
    noise = counter_rng.normal(seed, (b, 1 if gray else c, h, w), img.device) * (sigma / 255.0)
    return (img + noise.to(img.dtype)).clamp(0, 1)


def add_poisson_noise(img: torch.Tensor, scale: float, gray: bool, seed: int) -> torch.Tensor:
    """Real-ESRGAN's Poisson (shot) noise, clipped to [0, 1]: with the image rounded to 8-bit levels
    and ``vals`` = the number of distinct levels rounded up to a power of 2, the noise is
    ``scale * (Poisson(img * vals) / vals - img)``, so its variance is ``scale^2 * img / vals``.
    Gray: computed on the luma and added to all channels. Image ``i`` of the batch draws stream
    ``seed + i`` of sfd.data.counter_rng, on ``img``'s device (the same values on every device)."""
    src = rgb_to_gray(img) if gray else img
    levels = (src * 255.0).round().clamp(0, 255)
    noise = []
    for i, x in enumerate(levels):
        # distinct levels by a histogram (linear time, on the image's device) rather than a sort
        vals = 2.0 ** math.ceil(math.log2(int((torch.bincount(x.flatten().long(), minlength=256) > 0).sum())))
        noise.append(counter_rng.poisson_levels(x, vals, seed + i) / vals - x / 255.0)
    return (img + scale * torch.stack(noise).to(img.dtype)).clamp(0, 1)


def _add_noise(img: torch.Tensor, p: OrderParams) -> torch.Tensor:
    add = add_gaussian_noise if p.noise == "gaussian" else add_poisson_noise
    return add(img, p.noise_level, p.gray, p.noise_seed)


# ---------------------------------------------------------------- JPEG


def _to_uint8(img: torch.Tensor) -> np.ndarray:
    return (img.clamp(0, 1) * 255.0).round().byte().permute(1, 2, 0).cpu().numpy()


def jpeg_encode(img: torch.Tensor, quality: int) -> bytes:
    """One (3, H, W) image in [0, 1] -> baseline JPEG bytes at ``quality`` (libjpeg via Pillow, 4:2:0)."""
    buf = io.BytesIO()
    Image.fromarray(_to_uint8(img)).save(buf, format="JPEG", quality=int(quality), subsampling="4:2:0")
    return buf.getvalue()


def jpeg_pillow(img: torch.Tensor, quality: Sequence[int]) -> torch.Tensor:
    """Encode and decode each image of (B, 3, H, W) at its quality with a real JPEG codec."""
    out = []
    for x, q in zip(img, quality):
        with Image.open(io.BytesIO(jpeg_encode(x, int(q)))) as im:
            out.append(torch.from_numpy(np.asarray(im.convert("RGB")).copy()))
    return (torch.stack(out).permute(0, 3, 1, 2) / 255.0).to(img)


# ITU-T T.81 Annex K tables, natural (row-major) order; libjpeg scales them by quality.
_LUMA_TABLE = [
    16,
    11,
    10,
    16,
    24,
    40,
    51,
    61,
    12,
    12,
    14,
    19,
    26,
    58,
    60,
    55,
    14,
    13,
    16,
    24,
    40,
    57,
    69,
    56,
    14,
    17,
    22,
    29,
    51,
    87,
    80,
    62,
    18,
    22,
    37,
    56,
    68,
    109,
    103,
    77,
    24,
    35,
    55,
    64,
    81,
    104,
    113,
    92,
    49,
    64,
    78,
    87,
    103,
    121,
    120,
    101,
    72,
    92,
    95,
    98,
    112,
    100,
    103,
    99,
]
_CHROMA_TABLE = [17, 18, 24, 47] + [99] * 4 + [18, 21, 26, 66] + [99] * 4 + [24, 26, 56] + [99] * 5
_CHROMA_TABLE += [47, 66] + [99] * 38


def jpeg_quant_tables(quality: int) -> tuple[torch.Tensor, torch.Tensor]:
    """libjpeg's (luma, chroma) 8x8 quantisation tables for ``quality`` (jpeg_set_quality, baseline)."""
    quality = min(max(int(quality), 1), 100)
    factor = 5000 // quality if quality < 50 else 200 - 2 * quality
    tables = [((torch.tensor(t) * factor + 50) // 100).clamp(1, 255).view(8, 8) for t in (_LUMA_TABLE, _CHROMA_TABLE)]
    return tables[0], tables[1]


def _dct_basis(device, dtype) -> torch.Tensor:
    """The 64 orthonormal 8x8 DCT-II basis images, flattened (64, 64): row 8u+v is basis (u, v).
    Orthonormal DCT is JPEG's 1/4 C(u) C(v) normalisation, and its inverse is the transpose."""
    n = torch.arange(8, dtype=torch.float64)
    d = torch.cos((2 * n[None] + 1) * n[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return (d[:, None, :, None] * d[None, :, None, :]).reshape(64, 64).to(device, dtype)


def _block_codec(plane: torch.Tensor, tables: torch.Tensor, rnd) -> torch.Tensor:
    """DCT, quantise with ``tables`` (B, 8, 8), dequantise and inverse-DCT every 8x8 block of
    ``plane`` (B, H, W), H and W multiples of 8."""
    b, h, w = plane.shape
    basis = _dct_basis(plane.device, plane.dtype)
    blocks = (plane - 128).reshape(b, h // 8, 8, w // 8, 8).transpose(2, 3).reshape(b, h // 8, w // 8, 64)
    q = tables.reshape(b, 1, 1, 64)
    blocks = (rnd(blocks @ basis.T / q) * q) @ basis
    return blocks.reshape(b, h // 8, w // 8, 8, 8).transpose(2, 3).reshape(b, h, w) + 128


def jpeg_torch(img: torch.Tensor, quality: Sequence[int], differentiable: bool = False) -> torch.Tensor:
    """A JPEG approximation in PyTorch: JFIF YCbCr, 4:2:0 chroma (2x2 mean), 8x8 orthonormal DCT,
    libjpeg's tables for ``quality``, triangle ("fancy") chroma upsampling. Close to libjpeg but
    not bit-exact. ``differentiable``: rounding by x_r + (x - x_r)^3 (Shin & Song 2017), no final
    8-bit rounding; otherwise true rounding and an 8-bit result like a codec's."""
    h, w = img.shape[-2:]
    rnd = (lambda t: t.round() + (t - t.round()) ** 3) if differentiable else torch.round
    x = img.clamp(0, 1) * 255.0
    if not differentiable:
        x = x.round()
    x = F.pad(x, (0, (-w) % 16, 0, (-h) % 16), mode="replicate")  # libjpeg replicates edges to whole MCUs
    r, g, b = x.unbind(1)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b + 128
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b + 128
    luma_tables, chroma_tables = (torch.stack(t).to(img) for t in zip(*(jpeg_quant_tables(q) for q in quality)))
    y = _block_codec(y, luma_tables, rnd)
    chroma = F.avg_pool2d(torch.stack([cb, cr], 1), 2)
    chroma = torch.stack([_block_codec(c, chroma_tables, rnd) for c in chroma.unbind(1)], 1)
    cb, cr = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False).unbind(1)
    cb, cr = cb - 128, cr - 128
    rgb = torch.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], 1)
    rgb = rgb[..., :h, :w].clamp(0, 255)
    return (rgb if differentiable else rgb.round()) / 255.0


def jpeg(img: torch.Tensor, quality: Sequence[float], backend: str = "diffjpeg") -> torch.Tensor:
    """JPEG-compress each image at its quality with ``backend`` "diffjpeg" (BasicSR's DiffJPEG, float
    qualities, float output), "pillow" (real codec) or "torch"; the last two round qualities to integers."""
    if backend == "diffjpeg":
        return diffjpeg(img, quality)
    if backend == "pillow":
        return jpeg_pillow(img, [round(q) for q in quality])
    if backend == "torch":
        return jpeg_torch(img, [round(q) for q in quality])
    raise ValueError(f"unknown JPEG backend {backend!r}: use 'diffjpeg', 'pillow' or 'torch'")


# ---------------------------------------------------------------- unsharp masking


def usm_sharp(img: torch.Tensor, weight: float = 0.5, radius: int = 50, threshold: float = 10.0) -> torch.Tensor:
    """Real-ESRGAN's unsharp masking: ``img + weight * (img - blur)`` where the residual exceeds
    ``threshold``/255, blended in through a blurred mask so no hard edges appear."""
    size = radius + 1 if radius % 2 == 0 else radius
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8  # OpenCV's getGaussianKernel(size, 0)
    kernel = gaussian_kernel(size, sigma)
    residual = img - filter2d(img, kernel)
    mask = ((residual.abs() * 255) > threshold).to(img)
    soft_mask = filter2d(mask, kernel)
    sharp = (img + weight * residual).clamp(0, 1)
    return soft_mask * sharp + (1 - soft_mask) * img


# ---------------------------------------------------------------- the pipeline


def paired_crop(
    lr: torch.Tensor, hrs: Sequence[torch.Tensor], patch: int, scale: int, where: tuple[float, float]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Real-ESRGAN's ``paired_random_crop``: an LR patch of ``patch // scale`` at a position on the LR
    grid (``where``: fractions of the free range), and the aligned ``patch`` of each HR image."""
    lp = patch // scale
    top = min(int(where[0] * (lr.shape[-2] - lp + 1)), lr.shape[-2] - lp)
    left = min(int(where[1] * (lr.shape[-1] - lp + 1)), lr.shape[-1] - lp)
    hr_crops = [x[..., top * scale : top * scale + patch, left * scale : left * scale + patch] for x in hrs]
    return lr[..., top : top + lp, left : left + lp], hr_crops


class RealESRGANDegradation:
    """``(lr, hr_target, hr) = degrade(hr, seeds)`` for HR (B, 3, H, W) in [0, 1], H and W multiples
    of ``scale``, and one integer seed per sample. ``lr`` is on 8-bit levels; ``hr_target`` is the
    unsharp-masked HR when ``use_usm`` (Real-ESRGAN's L1/perceptual target; its GAN sees the plain
    ``hr``), else ``hr``. With ``patch`` smaller than H x W (Real-ESRGAN's crop structure) the whole
    input is degraded, then each sample's paired crop of ``patch`` (LR ``patch / scale``) is returned,
    at a position drawn from its seed, and the target is the crop's own unsharp masking (as Real-ESRGAN,
    which sharpens the whole HR for the degradations, and the cropped HR for its losses). Runs on
    ``hr``'s device; a sample's result is the same whatever its batch."""

    def __init__(self, cfg: DegradationConfig | None = None, scale: int = 4, patch: int | None = None):
        self.cfg = cfg or DegradationConfig()
        self.scale = scale
        self.patch = patch

    def sample(self, seed: int) -> DegradationParams:
        return sample_params(self.cfg, seed)

    def describe(self, seed: int) -> dict:
        """The parameters ``seed`` gives, as a plain dict (for logs and previews)."""
        return asdict(self.sample(seed))

    def usm(self, img: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        return usm_sharp(img, cfg.usm_weight, cfg.usm_radius, cfg.usm_threshold) if cfg.use_usm else img

    def __call__(
        self, hr: torch.Tensor, seeds: torch.Tensor | Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if len(seeds) != hr.shape[0]:
            raise ValueError(f"got {len(seeds)} seeds for a batch of {hr.shape[0]}")
        return self.apply(hr, self.draw(seeds))

    def draw(self, seeds: torch.Tensor | Sequence[int]) -> Draws:
        """The parameters and kernels of these samples' seeds."""
        return Draws.of([self.sample(int(s)) for s in seeds], self.cfg)

    @torch.no_grad()
    def apply(
        self, hr: torch.Tensor, draws: Draws | Sequence[DegradationParams], batched: bool | None = None
    ) -> tuple[torch.Tensor, ...]:
        """``__call__`` with the draws given (e.g. the same parameters through another codec). ``batched``: as
        the run's plan says; None: ``data.degradation.batched`` for ``hr``'s device."""
        draws = draws if isinstance(draws, Draws) else Draws.of(draws, self.cfg)
        params = draws.params
        b, _, h, w = hr.shape
        if h % self.scale or w % self.scale:
            raise ValueError(f"HR size {h}x{w} is not a multiple of the scale {self.scale}")
        # float64 throughout: CPU and CUDA (where float32 convolutions may run in TF32) then agree
        # far below an 8-bit level, so the roundings before JPEG and Poisson noise agree too.
        target = self.usm(hr.double())
        # The first blur acts on same-size images: one grouped convolution for the whole batch.
        blurred = filter2d(target, draws.first.to(target.device, non_blocking=True))
        # From the first resize on, sizes differ per sample: one by one, or batched on one canvas.
        order = (self.scale, self.cfg.first_resize)
        if batched_on(self.cfg.batched, hr.device) if batched is None else batched:
            kernels = (draws.second.to(hr.device, non_blocking=True), draws.sinc.to(hr.device, non_blocking=True))
            codec = lambda x, q: jpeg(x, q, self.cfg.jpeg_backend)  # noqa: E731
            stages = CanvasStages(codec, whole=self.cfg.jpeg_backend == "diffjpeg")
            lr = second_order(blurred, params, kernels, stages, *order)
        else:
            one = SampleStages(self._jpeg)
            lr = torch.cat(
                [
                    second_order(x[None], [p], (k2[None], ks[None]), one, *order)
                    for x, p, k2, ks in zip(blurred, params, draws.second, draws.sinc)
                ]
            )
        lr = (lr * 255.0).round().clamp(0, 255) / 255.0
        lr, target, hr = lr.to(hr.dtype), target.to(hr.dtype), hr
        if self.patch is None or (self.patch, self.patch) == (h, w):
            return lr, target, hr
        crops = [paired_crop(lr[i], [hr[i]], self.patch, self.scale, p.crop) for i, p in enumerate(params)]
        lr, hr = torch.stack([c[0] for c in crops]), torch.stack([c[1][0] for c in crops])
        # Real-ESRGAN sharpens the cropped HR again for the target (after its pool; the same result).
        return lr, self.usm(hr.double()).to(hr.dtype), hr

    def _jpeg(self, x: torch.Tensor, quality: float) -> torch.Tensor:
        return jpeg(x.clamp(0, 1), [quality], self.cfg.jpeg_backend).to(x.dtype)


class SampleStages:
    """The stages (sfd.data.stages) on one sample, (1, C, H, W) at its own size, as Real-ESRGAN runs them:
    ``F.interpolate``, ``filter2d`` with the kernel at its own size, the sample's own noise stream."""

    def __init__(self, jpeg_one):
        self._jpeg = jpeg_one  # (image, quality) -> image

    def start(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def resize(self, x, sizes, modes, factors):
        return _resize_by(x, factors[0], modes[0]) if factors else _resize(x, sizes[0], modes[0])

    def noise(self, x, ps):
        return _add_noise(x, ps[0])

    def jpeg(self, x, quality):
        return self._jpeg(x, quality[0])

    def filter(self, x, kernels, sizes):
        return x if sizes[0] is None else filter2d(x, crop_kernel(kernels[0], sizes[0]))

    def rows(self, t, idx):
        return t

    def per_group(self, x, flags, fn):
        return fn(x, [0], flags[0])


# ---------------------------------------------------------------- the training-pair pool


class PairPool:
    """Real-ESRGAN's training-pair queue: a batch's samples share nothing, but a pool of
    ``size`` recent samples, shuffled, makes each returned batch a mix of many past batches.
    ``pool(lr, hr, ...)`` returns the inputs unchanged while the pool fills, then a random batch
    from the pool, whose place the inputs take. Seedable; ``state_dict`` for resuming."""

    def __init__(self, size: int = 180, seed: int = 0):
        self.size = size
        self.gen = torch.Generator().manual_seed(seed)
        self.queue: list[torch.Tensor] | None = None
        self.ptr = 0

    @torch.no_grad()
    def __call__(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b = tensors[0].shape[0]
        if self.size <= 0:
            return tensors
        if self.queue is None:
            if self.size % b:
                raise ValueError(f"pool size {self.size} must be a multiple of the batch size {b}")
            self.queue = [t.new_zeros((self.size, *t.shape[1:])) for t in tensors]
        if self.ptr < self.size:  # still filling: enqueue only
            for q, t in zip(self.queue, tensors):
                q[self.ptr : self.ptr + b] = t
            self.ptr += b
            return tensors
        idx = torch.randperm(self.size, generator=self.gen).to(tensors[0].device)
        self.queue = [q[idx] for q in self.queue]
        out = tuple(q[:b].clone() for q in self.queue)
        for q, t in zip(self.queue, tensors):
            q[:b] = t
        return out

    def state_dict(self) -> dict:
        return {"size": self.size, "ptr": self.ptr, "queue": self.queue, "gen": self.gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.size, self.ptr, self.queue = state["size"], state["ptr"], state["queue"]
        self.gen.set_state(state["gen"])
