"""The 2-D toy data sets and the target energies U1-U4 of Rezende and Mohamed (2015)."""

import math

import pytest
import torch

from coursekit.data import TARGETS, TOY_DATASETS, energy, log_normalizer, log_target, sample_toy


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_toy_sets_are_seeded_and_shaped(name):
    x = sample_toy(name, 1000, seed=0)
    assert x.shape == (1000, 2) and x.dtype == torch.float32 and torch.isfinite(x).all()
    assert torch.equal(x, sample_toy(name, 1000, seed=0))
    assert not torch.equal(x, sample_toy(name, 1000, seed=1))
    assert x.abs().max() < 5 and 0.3 < float(x.std(0).min())
    assert sample_toy(name, 10, dtype=torch.float64).dtype == torch.float64


def test_toy_sets_do_not_touch_the_global_rng():
    torch.manual_seed(0)
    a = torch.rand(3)
    torch.manual_seed(0)
    sample_toy("rings", 100, seed=5)
    assert torch.equal(a, torch.rand(3))


def test_checkerboard_fills_the_black_squares_only():
    x = sample_toy("checkerboard", 8000, seed=0)
    counts = torch.histogramdd(x, bins=[4, 4], range=[-2.0, 2.0, -2.0, 2.0]).hist
    black = (torch.arange(4)[:, None] + torch.arange(4)[None, :]) % 2 == 0
    assert counts[~black].sum() == 0
    assert counts[black].min() > 0.8 * 1000  # about 8000 / 8 each


def test_eight_gaussians_has_eight_modes():
    x = sample_toy("8gaussians", 4000, seed=0)
    angles = torch.atan2(x[:, 1], x[:, 0])
    k = torch.round(angles / (2 * math.pi / 8)) % 8
    counts = torch.bincount(k.long(), minlength=8)
    assert (counts > 350).all()
    assert torch.allclose(x.norm(dim=1).mean(), torch.tensor(2.5), atol=0.1)


def test_bad_arguments():
    with pytest.raises(ValueError, match="choose one of"):
        sample_toy("spiral", 10)
    with pytest.raises(ValueError, match="positive integer"):
        sample_toy("moons", 0)
    with pytest.raises(ValueError, match="seed"):
        sample_toy("moons", 10, seed=-1)


def test_energies_match_the_formulas_at_points():
    z = torch.tensor([[1.0, 1.0], [2.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    # U2 vanishes on the curve z2 = sin(pi z1 / 2)
    assert torch.allclose(energy("U2", z[:1]), torch.zeros(1, dtype=torch.float64))
    # U1 at (2, 0): the ring term vanishes; the mixture term is -log(1 + exp(-0.5 (4/0.6)^2))
    expected = -math.log1p(math.exp(-0.5 * (4 / 0.6) ** 2))
    assert math.isclose(float(energy("U1", z[1:2])), expected, rel_tol=1e-6)
    # U3 and U4 at the origin: w1 = 0, so the first component's exponent is 0
    w2 = 3 * math.exp(-0.5 * (1 / 0.6) ** 2)
    assert math.isclose(float(energy("U3", z[2:])), -math.log(1 + math.exp(-0.5 * (w2 / 0.35) ** 2)), rel_tol=1e-12)
    w3 = 3 / (1 + math.exp(1 / 0.3))
    assert math.isclose(float(energy("U4", z[2:])), -math.log(1 + math.exp(-0.5 * (w3 / 0.35) ** 2)), rel_tol=1e-12)


@pytest.mark.parametrize("name", list(TARGETS))
def test_targets_are_symmetric_walled_and_normalisable(name):
    g = torch.Generator().manual_seed(0)
    z = (torch.rand(1000, 2, generator=g, dtype=torch.float64) - 0.5) * 7.8
    lt = log_target(name)
    assert torch.allclose(lt(z), -energy(name, z))  # no wall inside the box |z1| <= 4
    outside = torch.tensor([[5.0, 0.0]], dtype=torch.float64)
    assert float(lt(outside)) < float(-energy(name, outside)) - 40
    # the normaliser is converged in the grid and the box
    a, b = log_normalizer(name), log_normalizer(name, lim=8.0, n_grid=1601)
    assert abs(a - b) < 1e-6, (a, b)
    if name == "U1":  # U1 is symmetric under z -> -z
        assert torch.allclose(energy(name, z), energy(name, -z))


def test_target_bad_input():
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        energy("U1", torch.zeros(3))
    with pytest.raises(ValueError, match="choose one of"):
        log_target("U5")
