"""Random numbers that are the same on every device: a counter-based generator in plain tensor ops.

The degradations' noise maps are drawn here rather than from a ``torch.Generator``, whose streams
differ between the CPU and CUDA. Value ``i`` of stream ``seed`` is a keyed integer hash of ``i``:
the counter, spread by the golden-ratio constant, is mixed with the two 32-bit halves of ``seed``,
each followed by Wellons' ``lowbias32`` hash (xor-shift-multiply). It is computed with int32
tensor ops (wrapping multiplication, masked shifts), vectorised on the CPU, so the bits are
identical on any device and the maps are made where the image is: on the GPU for the batched
device path. Normals come by Box-Muller, Poisson counts by inverting the exact CDF; both in
float64, whose last-bit differences between devices stay far below the 8-bit roundings that follow.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch

__all__ = ["hash_bits", "uniform", "normal", "poisson_levels"]
__all__ += ["seed_halves", "uniform_at", "normal_at", "poisson_counts"]

_GOLDEN, _MUL1, _MUL2 = 0x9E3779B9, 0x7FEB352D, 0x846CA68B
_MASK32 = (1 << 32) - 1


def _signed(c: int) -> int:
    """The int32 with the bits of ``c``'s lowest 32 bits."""
    c &= _MASK32
    return c - (1 << 32) if c >= 1 << 31 else c


def _shift_right(z: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int32 bits (``>>`` on int32 is arithmetic: it copies the sign bit)."""
    return (z >> s) & ((1 << (32 - s)) - 1)


def _lowbias32(z: torch.Tensor) -> torch.Tensor:
    z = (z ^ _shift_right(z, 16)) * _signed(_MUL1)
    z = (z ^ _shift_right(z, 15)) * _signed(_MUL2)
    return z ^ _shift_right(z, 16)


def _hash(counter: torch.Tensor, low, high) -> torch.Tensor:
    return _lowbias32(_lowbias32(counter * _signed(_GOLDEN) ^ low) ^ high)


def hash_bits(seed: int, n: int, device="cpu") -> torch.Tensor:
    """Values 0..n-1 of stream ``seed`` (an integer below 2^64), as int32 bit patterns."""
    return _hash(torch.arange(n, dtype=torch.int32, device=device), _signed(seed), _signed(seed >> 32))


def _unit(bits: torch.Tensor) -> torch.Tensor:
    return (bits.double() + (2.0**31 + 0.5)) * 2.0**-32


def uniform(seed: int, n: int, device="cpu") -> torch.Tensor:
    """``n`` float64 values uniform in (0, 1) on the centred 2^-32 grid (never 0 or 1), stream ``seed``."""
    return _unit(hash_bits(seed, n, device))


def _box_muller(u0: torch.Tensor, u1: torch.Tensor, cosine) -> torch.Tensor:
    radius, angle = torch.sqrt(-2 * torch.log(u0)), 2 * math.pi * u1
    return radius * torch.where(cosine, torch.cos(angle), torch.sin(angle))


def normal(seed: int, shape, device="cpu") -> torch.Tensor:
    """Standard normal float64 values of ``shape``, stream ``seed``: Box-Muller, both of each pair
    (value j < n/2 is the cosine of pair j, the rest the sines)."""
    n = math.prod(int(s) for s in shape)
    half = (n + 1) // 2
    u = uniform(seed, 2 * half, device).view(2, half)
    cosine = torch.ones(2, 1, dtype=torch.bool, device=device)
    cosine[1] = False
    return _box_muller(u[0], u[1], cosine).flatten()[:n].view(*shape)


# ---- many streams at once: the batched degradations draw each sample's values where its pixels lie


def seed_halves(seeds, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) int32 tensors of the low and high 32 bits of each stream's seed."""
    halves = torch.tensor([[_signed(int(s)) for s in seeds], [_signed(int(s) >> 32) for s in seeds]], dtype=torch.int32)
    low, high = halves.to(device, non_blocking=True)  # no wait for the device: the host may run ahead
    return low, high


def uniform_at(counters: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """``uniform``'s value number ``counters`` (int32, any shape) of the streams whose seed halves
    ``low``/``high`` broadcast against it."""
    return _unit(_hash(counters, low, high))


def normal_at(counters: torch.Tensor, n: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """``normal``'s value number ``counters`` of streams of ``n`` values each (int32 tensors that
    broadcast together): value j of a stream of n is the same here as in ``normal(seed, (n,))``."""
    half = (n + 1) // 2
    cosine = counters < half
    pair = torch.where(cosine, counters, counters - half)
    return _box_muller(uniform_at(pair, low, high), uniform_at(half + pair, low, high), cosine)


_GUIDE = 256  # guide-table buckets per CDF row


def poisson_levels(levels: torch.Tensor, rate: float, seed: int) -> torch.Tensor:
    """Poisson counts with means ``levels / 255 * rate`` for integer ``levels`` 0..255 (any shape,
    float or integer), on ``levels``' device: the exact inverse CDF at one uniform per value,
    stream ``seed``."""
    return poisson_counts(levels, [rate], 0, uniform(seed, levels.numel(), levels.device))


@functools.lru_cache(maxsize=32)
def _poisson_table(rates: tuple[float, ...], device) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The flat CDF table (R * 256 rows of k_max + 1: the last a stop of 2) and its guide table."""
    k_max = max(int(r + 12 * math.sqrt(r) + 12) for r in rates)  # beyond, the CDF is 1 to float64 precision
    rate = torch.tensor(rates, dtype=torch.float64)[:, None, None]
    lam = (torch.arange(256, dtype=torch.float64)[:, None] / 255 * rate).view(-1, 1)
    k = torch.arange(k_max, dtype=torch.float64)[None]
    cdf = torch.exp(torch.xlogy(k, lam) - lam - torch.lgamma(k + 1)).cumsum(1).contiguous()  # (R * 256, k_max)
    grid = torch.arange(_GUIDE, dtype=torch.float64).expand(cdf.shape[0], _GUIDE) / _GUIDE
    guide = torch.searchsorted(cdf, grid.contiguous(), right=True).flatten()  # #{cdf <= g / G} per row
    cdf = torch.cat([cdf, torch.full((cdf.shape[0], 1), 2.0, dtype=cdf.dtype)], 1).flatten()
    return cdf.to(device), guide.to(device), k_max


def poisson_counts(levels: torch.Tensor, rates: Sequence[float], which, u: torch.Tensor) -> torch.Tensor:
    """``poisson_levels`` at given uniforms ``u`` (float64, one per value of ``levels``), each value at
    rate ``rates[which]`` (``which``: an int, or an integer tensor that broadcasts against ``levels``).
    The means take at most 256 values per rate, so their CDFs are one small table; a guide table
    (the count at each 1/256 of probability) starts each search a step away, and the tails, where a
    bucket holds many values, finish by bisection."""
    device = levels.device
    cdf, guide, k_max = _poisson_table(tuple(float(r) for r in rates), device)
    row = (levels.long() + which * 256).expand(levels.shape).reshape(-1)
    u = u.reshape(-1)
    count = guide.index_select(0, row * _GUIDE + (u * _GUIDE).long())  # <= the answer, #{cdf <= u}
    start = row * (k_max + 1)  # each value's CDF row in the flat table
    count += cdf.index_select(0, start + count) <= u  # one step for all
    # The few left (the tails, where a bucket holds many CDF values) by bisection in their row.
    rest = (cdf.index_select(0, start + count) <= u).nonzero().flatten()
    if rest.numel():
        lo, ur, first = count[rest] + 1, u[rest], start[rest]
        hi = torch.full_like(lo, k_max)  # the stop: cdf > u there
        for _ in range(math.ceil(math.log2(k_max + 1)) + 1):
            mid = (lo + hi) // 2
            below = cdf.index_select(0, first + mid) <= ur
            lo, hi = torch.where(below, mid + 1, lo), torch.where(below, hi, mid)
        count[rest] = lo
    return count.to(torch.float64).view(levels.shape)
