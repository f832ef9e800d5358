"""DualFormer's discriminators: patch spectra against numpy's FFT by hand, Swin's relative position index by
hand, and what a spectral D cannot see (a circular shift inside each patch) that a spatial one can."""

import numpy as np
import pytest
import torch

from sfd.models.spectral_d import SpectralD, SwinStyleD, patch_power_spectra, relative_position_index


def test_patch_spectra_equal_numpys_fft_per_patch():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 24, generator=g)
    ours = patch_power_spectra(x, patch=8).numpy()
    xn = x.numpy().astype(np.float64)
    for b in range(2):
        for gy in range(2):
            for gx in range(3):
                tile = xn[b, :, gy * 8 : gy * 8 + 8, gx * 8 : gx * 8 + 8]
                p = np.abs(np.fft.fftshift(np.fft.fft2(tile), axes=(-2, -1))) ** 2
                p = (p - p.min()) / (p.max() - p.min() + 1e-5)
                np.testing.assert_allclose(ours[b, :, gy * 8 : gy * 8 + 8, gx * 8 : gx * 8 + 8], p, atol=2e-6)


def test_relative_position_index_by_hand():
    n = 3
    idx = relative_position_index(n)
    for i in range(n * n):
        for j in range(n * n):
            dy, dx = i // n - j // n, i % n - j % n
            assert idx[i, j] == (dy + n - 1) * (2 * n - 1) + dx + n - 1


def _roll_in_patches(x, patch, dy, dx):
    b, c, h, w = x.shape
    t = x.reshape(b, c, h // patch, patch, w // patch, patch)
    return t.roll((dy, dx), dims=(3, 5)).reshape(b, c, h, w)


def test_the_spectral_d_ignores_a_circular_shift_inside_each_patch_the_spatial_d_does_not():
    torch.manual_seed(0)
    kw = dict(input_size=64, patch_size=16, embed_dim=24, depths=(2, 1), heads=(2, 4), window=4)
    spec, spat = SpectralD(**kw).eval(), SwinStyleD(**kw).eval()
    x = torch.rand(2, 3, 64, 64)
    shifted = _roll_in_patches(x, 16, 5, 3)
    with torch.no_grad():
        torch.testing.assert_close(spec(shifted), spec(x), rtol=1e-4, atol=1e-5)
        assert (spat(shifted) - spat(x)).abs().max() > 1e-3
        # and it does see a change of content (a blurred patch has another spectrum)
        blurred = torch.nn.functional.avg_pool2d(x, 3, 1, 1)
        assert (spec(blurred) - spec(x)).abs().max() > 1e-3


def test_dualformer_shapes_and_the_refused_grid():
    d = SwinStyleD()  # DualFormer's settings at 128 x 128
    assert d(torch.rand(2, 3, 128, 128)).shape == (2, 1)
    assert d.grids == [4, 2]
    with pytest.raises(ValueError, match="fit one 4x4 window"):
        SwinStyleD(input_size=256)
    with pytest.raises(ValueError, match="takes 128x128"):
        d(torch.rand(1, 3, 96, 96))


def test_stochastic_depth_only_in_training():
    torch.manual_seed(0)
    d = SwinStyleD(input_size=64, patch_size=16, embed_dim=24, depths=(2, 1), heads=(2, 4), drop_path=0.5)
    x = torch.rand(4, 3, 64, 64)
    d.eval()
    with torch.no_grad():
        assert torch.equal(d(x), d(x))
        d.train()
        assert not torch.equal(d(x), d(x))
