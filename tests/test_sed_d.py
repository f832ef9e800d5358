"""SeD-P: the semantic-aware fusion block against a hand computation; the PatchGAN's shapes (SeD's for 256
inputs) and that its logits depend on the semantics it is given."""

import math

import pytest
import torch
import torch.nn.functional as F

from sfd.models.sed_d import SeDPatchD, SemanticFusion


def _fusion_by_hand(block: SemanticFusion, semantic: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
    """The block's forward written out: loops over heads, explicit softmax, explicit pixel placement."""
    b, c_sem, h, w = semantic.shape
    norm = F.group_norm(semantic, 32, block.norm.weight, block.norm.bias, 1e-6)
    conv1x1 = lambda conv, t: torch.einsum("oc,bchw->bohw", conv.weight[:, :, 0, 0], t) + conv.bias.view(1, -1, 1, 1)  # noqa: E731
    x = conv1x1(block.proj_in, norm).reshape(b, -1, h * w).transpose(1, 2)
    ctx = conv1x1(block.proj_context, feat).reshape(b, -1, feat.shape[-2] * feat.shape[-1]).transpose(1, 2)

    def attention(attn, q_in, kv_in):
        heads = attn.heads
        q, k, v = q_in @ attn.to_q.weight.T, kv_in @ attn.to_k.weight.T, kv_in @ attn.to_v.weight.T
        d = q.shape[-1] // heads
        outs = []
        for i in range(heads):
            qi, ki, vi = (t[..., i * d : (i + 1) * d] for t in (q, k, v))
            s = qi @ ki.transpose(1, 2) / math.sqrt(d)
            p = torch.exp(s - s.amax(-1, keepdim=True))
            outs.append((p / p.sum(-1, keepdim=True)) @ vi)
        return torch.cat(outs, -1) @ attn.to_out.weight.T + attn.to_out.bias

    ln = lambda m, t: F.layer_norm(t, t.shape[-1:], m.weight, m.bias, m.eps)  # noqa: E731
    y = ln(block.norm1, x)
    x = attention(block.self_attn, y, y)
    x = attention(block.cross_attn, ln(block.norm2, x), ctx)
    y = ln(block.norm3, x) @ block.ff.proj.weight.T + block.ff.proj.bias
    half = y.shape[-1] // 2
    x = (y[..., :half] * 0.5 * y[..., half:] * (1 + torch.erf(y[..., half:] / math.sqrt(2)))) @ block.ff.out.weight.T
    x = x + block.ff.out.bias
    x = conv1x1(block.proj_out, x.transpose(1, 2).reshape(b, -1, h, w))
    u = block.up
    c = x.shape[1] // (u * u)
    placed = torch.zeros(b, c, h * u, w * u, dtype=x.dtype)
    for ch in range(c):
        for i in range(u):
            for j in range(u):
                placed[:, ch, i::u, j::u] = x[:, ch * u * u + i * u + j]
    return F.conv2d(placed, block.conv_out.weight, block.conv_out.bias, padding=1)


@pytest.mark.parametrize("heads,up,last", [(1, 4, False), (2, 2, True)])
def test_fusion_block_equals_the_hand_computation(heads, up, last):
    torch.manual_seed(0)
    block = SemanticFusion(semantic_dim=64, feat_dim=16, up=up, heads=heads, head_dim=8, last=last).double()
    semantic = torch.randn(2, 64, 3, 3, dtype=torch.float64)
    feat = torch.randn(2, 16, 3 * up, 3 * up, dtype=torch.float64)
    with torch.no_grad():
        ours, ref = block(semantic, feat), _fusion_by_hand(block, semantic, feat)
    side = 3 * up - (1 if last else 0)
    assert ours.shape == (2, 64 // up**2, side, side)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("size,logits", [(256, 30), (128, 14)])
def test_patch_d_shapes_match_seds(size, logits):
    d = SeDPatchD(num_feat=8, semantic_dim=64, head_dim=8)
    out = d(torch.rand(1, 3, size, size), torch.randn(1, 64, size // 16, size // 16))
    assert out.shape == (1, 1, logits, logits)


def test_the_logits_depend_on_the_semantics_and_their_gradient_reaches_them():
    torch.manual_seed(1)
    d = SeDPatchD(num_feat=8, semantic_dim=64, head_dim=8)
    image = torch.rand(2, 3, 64, 64)
    sem = torch.randn(2, 64, 4, 4, requires_grad=True)
    a = d(image, sem)
    b = d(image, torch.randn(2, 64, 4, 4))
    assert (a - b).abs().max() > 1e-4
    a.mean().backward()
    assert sem.grad is not None and sem.grad.abs().sum() > 0


def test_initialisation_is_seds_normal_002():
    d = SeDPatchD(num_feat=16, semantic_dim=64, head_dim=8)
    w = d.fuse1.proj_out.weight  # zero-initialised in SeD's block, re-drawn by its init_weights
    assert 0.015 < w.std() < 0.025 and d.fuse1.proj_out.bias.abs().max() == 0
    assert 0.015 < d.conv2.weight_orig.std() < 0.025


def test_a_wrong_semantic_grid_is_refused():
    d = SeDPatchD(num_feat=8, semantic_dim=64, head_dim=8)
    with pytest.raises(ValueError, match="F_m3 at H/16"):
        d(torch.rand(1, 3, 64, 64), torch.randn(1, 64, 2, 2))
