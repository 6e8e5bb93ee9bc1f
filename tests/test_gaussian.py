"""coursekit.gaussian: Gaussian log-density, closed-form MLE, SGD, copying test (the chapter 2 exercise
checks are tested with every other exercise in tests/course/test_exercises.py)."""

import math

import pytest
import torch

from coursekit import gaussian as G
from coursekit.train import TrainingDiverged


def _data(n=400, p=2, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.tensor([1.0, -2.0][:p], dtype=dtype) + torch.randn(n, p, generator=g, dtype=dtype) * torch.tensor(
        [0.5, 3.0][:p], dtype=dtype
    )


def test_log_density_matches_torch_and_integrates_to_one():
    x = _data(50)
    m, s = torch.tensor([0.3, -1.0], dtype=torch.float64), torch.tensor([0.2, -0.4], dtype=torch.float64)
    ref = torch.distributions.Normal(m, s.exp()).log_prob(x).sum(-1)
    assert torch.allclose(G.gaussian_log_density(x, m, s), ref, atol=1e-12)
    # 2-D quadrature on a box of +-8 sigma: the density integrates to one (Riemann sum, error << 1e-6)
    u = torch.linspace(-8, 8, 801, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(m[0] + s[0].exp() * u, m[1] + s[1].exp() * u, indexing="ij"), -1).reshape(-1, 2)
    cell = (u[1] - u[0]) ** 2 * s.exp().prod()
    total = G.gaussian_log_density(grid, m, s).exp().sum() * cell
    assert abs(float(total) - 1.0) < 1e-6


def test_gradient_formula_matches_autograd():
    x = _data(30)
    m = torch.tensor([0.3, -1.0], dtype=torch.float64, requires_grad=True)
    s = torch.tensor([0.2, -0.4], dtype=torch.float64, requires_grad=True)
    gm, gs = G.gaussian_grad_log_density(x, m.detach(), s.detach())
    for i in range(3):
        am, as_ = torch.autograd.grad(G.gaussian_log_density(x[i: i + 1], m, s).sum(), (m, s))
        assert torch.allclose(gm[i], am, atol=1e-12) and torch.allclose(gs[i], as_, atol=1e-12)


def test_closed_form_mle_is_the_maximiser():
    x = _data(300)
    mean, var = G.gaussian_mle(x, diagonal=True)
    mean_full, cov = G.gaussian_mle(x)
    assert torch.allclose(mean, mean_full) and torch.allclose(var, torch.diagonal(cov))
    assert torch.allclose(cov, torch.cov(x.T, correction=0), atol=1e-12)
    # first-order condition: the average gradient vanishes at the MLE
    gm, gs = G.gaussian_grad_log_density(x, mean, 0.5 * var.log())
    assert gm.mean(0).abs().max() < 1e-10 and gs.mean(0).abs().max() < 1e-10
    # and every perturbation lowers the log-likelihood (the unbiased N-1 variance included)
    best = G.gaussian_log_density(x, mean, 0.5 * var.log()).mean()
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        dm, ds = 0.05 * torch.randn(2, 2, generator=g, dtype=torch.float64)
        assert G.gaussian_log_density(x, mean + dm, 0.5 * var.log() + ds).mean() < best
    unbiased = var * len(x) / (len(x) - 1)
    assert G.gaussian_log_density(x, mean, 0.5 * unbiased.log()).mean() < best


def test_fit_gaussian_handles_constant_pixels_with_jitter():
    x = _data(100).float()
    x = torch.cat([x, torch.zeros(100, 1)], 1)  # a pixel that never varies
    with pytest.raises(ValueError, match="increase jitter"):
        G.fit_gaussian(x, jitter=0.0)
    dist = G.fit_gaussian(x, jitter=1e-3)
    assert torch.isfinite(dist.log_prob(x)).all()
    with pytest.raises(ValueError, match="jitter"):
        G.fit_gaussian(x, jitter=-1.0)


def test_kl_closed_form_against_monte_carlo():
    m0, m1 = torch.tensor([0.0, 1.0], dtype=torch.float64), torch.tensor([0.5, -0.5], dtype=torch.float64)
    S0 = torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=torch.float64)
    S1 = torch.tensor([[2.0, -0.2], [-0.2, 1.0]], dtype=torch.float64)
    kl = G.kl_gaussian(m0, S0, m1, S1)
    torch.manual_seed(0)
    p0, p1 = torch.distributions.MultivariateNormal(m0, S0), torch.distributions.MultivariateNormal(m1, S1)
    z = p0.sample((400_000,))
    ratio = p0.log_prob(z) - p1.log_prob(z)
    mc, se = ratio.mean(), ratio.std() / math.sqrt(len(z))
    assert abs(float(kl - mc)) < 5 * float(se)
    assert float(G.kl_gaussian(m0, S0, m0, S0)) == pytest.approx(0.0, abs=1e-12)  # D(mu, mu) = 0


def test_robbins_monro_schedule():
    k = torch.arange(1, 5)
    assert torch.allclose(G.robbins_monro(k, 0.5, 1.0), 0.5 / k.double().float())
    assert G.robbins_monro(4, 1.0, 0.5 + 1e-9) == pytest.approx(0.5, rel=1e-6)
    for bad in (dict(alpha=0.5), dict(alpha=1.2)):
        with pytest.raises(ValueError, match="Robbins-Monro"):
            G.robbins_monro(1, 1.0, **bad)
    with pytest.raises(ValueError, match="start at k = 1"):
        G.robbins_monro(0, 1.0)


def test_sgd_converges_to_the_closed_form():
    x = torch.tensor([1.0, -2.0], dtype=torch.float64) + torch.randn(
        2000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    ) * torch.tensor([0.5, 2.0], dtype=torch.float64)
    mean, var = G.gaussian_mle(x, diagonal=True)
    g = torch.Generator().manual_seed(0)
    theta0 = (torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
    res = G.sgd_mle(x, G.gaussian_log_density, theta0, n_steps=4000, batch_size=20, gamma0=0.02, alpha=0.7, generator=g)
    m, s = res.theta
    assert res.trajectory[0].shape == (4001, 2) and torch.equal(res.trajectory[0][0], theta0[0])
    assert torch.equal(res.trajectory[1][-1], s)
    # statistical tolerance: the last iterates fluctuate by O(sqrt(gamma_k)) around the MLE
    # (seen over seeds: about 0.03 standard deviations for m, 3% for sigma^2)
    assert ((m - mean).abs() / var.sqrt()).max() < 0.1
    assert ((2 * s).exp() / var - 1).abs().max() < 0.1
    # and the error shrinks along the run
    err = lambda k: float((res.trajectory[0][k] - mean).norm())  # noqa: E731
    assert err(4000) < err(100) < err(0)


def test_sgd_divergence_raises_with_advice():
    x = _data(100)
    # too large a step sends s = log sigma to -500: exp(-2 s) overflows and the likelihood is -inf
    theta0 = (x.mean(0), torch.full((2,), 5.0, dtype=torch.float64))
    with pytest.raises(TrainingDiverged, match="Lower gamma0"):
        G.sgd_mle(x, G.gaussian_log_density, theta0, n_steps=50, batch_size=50, gamma0=10.0, alpha=1.0)
    with pytest.raises(ValueError, match=r"expected \(N, p\)"):
        G.sgd_mle(x[:, 0], G.gaussian_log_density, theta0, n_steps=5, batch_size=5, gamma0=0.1)


def test_empirical_samples_are_copies_and_nn_distance_is_exact():
    x = _data(200, p=2).float()
    g = torch.Generator().manual_seed(0)
    copies = G.sample_empirical(x, 500, generator=g)
    assert torch.equal(G.nearest_neighbour_distance(copies, x), torch.zeros(500))
    new = torch.randn(300, 2, generator=g)
    brute = torch.stack([(x - y).norm(dim=1).min() for y in new])
    assert torch.allclose(G.nearest_neighbour_distance(new, x, chunk=7), brute, atol=1e-6)
    with pytest.raises(ValueError, match="dimension"):
        G.nearest_neighbour_distance(new, torch.zeros(5, 3))
