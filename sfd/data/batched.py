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

from collections.abc import Callable
from dataclasses import dataclass

import torch

from sfd.data import counter_rng
from sfd.data.degradation_config import RESIZE_MODES
from sfd.data.filters import fft_correlate, rgb_to_gray
from sfd.data.stages import OrderParams

Jpeg = Callable[[torch.Tensor, list], torch.Tensor]  # (B, 3, H, W) images and their qualities -> images

__all__ = ["Canvas", "CanvasStages", "resize_matrix"]


def _put(values, dtype: torch.dtype, device) -> torch.Tensor:
    """Host values as a tensor on ``device``, copied without waiting for the device (a blocking copy
    would synchronise the stream, and the host could no longer run ahead of the GPU)."""
    return torch.tensor(values, dtype=dtype).to(device, non_blocking=True)


_CUBIC_A = -0.75  # PyTorch's (and OpenCV's) bicubic coefficient
_MODES = RESIZE_MODES
_RATES = tuple(2.0**e for e in range(9))  # Poisson noise's level counts: 1 ... 256 distinct levels


@dataclass
class Canvas:
    """``x`` (B, C, H, W): sample i in ``x[i, :, :hs[i], :ws[i]]``, zeros elsewhere."""

    x: torch.Tensor
    hs: list[int]
    ws: list[int]

    def sizes(self, which: list[int]) -> torch.Tensor:
        return _put(which, torch.int64, self.x.device)

    def valid(self) -> torch.Tensor:
        """(B, 1, H, W) bool: inside each sample."""
        h, w = self.x.shape[-2:]
        rows = torch.arange(h, device=self.x.device) < self.sizes(self.hs)[:, None]
        cols = torch.arange(w, device=self.x.device) < self.sizes(self.ws)[:, None]
        return (rows[:, :, None] & cols[:, None, :])[:, None]

    def masked(self, x: torch.Tensor) -> Canvas:
        return Canvas(x * self.valid(), self.hs, self.ws)

    def select(self, idx: list[int]) -> Canvas:
        pick = _put(idx, torch.int64, self.x.device)
        hs, ws = [self.hs[i] for i in idx], [self.ws[i] for i in idx]
        return Canvas(self.x.index_select(0, pick)[..., : max(hs), : max(ws)], hs, ws)

    def put(self, idx: list[int], part: Canvas) -> Canvas:
        """This canvas with samples ``idx`` replaced by ``part``'s (the same sizes)."""
        x = self.x.clone()
        ph, pw = part.x.shape[-2:]
        x[_put(idx, torch.int64, x.device), :, :ph, :pw] = part.x  # the same sizes: zeros beyond stay zeros
        return Canvas(x, self.hs, self.ws)


def _groups(flags: list) -> dict:
    out: dict = {}
    for i, f in enumerate(flags):
        out.setdefault(f, []).append(i)
    return out


def _rows(t: torch.Tensor, keep: list[bool]) -> torch.Tensor:
    return t.index_select(0, _put([i for i, k in enumerate(keep) if k], torch.int64, t.device))


def _apply_to(canvas: Canvas, flags: list, fns: dict) -> Canvas:
    """Run ``fns[flag]`` on the sub-canvas of the samples with that flag (a missing key: unchanged)."""
    groups = {f: idx for f, idx in _groups(flags).items() if fns.get(f) is not None}
    if list(groups.values()) == [list(range(len(flags)))]:
        return fns[flags[0]](canvas)
    for f, idx in groups.items():
        canvas = canvas.put(idx, fns[f](canvas.select(idx)))
    return canvas


# ---------------------------------------------------------------- resize


def resize_matrix(n_in: torch.Tensor, n_out: torch.Tensor, factor: torch.Tensor, modes, rows: int, cols: int):
    """(B, rows, cols) float64: row j of sample b holds the weights of output j over the inputs of
    ``F.interpolate(modes[b], align_corners=False)`` along one axis, from ``n_in[b]`` to ``n_out[b]``
    samples (``factor[b]`` > 0, float64: with ``scale_factor=factor``, else by size). Rows from
    ``n_out[b]`` and columns from ``n_in[b]`` on are zero. ``modes``: one mode, or one per sample."""
    device, b = n_in.device, n_in.shape[0]
    modes = [modes] * b if isinstance(modes, str) else list(modes)
    if set(modes) - set(_MODES):
        raise ValueError(f"no batched resize for modes {sorted(set(modes) - set(_MODES))}")
    code = _put([_MODES.index(m) for m in modes], torch.int64, device)[:, None]
    j = torch.arange(rows, device=device)[None]
    last = n_in[:, None] - 1
    # bilinear and bicubic: taps at source positions (align_corners=False)
    scale = torch.where(factor[:, None] > 0, 1.0 / factor[:, None], n_in[:, None].double() / n_out[:, None])
    real = scale * (j + 0.5) - 0.5
    real_lin = real.clamp_min(0)  # bilinear clamps below; bicubic clamps its taps' indices instead
    i_lin = real_lin.floor()
    lam = real_lin - i_lin
    i_lin = torch.minimum(i_lin.long(), last)  # (beyond last only in rows past n_out, zeroed below)
    i_cub = real.floor()
    t = real - i_cub
    i_cub = i_cub.long()
    a = _CUBIC_A
    near = lambda x: ((a + 2) * x - (a + 3)) * x * x + 1  # noqa: E731  |x| <= 1
    far = lambda x: ((a * x - 5 * a) * x + 8 * a) * x - 4 * a  # noqa: E731  1 < |x| < 2
    cubic = code == _MODES.index("bicubic")
    zero = torch.zeros_like(lam)
    weights = [
        torch.where(cubic, far(t + 1), zero),
        torch.where(cubic, near(t), 1 - lam),
        torch.where(cubic, near(1 - t), lam),
        torch.where(cubic, far(2 - t), zero),
    ]
    index = [torch.where(cubic, i_cub + d, i_lin + max(0, min(d, 1))) for d in (-1, 0, 1, 2)]
    m = torch.zeros(b, rows, cols, dtype=torch.float64, device=device)
    m.scatter_add_(
        2, torch.stack(index, -1).clamp(torch.zeros_like(last)[..., None], last[..., None]), torch.stack(weights, -1)
    )
    # area: adaptive average pooling, [floor(j n / m), ceil((j + 1) n / m))
    start = (j * n_in[:, None]) // n_out[:, None]
    end = -((-(j + 1) * n_in[:, None]) // n_out[:, None])
    k = torch.arange(cols, device=device)[None, None]
    area = ((k >= start[..., None]) & (k < end[..., None])) / (end - start).clamp_min(1)[..., None].double()
    m = torch.where((code == _MODES.index("area"))[..., None], area, m)
    return m * (j < n_out[:, None])[..., None]


def _resize(canvas: Canvas, hs: list[int], ws: list[int], modes: list[str], factors: list[float] | None) -> Canvas:
    """Each sample resized to (hs[i], ws[i]) with its mode (and its scale factor when given)."""
    x = canvas.x
    f = _put(factors or [0.0] * len(hs), torch.float64, x.device)
    ry = resize_matrix(canvas.sizes(canvas.hs), canvas.sizes(hs), f, modes, max(hs), x.shape[-2])
    rx = resize_matrix(canvas.sizes(canvas.ws), canvas.sizes(ws), f, modes, max(ws), x.shape[-1])
    return Canvas(ry[:, None] @ x @ rx[:, None].transpose(-1, -2), hs, ws)


# ---------------------------------------------------------------- blur


def _reflect_index(n: torch.Tensor, size: int, pad: int) -> torch.Tensor:
    """(B, size + 2 pad): for each padded position, the source index in a sample of ``n[b]`` samples
    (reflect-101, then the edge where reflection runs out: ``pad_reflect``'s rule)."""
    r = torch.arange(size + 2 * pad, device=n.device)[None] - pad
    last = n[:, None] - 1
    r = torch.where(r < 0, -r, torch.where(r > last, 2 * last - r, r))
    return torch.minimum(r.clamp_min(0), last)


def _filter(canvas: Canvas, kernels: torch.Tensor) -> Canvas:
    """Each sample correlated with its kernel (B, k, k), as ``filter2d`` (a kernel zero-padded to k
    gives what it gives unpadded: the padding's taps are zero)."""
    x = canvas.x
    b, c, h, w = x.shape
    kernel = kernels.to(x)
    p = kernels.shape[-1] // 2
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
    color = ~_put(gray, torch.bool, x.device).view(b, 1, 1, 1)
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
    sigma = _put([p.noise_level / 255.0 for p in ps], torch.float64, x.device)
    noise = counter_rng.normal_at(counters, n, low, high) * sigma.view(-1, 1, 1, 1)
    return canvas.masked((x + noise.to(x.dtype)).clamp(0, 1))


def _poisson(canvas: Canvas, ps: list[OrderParams]) -> Canvas:
    x = canvas.x
    b = x.shape[0]
    gray = _put([p.gray for p in ps], torch.bool, x.device).view(b, 1, 1, 1)
    levels = (torch.where(gray, rgb_to_gray(x), x) * 255.0).round().clamp(0, 255)
    # distinct levels per sample (inside it; the rest counts in a bin of its own): one histogram
    offset = torch.arange(b, device=x.device).view(b, 1, 1, 1) * 256
    bins = torch.where(canvas.valid(), levels.long() + offset, 256 * b)
    bins = bins.flatten()  # (index_add_, not bincount: on CUDA bincount reads its input's maximum on the host)
    hist = torch.zeros(256 * b + 1, dtype=torch.int64, device=x.device).index_add_(0, bins, torch.ones_like(bins))
    distinct = (hist[:-1].view(b, 256) > 0).sum(1)
    # rate = the distinct count rounded up to a power of two, 2^e (e = how many powers lie below it)
    e = (distinct[:, None] > 2 ** torch.arange(9, device=x.device)).sum(1).view(b, 1, 1, 1)
    counters, _ = _counters(canvas, [p.gray for p in ps])
    low, high = (t.view(-1, 1, 1, 1) for t in counter_rng.seed_halves([p.noise_seed for p in ps], x.device))
    u = counter_rng.uniform_at(counters, low, high)
    counts = counter_rng.poisson_counts(levels, _RATES, e, u)
    noise = counts / (2**e).double() - levels / 255.0
    scale = _put([p.noise_level for p in ps], torch.float64, x.device).view(b, 1, 1, 1)
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


# ---------------------------------------------------------------- the stages


class CanvasStages:
    """The stages (sfd.data.stages) on a ``Canvas`` of the whole batch, each run once for all its samples.
    ``codec``: the JPEG codec, (B, 3, H, W) and qualities; ``whole``: run it on the whole canvas (DiffJPEG)."""

    def __init__(self, codec: Jpeg, whole: bool):
        self.codec, self.whole = codec, whole

    def start(self, x: torch.Tensor) -> Canvas:
        b, _, h, w = x.shape
        return Canvas(x, [h] * b, [w] * b)

    def resize(self, canvas: Canvas, sizes, modes, factors) -> Canvas:
        return _resize(canvas, [s[0] for s in sizes], [s[1] for s in sizes], modes, factors)

    def noise(self, canvas: Canvas, ps: list[OrderParams]) -> Canvas:
        return _noise(canvas, ps)

    def jpeg(self, canvas: Canvas, quality: list[float]) -> Canvas:
        return _jpeg(canvas, quality, self.codec, self.whole)

    def filter(self, canvas: Canvas, kernels: torch.Tensor, sizes: list[int | None]) -> Canvas:
        on = [s is not None for s in sizes]  # a kernel zero-padded to the batch's size: no crop needed
        return _apply_to(canvas, on, {True: lambda c: _filter(c, _rows(kernels, on))})

    def rows(self, t: torch.Tensor, idx: list[int]) -> torch.Tensor:
        return t.index_select(0, _put(idx, torch.int64, t.device))

    def per_group(self, canvas: Canvas, flags: list, fn) -> torch.Tensor:
        parts = {flag: (idx, fn(canvas.select(idx), idx, flag).x) for flag, idx in _groups(flags).items()}
        x = next(iter(parts.values()))[1]
        out = torch.empty(len(flags), *x.shape[1:], dtype=x.dtype, device=x.device)
        for idx, part in parts.values():
            out.index_copy_(0, _put(idx, torch.int64, out.device), part)
        return out
