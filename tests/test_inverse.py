"""coursekit.inverse: operators, simulation, the MAP solver against the Gaussian closed form."""

import math

import pytest
import torch

from coursekit import inverse as I
from coursekit.data import load_digits_split
from coursekit.gaussian import fit_gaussian
from coursekit.train import TrainingDiverged


@pytest.fixture(scope="module")
def digits64():
    d = load_digits_split(seed=0)
    return d.train.double(), d.test[:40].double()


def test_mask_operator_selects_pixels():
    mask = I.random_mask(64, 0.25, generator=torch.Generator().manual_seed(0))
    assert mask.sum() == 16
    A = I.mask_operator(mask)
    assert A.shape == (16, 64)
    assert torch.equal(A @ A.T, torch.eye(16))  # orthonormal rows
    assert torch.equal(torch.diagonal(A.T @ A), mask.float())  # A^T A projects on observed pixels
    x = torch.arange(64.0).unsqueeze(0)
    assert torch.equal(I.simulate(A, x, 0.0)[0], x[0, mask])
    with pytest.raises(ValueError, match="no pixel"):
        I.mask_operator(torch.zeros(64, dtype=torch.bool))
    with pytest.raises(ValueError, match="keep"):
        I.random_mask(64, 0.0)


def test_blur_operator_is_a_local_average():
    A = I.blur_operator((8, 8), width=1.0)
    assert A.shape == (64, 64) and (A >= 0).all()
    assert torch.allclose(A.sum(1), torch.ones(64))  # constants are preserved
    assert A[0, 0] > A[0, 1] > A[0, 2]  # weights decay with distance
    img = torch.zeros(1, 64)
    img[0, 27] = 1.0
    out = I.simulate(A, img, 0.0)
    assert out[0, 27] < 1.0 and out.argmax() == 27 and (out[0, [19, 26, 28, 35]] > 0.05).all()  # spread out
    with pytest.raises(ValueError, match="width"):
        I.blur_operator(width=0.0)


def test_simulated_noise_has_the_stated_level():
    A = I.denoising_operator(64)
    x = torch.zeros(2000, 64)
    y = I.simulate(A, x, 0.7, generator=torch.Generator().manual_seed(0))
    # 128,000 N(0, 0.49) draws: the std is 0.7 up to ~3 standard errors (0.7 / sqrt(2 n) each)
    assert abs(float(y.std()) - 0.7) < 3 * 0.7 / math.sqrt(2 * y.numel())
    with pytest.raises(ValueError, match="sigma"):
        I.simulate(A, x, -1.0)


def _operators():
    g = torch.Generator().manual_seed(1)
    return {
        "inpainting": I.mask_operator(I.random_mask(64, 0.4, generator=g), dtype=torch.float64),
        "blur": I.blur_operator(width=0.8, dtype=torch.float64),
        "denoising": I.denoising_operator(64, dtype=torch.float64),
    }


@pytest.mark.parametrize("name", ["inpainting", "blur", "denoising"])
def test_gradient_map_matches_gaussian_closed_form(digits64, name):
    train, test = digits64
    prior = fit_gaussian(train, jitter=1e-2)
    A, sigma = _operators()[name], 1.0
    y = I.simulate(A, test, sigma, generator=torch.Generator().manual_seed(2))
    closed = I.gaussian_map(A, y, sigma, prior.mean, prior.covariance_matrix)
    # the closed form is the precision form (A^T A / s^2 + S^-1)^-1 (A^T y / s^2 + S^-1 m)
    P = torch.linalg.inv(prior.covariance_matrix)
    H = A.T @ A / sigma**2 + P
    precision_form = torch.linalg.solve(H, (y @ A / sigma**2 + prior.mean @ P).T).T
    assert torch.allclose(closed, precision_form, atol=1e-8)
    res = I.map_estimate(A, y, sigma, prior.log_prob, max_iter=1000, tol=1e-9)
    # float64, condition number of H up to about 1e3 here: agreement to 1e-4 on a 0..16 scale
    assert (res.x - closed).abs().max() < 1e-4, (res.x - closed).abs().max()
    assert res.objective.shape == (len(test),)
    # and the Gaussian prior helps: the MAP estimate is closer to the truth than the naive A^T y
    # (inpainting, denoising) or than no estimate at all (zero image)
    assert I.psnr(closed, test).mean() > I.psnr(y @ A, test).mean()


def test_gradient_map_works_with_a_non_gaussian_prior(digits64):
    """With a Student-t style prior (no closed form), the result satisfies the first-order condition."""
    _, test = digits64
    A = _operators()["inpainting"]
    sigma = 0.5

    def log_prior(x):
        return -2.0 * torch.log1p(((x - 4.0) / 3.0) ** 2).sum(-1)

    y = I.simulate(A, test[:10], sigma, generator=torch.Generator().manual_seed(3))
    res = I.map_estimate(A, y, sigma, log_prior, tol=1e-10)
    x = res.x.clone().requires_grad_(True)
    J = (I.data_fit(A, y, sigma, x) - log_prior(x)).sum()
    (grad,) = torch.autograd.grad(J, x)
    assert grad.abs().max() < 1e-6
    # the optimum is below the starting objective
    x0 = y @ A
    assert (res.objective <= I.data_fit(A, y, sigma, x0) - log_prior(x0)).all()


def test_map_accepts_a_non_contiguous_start(digits64):
    """gaussian_map returns a transposed (non-contiguous) tensor; it must work as a warm start."""
    train, test = digits64
    prior = fit_gaussian(train, jitter=1e-2)
    A = _operators()["inpainting"]
    y = I.simulate(A, test[:5], 1.0, generator=torch.Generator().manual_seed(4))
    start = I.gaussian_map(A, y, 1.0, prior.mean, prior.covariance_matrix).T.contiguous().T
    assert not start.is_contiguous()
    res = I.map_estimate(A, y, 1.0, prior.log_prob, x0=start, max_iter=50)
    assert (res.x - start).abs().max() < 1e-3  # it started at the optimum and stays there


def test_map_with_a_prior_defined_on_a_box():
    """A Beta(2, 2) prior lives on (0, 1); observations outside it make the plain solver fail
    (log of a negative number), while ``box`` finds the MAP, checked against bisection on the
    1-D optimality condition (x - y) / sigma^2 - 1/x + 1/(1 - x) = 0 of each pixel."""
    y = torch.tensor([[1.3, -0.2, 0.5, 0.9]], dtype=torch.float64)
    sigma = 0.3
    log_prior = lambda x: (torch.log(x) + torch.log1p(-x)).sum(-1)  # noqa: E731
    A = I.denoising_operator(4).double()
    with pytest.raises(TrainingDiverged):
        I.map_estimate(A, y, sigma, log_prior)
    res = I.map_estimate(A, y, sigma, log_prior, box=(1e-9, 1 - 1e-9), tol=1e-12)
    lo, hi = torch.full_like(y, 1e-12), torch.full_like(y, 1 - 1e-12)
    for _ in range(100):
        mid = (lo + hi) / 2
        grad = (mid - y) / sigma**2 - 1 / mid + 1 / (1 - mid)
        lo, hi = torch.where(grad < 0, mid, lo), torch.where(grad < 0, hi, mid)
    assert torch.allclose(res.x, (lo + hi) / 2, atol=1e-6)
    assert ((res.x > 0) & (res.x < 1)).all()


def test_map_box_errors():
    A, y = I.denoising_operator(2), torch.zeros(1, 2)
    flat = lambda x: torch.zeros(x.shape[0])  # noqa: E731
    with pytest.raises(ValueError, match="box must be a pair"):
        I.map_estimate(A, y, 1.0, flat, box=(1.0, 0.0))
    with pytest.raises(ValueError, match="box must be a pair"):
        I.map_estimate(A, y, 1.0, flat, box=(0.0, float("inf")))
    with pytest.raises(ValueError, match="wall must be a positive number"):
        I.map_estimate(A, y, 1.0, flat, box=(0.0, 1.0), wall=0.0)


def test_map_input_errors():
    A = I.denoising_operator(4)
    y = torch.zeros(3, 4)
    flat = lambda x: torch.zeros(x.shape[0])  # noqa: E731
    with pytest.raises(ValueError, match=r"expected \(n, 4\)"):
        I.map_estimate(A, torch.zeros(4), 1.0, flat)
    with pytest.raises(ValueError, match="needs noise"):
        I.map_estimate(A, y, 0.0, flat)
    with pytest.raises(ValueError, match="NaN"):
        I.map_estimate(A, torch.full((3, 4), float("nan")), 1.0, flat)
    with pytest.raises(ValueError, match="one value per image"):
        I.map_estimate(A, y, 1.0, lambda x: x.sum())
    with pytest.raises(TrainingDiverged, match="log_prior is finite"):
        I.map_estimate(A, y, 1.0, lambda x: torch.log(x).sum(-1))  # log(0) = -inf at the start
    with pytest.raises(ValueError, match="do not match"):
        I.gaussian_map(A, y, 1.0, torch.zeros(3), torch.eye(3))


def test_error_measures():
    x = torch.zeros(2, 64)
    assert torch.equal(I.mse(x + 1.0, x), torch.ones(2))
    assert torch.allclose(I.psnr(x + 1.0, x), torch.full((2,), 10 * math.log10(256.0)))
    assert torch.allclose(I.psnr(x + 0.1, x, data_range=1.0), torch.full((2,), 20.0))
    with pytest.raises(ValueError, match="shapes differ"):
        I.mse(x, torch.zeros(2, 3))
