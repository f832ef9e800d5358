"""MATLAB-convention bicubic numbers published for the SR test sets (docs/evaluation.md), on the real test sets."""

import pytest
import torch
from PIL import Image

from sfd.data.io import list_images, to_tensor
from sfd.data.resize import bicubic_lr, imresize, mod_crop
from sfd.metrics.psnr_ssim import psnr, ssim

pytestmark = pytest.mark.usefixtures("one_thread")


def bicubic_scores(folder, scale):
    psnrs, ssims = [], []
    for path in list_images(folder):
        hr = mod_crop(to_tensor(Image.open(path).convert("RGB")).double(), scale)
        lr = bicubic_lr(hr, scale)  # MATLAB bicubic, stored as 8-bit
        sr = imresize(lr, scale)
        psnrs.append(float(psnr(sr, hr, border=scale)))
        ssims.append(float(ssim(sr, hr, border=scale)))
    return sum(psnrs) / len(psnrs), sum(ssims) / len(ssims)


@pytest.mark.parametrize(
    "name,scale,ref_psnr,ref_ssim",
    [("Set5", 4, 28.42, 0.8102), ("Set5", 2, 33.65, 0.9295), ("Set14", 4, 26.09, 0.7042), ("B100", 4, 25.96, 0.6674)],
)
def test_bicubic_matches_matlab_convention(shared_data, name, scale, ref_psnr, ref_ssim):
    p, s = bicubic_scores(shared_data(f"sr/{name}"), scale)
    assert abs(p - ref_psnr) <= 0.01, p
    assert abs(s - ref_ssim) <= 0.0005, s


def test_imresize_halving_a_ramp_is_symmetric_and_keeps_the_mean():
    # A linear ramp: the antialiased 2x2 result stays a ramp (symmetric about the centre, same mean).
    x = torch.arange(1, 17, dtype=torch.float64).reshape(4, 4)
    y = imresize(x, 0.5)
    assert y.shape == (2, 2)
    # Symmetric input: the 2x2 result is symmetric about the centre and keeps the mean.
    assert torch.allclose(y.mean(), x.mean())
    assert torch.allclose(y[0, 0] + y[1, 1], y[0, 1] + y[1, 0])


def test_imresize_constant_image_stays_constant_and_sizes_round_up():
    x = torch.full((3, 33, 47), 0.3, dtype=torch.float64)
    for s in (0.25, 0.5, 2, 3, 4):
        y = imresize(x, s)
        assert y.shape[-2:] == (int(-(-33 * s // 1)), int(-(-47 * s // 1)))
        assert torch.allclose(y, torch.full_like(y, 0.3))


def test_psnr_ssim_identity_and_errors():
    img = torch.rand(3, 40, 40)
    assert torch.isinf(psnr(img, img, border=4)).all()
    assert torch.allclose(ssim(img, img, border=4), torch.ones(1, dtype=torch.float64))
    with pytest.raises(ValueError):
        psnr(img, img[:, :20], border=0)
