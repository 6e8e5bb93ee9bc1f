"""coursekit.score.sampling: MALA leaves its target invariant (exact stationary variance on a Gaussian,
where ULA is biased), satisfies detailed balance, and annealed Langevin recovers the weights of
well-separated modes that plain Langevin does not; clear errors."""

import math

import pytest
import torch

from coursekit.ebm import GaussianEnergy, ula, ula_stationary_variance
from coursekit.score import GaussianMixture, annealed_langevin, geometric_sigmas, mala, mala_log_acceptance, score_drift


@pytest.mark.parametrize("gamma", [0.5, 1.5, 3.0])
def test_mala_stationary_variance_is_exact_unlike_ula(gamma):
    s2 = 1.0
    U = GaussianEnergy(torch.zeros(1, dtype=torch.float64), math.sqrt(s2))
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(20_000, 1, generator=g, dtype=torch.float64)  # start at the target: it must stay there
    x, acc = mala(U, x0, gamma, 100, generator=g, return_acceptance=True)
    # 20k samples: relative std of the variance estimate ~1%
    assert abs(x.var().item() - s2) < 0.05, x.var().item()
    assert 0 < acc.mean() < 1
    if gamma < 2 * s2:  # ULA at the same step is visibly biased
        assert ula_stationary_variance(s2, gamma) > 1.3 * s2
        y = ula(U, x0, gamma, 100, generator=g)
        assert abs(y.var().item() - ula_stationary_variance(s2, gamma)) < 0.1 * ula_stationary_variance(s2, gamma)


def test_mala_matches_the_moments_of_a_non_gaussian_target():
    mix = GaussianMixture(torch.tensor([[-1.0], [1.0]], dtype=torch.float64), 0.7, torch.tensor([0.3, 0.7]))
    exact = mix.sample(200_000, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    x = mala(mix, mix.sample(20_000, generator=g), 0.4, 50, generator=g)
    assert abs(x.mean().item() - exact.mean().item()) < 0.03
    assert abs(x.var().item() - exact.var().item()) < 0.05


def test_mala_detailed_balance_identity():
    mix = GaussianMixture(torch.tensor([[0.0, 1.0], [2.0, -1.0]], dtype=torch.float64), torch.tensor([0.5, 0.8]))
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(50, 2, generator=g, dtype=torch.float64), torch.randn(50, 2, generator=g, dtype=torch.float64)
    gamma = 0.3

    def parts(a):
        a = a.clone().requires_grad_(True)
        u = mix(a)
        (grad,) = torch.autograd.grad(u.sum(), a)
        return u.detach(), grad

    (ux, gx), (uy, gy) = parts(x), parts(y)
    a_xy = mala_log_acceptance(x, y, ux, uy, gx, gy, gamma)
    a_yx = mala_log_acceptance(y, x, uy, ux, gy, gx, gamma)
    assert (a_xy <= 0).all() and (a_yx <= 0).all()

    def log_q(b, a, ga):  # log q(b | a) up to a constant
        return -(b - a + gamma * ga).pow(2).sum(-1) / (4 * gamma)

    # pi(x) q(y|x) alpha(x, y) = pi(y) q(x|y) alpha(y, x)
    torch.testing.assert_close(-ux + log_q(y, x, gx) + a_xy, -uy + log_q(x, y, gy) + a_yx)


def test_mala_acceptance_tends_to_one_for_small_steps():
    U = GaussianEnergy(torch.zeros(3), 1.0)
    _, acc = mala(U, torch.randn(2_000, 3), 1e-4, 10, generator=torch.Generator().manual_seed(4),
                  return_acceptance=True)
    assert acc.mean() > 0.999


def test_score_drift_gradient_is_minus_the_score():
    mix = GaussianMixture(torch.tensor([[0.0, 0.0], [2.0, 1.0]]), 0.6)
    x = torch.randn(9, 2).requires_grad_(True)
    U_s = score_drift(lambda t, lvl: mix.score(t), torch.ones(9))
    (g,) = torch.autograd.grad(U_s(x).sum(), x)
    torch.testing.assert_close(g, -mix.score(x.detach()))


def test_annealed_langevin_recovers_mode_weights_that_langevin_misses():
    mix = GaussianMixture(torch.tensor([[-4.0, 0.0], [4.0, 0.0]]), 0.5, torch.tensor([0.8, 0.2]))
    sigmas = geometric_sigmas(10.0, 0.05, 20)

    def noised_score(x, level):  # the exact score of p_sigma at each level
        return mix.noised(float(level[0])).score(x)

    g = torch.Generator().manual_seed(5)
    x0 = 10.0 * torch.randn(3_000, 2, generator=g)
    x = annealed_langevin(noised_score, x0, sigmas, n_steps_each=50, eps=5e-4, generator=g)
    w = float((mix.assign(x) == 0).float().mean())
    assert abs(w - 0.8) < 0.05, w
    plain = ula(mix, x0 / 2, 0.05, 500, generator=g)  # exact score, no annealing: stuck in the starting basin
    w_plain = float((mix.assign(plain) == 0).float().mean())
    assert abs(w_plain - 0.5) < 0.05, w_plain
    # the samples sit in the modes, at the right spread
    assert abs(float(x[mix.assign(x) == 0].std(0).mean()) - 0.5) < 0.05


def test_clear_errors():
    U = GaussianEnergy(torch.zeros(1), 1.0)
    with pytest.raises(ValueError, match="positive"):
        mala(U, torch.zeros(3, 1), -0.1, 5)
    with pytest.raises(TypeError, match="floating-point"):
        mala(U, torch.zeros(3, 1, dtype=torch.int64), 0.1, 5)
    s = lambda x, lvl: -x  # noqa: E731
    with pytest.raises(ValueError, match="largest noise level"):
        annealed_langevin(s, torch.zeros(3, 1), [0.1, 1.0])
    with pytest.raises(ValueError, match="eps"):
        annealed_langevin(s, torch.zeros(3, 1), [1.0, 0.1], eps=0.0)
    with pytest.raises(ValueError, match="n_steps_each"):
        annealed_langevin(s, torch.zeros(3, 1), [1.0, 0.1], n_steps_each=0)
    with pytest.raises(FloatingPointError, match="diverged"):
        annealed_langevin(lambda x, lvl: 1e30 * x, torch.ones(3, 1), [1.0, 0.1], n_steps_each=20, eps=1.0)
