"""Blur kernels of Real-ESRGAN's degradation model, in PyTorch (float64, CPU).

Every kernel is a ``(size, size)`` tensor, ``size`` odd, centred, summing to 1. The Gaussian
family is parametrised by a covariance ``Sigma = R(theta) diag(sigma_x^2, sigma_y^2) R(theta)^T``
(isotropic: ``sigma_y = sigma_x``, ``theta = 0``) and evaluated on the integer grid:

- Gaussian:             exp(-1/2 * q),        q = x^T Sigma^-1 x
- generalised Gaussian: exp(-1/2 * q^beta)    (beta = 1: Gaussian; < 1 heavier tails; > 1 flatter top)
- plateau:              1 / (1 + q^beta)
- 2-D sinc (circular low-pass, cut-off omega_c in rad/pixel): omega_c J1(omega_c r) / (2 pi r),
  which models ringing and overshoot.

Kernels are built on the CPU from a few scalars, so the same parameters give the same kernel
on every device. ``KernelSpec`` holds those scalars; ``sample_kernel`` draws them as Real-ESRGAN
does, from a ``torch.Generator``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from sfd.data.degradation_config import KERNEL_TYPES

__all__ = [
    "KERNEL_TYPES",
    "KernelSpec",
    "gaussian_kernel",
    "generalized_gaussian_kernel",
    "plateau_kernel",
    "sinc_kernel",
    "pad_kernel",
    "crop_kernel",
    "sample_kernel",
    "sample_sinc",
    "uniform",
    "choice",
]


def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    if size % 2 != 1:
        raise ValueError(f"kernel size must be odd, got {size}")
    ax = torch.arange(size, dtype=torch.float64) - size // 2
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    return xx, yy


def _quadratic_form(size: int, sigma_x: float, sigma_y: float, theta: float) -> torch.Tensor:
    """q = x^T Sigma^-1 x on the grid, for the rotated covariance above."""
    xx, yy = _grid(size)
    c, s = math.cos(theta), math.sin(theta)
    # Coordinates in the kernel's principal axes: Sigma^-1 = R diag(1/sx^2, 1/sy^2) R^T.
    u = c * xx + s * yy
    v = -s * xx + c * yy
    return (u / sigma_x) ** 2 + (v / sigma_y) ** 2


def _normalised(k: torch.Tensor) -> torch.Tensor:
    return k / k.sum()


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0) -> torch.Tensor:
    sigma_y = sigma_x if sigma_y is None else sigma_y
    return _normalised(torch.exp(-0.5 * _quadratic_form(size, sigma_x, sigma_y, theta)))


def generalized_gaussian_kernel(
    size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0, beta: float = 1.0
) -> torch.Tensor:
    sigma_y = sigma_x if sigma_y is None else sigma_y
    return _normalised(torch.exp(-0.5 * _quadratic_form(size, sigma_x, sigma_y, theta) ** beta))


def plateau_kernel(
    size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0, beta: float = 1.0
) -> torch.Tensor:
    sigma_y = sigma_x if sigma_y is None else sigma_y
    return _normalised(1.0 / (_quadratic_form(size, sigma_x, sigma_y, theta) ** beta + 1.0))


def sinc_kernel(size: int, omega_c: float) -> torch.Tensor:
    """Circularly symmetric ideal low-pass filter with cut-off ``omega_c`` (radians, pi = Nyquist)."""
    xx, yy = _grid(size)
    r = torch.sqrt(xx**2 + yy**2)
    r_safe = torch.where(r == 0, torch.ones_like(r), r)
    k = omega_c * torch.special.bessel_j1(omega_c * r_safe) / (2 * math.pi * r_safe)
    # The limit at r = 0 (J1(x) ~ x/2).
    k = torch.where(r == 0, torch.full_like(r, omega_c**2 / (4 * math.pi)), k)
    return _normalised(k)


def pad_kernel(kernel: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad a centred odd kernel to ``size`` x ``size`` (so a batch of kernels can be stacked)."""
    pad = (size - kernel.shape[-1]) // 2
    if pad < 0:
        raise ValueError(f"kernel of size {kernel.shape[-1]} does not fit in {size}")
    return torch.nn.functional.pad(kernel, (pad, pad, pad, pad))


def crop_kernel(kernel: torch.Tensor, size: int) -> torch.Tensor:
    """``pad_kernel`` undone: the centred ``size`` x ``size`` of a padded kernel (the same values)."""
    d = (kernel.shape[-1] - size) // 2
    return kernel[..., d : d + size, d : d + size]


@dataclass
class KernelSpec:
    """The scalars that define one kernel; ``build()`` makes it. ``type`` is one of
    ``KERNEL_TYPES``, ``"sinc"`` or ``"identity"`` (a unit pulse: no blur)."""

    type: str
    size: int
    sigma_x: float = 0.0
    sigma_y: float = 0.0
    theta: float = 0.0
    beta: float = 1.0
    omega_c: float = 0.0

    def build(self, pad_to: int | None = None) -> torch.Tensor:
        t = self.type
        if t == "identity":
            k = torch.zeros(self.size, self.size, dtype=torch.float64)
            k[self.size // 2, self.size // 2] = 1.0
        elif t == "sinc":
            k = sinc_kernel(self.size, self.omega_c)
        elif t in ("iso", "aniso"):
            k = gaussian_kernel(self.size, self.sigma_x, self.sigma_y, self.theta)
        elif t.startswith("generalized"):
            k = generalized_gaussian_kernel(self.size, self.sigma_x, self.sigma_y, self.theta, self.beta)
        elif t.startswith("plateau"):
            k = plateau_kernel(self.size, self.sigma_x, self.sigma_y, self.theta, self.beta)
        else:
            raise ValueError(f"unknown kernel type {t!r}")
        return pad_kernel(k, pad_to) if pad_to else k

    def summary(self) -> str:
        """A short human-readable description, e.g. ``aniso 15px s=(2.1,0.9) 40deg``."""
        if self.type == "identity":
            return "none"
        if self.type == "sinc":
            return f"sinc {self.size}px wc={self.omega_c:.2f}"
        sigma = f"{self.sigma_x:.2f}"
        if self.type.endswith("aniso"):
            sigma = f"({self.sigma_x:.2f},{self.sigma_y:.2f}) {math.degrees(self.theta):.0f}deg"
        text = f"{self.type} {self.size}px s={sigma}"
        if self.type.startswith(("generalized", "plateau")):
            text += f" b={self.beta:.2f}"
        return text


# ---------------------------------------------------------------- sampling (Real-ESRGAN's recipe)


def uniform(gen: torch.Generator, low: float, high: float) -> float:
    """One draw from U(low, high) using ``gen`` (CPU), as a Python float."""
    return low + (high - low) * torch.rand((), generator=gen, dtype=torch.float64).item()


def choice(gen: torch.Generator, items: list, probs: list[float] | None = None):
    """One item, with probabilities ``probs`` (uniform when None), using ``gen``."""
    probs = probs if probs is not None else [1.0] * len(items)
    u = uniform(gen, 0.0, sum(probs))
    for item, p in zip(items, probs):
        u -= p
        if u < 0:
            return item
    return items[-1]  # only reached through float rounding


def _beta(gen: torch.Generator, beta_range: list[float]) -> float:
    # Real-ESRGAN: half the time below 1, half above (it assumes beta_range[0] <= 1 <= beta_range[1]).
    if uniform(gen, 0, 1) < 0.5:
        return uniform(gen, beta_range[0], 1.0)
    return uniform(gen, 1.0, beta_range[1])


def sample_sinc(gen: torch.Generator, sizes: list[int], omega_low: float | None = None) -> KernelSpec:
    """A sinc kernel: size from ``sizes``; cut-off U(pi/3, pi), or U(pi/5, pi) for sizes >= 13
    (a larger support can hold a lower cut-off), unless ``omega_low`` is given."""
    size = choice(gen, sizes)
    if omega_low is None:
        omega_low = math.pi / 3 if size < 13 else math.pi / 5
    return KernelSpec("sinc", size, omega_c=uniform(gen, omega_low, math.pi))


def sample_kernel(
    gen: torch.Generator,
    sizes: list[int],
    kernel_list: list[str],
    kernel_prob: list[float],
    sigma_range: list[float],
    betag_range: list[float],
    betap_range: list[float],
    sinc_prob: float,
) -> KernelSpec:
    """A blur kernel as Real-ESRGAN draws one: with ``sinc_prob`` a sinc, else a kernel type from
    ``kernel_list`` with ``kernel_prob``, sigma(s) from ``sigma_range``, angle from U(-pi, pi)."""
    if uniform(gen, 0, 1) < sinc_prob:
        return sample_sinc(gen, sizes)
    size = choice(gen, sizes)
    kind = choice(gen, kernel_list, kernel_prob)
    sigma_x = uniform(gen, *sigma_range)
    sigma_y, theta, beta = sigma_x, 0.0, 1.0
    if kind.endswith("aniso"):
        sigma_y = uniform(gen, *sigma_range)
        theta = uniform(gen, -math.pi, math.pi)
    if kind.startswith("generalized"):
        beta = _beta(gen, betag_range)
    elif kind.startswith("plateau"):
        beta = _beta(gen, betap_range)
    return KernelSpec(kind, size, sigma_x, sigma_y, theta, beta)
