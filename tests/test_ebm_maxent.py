"""coursekit.ebm.maxent: the filter-bank features, the maximum entropy energy, and its fit from
one example (moment matching)."""

import math

import pytest
import torch

from coursekit.ebm import FilterBank, MaxEntModel, fit_maxent, photo_patch
from coursekit.ebm.maxent import default_filters


def test_filters_are_normalised_and_zero_mean():
    w, names = default_filters()
    assert w.shape == (len(names), 9, 9) and names[0] == "pixel"
    torch.testing.assert_close(w.flatten(1).norm(dim=1), torch.ones(len(names), dtype=w.dtype))
    assert w[1:].flatten(1).sum(1).abs().max() < 1e-12


def test_features_are_stationary_sums():
    bank = FilterBank()
    x = torch.randn(2, 16, 20)
    f = bank(x)
    assert f.shape == (2, bank.n_features) == (2, 19) and len(bank.feature_names()) == 19
    # periodic boundaries: a circular shift changes no feature
    torch.testing.assert_close(bank(torch.roll(x, (3, -5), dims=(1, 2))), f, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(f[:, 0], x.sum((1, 2)))
    torch.testing.assert_close(f[:, 1], x.pow(2).sum((1, 2)), rtol=1e-5, atol=1e-4)  # pixel filter
    # the response of a derivative filter is a finite difference
    r = bank.responses(x)
    torch.testing.assert_close(r[:, 1], (torch.roll(x, -1, 2) - x) / math.sqrt(2), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"\(n, h, w\)"):
        bank(torch.randn(16, 16))
    with pytest.raises(ValueError, match="too small"):
        bank(torch.randn(1, 4, 4))


def test_maxent_energy_is_linear_in_theta_and_zero_at_x0():
    x0 = torch.randn(12, 12)
    model = MaxEntModel(x0)
    x = torch.randn(3, 12, 12)
    assert model(x0.unsqueeze(0)).abs().item() < 1e-3
    # initial theta: U(x) = (|x|^2 - |x0|^2) / 2, the energy of N(0, I) up to a constant
    torch.testing.assert_close(model(x), 0.5 * (x.pow(2).sum((1, 2)) - x0.pow(2).sum()), rtol=1e-4, atol=1e-3)
    jac = torch.autograd.functional.jacobian(lambda t: (model.features(x) - model.f0) @ t, model.theta.detach())
    torch.testing.assert_close(jac, model.features(x) - model.f0)
    with pytest.raises(ValueError, match="ONE grey image"):
        MaxEntModel(torch.randn(2, 12, 12))


def test_fit_maxent_matches_the_moments_of_the_example():
    torch.manual_seed(0)
    x0 = photo_patch(size=16, top=360, left=500)
    model0 = MaxEntModel(x0)
    before = model0.moment_gap(torch.randn(64, 16, 16)).abs().mean().item()
    model, hist = fit_maxent(x0, n_iter=100, n_chains=16, n_steps=10, gamma=0.05, lr=0.01,
                             generator=torch.Generator().manual_seed(0))
    after = model.moment_gap(hist.negatives).abs().mean().item()
    assert hist.negatives.shape == (16, 16, 16)
    assert after < 0.5 * before, (before, after)


def test_photo_patch():
    p = photo_patch(size=8, top=10, left=20)
    assert p.shape == (8, 8) and abs(p.mean().item()) < 1e-5 and abs(p.std().item() - 1) < 1e-5
    raw = photo_patch(size=8, standardise=False)
    assert 0 <= raw.min() and raw.max() <= 1
    with pytest.raises(ValueError, match="does not fit"):
        photo_patch(size=64, top=400)


@pytest.mark.parametrize("size", [6, 10])  # 6 < 9: the filters wrap around the torus
def test_hessian_spectrum_is_the_fourier_diagonalisation(size):
    # only squared features active: U is a quadratic form, its Hessian constant
    torch.manual_seed(0)
    x0 = torch.randn(size, size, dtype=torch.float64)
    model = MaxEntModel(x0, FilterBank().double()).double()
    m = model.filter_power.shape[0]
    with torch.no_grad():
        model.theta.zero_()
        model.theta[1:1 + m] = torch.randn(m, dtype=torch.float64)
    x = torch.randn(size * size, dtype=torch.float64)
    hess = torch.autograd.functional.hessian(lambda v: model(v.reshape(1, size, size)).sum(), x)
    eig = torch.linalg.eigvalsh(hess)
    spec = model.hessian_spectrum().reshape(-1).sort().values
    torch.testing.assert_close(spec, eig, rtol=1e-9, atol=1e-9)
    assert model.is_proper() == bool(eig.min() > 0)


def test_make_proper_restores_a_probability_law():
    x0 = photo_patch(size=12, top=360, left=500).double()
    model = MaxEntModel(x0, FilterBank().double()).double()
    assert model.is_proper() and model.make_proper_(0.1) == 0.0  # N(0, I): every eigenvalue is 1
    with torch.no_grad():
        model.theta[7] = -2.0  # a negative weight on a Gabor band: Z(theta) = infinity
    assert not model.is_proper()
    before = model.theta.detach().clone()
    raised = model.make_proper_(0.1)
    assert raised > 0 and model.is_proper()
    assert abs(model.hessian_spectrum().min().item() - 0.1) < 1e-9
    changed = (model.theta.detach() != before).nonzero().view(-1).tolist()
    assert changed == [1]  # only the pixel filter's weight moved
    with pytest.raises(ValueError, match="positive"):
        model.make_proper_(0.0)
    # a bank whose first filter blocks some frequency cannot be repaired this way
    w, names = default_filters()
    bank = FilterBank(w[1:], names[1:])
    with pytest.raises(ValueError, match="first filter"):
        MaxEntModel(x0.float(), bank).make_proper_(0.1)


def test_fit_maxent_keeps_theta_proper():
    x0 = photo_patch(size=16, top=360, left=500)
    model, _ = fit_maxent(x0, n_iter=60, n_chains=8, n_steps=10, gamma=0.05, lr=0.03, min_curvature=0.2,
                          generator=torch.Generator().manual_seed(1))
    assert model.hessian_spectrum().min().item() >= 0.2 - 1e-5
    with pytest.raises(ValueError, match="min_curvature"):
        fit_maxent(x0, n_iter=1, min_curvature=-1.0)
