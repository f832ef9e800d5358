"""The VGG19 perceptual loss compares the layers it names, before activation (ESRGAN, Real-ESRGAN)."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from sfd.losses import IMAGENET_MEAN, IMAGENET_STD, PerceptualLoss, vgg19_layer_names

REAL_ESRGAN_LAYERS = {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0}


def _images(size=32):
    g = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, size, size, generator=g), torch.rand(1, 3, size, size, generator=g)


def _torchvision_by_hand(loss: PerceptualLoss, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """torchvision's VGG19 ``features`` with the loss's weights, run one functional op at a time
    (nothing in place): every conv output, i.e. every pre-activation, by layer name."""
    with torch.device("meta"):
        features = torchvision.models.vgg19(weights=None).features
    features = features.to_empty(device="cpu")
    features.load_state_dict(loss.features.state_dict(), strict=False)  # loss.features stops at its deepest tap
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = (x - mean) / std
    out = {}
    for name, m in zip(vgg19_layer_names(), features[: len(loss.features)]):
        if isinstance(m, nn.Conv2d):
            x = F.conv2d(x, m.weight, m.bias, m.stride, m.padding)
            out[name] = x
        elif isinstance(m, nn.ReLU):
            x = F.relu(x)
        else:
            x = F.max_pool2d(x, m.kernel_size, m.stride)
    return out


@torch.no_grad()
def test_a_tapped_layer_is_compared_before_its_relu():
    # conv1_2 with a large negative bias: its pre-activation is negative everywhere, so after the
    # ReLU it is all zeros and a loss that compared activations would not see SR != HR at all.
    loss = PerceptualLoss({"conv1_2": 1.0, "conv2_1": 0.0}, weights="random")
    loss.features[vgg19_layer_names().index("conv1_2")].bias.fill_(-1e3)
    sr, hr = _images()
    pre_sr, pre_hr = _torchvision_by_hand(loss, sr)["conv1_2"], _torchvision_by_hand(loss, hr)["conv1_2"]
    assert (pre_sr < 0).all() and (pre_hr < 0).all()
    value = loss(sr, hr)
    assert value > 0
    assert value == pytest.approx(F.l1_loss(pre_sr, pre_hr).item(), rel=1e-5)


@torch.no_grad()
def test_every_tapped_layer_equals_torchvisions_pre_activation():
    loss = PerceptualLoss(REAL_ESRGAN_LAYERS, weights="random", seed=3)
    sr, hr = _images(48)
    names = vgg19_layer_names()
    ours = loss._features(sr)
    ref = _torchvision_by_hand(loss, sr)
    assert sorted(ours) == sorted(names.index(n) for n in REAL_ESRGAN_LAYERS)
    for name in REAL_ESRGAN_LAYERS:
        torch.testing.assert_close(ours[names.index(name)], ref[name], rtol=1e-5, atol=1e-5, msg=name)
        assert (ref[name] < 0).any(), f"{name}: a pre-activation with no negative value would not test anything"
    ref_hr = _torchvision_by_hand(loss, hr)
    expected = sum(w * F.l1_loss(ref[n], ref_hr[n]) for n, w in REAL_ESRGAN_LAYERS.items())
    assert loss(sr, hr).item() == pytest.approx(expected.item(), rel=1e-5)


def test_gradients_reach_the_sr_image_through_every_tap():
    loss = PerceptualLoss(REAL_ESRGAN_LAYERS, weights="random")
    sr, hr = _images()
    sr.requires_grad_(True)
    loss(sr, hr).backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.parameters())
