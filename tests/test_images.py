"""Dequantisation, the logit transform and NLL of discrete images in nats and bits/dim."""

import math

import pytest
import torch
from torch.autograd.functional import jacobian

from coursekit.flows import Compose, Flow, Logit, Rescale, bits_per_dim, discrete_nll, uniform_dequantize


def test_uniform_dequantize_stays_in_the_pixel_cube():
    g = torch.Generator().manual_seed(0)
    k = torch.randint(0, 17, (200, 64), generator=g)
    y = uniform_dequantize(k, 17, generator=g)
    assert y.dtype == torch.float32 and y.min() >= 0 and y.max() < 1
    assert torch.equal(torch.floor(17 * y).long(), k)  # each y lies in the cube of its pixel value
    with pytest.raises(ValueError, match="integer pixel values in 0..16"):
        uniform_dequantize(k.float() / 16, 17)
    with pytest.raises(ValueError, match="0..16"):
        uniform_dequantize(k + 1, 17)
    with pytest.raises(ValueError, match="levels"):
        uniform_dequantize(k, 1)


def test_logit_log_det_and_inverse():
    m = Logit(3, alpha=0.05).double()
    x = torch.tensor([[0.0, 0.5, 1.0], [0.2, 0.9, 0.01]], dtype=torch.float64)
    z, ld = m.inverse(x)
    assert torch.isfinite(z).all()  # the squeeze keeps the boundary pixels finite
    J = jacobian(lambda t: m.inverse(t)[0].sum(0), x, vectorize=True).permute(1, 0, 2)
    assert torch.allclose(ld, torch.linalg.slogdet(J)[1])
    x2, ld2 = m(z)
    assert torch.allclose(x2, x) and torch.allclose(ld2, -ld)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        m.inverse(x * 16)
    with pytest.raises(ValueError, match="alpha"):
        Logit(3, alpha=0.5)


def test_flow_through_logit_integrates_to_one_on_the_unit_interval():
    flow = Flow(Compose(Rescale(1), Logit(1))).double()
    with torch.no_grad():
        flow.transform[0].log_s.fill_(0.7)
        n = 20_000
        x = (torch.arange(n, dtype=torch.float64) + 0.5) / n * (1 + 2 * 0.05 / 0.9) - 0.05 / 0.9
        mass = float(flow.log_prob(x.view(-1, 1)).exp().mean() * (1 + 2 * 0.05 / 0.9))
    assert abs(mass - 1) < 1e-3


def test_discrete_nll_bounds_the_exact_discrete_likelihood():
    # a 1-D model with K = 4 levels: p_y = Beta(2, 3) on [0, 1]; P(k) = CDF((k+1)/K) - CDF(k/K) exactly
    K = 4
    beta = torch.distributions.Beta(torch.tensor(2.0, dtype=torch.float64), torch.tensor(3.0, dtype=torch.float64))

    def log_prob(y):
        return beta.log_prob(y.clamp(1e-12, 1 - 1e-12)).sum(1)

    def cdf(t):  # Beta(2, 3) has density 12 t (1 - t)^2, whose integral from 0 to t is this
        return 6 * t**2 - 8 * t**3 + 3 * t**4

    k = torch.arange(K, dtype=torch.float64).view(-1, 1)
    exact = -torch.log(cdf((k + 1) / K) - cdf(k / K)).view(-1)
    assert abs(float(torch.exp(-exact).sum()) - 1) < 1e-12
    g = torch.Generator().manual_seed(0)
    kk = k.repeat(20_000, 1)
    one = discrete_nll(log_prob, kk, K, generator=g).view(20_000, K).mean(0)
    # Jensen: E_u[-log p] >= -log P(k), strictly here (p_y is not constant on the cubes)
    assert torch.all(one > exact) and float((one - exact).mean()) > 0.1, (one, exact)
    many = discrete_nll(log_prob, k, K, n_draws=20_000, generator=g)
    assert torch.allclose(many, exact, atol=0.02), (many, exact)


def test_bits_per_dim_of_the_uniform_model_is_log2_levels():
    k = torch.randint(0, 256, (7, 12))
    nll = discrete_nll(lambda y: torch.zeros(y.shape[0]), k, 256)
    assert torch.allclose(bits_per_dim(nll, 12), torch.full((7,), 8.0))
    assert math.isclose(bits_per_dim(12 * math.log(2), 12), 1.0)
    with pytest.raises(ValueError, match="n_draws"):
        discrete_nll(lambda y: y.sum(1), k, 256, n_draws=0)
