"""The second-order degradations of a whole batch at once, for the GPU (``data.degradation.batched``).

After the first resize each sample has its own size, so ``RealESRGANDegradation`` runs the rest of
the pipeline sample by sample: fine in a loader worker, hundreds of small launches per sample on a
GPU. Here every sample lies in the top-left corner of one zero canvas, and each stage runs once for
the batch, computing for each sample what the per-sample stage computes:

- resizes are the per-sample interpolation written as two matrices, ``Ry @ x @ Rx^T``, built for each
  sample from PyTorch's own rules (bilinear and bicubic without antialiasing, area = adaptive average
  pooling; source indices of ``align_corners=False``; ``scale_factor`` where the first order uses it);
- blurs reflect-pad each sample at its own border (by index, OpenCV's reflect-101 as ``pad_reflect``)
  and convolve by FFT with kernels zero-padded to one size (a zero tap changes nothing);
- noise maps come from each sample's counter-based stream at the index that pixel has in the
  sample's own map (sfd.data.counter_rng), so the values are the per-sample path's;
- DiffJPEG pads each image with zeros to whole 16x16 macroblocks, which the zero canvas already is
  (the other JPEG backends run per sample on cropped images).

Results equal the per-sample path's up to float64 rounding (the matrices and FFT sizes sum in
another order; tests/test_degrade_batched.py states the tolerance), and like it they depend on each
sample's seed only, not on its batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from sfd.data import counter_rng
from sfd.data.filters import fft_correlate, rgb_to_gray
from sfd.data.kernels import pad_kernel

if TYPE_CHECKING:
    from sfd.data.degradations import DegradationParams, OrderParams

Jpeg = Callable[[torch.Tensor, list], torch.Tensor]  # (B, 3, H, W) images and their qualities -> images

__all__ = ["Canvas", "resize_matrix", "degrade_rest"]

_CUBIC_A = -0.75  # PyTorch's (and OpenCV's) bicubic coefficient


@dataclass
class Canvas:
    """``x`` (B, C, H, W): sample i in ``x[i, :, :hs[i], :ws[i]]``, zeros elsewhere."""

    x: torch.Tensor
    hs: list[int]
    ws: list[int]

    def sizes(self, which: list[int]) -> torch.Tensor:
        return torch.tensor(which, dtype=torch.int64, device=self.x.device)

    def valid(self) -> torch.Tensor:
        """(B, 1, H, W) bool: inside each sample."""
        h, w = self.x.shape[-2:]
        rows = torch.arange(h, device=self.x.device) < self.sizes(self.hs)[:, None]
        cols = torch.arange(w, device=self.x.device) < self.sizes(self.ws)[:, None]
        return (rows[:, :, None] & cols[:, None, :])[:, None]

    def masked(self, x: torch.Tensor) -> Canvas:
        return Canvas(x * self.valid(), self.hs, self.ws)

    def select(self, idx: list[int]) -> Canvas:
        pick = torch.tensor(idx, device=self.x.device)
        hs, ws = [self.hs[i] for i in idx], [self.ws[i] for i in idx]
        return Canvas(self.x.index_select(0, pick)[..., : max(hs), : max(ws)], hs, ws)

    def put(self, idx: list[int], part: Canvas) -> Canvas:
        """This canvas with samples ``idx`` replaced by ``part``'s (the same sizes)."""
        x = self.x.clone()
        ph, pw = part.x.shape[-2:]
        x[idx, :, :ph, :pw] = part.x  # the sizes are the same: zeros beyond stay zeros
        return Canvas(x, self.hs, self.ws)


def _groups(flags: list) -> dict:
    out: dict = {}
    for i, f in enumerate(flags):
        out.setdefault(f, []).append(i)
    return out


def _apply_to(canvas: Canvas, flags: list, fns: dict) -> Canvas:
    """Run ``fns[flag]`` on the sub-canvas of the samples with that flag (a missing key: unchanged)."""
    groups = {f: idx for f, idx in _groups(flags).items() if fns.get(f) is not None}
    if list(groups.values()) == [list(range(len(flags)))]:
        return fns[flags[0]](canvas)
    for f, idx in groups.items():
        canvas = canvas.put(idx, fns[f](canvas.select(idx)))
    return canvas


# ---------------------------------------------------------------- resize


def resize_matrix(n_in: torch.Tensor, n_out: torch.Tensor, factor: torch.Tensor, mode: str, rows: int, cols: int):
    """(B, rows, cols) float64: row j of sample b holds the weights of output j over the inputs of
    ``F.interpolate(mode, align_corners=False)`` along one axis, from ``n_in[b]`` to ``n_out[b]``
    samples (``factor[b]`` > 0: with ``scale_factor=factor``, else by size). Rows from ``n_out[b]``
    and columns from ``n_in[b]`` on are zero."""
    device = n_in.device
    j = torch.arange(rows, device=device, dtype=torch.float64)[None]
    n_in_f, n_out_f = n_in[:, None].double(), n_out[:, None].double()
    k = torch.arange(cols, device=device)[None, None]
    if mode == "area":  # adaptive average pooling: [floor(j n/m), ceil((j+1) n/m))
        jj = torch.arange(rows, device=device)[None]
        start = (jj * n_in[:, None]) // n_out[:, None]
        end = -((-(jj + 1) * n_in[:, None]) // n_out[:, None])
        inside = (k >= start[..., None]) & (k < end[..., None])
        m = inside / (end - start).clamp_min(1)[..., None].double()
    else:
        scale = torch.where(factor[:, None] > 0, 1.0 / factor[:, None].double(), n_in_f / n_out_f)
        real = scale * (j + 0.5) - 0.5
        last = n_in[:, None] - 1
        if mode == "bilinear":
            real = real.clamp_min(0)
            i0 = real.floor()
            lam = real - i0
            i0 = torch.minimum(i0.long(), last)  # (beyond last only in rows past n_out, zeroed below)
            taps = [(i0, 1 - lam), (torch.minimum(i0 + 1, last), lam)]
        elif mode == "bicubic":
            i0 = real.floor()
            t = real - i0
            i0 = i0.long()
            a = _CUBIC_A

            def near(x):  # |x| <= 1
                return ((a + 2) * x - (a + 3)) * x * x + 1

            def far(x):  # 1 < |x| < 2
                return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

            weights = [far(t + 1), near(t), near(1 - t), far(2 - t)]
            taps = [((i0 + d).clamp(torch.zeros_like(last), last), w) for d, w in zip((-1, 0, 1, 2), weights)]
        else:
            raise ValueError(f"no batched resize for mode {mode!r}")
        m = torch.zeros(n_in.shape[0], rows, cols, dtype=torch.float64, device=device)
        for idx, w in taps:
            m.scatter_add_(2, idx[..., None], w[..., None])
    return m * (j < n_out_f)[..., None]


def _resize(canvas: Canvas, hs: list[int], ws: list[int], modes: list[str], factors: list[float] | None) -> Canvas:
    """Each sample resized to (hs[i], ws[i]) with its mode (and its scale factor when given)."""
    x = canvas.x
    f = torch.tensor(factors or [0.0] * len(hs), dtype=torch.float64, device=x.device)
    rows, cols = max(hs), max(ws)
    sizes = {k: canvas.sizes(v) for k, v in (("h", canvas.hs), ("w", canvas.ws), ("h2", hs), ("w2", ws))}
    out = torch.empty(x.shape[0], x.shape[1], rows, cols, dtype=x.dtype, device=x.device)
    for mode, idx in _groups(modes).items():
        pick = torch.tensor(idx, device=x.device)
        n = {k: v[pick] for k, v in sizes.items()}
        ry = resize_matrix(n["h"], n["h2"], f[pick], mode, rows, x.shape[-2])
        rx = resize_matrix(n["w"], n["w2"], f[pick], mode, cols, x.shape[-1])
        out[idx] = ry[:, None] @ x.index_select(0, pick) @ rx[:, None].transpose(-1, -2)
    return Canvas(out, hs, ws)


# ---------------------------------------------------------------- blur


def _reflect_index(n: torch.Tensor, size: int, pad: int) -> torch.Tensor:
    """(B, size + 2 pad): for each padded position, the source index in a sample of ``n[b]`` samples
    (reflect-101, then the edge where reflection runs out: ``pad_reflect``'s rule)."""
    r = torch.arange(size + 2 * pad, device=n.device)[None] - pad
    last = n[:, None] - 1
    r = torch.where(r < 0, -r, torch.where(r > last, 2 * last - r, r))
    return torch.minimum(r.clamp_min(0), last)


def _filter(canvas: Canvas, kernels: list[torch.Tensor]) -> Canvas:
    """Each sample correlated with its kernel (odd sizes; zero-padded to the largest), as ``filter2d``."""
    x = canvas.x
    b, c, h, w = x.shape
    size = max(k.shape[-1] for k in kernels)
    kernel = torch.stack([pad_kernel(k, size) for k in kernels]).to(x)
    p = size // 2
    rows = _reflect_index(canvas.sizes(canvas.hs), h, p)
    cols = _reflect_index(canvas.sizes(canvas.ws), w, p)
    xp = x.gather(2, rows[:, None, :, None].expand(b, c, h + 2 * p, w))
    xp = xp.gather(3, cols[:, None, None, :].expand(b, c, h + 2 * p, w + 2 * p))
    return canvas.masked(fft_correlate(xp, kernel, h, w))


# ---------------------------------------------------------------- noise


def _counters(canvas: Canvas, gray: list[bool]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each pixel's index in its sample's own noise map ((1 or C), h, w, flattened), and each map's length."""
    x = canvas.x
    b, c, h, w = x.shape
    hs, ws = canvas.sizes(canvas.hs).view(b, 1, 1, 1), canvas.sizes(canvas.ws).view(b, 1, 1, 1)
    color = ~torch.tensor(gray, device=x.device).view(b, 1, 1, 1)
    ch = torch.arange(c, device=x.device).view(1, c, 1, 1) * color
    y = torch.arange(h, device=x.device).view(1, 1, h, 1)
    xx = torch.arange(w, device=x.device).view(1, 1, 1, w)
    counters = (ch * hs + y) * ws + xx
    n = torch.where(color, c, 1) * hs * ws
    return counters.int(), n.int()


def _gaussian(canvas: Canvas, ps: list[OrderParams]) -> Canvas:
    x = canvas.x
    counters, n = _counters(canvas, [p.gray for p in ps])
    low, high = (t.view(-1, 1, 1, 1) for t in counter_rng.seed_halves([p.noise_seed for p in ps], x.device))
    sigma = torch.tensor([p.noise_level / 255.0 for p in ps], dtype=torch.float64, device=x.device)
    noise = counter_rng.normal_at(counters, n, low, high) * sigma.view(-1, 1, 1, 1)
    return canvas.masked((x + noise.to(x.dtype)).clamp(0, 1))


def _poisson(canvas: Canvas, ps: list[OrderParams]) -> Canvas:
    x = canvas.x
    b = x.shape[0]
    gray = torch.tensor([p.gray for p in ps], device=x.device).view(b, 1, 1, 1)
    levels = (torch.where(gray, rgb_to_gray(x), x) * 255.0).round().clamp(0, 255)
    # distinct levels per sample (inside it): one histogram for the batch, read once by the host
    valid = canvas.valid().expand_as(levels)
    offset = torch.arange(b, device=x.device).view(b, 1, 1, 1) * 256
    hist = torch.bincount((levels.long() + offset)[valid], minlength=256 * b).view(b, 256)
    counts = (hist > 0).sum(1).tolist()
    vals = [2.0 ** math.ceil(math.log2(int(k))) for k in counts]
    counters, _ = _counters(canvas, [p.gray for p in ps])
    low, high = (t.view(-1, 1, 1, 1) for t in counter_rng.seed_halves([p.noise_seed for p in ps], x.device))
    u = counter_rng.uniform_at(counters, low, high)
    noise = torch.empty_like(levels)
    for rate, idx in _groups(vals).items():
        pick = torch.tensor(idx, device=x.device)
        sub = levels.index_select(0, pick)
        noise[idx] = counter_rng.poisson_from_uniform(sub, rate, u.index_select(0, pick)) / rate - sub / 255.0
    scale = torch.tensor([p.noise_level for p in ps], dtype=torch.float64, device=x.device).view(b, 1, 1, 1)
    return canvas.masked((x + scale * noise.to(x.dtype)).clamp(0, 1))


def _noise(canvas: Canvas, ps: list[OrderParams]) -> Canvas:
    kinds = [p.noise for p in ps]
    fns = {
        "gaussian": lambda c: _gaussian(c, [p for p in ps if p.noise == "gaussian"]),
        "poisson": lambda c: _poisson(c, [p for p in ps if p.noise == "poisson"]),
    }
    return _apply_to(canvas, kinds, fns)


# ---------------------------------------------------------------- JPEG


def _jpeg(canvas: Canvas, quality: list[float], codec: Jpeg, whole: bool) -> Canvas:
    """``codec`` on each sample; ``whole``: on the whole canvas at once, for a codec that pads an image
    with zeros to 16x16 macroblocks, which the canvas already holds there (DiffJPEG)."""
    x = canvas.x.clamp(0, 1)
    if whole:
        return canvas.masked(codec(x, quality).to(x.dtype))
    out = torch.zeros_like(x)
    for i, (h, w) in enumerate(zip(canvas.hs, canvas.ws)):
        out[i, :, :h, :w] = codec(x[i : i + 1, :, :h, :w], [quality[i]]).to(x.dtype)[0]
    return Canvas(out, canvas.hs, canvas.ws)


# ---------------------------------------------------------------- the pipeline


def degrade_rest(
    blurred: torch.Tensor,
    params: list[DegradationParams],
    scale: int,
    first_resize: str,
    codec: Jpeg,
    codec_on_canvas: bool,
) -> torch.Tensor:
    """``RealESRGANDegradation._degrade_one`` for the whole batch: ``blurred`` (B, C, H, W) after the
    first blur, to the LR images (B, C, H / scale, W / scale) before the final rounding."""
    b, _, h, w = blurred.shape
    lr_h, lr_w = h // scale, w // scale
    canvas = Canvas(blurred, [h] * b, [w] * b)
    first = [p.first for p in params]
    # First order: resize, noise, JPEG.
    factors = [p.scale for p in first] if first_resize == "scale_factor" else None
    canvas = _resize(
        canvas,
        [math.floor(h * p.scale) if factors else int(h * p.scale) for p in first],
        [math.floor(w * p.scale) if factors else int(w * p.scale) for p in first],
        [p.mode for p in first],
        factors,
    )
    canvas = _jpeg(_noise(canvas, first), [p.jpeg_quality for p in first], codec, codec_on_canvas)
    # Second order: blur, resize relative to the LR size, noise.
    second = [p.second for p in params]
    blur = [p.kernel.type != "identity" for p in second]
    kernels = [p.kernel.build() for p in second if p.kernel.type != "identity"]
    canvas = _apply_to(canvas, blur, {True: lambda c: _filter(c, kernels)})
    canvas = _resize(
        canvas,
        [int(lr_h * p.scale) for p in second],
        [int(lr_w * p.scale) for p in second],
        [p.mode for p in second],
        None,
    )
    canvas = _noise(canvas, second)

    # Final: [resize to the LR size + sinc] and JPEG, in either order.
    def resize_sinc(c: Canvas, ps: list[DegradationParams]) -> Canvas:
        c = _resize(c, [lr_h] * len(ps), [lr_w] * len(ps), [p.final_mode for p in ps], None)
        sinc = [p.sinc.type != "identity" for p in ps]
        kernels = [p.sinc.build() for p in ps if p.sinc.type != "identity"]
        return _apply_to(c, sinc, {True: lambda s: _filter(s, kernels)})

    def final(c: Canvas, resize_first: bool) -> Canvas:
        ps = [p for p in params if p.resize_first == resize_first]
        quality = [p.second.jpeg_quality for p in ps]
        if resize_first:
            return _jpeg(resize_sinc(c, ps), quality, codec, codec_on_canvas)
        return resize_sinc(_jpeg(c, quality, codec, codec_on_canvas), ps)

    out = torch.empty(b, blurred.shape[1], lr_h, lr_w, dtype=blurred.dtype, device=blurred.device)
    for resize_first, idx in _groups([p.resize_first for p in params]).items():
        out[idx] = final(canvas.select(idx), resize_first).x
    return out
