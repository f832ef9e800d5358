"""CLIP features, Feat-D, prompt pairs: shapes, freezing, gradients."""

import pytest
import torch
import torch.nn as nn
from torch.nn.utils.parametrize import is_parametrized

from sfd.losses import g_adversarial_loss
from sfd.models.clip import CLIPWeightsError, ImageFeatures, TextEncoder, load_clip
from sfd.models.feat_d import FeatD
from sfd.models.tg_d import TGD, tg_d_logits
from sfd.models.vgg_d import VGGStyleDiscriminator


@pytest.fixture(scope="module")
def clip(cached_load_clip):
    return cached_load_clip("RN50", "random", seed=0)


@pytest.fixture(scope="module")
def image(clip):
    return ImageFeatures(clip)


@pytest.fixture(scope="module")
def text(clip):
    return TextEncoder(clip)


def test_feature_shapes_for_128(image):
    f = image(torch.rand(2, 3, 128, 128))
    assert f["m1"].shape == (2, 256, 32, 32)
    assert f["m2"].shape == (2, 512, 16, 16)
    assert f["m3"].shape == (2, 1024, 8, 8)
    assert f["out"].shape == (2, 1024)
    assert FeatD()(f).shape == (2, 1, 64, 64)


@pytest.mark.parametrize("h,w", [(64, 96), (160, 32)])
def test_any_multiple_of_32_works(image, h, w):
    f = image(torch.rand(1, 3, h, w))
    assert f["m1"].shape[-2:] == (h // 4, w // 4)
    assert FeatD(widths=[32, 16, 16, 8])(f).shape == (1, 1, h // 2, w // 2)


@pytest.mark.parametrize("h,w", [(100, 128), (128, 48)])
def test_other_sizes_are_a_clear_error(image, h, w):
    with pytest.raises(ValueError, match="multiples of 32"):
        image(torch.rand(1, 3, h, w))


def test_pos_embed_policies_differ_only_in_f_out(clip):
    x = torch.rand(1, 3, 96, 96)
    a, b = ImageFeatures(clip, "interpolate")(x), ImageFeatures(clip, "drop")(x)
    assert torch.equal(a["m3"], b["m3"])
    assert not torch.allclose(a["out"], b["out"])


def test_at_224_interpolation_is_open_clips_own_forward(clip, image):
    x = torch.rand(1, 3, 224, 224)
    ref = clip.model.encode_image((x - image.mean) / image.std)
    assert torch.allclose(image(x)["out"], ref, atol=1e-4)


def test_sequence_first_text_tower_equals_open_clips_batch_first_one(text):
    """TextEncoder runs the transformer sequence-first (faster on CPU); the features must not change."""
    fresh = load_clip("RN50", "random", seed=0).model  # untouched open_clip model: batch-first
    assert fresh.transformer.batch_first and not text.transformer.batch_first
    tokens = text.tokenize(["a sharp photo", "a blurry, noisy photo of a cat"])
    with torch.no_grad():
        ref = fresh.encode_text(tokens)
        assert torch.allclose(text.encode_text(["a sharp photo", "a blurry, noisy photo of a cat"]), ref, atol=1e-5)


def test_every_feat_d_conv_is_spectrally_normalised():
    d = FeatD()
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 2 * 3 + 2 + 4  # 3 upsampling layers, 2 convs between, 4 tail convs
    for conv in convs:
        assert hasattr(conv, "weight_orig") or is_parametrized(conv, "weight")


def test_clip_stays_frozen_in_eval_mode(image, text):
    parent = nn.ModuleDict({"clip": image, "text": text, "d": FeatD(widths=[8, 8, 8, 8])})
    parent.train()
    assert parent["d"].training
    assert not any(m.training for m in image.modules())
    assert not any(m.training for m in text.modules())
    assert not any(p.requires_grad for p in image.parameters())


def test_both_adversarial_terms_reach_the_sr_image(image, text):
    d = FeatD(widths=[32, 16, 16, 8])
    pairs = TGD(text, n_pairs=2, length=4)
    for term in ("feat_d", "tg_d"):
        sr = torch.rand(1, 3, 64, 64, requires_grad=True)
        f = image(sr)
        if term == "feat_d":
            logits = d(f)
        else:
            with torch.no_grad():
                t = pairs.text_features(text)
            logits = tg_d_logits(f["out"], t, text.logit_scale)
        g_adversarial_loss(logits, None, "vanilla").backward()
        assert sr.grad is not None and sr.grad.abs().sum() > 0, term
        assert all(p.grad is None for p in image.parameters())


def test_tgd_logit_is_the_positive_prompts_softmax_probability(text):
    pairs = TGD(text, n_pairs=3, length=4, seed=1)
    t = pairs.text_features(text)
    assert t.shape == (3, 2, 1024)
    v = torch.randn(4, 1024)
    d = tg_d_logits(v, t, text.logit_scale)
    s = text.logit_scale.exp()
    cos = torch.nn.functional.normalize(v, dim=-1) @ t.reshape(6, -1).T
    p = torch.softmax(s * cos.reshape(4, 3, 2), dim=-1)[..., 0]
    assert torch.allclose(torch.sigmoid(d), p, atol=1e-5)


def test_prompt_contexts_are_seeded_and_words_init_works(text):
    a, b = TGD(text, 1, 8, seed=3), TGD(text, 1, 8, seed=3)
    assert torch.equal(a.ctx, b.ctx)
    w = TGD(text, 1, 8, init_words=["a sharp photo", "a blurry photo"])
    ids = text.tokenize(["a sharp photo"])[0]
    assert torch.allclose(w.ctx[0, 0, :3], text.token_embedding(ids[1:4]))


def test_random_clip_is_reproducible_and_missing_file_is_clear():
    a, b = load_clip("RN50", "random", seed=5), load_clip("RN50", "random", seed=5)
    pa, pb = next(a.model.visual.parameters()), next(b.model.visual.parameters())
    assert torch.equal(pa, pb) and not a.pretrained
    with pytest.raises(CLIPWeightsError, match="SFD_CLIP_WEIGHTS"):
        load_clip("RN50", "/nonexistent/RN50.pt")


def test_clip_weights_from_a_local_file(tmp_path, clip):
    path = tmp_path / "rn50.pt"
    torch.save(clip.model.state_dict(), path)
    loaded = load_clip("RN50", str(path))
    assert loaded.pretrained and loaded.identity.startswith("file:")
    assert torch.equal(next(loaded.model.parameters()), next(clip.model.parameters()))


def test_vgg_style_discriminator_shapes():
    d = VGGStyleDiscriminator(input_size=128)
    x = torch.rand(2, 3, 128, 128)
    assert d(x).shape == (2, 1)
    assert d.forward_features(x).shape == (2, 128, 64, 64)  # after the 2nd BN
    with pytest.raises(ValueError):
        d(torch.rand(1, 3, 64, 64))
