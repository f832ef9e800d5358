"""Agreement between metric scores and opinion scores: SRCC, KRCC, PLCC and PLCC after the
VQEG 4-parameter logistic mapping.

Implemented here (not called from SciPy) and checked against ``scipy.stats`` in the tests.
Ties get average ranks (SRCC) and Kendall's tau-b correction (KRCC), as SciPy does.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit
from scipy.stats import rankdata

__all__ = ["plcc", "srcc", "krcc", "logistic4", "fit_logistic4", "LogisticFit", "correlations"]


def _pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"score and MOS vectors differ in length: {x.size} vs {y.size}")
    if x.size < 3:
        raise ValueError(f"need at least 3 pairs to correlate, got {x.size}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("scores and MOS must be finite")
    return x, y


def plcc(x, y) -> float:
    """Pearson's linear correlation; NaN when either vector is constant."""
    x, y = _pair(x, y)
    dx, dy = x - x.mean(), y - y.mean()
    denom = np.sqrt((dx * dx).sum() * (dy * dy).sum())
    return float((dx * dy).sum() / denom) if denom > 0 else float("nan")


def srcc(x, y) -> float:
    """Spearman's rank correlation: Pearson's on average ranks."""
    x, y = _pair(x, y)
    return plcc(rankdata(x), rankdata(y))


def krcc(x, y, chunk: int = 1024) -> float:
    """Kendall's tau-b, O(n^2) in row chunks (10k images: about 10^8 pairs, fine in NumPy)."""
    x, y = _pair(x, y)
    s = nx = ny = 0.0  # over all ordered pairs (i, j): both triangles, so the factor 2 cancels
    for start in range(0, x.size, chunk):
        sx = np.sign(x[start : start + chunk, None] - x[None, :])
        sy = np.sign(y[start : start + chunk, None] - y[None, :])
        s += (sx * sy).sum()
        nx += np.count_nonzero(sx)  # pairs not tied in x
        ny += np.count_nonzero(sy)
    return float(s / np.sqrt(nx * ny)) if nx and ny else float("nan")


def logistic4(x, b1: float, b2: float, b3: float, b4: float):
    """VQEG's 4-parameter logistic: (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2."""
    z = np.clip(-(np.asarray(x, dtype=np.float64) - b3) / (abs(b4) + 1e-12), -500, 500)  # no overflow warnings
    return (b1 - b2) / (1 + np.exp(z)) + b2


@dataclass
class LogisticFit:
    params: tuple[float, float, float, float]  # b1..b4
    converged: bool
    message: str = ""

    def __call__(self, x) -> np.ndarray:
        return logistic4(x, *self.params)


def fit_logistic4(x, y) -> LogisticFit:
    """Least-squares fit of ``logistic4`` mapping scores ``x`` to MOS ``y`` (scipy.optimize.curve_fit).

    Start: b1 = max(y), b2 = min(y), b3 = mean(x), b4 = std(x) / 4, flipped (b1 <-> b2) when x and
    y are anti-correlated, so that decreasing relations (e.g. NIQE) converge too.
    """
    x, y = _pair(x, y)
    spread = float(x.std())
    if spread == 0:
        return LogisticFit((float(y.mean()),) * 2 + (float(x.mean()), 1.0), False, "constant scores: nothing to fit")
    hi, lo = float(y.max()), float(y.min())
    if plcc(x, y) < 0:
        hi, lo = lo, hi
    p0 = [hi, lo, float(x.mean()), spread / 4]
    try:
        with warnings.catch_warnings():  # only the parameters are used, not their covariance
            warnings.simplefilter("ignore", OptimizeWarning)
            params, _ = curve_fit(logistic4, x, y, p0=p0, maxfev=20000)
        return LogisticFit(tuple(float(p) for p in params), True)
    except (RuntimeError, ValueError) as err:  # no convergence: report it, keep the start values
        return LogisticFit(tuple(float(p) for p in p0), False, str(err))


def correlations(scores, mos) -> dict:
    """SRCC, KRCC, PLCC, PLCC after the logistic fit (``plcc_fit``), n, and the fit itself."""
    x, y = _pair(scores, mos)
    fit = fit_logistic4(x, y)
    return {
        "n": int(x.size),
        "srcc": srcc(x, y),
        "krcc": krcc(x, y),
        "plcc": plcc(x, y),
        "plcc_fit": plcc(fit(x), y) if fit.converged else float("nan"),
        "fit": {"params": list(fit.params), "converged": fit.converged, "message": fit.message},
    }
