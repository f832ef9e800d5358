"""sfd.data.counter_rng: the noise maps' generator, the same numbers on every device."""

import math

import pytest
import torch

from sfd.data.counter_rng import hash_bits, normal, poisson_levels, uniform

_M = (1 << 32) - 1


def _lowbias32(z: int) -> int:
    z = ((z ^ (z >> 16)) * 0x7FEB352D) & _M
    z = ((z ^ (z >> 15)) * 0x846CA68B) & _M
    return z ^ (z >> 16)


def _reference(seed: int, n: int) -> list[int]:
    """The documented hash in plain Python integers (no tensor wrap-around involved)."""
    low, high = seed & _M, (seed >> 32) & _M
    return [_lowbias32(_lowbias32(((i * 0x9E3779B9) & _M) ^ low) ^ high) for i in range(n)]


@pytest.mark.parametrize("seed", [0, 12345, 2**62 - 5, 3239186156944441881])
def test_bits_are_the_documented_hash(seed):
    assert [int(v) & _M for v in hash_bits(seed, 3000)] == _reference(seed, 3000)


def test_uniform_and_normal_moments():
    u = uniform(3, 10**6)
    assert 0 < float(u.min()) and float(u.max()) < 1
    assert float(u.mean()) == pytest.approx(0.5, abs=2e-3) and float(u.var()) * 12 == pytest.approx(1, abs=5e-3)
    other = uniform(4, 10**6)  # neighbouring seeds, neighbouring counters: uncorrelated
    assert abs(float(torch.corrcoef(torch.stack([u, other]))[0, 1])) < 5e-3
    assert abs(float(torch.corrcoef(torch.stack([u[:-1], u[1:]]))[0, 1])) < 5e-3
    z = normal(5, (999, 1001))
    assert float(z.mean()) == pytest.approx(0, abs=5e-3) and float(z.std()) == pytest.approx(1, abs=5e-3)
    assert float(z.pow(4).mean()) == pytest.approx(3, abs=0.05)  # a normal's kurtosis
    assert torch.equal(normal(5, (7, 3)), normal(5, (7, 3))) and not torch.equal(normal(5, (21,)), normal(6, (21,)))


@pytest.mark.parametrize("rate", [1.0, 16.0, 256.0])
def test_poisson_is_the_exact_inverse_cdf(rate):
    levels = torch.randint(0, 256, (40_000,), generator=torch.Generator().manual_seed(0)).double()
    counts = poisson_levels(levels, rate, 9)
    lam = levels / 255 * rate
    k = torch.arange(int(rate + 12 * math.sqrt(rate) + 12), dtype=torch.float64)
    cdf = torch.exp(torch.xlogy(k, lam[:, None]) - lam[:, None] - torch.lgamma(k + 1)).cumsum(1)
    assert torch.equal(counts, (cdf <= uniform(9, len(levels))[:, None]).sum(1).double())
    flat = poisson_levels(torch.full((200_000,), 128.0), rate, 1)
    mean = 128 / 255 * rate
    assert float(flat.mean()) == pytest.approx(mean, rel=0.02) and float(flat.var()) == pytest.approx(mean, rel=0.03)
    assert not poisson_levels(torch.zeros(100), rate, 2).any()  # mean 0: always 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_cuda_draws_the_cpu_numbers():
    assert torch.equal(hash_bits(77, 10**5, "cuda").cpu(), hash_bits(77, 10**5))
    assert float((normal(77, (300, 300), "cuda").cpu() - normal(77, (300, 300))).abs().max()) < 1e-12
    levels = torch.randint(0, 256, (10**5,), generator=torch.Generator().manual_seed(1)).double()
    assert torch.equal(poisson_levels(levels.cuda(), 64.0, 3).cpu(), poisson_levels(levels, 64.0, 3))
