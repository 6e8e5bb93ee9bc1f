"""coursekit.ebm.langevin and energy: ULA's sign, noise scale, stationary bias, schedules, errors;
energies' shapes, scores and products of experts."""

import math

import pytest
import torch

from coursekit.ebm import (
    GaussianEnergy, ImageEnergy, MLPEnergy, ProductOfExperts, QuarticEnergy1D, decoupled_langevin,
    energy_and_grad, log_partition_1d, step_sizes, ula, ula_stationary_variance,
)


def test_one_ula_step_is_gradient_descent_plus_sqrt_2gamma_noise():
    U = GaussianEnergy(torch.zeros(3), 2.0)
    x0 = torch.randn(5, 3)
    gamma = 0.1
    g = torch.Generator().manual_seed(1)
    x1 = ula(U, x0, gamma, 1, generator=g)
    z = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    expected = x0 - gamma * x0 / 4.0 + math.sqrt(2 * gamma) * z  # grad U = x / std^2
    torch.testing.assert_close(x1, expected)


@pytest.mark.parametrize("gamma", [0.05, 0.4, 1.0])
def test_ula_stationary_variance_matches_closed_form(gamma):
    s2 = 1.0
    U = GaussianEnergy(torch.zeros(1), math.sqrt(s2))
    g = torch.Generator().manual_seed(0)
    # start at the stationary law of ULA itself so that no burn-in is needed
    v = ula_stationary_variance(s2, gamma)
    x = ula(U, math.sqrt(v) * torch.randn(20_000, 1, generator=g), gamma, 200, generator=g)
    emp = x.var().item()
    # 20k samples: the variance estimate has relative std sqrt(2/20k) = 1%; 5 sigma
    assert abs(emp - v) / v < 0.05, (emp, v)
    if gamma >= 0.4:  # the bias is visible: the exact law N(0, 1) is rejected
        assert abs(emp - s2) / s2 > 0.1


def test_stationary_variance_formula_is_the_fixed_point():
    for s2, gamma in [(1.0, 0.3), (0.25, 0.1), (4.0, 7.0)]:
        v = ula_stationary_variance(s2, gamma)
        assert math.isclose((1 - gamma / s2) ** 2 * v + 2 * gamma, v, rel_tol=1e-12)
    with pytest.raises(ValueError, match="no stationary law"):
        ula_stationary_variance(1.0, 2.0)


def test_decreasing_schedule_reduces_bias_and_chain_shape():
    U = GaussianEnergy(torch.zeros(1), 1.0)
    g = torch.Generator().manual_seed(0)
    chain = ula(U, torch.zeros(10_000, 1), lambda k: 0.5 / (1 + 0.05 * k), 400, return_chain=True, generator=g)
    assert chain.shape == (401, 10_000, 1)
    assert torch.equal(chain[0], torch.zeros(10_000, 1))
    fixed = ula_stationary_variance(1.0, 0.5)
    assert abs(chain[-1].var().item() - 1.0) < 0.5 * (fixed - 1.0)


def test_step_sizes_forms_and_errors():
    assert step_sizes(0.1, 3) == [0.1] * 3
    assert step_sizes([0.1, 0.2], 2) == [0.1, 0.2]
    assert step_sizes(lambda k: 1.0 / (k + 1), 2) == [1.0, 0.5]
    with pytest.raises(ValueError, match="needs n_steps=3"):
        step_sizes([0.1], 3)
    with pytest.raises(ValueError, match="positive"):
        step_sizes(-0.1, 3)


def test_ula_errors_are_clear():
    U = GaussianEnergy(torch.zeros(2), 0.1)
    with pytest.raises(FloatingPointError, match="gamma < 2 / L"):
        ula(U, torch.randn(4, 2), 1.0, 2000)  # gamma = 1 >> 2 std^2 = 0.02: explodes
    with pytest.raises(ValueError, match="NaN"):
        ula(U, torch.full((2, 2), float("nan")), 0.01, 1)
    with pytest.raises(TypeError, match="floating-point"):
        ula(U, torch.zeros(2, 2, dtype=torch.long), 0.01, 1)
    with pytest.raises(ValueError, match="one value per sample"):
        ula(lambda x: x.sum(), torch.zeros(3, 2), 0.01, 1)


def test_ula_does_not_touch_parameter_gradients_and_returns_detached():
    U = MLPEnergy(2, hidden=8)
    x = ula(U, torch.randn(4, 2), 0.01, 3)
    assert not x.requires_grad
    assert all(p.grad is None for p in U.parameters())


def test_decoupled_langevin_is_ula_at_a_temperature():
    # step eta, noise sigma = ULA with gamma = sigma^2/2 on U/T, T = sigma^2 / (2 eta):
    # on N(0,1) the stationary variance is T s2 / (1 - gamma/(2 T s2)) = T / (1 - eta/2)
    U = GaussianEnergy(torch.zeros(1), 1.0)
    eta, sigma = 0.2, 0.2
    T = sigma**2 / (2 * eta)
    g = torch.Generator().manual_seed(0)
    x = decoupled_langevin(U, torch.zeros(20_000, 1), eta, sigma, 300, generator=g)
    expected = T / (1 - eta / 2)
    assert abs(x.var().item() - expected) / expected < 0.05
    assert x.var().item() < 0.5  # far from the target variance 1: it does not sample p
    y = decoupled_langevin(U, torch.zeros(10, 1), 0.1, 0.5, 5, clamp=(-0.1, 0.1), return_chain=True)
    assert y.shape == (6, 10, 1) and y.abs().max() <= 0.1


def test_energy_shapes_scores_and_checks():
    for U, x in [(MLPEnergy(3, hidden=8), torch.randn(4, 3)), (ImageEnergy(), torch.randn(4, 64)),
                 (ImageEnergy(shape=(6, 5), flat=False), torch.randn(4, 6, 5))]:
        assert U(x).shape == (4,)
        s = U.score(x)
        assert s.shape == x.shape
        _, g = energy_and_grad(U, x)
        torch.testing.assert_close(s, -g)
    G = GaussianEnergy(torch.tensor([1.0, -1.0]), 0.5)
    x = torch.randn(6, 2)
    torch.testing.assert_close(G.score(x), -(x - G.mean) / 0.25)
    with pytest.raises(ValueError, match=r"expected \(batch, 3\)"):
        MLPEnergy(3)(torch.randn(4, 2))
    with pytest.raises(ValueError, match="NaN"):
        MLPEnergy(3)(torch.full((1, 3), float("nan")))
    assert "hidden=8" in repr(MLPEnergy(3, hidden=8))


def test_product_of_experts_adds_energies_and_flattens():
    A, B = MLPEnergy(2, hidden=8), GaussianEnergy(torch.zeros(2), 1.0)
    x = torch.randn(7, 2)
    poe = A + B
    torch.testing.assert_close(poe(x), A(x) + B(x))
    poe3 = poe + 2.0 * B
    assert isinstance(poe3, ProductOfExperts) and len(poe3.experts) == 3 and poe3.weights == [1.0, 1.0, 2.0]
    torch.testing.assert_close(poe3(x), A(x) + 3 * B(x))
    # two Gaussian experts: the product is the Gaussian with added precisions
    C = GaussianEnergy(torch.ones(2), 1.0)
    torch.testing.assert_close((B + C).score(x), -(2 * x - 1))
    with pytest.raises(ValueError, match="event shape"):
        A + MLPEnergy(3)


def test_log_partition_quadrature_against_closed_form():
    s = 0.7
    log_z = log_partition_1d(lambda x: x**2 / (2 * s**2))
    assert abs(log_z.item() - 0.5 * math.log(2 * math.pi * s**2)) < 1e-10
    theta = torch.tensor([0.3, -0.2], dtype=torch.float64)
    q = QuarticEnergy1D()
    assert torch.isfinite(log_partition_1d(lambda x: q(x, theta)))
    with pytest.raises(ValueError, match="widen"):
        log_partition_1d(lambda x: x**2 / 200, lo=-3, hi=3)


def test_quartic_theta_derivatives_against_autograd():
    q = QuarticEnergy1D()
    theta = torch.tensor([0.4, 0.1], dtype=torch.float64)
    x = torch.linspace(-2, 2, 7, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda t: q(x, t), theta)
    torch.testing.assert_close(q.grad_theta(x, theta), jac)
    for i in range(len(x)):
        hess = torch.autograd.functional.hessian(lambda t: q(x[i:i + 1], t).sum(), theta)
        torch.testing.assert_close(q.hess_theta(x, theta)[i], hess)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_ula_runs_on_the_device_of_its_input():
    U = GaussianEnergy(torch.zeros(2), 1.0).cuda()
    x = ula(U, torch.zeros(8, 2, device="cuda"), 0.1, 3)
    assert x.device.type == "cuda"


def test_sample_1d_matches_moments_of_a_gaussian():
    from coursekit.ebm import sample_1d

    x = sample_1d(lambda t: (t - 1.0) ** 2 / 2, 50_000, stratified=True)
    assert abs(x.mean().item() - 1.0) < 1e-3 and abs(x.var().item() - 1.0) < 1e-3
    y = sample_1d(lambda t: (t - 1.0) ** 2 / 2, 20_000, generator=torch.Generator().manual_seed(0))
    assert abs(y.mean().item() - 1.0) < 0.03  # 4 sigma of the Monte Carlo error
