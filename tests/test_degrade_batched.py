"""The batched second-order degradations (sfd.data.batched, ``data.degradation.batched``): every
stage gives each sample what the per-sample pipeline gives it, so a GPU run makes the CPU's pairs."""

import dataclasses
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from sfd.bench import _CountOps
from sfd.data import counter_rng
from sfd.data.batched import resize_matrix
from sfd.data.degradation_config import batched_on
from sfd.data.degradations import DegradationConfig, RealESRGANDegradation


def _hr(b: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(b, 3, size // 8, size // 8, generator=g)
    img = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    img[..., size // 3 : size // 2, :] += 0.3  # an edge
    return img.clamp(0, 1)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic", "area"])
def test_resize_matrices_are_f_interpolate(mode):
    """Rows of the matrices are F.interpolate's weights, by size and by scale factor, up and down,
    with clamped borders (bicubic near the edges); rows and columns beyond a sample are zero."""
    kw = {} if mode == "area" else {"align_corners": False}
    cases = [(400, 0.153), (400, 1.31), (333, 0.77), (96, None, 30), (30, None, 24), (24, None, 24), (100, None, 112)]
    for n_in, factor, *size in cases:
        x = torch.rand(1, 1, n_in, 5, dtype=torch.float64)
        if factor:
            ref = F.interpolate(x, scale_factor=(factor, 1), mode=mode, **kw)[0, 0]
        else:
            ref = F.interpolate(x, size=(size[0], 5), mode=mode, **kw)[0, 0]
        n_out = ref.shape[0]
        assert n_out == (math.floor(n_in * factor) if factor else size[0])
        f = torch.tensor([factor or 0.0], dtype=torch.float64)
        m = resize_matrix(torch.tensor([n_in]), torch.tensor([n_out]), f, mode, n_out + 4, n_in + 3)[0]
        assert float((m[:n_out, :n_in] @ x[0, 0] - ref).abs().max()) < 1e-12
        assert not m[n_out:].any() and not m[:, n_in:].any()


def test_counter_streams_at_any_index_are_the_streams():
    """normal_at/uniform_at give value j of each stream, whatever the layout they are asked in."""
    seeds = [5, 2**40 + 3]
    low, high = counter_rng.seed_halves(seeds, "cpu")
    for i, (s, n) in enumerate(zip(seeds, (7, 10))):
        j = torch.arange(n, dtype=torch.int32).flip(0)
        assert torch.equal(counter_rng.uniform_at(j, low[i], high[i]), counter_rng.uniform(s, n)[j.long()])
        got = counter_rng.normal_at(j, torch.tensor(n, dtype=torch.int32), low[i], high[i])
        assert torch.equal(got, counter_rng.normal(s, (n,))[j.long()])


def _covering_seeds(degrade: RealESRGANDegradation, n: int) -> list[int]:
    """Seeds from 0 on, until every branch of the pipeline is taken by at least one of them."""
    seeds, seen = [], set()
    for s in range(500):
        p = degrade.sample(s)
        branches = {
            ("resize", p.first.mode, p.first.resize),
            ("mode2", p.second.mode),
            ("final", p.final_mode),
            ("noise", p.first.noise, p.first.gray),
            ("noise2", p.second.noise, p.second.gray),
            ("blur2", p.second.kernel.type == "identity"),
            ("sinc", p.sinc.type == "identity"),
            ("order", p.resize_first),
        }
        if branches - seen or len(seeds) < n:
            seeds.append(s)
            seen |= branches
    assert len(seen) >= 3 * 3 + 3 + 3 + 4 + 4 + 2 + 2 + 2 - 1, "some branch never drawn"
    return seeds


@pytest.mark.parametrize("backend", ["diffjpeg", "pillow"])
def test_batched_gives_each_sample_its_per_sample_result(backend):
    """Per-sample and batched pipelines on the same seeds (every resize mode and direction, both noises,
    grey noise, skipped blurs, both final orders): the same LR images, up to a level where float64
    rounding in another order tips a rounding (none seen; bound: 1 level, 0.1 % of the values)."""
    cfg = DegradationConfig(jpeg_backend=backend)
    per_sample = RealESRGANDegradation(dataclasses.replace(cfg, batched=False))
    batched = RealESRGANDegradation(dataclasses.replace(cfg, batched=True))
    seeds = _covering_seeds(per_sample, 8)
    hr = _hr(len(seeds), 64)
    a, b = per_sample(hr, seeds), batched(hr, seeds)
    diff = (a[0] - b[0]).abs()
    assert float(diff.max()) <= 1 / 255 + 1e-6 and float((diff > 0).float().mean()) < 1e-3
    assert torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])
    # and a sample's LR does not depend on its batch
    alone = batched(hr[3:4], seeds[3:4])[0]
    assert float((alone[0] - b[0][3]).abs().max()) <= 1 / 255 + 1e-6


def test_batched_is_the_default_on_gpus_only():
    degrade = RealESRGANDegradation()
    assert degrade.cfg.batched == "auto"
    assert not batched_on(degrade.cfg.batched, torch.device("cpu")) and batched_on(
        degrade.cfg.batched, torch.device("cuda")
    )


def test_batched_dispatches_a_fraction_of_the_operators():
    """What a GPU pays a launch for, counted on the CPU: with the draws made beforehand (in the loader
    workers), a batch of 24 dispatches under a third of the per-sample path's operators (measured:
    2,684 against 12,727; the batched path's count hardly grows with the batch)."""
    hr = _hr(24, 64)
    counts = {}
    for flag in (False, True):
        degrade = RealESRGANDegradation(DegradationConfig(batched=flag), patch=32)
        draws = degrade.draw(range(24))
        with _CountOps() as ops:
            degrade.apply(hr, draws)
        counts[flag] = ops.count
    assert counts[True] < counts[False] / 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_batched_on_cuda_seldom_waits_for_the_gpu():
    """The host runs ahead of the GPU: host values reach it by non-blocking copies, constants are made
    once per device, and a batch waits only where a stage needs a count on the host (the bisection of
    the Poisson tails, once per Poisson stage). Stated bound: at most 4 waits per batch."""
    degrade = RealESRGANDegradation(DegradationConfig(), patch=64)
    hr, draws = _hr(8, 96).cuda(), degrade.draw(range(8))
    degrade.apply(hr, draws)  # the first call makes the per-device constants
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            degrade.apply(hr, draws)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    waits = [str(w.message) for w in caught if "synchroniz" in str(w.message).lower()]
    assert len(waits) <= 4, waits
