"""coursekit.score.objectives (and the mixture, networks it is tested with): each objective equals the
Fisher divergence up to a theta-independent constant on a Gaussian family where everything is closed
form; sliced and exact agree in expectation; DSM's minimiser is the score of the noised law; every
parameter gets a gradient; clear errors."""

import math

import pytest
import torch
from torch import nn

from coursekit.ebm import Energy, GaussianEnergy, MLPEnergy
from coursekit.score import (
    GaussianMixture, NoiseConditionalScore, ScoreMLP, denoising_score_matching, dsm_target, exact_score_matching,
    fisher_divergence, geometric_sigmas, model_score, noise_conditional_score_matching, sliced_score_matching,
)

P = 3
M_STAR = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
S_STAR = torch.tensor([1.0, 0.25, 2.0], dtype=torch.float64)  # variances of the data law N(m*, diag S*)
THETAS = [  # (mu, v): model N(mu, diag v), score -(x - mu) / v
    (torch.zeros(P), torch.ones(P)),
    (torch.tensor([0.5, -1.0, 2.0]), torch.tensor([1.0, 0.25, 2.0])),  # the data law itself: F = 0
    (torch.tensor([1.0, 0.0, -1.0]), torch.tensor([0.5, 2.0, 1.5])),
    (torch.tensor([-2.0, 1.0, 0.5]), torch.tensor([3.0, 0.1, 0.7])),
]


def gaussian_model(mu, v):
    return GaussianEnergy(mu.double(), v.double().sqrt())


def fisher_gauss(m0, S0, mu, v):
    """F(N(m0, diag S0), N(mu, diag v)) = 1/2 E|a x + b|^2 with a = 1/v - 1/S0, b = m0/S0 - mu/v."""
    a, b = 1 / v - 1 / S0, m0 / S0 - mu / v
    return float(0.5 * (a**2 * (S0 + m0**2) + 2 * a * b * m0 + b**2).sum())


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    return M_STAR + S_STAR.sqrt() * torch.randn(200_000, P, generator=g, dtype=torch.float64)


def test_fisher_divergence_estimate_matches_closed_form(data):
    target = gaussian_model(M_STAR, S_STAR)
    for mu, v in THETAS:
        model = gaussian_model(mu.double(), v.double())
        est = float(fisher_divergence(target.score, model.score, data))
        exact = fisher_gauss(M_STAR, S_STAR, mu.double(), v.double())
        assert abs(est - exact) <= 0.02 * (1 + exact), (est, exact)
    assert float(fisher_divergence(target.score, target.score, data)) == 0.0


@pytest.mark.parametrize("objective", ["exact", "sliced"])
def test_hyvarinen_objectives_are_fisher_minus_a_theta_free_constant(data, objective):
    const = -0.5 * float((1 / S_STAR).sum())  # -1/2 E|grad log p*|^2 for a Gaussian
    x = data[:50_000]
    for mu, v in THETAS:
        model = gaussian_model(mu.double(), v.double())
        if objective == "exact":
            per = exact_score_matching(model, x, reduction="none").detach()
        else:
            per = sliced_score_matching(model, x, n_projections=2, reduction="none",
                                        generator=torch.Generator().manual_seed(1)).detach()
        J, se = float(per.mean()), float(per.std()) / math.sqrt(len(per))
        F = fisher_gauss(M_STAR, S_STAR, mu.double(), v.double())
        assert abs((J - F) - const) < 5 * se + 1e-9, (objective, mu, v, J - F, const, se)


def test_dsm_is_fisher_to_the_noised_law_plus_a_constant(data):
    sigma = 0.5
    S_sig = S_STAR + sigma**2
    const = 0.5 * P / sigma**2 - 0.5 * float((1 / S_sig).sum())  # 1/2 E|Z/sigma|^2 - 1/2 E|grad log p_sigma|^2
    x = data[:100_000]
    for mu, v in THETAS:
        model = gaussian_model(mu.double(), v.double())
        per = denoising_score_matching(model, x, sigma, reduction="none",
                                       generator=torch.Generator().manual_seed(2)).detach()
        J, se = float(per.mean()), float(per.std()) / math.sqrt(len(per))
        F = fisher_gauss(M_STAR, S_sig, mu.double(), v.double())
        assert abs((J - F) - const) < 5 * se, (mu, v, J - F, const, se)


def test_dsm_minimiser_is_the_score_of_the_noised_mixture():
    mix = GaussianMixture(torch.tensor([[-2.0, 0.0], [1.5, 1.0], [0.0, -2.0]], dtype=torch.float64),
                          torch.tensor([0.3, 0.6, 0.4], dtype=torch.float64), torch.tensor([0.5, 0.3, 0.2]))
    sigma = 0.4
    x = mix.sample(100_000, generator=torch.Generator().manual_seed(3))
    best = mix.noised(sigma)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(4), dtype=x.dtype)
    j_best = float(denoising_score_matching(best, x, sigma, noise=noise).detach())
    x_noisy = x + sigma * noise
    for other in [mix, mix.noised(2 * sigma), GaussianMixture(mix.means + 0.2, mix.stds.sqrt() * 0.6, mix.weights)]:
        j = float(denoising_score_matching(other, x, sigma, noise=noise).detach())
        gap = float(fisher_divergence(best.score, other.score, x_noisy))  # 1/2 E_{p_sigma}|s - s*|^2
        assert j > j_best
        assert abs((j - j_best) - gap) < 0.05 * gap + 0.01, (j - j_best, gap)


def test_dsm_target_is_the_kernel_score():
    x, xn = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    sigma = 0.7
    xn_ = xn.clone().requires_grad_(True)
    log_q = (-0.5 * ((xn_ - x) / sigma) ** 2).sum()
    (g,) = torch.autograd.grad(log_q, xn_)
    torch.testing.assert_close(dsm_target(x, xn, sigma), g)


def test_sliced_agrees_with_exact_in_expectation_for_non_gaussian_models():
    torch.manual_seed(0)
    x = torch.randn(8, 4, dtype=torch.float64)
    for model in [MLPEnergy(4, hidden=16).double(), ScoreMLP(4, hidden=16).double()]:
        exact = exact_score_matching(model, x, reduction="none")
        for dist in ["rademacher", "gaussian"]:
            for vr in [True, False]:
                sl = sliced_score_matching(model, x, n_projections=400, distribution=dist, variance_reduced=vr,
                                           reduction="none", generator=torch.Generator().manual_seed(5))
                # 400 projections: the per-sample standard error is below 0.05 here
                assert (sl - exact).abs().max() < 0.2 * (1 + exact.abs().max()), (type(model).__name__, dist, vr)


def test_exact_trace_is_minus_the_laplacian_of_an_energy():
    torch.manual_seed(1)
    U = MLPEnergy(3, hidden=8).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    J = exact_score_matching(U, x, reduction="none")
    for k in range(5):
        xk = x[k:k + 1]
        H = torch.autograd.functional.hessian(lambda t: U(t.unsqueeze(0)).sum(), xk[0])
        g = torch.autograd.functional.jacobian(lambda t: U(t.unsqueeze(0)).sum(), xk[0])
        torch.testing.assert_close(J[k], 0.5 * g.pow(2).sum() - torch.trace(H))


def test_noise_conditional_objective_with_the_true_scores():
    mix = GaussianMixture(torch.tensor([[-1.0], [2.0]], dtype=torch.float64), 0.3, torch.tensor([0.7, 0.3]))
    sigmas = geometric_sigmas(2.0, 0.1, 4, dtype=torch.float64)
    x = mix.sample(200_000, generator=torch.Generator().manual_seed(6))

    def true_score(xt, level):
        out = torch.empty_like(xt)
        for s in sigmas:
            m = torch.isclose(level, s)
            out[m] = mix.noised(float(s)).score(xt[m])
        return out

    gen = torch.Generator().manual_seed(7)
    L = float(noise_conditional_score_matching(true_score, x, sigmas, generator=gen).detach())
    # at the optimum each level contributes sigma^2 (1/2 p / sigma^2 - 1/2 E|grad log p_sigma|^2)
    expected = 0.0
    for s in sigmas.tolist():
        xs = x + s * torch.randn(x.shape, generator=torch.Generator().manual_seed(8), dtype=x.dtype)
        expected += s**2 * (0.5 / s**2 - 0.5 * float(mix.noised(s).score(xs).pow(2).sum(-1).mean())) / len(sigmas)
    assert abs(L - expected) < 0.01, (L, expected)


class QuadEnergy(Energy):
    def __init__(self):
        super().__init__((2,))
        self.w = nn.Parameter(torch.tensor([0.5, -0.3]))
        self.a = nn.Parameter(torch.tensor(1.2))

    def _energy(self, x):
        return 0.5 * self.a * x.pow(2).sum(-1) + torch.tanh(x @ self.w)


@pytest.mark.parametrize("objective", ["exact", "sliced", "dsm", "ncsm"])
@pytest.mark.parametrize("kind", ["energy", "score"])
def test_every_parameter_gets_a_gradient(objective, kind):
    torch.manual_seed(2)
    x = torch.randn(16, 2)
    if objective == "ncsm":
        model = NoiseConditionalScore(2, hidden=8)
        if kind == "energy":
            net = MLPEnergy(3, hidden=8)
            model = nn.ModuleList([net])
            model.forward = lambda xt, s: net(torch.cat([xt, s.log().unsqueeze(1)], 1))
        loss = noise_conditional_score_matching(model, x, geometric_sigmas(1.0, 0.1, 3))
    else:
        model = QuadEnergy() if kind == "energy" else ScoreMLP(2, hidden=8)
        loss = {"exact": lambda: exact_score_matching(model, x), "sliced": lambda: sliced_score_matching(model, x),
                "dsm": lambda: denoising_score_matching(model, x, 0.1)}[objective]()
    loss.backward()
    for name, p in model.named_parameters():
        if kind == "energy" and name.endswith("net.4.bias"):  # U + c has the same score: no gradient, ever
            assert p.grad is None or p.grad.abs().sum() == 0
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_mixture_score_and_noised_law():
    mix = GaussianMixture(torch.tensor([[0.0, 0.0], [3.0, -1.0]], dtype=torch.float64), torch.tensor([0.5, 1.0]),
                          torch.tensor([1.0, 3.0]))
    x = torch.randn(7, 2, dtype=torch.float64).requires_grad_(True)
    (g,) = torch.autograd.grad(mix.log_prob(x).sum(), x)
    torch.testing.assert_close(mix.score(x.detach()), g)
    torch.testing.assert_close(model_score(mix, x), g)  # the energy -log p, through autograd
    torch.testing.assert_close(mix.weights, torch.tensor([0.25, 0.75], dtype=torch.float64))
    torch.testing.assert_close(mix.noised(2.0).stds, torch.tensor([4.25, 5.0], dtype=torch.float64).sqrt())
    s = mix.sample(40_000, generator=torch.Generator().manual_seed(0))
    assert abs(float((mix.assign(s) == 1).double().mean()) - 0.75) < 0.02
    # the density integrates to one (1-D check on a grid)
    one = GaussianMixture(torch.tensor([[-1.0], [2.0]], dtype=torch.float64), torch.tensor([0.4, 0.8]))
    grid = torch.linspace(-8, 10, 20_001, dtype=torch.float64).unsqueeze(1)
    assert abs(float(one.log_prob(grid).exp().sum() * (18 / 20_000)) - 1) < 1e-6


def test_clear_errors():
    U = GaussianEnergy(torch.zeros(2), 1.0)
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match="sigma must be a positive"):
        denoising_score_matching(U, x, -0.1)
    with pytest.raises(ValueError, match="n_projections"):
        sliced_score_matching(U, x, n_projections=0)
    with pytest.raises(ValueError, match="distribution"):
        sliced_score_matching(U, x, distribution="uniform")
    with pytest.raises(ValueError, match="reduction"):
        exact_score_matching(U, x, reduction="sum")
    with pytest.raises(ValueError, match="NaN"):
        exact_score_matching(U, torch.full((2, 2), float("nan")))
    with pytest.raises(ValueError, match="batch dimension"):
        exact_score_matching(U, torch.randn(2))
    with pytest.raises(ValueError, match="energy of shape"):
        exact_score_matching(lambda t: t.sum(), x)
    with pytest.raises(ValueError, match="sigma_max > sigma_min"):
        geometric_sigmas(0.1, 1.0, 5)
    with pytest.raises(ValueError, match="n_levels"):
        geometric_sigmas(1.0, 0.1, 1)
    with pytest.raises(ValueError, match="sigmas must be positive"):
        noise_conditional_score_matching(NoiseConditionalScore(2), x, [1.0, 0.0])
    with pytest.raises(ValueError, match="weights"):
        GaussianMixture(torch.zeros(2, 1), 1.0, torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        ScoreMLP(2)(torch.randn(3, 3))
    with pytest.raises(ValueError, match="sigma must be a positive"):
        NoiseConditionalScore(2)(x, 0.0)


def test_geometric_ladder():
    s = geometric_sigmas(5.0, 0.05, 6, dtype=torch.float64)
    assert math.isclose(float(s[0]), 5.0) and math.isclose(float(s[-1]), 0.05)
    ratios = s[1:] / s[:-1]
    torch.testing.assert_close(ratios, torch.full_like(ratios, float(ratios[0])))
