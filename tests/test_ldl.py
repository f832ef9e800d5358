"""LDL's artifact map and loss against a hand computation (explicit loops in numpy, float64)."""

import numpy as np
import pytest
import torch

from sfd.losses.ldl import artifact_map, ldl_loss, local_variance


def _reflect(i: int, n: int) -> int:
    """numpy/torch 'reflect' padding: the edge pixel is not repeated."""
    if i < 0:
        return -i
    if i >= n:
        return 2 * (n - 1) - i
    return i


def _map_by_hand(hr, sr, ema, k, exponent):
    r = np.abs(hr - sr).sum(0)  # (H, W)
    r_ema = np.abs(hr - ema).sum(0)
    h, w = r.shape
    pad = k // 2
    sigma = np.zeros_like(r)
    for y in range(h):
        for x in range(w):
            win = [
                r[_reflect(y + dy, h), _reflect(x + dx, w)]
                for dy in range(-pad, pad + 1)
                for dx in range(-pad, pad + 1)
            ]
            sigma[y, x] = np.var(win, ddof=1)
    delta = np.var(r, ddof=1) ** (1 / exponent)
    m = delta * sigma
    m[r < r_ema] = 0
    return m


def _images(n=2, size=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    hr = torch.rand(n, 3, size, size, generator=g, dtype=torch.float64)
    sr = (hr + 0.2 * torch.randn(n, 3, size, size, generator=g, dtype=torch.float64)).clamp(0, 1)
    ema = (hr + 0.15 * torch.randn(n, 3, size, size, generator=g, dtype=torch.float64)).clamp(0, 1)
    return hr, sr, ema


@pytest.mark.parametrize("k,exponent", [(7, 5.0), (3, 2.0)])
def test_artifact_map_equals_the_hand_computation(k, exponent):
    hr, sr, ema = _images()
    ours = artifact_map(hr, sr, ema, window=k, exponent=exponent)
    assert ours.shape == (2, 1, 12, 12)
    for i in range(2):
        ref = _map_by_hand(hr[i].numpy(), sr[i].numpy(), ema[i].numpy(), k, exponent)
        np.testing.assert_allclose(ours[i, 0].numpy(), ref, rtol=1e-9, atol=1e-12)
    # the mask is real: some pixels are zeroed (EMA closer to HR), some are not
    assert 0 < (ours == 0).float().mean() < 1


def test_loss_is_the_l1_of_the_weighted_images_and_its_gradient_reaches_sr():
    hr, sr, ema = _images(seed=1)
    sr = sr.clone().requires_grad_(True)
    loss = ldl_loss(hr, sr, ema)
    m = np.stack([_map_by_hand(hr[i].numpy(), sr[i].detach().numpy(), ema[i].numpy(), 7, 5.0) for i in range(2)])
    ref = np.abs(m[:, None] * sr.detach().numpy() - m[:, None] * hr.numpy()).mean()
    assert loss.item() == pytest.approx(ref, rel=1e-9)
    loss.backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    # the EMA image only selects pixels: no gradient to it
    assert not ldl_loss(hr, sr.detach(), ema.clone().requires_grad_(True)).requires_grad


def test_an_ema_twice_as_far_masks_every_pixel_and_one_at_hr_masks_none():
    hr, sr, _ = _images(seed=2)
    far = hr + 2 * (sr - hr)  # |HR - EMA| = 2 |HR - SR| > |HR - SR| wherever SR differs from HR
    assert artifact_map(hr, sr, far).abs().max() == 0 and ldl_loss(hr, sr, far).item() == 0
    m = artifact_map(hr, sr, hr)  # |HR - EMA| = 0: no pixel is masked, M = delta * sigma
    assert (m > 0).all()


def test_local_variance_of_a_constant_is_zero_and_of_a_step_is_positive_near_the_edge():
    x = torch.ones(1, 1, 10, 10, dtype=torch.float64)
    assert local_variance(x, 7).abs().max() == 0
    x[..., 5:] = 2
    v = local_variance(x, 3)
    assert v[0, 0, 0, 0] == 0 and v[0, 0, 0, 4] > 0 and v[0, 0, 0, 9] == 0
