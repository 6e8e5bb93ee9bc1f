"""Invertible residual blocks: spectral normalisation, the fixed-point inverse, the three log-det estimators.

Statistical tests compare a Monte Carlo mean with the exact value (float64) and accept when the
difference is within ``z * SE``, SE the standard error computed from the same draws and ``z`` the
two-sided normal quantile for a family-wise false-alarm rate ``ALPHA`` over the comparisons of the
test (Bonferroni). Each test also shows it has power: a biased variant (the series cut after the
terms the roulette always computes) misses by many times the tolerance. Seeds are fixed, so the
outcome is deterministic; ``ALPHA`` is the chance that a correct estimator fails at a random seed.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd.functional import jacobian

from coursekit.flows import (
    ConvergenceError,
    Flow,
    LipSwish,
    ResidualBlock,
    SpectralNormConv2d,
    SpectralNormLinear,
    make_residual_flow,
)

ALPHA = 1e-3
F64 = torch.float64


def _z(m: int) -> float:
    """Two-sided normal quantile for a family-wise rate ALPHA over m comparisons."""
    return float(torch.special.ndtri(torch.tensor(1.0 - ALPHA / (2 * m), dtype=F64)))


def _jac_g(block, z):
    """(batch, p, p): the autograd Jacobian of g at each row (flattened for images)."""
    n = z.shape[0]
    shape = block.event_shape
    J = jacobian(lambda t: block.g(t.view(n, *shape)).reshape(n, -1).sum(0), z.reshape(n, -1), vectorize=True)
    return J.permute(1, 0, 2)


def _series(J, n):
    """The truncated series sum_{k<=n} (-1)^{k+1} tr(J^k) / k, exactly (matrix powers)."""
    P = torch.eye(J.shape[-1], dtype=J.dtype).expand_as(J)
    S = J.new_zeros(J.shape[0])
    for k in range(1, n + 1):
        P = P @ J
        S = S + (-1) ** (k + 1) / k * P.diagonal(dim1=1, dim2=2).sum(-1)
    return S


def _hard_block(logdet="roulette", coeff=0.97, **kw):
    """A block in the hard regime of the estimators: g = W_2 ELU(W_1 z + b) with W_i = c Q_i (Q_i orthogonal),
    so ||J_g|| = c^2 = 0.94 wherever the ELU is linear and the eigenvalues of J_g lie near a circle of that
    radius: the series converges slowly and the roulette's tail matters."""
    torch.manual_seed(0)
    b = ResidualBlock(
        3, hidden=(3,), coeff=coeff, activation="elu", logdet=logdet, power_tol=1e-12, max_power_iterations=1000, **kw
    ).double()
    with torch.no_grad():
        for layer in b.g.layers:
            q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=F64))
            layer.weight.copy_(3 * q)  # spectral norm 3: normalised down to 0.97
        b.g.layers[0].bias.fill_(0.5)
    return b.eval()


POINTS = torch.tensor([[0.3, -1.2, 0.8], [1.5, 0.2, -0.4], [-0.7, -0.3, -1.9]], dtype=F64)


# ----------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("coeff", [1.0, 1.5, 0.0, -0.2])
def test_coeff_outside_0_1_is_refused(coeff):
    with pytest.raises(ValueError, match=r"coeff must be a number in \(0, 1\).*Lip\(g\) < 1"):
        ResidualBlock(2, coeff=coeff)
    with pytest.raises(ValueError, match="coeff"):
        SpectralNormLinear(2, 3, coeff=coeff)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="logdet"):
        ResidualBlock(2, logdet="hutchinson")
    with pytest.raises(ValueError, match="explicit"):
        ResidualBlock(2, explicit="both")
    with pytest.raises(ValueError, match="roulette_p"):
        ResidualBlock(2, roulette_p=1.0)
    with pytest.raises(ValueError, match="n_terms"):
        ResidualBlock(2, n_terms=0)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        ResidualBlock(1, spatial=(4, 4), kernel_size=2)
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        ResidualBlock(1, spatial=(4,))


# ----------------------------------------------------------------------------- spectral normalisation


def test_linear_layers_are_normalised_to_coeff():
    torch.manual_seed(0)
    c = 0.7
    layer = SpectralNormLinear(5, 4, coeff=c, power_tol=1e-13, max_power_iterations=2000).double().eval()
    with torch.no_grad():
        layer.weight.mul_(20)
    sigma = torch.linalg.matrix_norm(layer.normalized_weight().detach(), 2)
    assert abs(float(sigma) - c) < 1e-9 * c  # large weights are scaled down to exactly c
    with torch.no_grad():
        layer.weight.mul_(0.001)
    small = layer.weight.detach().clone()
    assert torch.equal(layer.normalized_weight().detach(), small)  # weights of norm < c are left alone


def test_conv_layers_are_normalised_as_operators():
    """The bound is on the convolution as a map of images (its autograd Jacobian), not on the kernel."""
    torch.manual_seed(0)
    c = 0.8
    conv = SpectralNormConv2d(2, 3, 3, spatial=(4, 5), coeff=c, power_tol=1e-13, max_power_iterations=3000)
    conv = conv.double().eval()
    with torch.no_grad():
        conv.weight.mul_(10)
        conv.bias.zero_()
    w = conv.normalized_weight().detach()
    J = jacobian(lambda t: conv.apply_weight(w, t.view(1, 2, 4, 5)).flatten(), torch.zeros(40, dtype=F64))
    sigma = torch.linalg.matrix_norm(J, 2)
    assert abs(float(sigma) - c) < 1e-8 * c, float(sigma)


def test_training_mode_tracks_the_norm_with_one_iteration_per_call():
    """One warm-started power iteration per training call: after a jump of the weights the estimate is a lower
    bound (the norm may exceed c), and repeated calls bring the norm back to c."""
    torch.manual_seed(0)
    c = 0.9
    layer = SpectralNormLinear(6, 6, coeff=c).double()
    with torch.no_grad():
        layer.weight.copy_(torch.randn(6, 6, dtype=F64) * 5)
    norms = []
    for _ in range(60):
        norms.append(float(torch.linalg.matrix_norm(layer.normalized_weight().detach(), 2)))
    assert norms[-1] < c * (1 + 1e-6), norms[-5:]
    assert max(norms) >= norms[-1]


def test_lipswish_is_1_lipschitz():
    """Its slope never exceeds 1, for small and large beta, and comes close to 1 (near beta x = 2.4)."""
    act = LipSwish().double()
    for raw in (-3.0, 0.5, 4.0):
        with torch.no_grad():
            act.raw_beta.fill_(raw)
        beta = float(torch.nn.functional.softplus(act.raw_beta.detach()))
        x = (torch.linspace(-20, 20, 200_001, dtype=F64) / beta).requires_grad_()
        (d,) = torch.autograd.grad(act(x).sum(), x)
        assert 0.99 < float(d.max()) <= 1.0, float(d.max())


@pytest.mark.parametrize("spatial", [None, (4, 4)])
def test_lipschitz_constant_of_g_is_at_most_the_bound(spatial):
    """Lip(g) measured as the largest singular value of g's autograd Jacobian at random points, after
    the weights were inflated so that every layer is capped: at most c^L (each layer <= c, up to the
    converged power iteration's 1e-12 relative tolerance), and not far below it."""
    torch.manual_seed(1)
    dim = 3 if spatial is None else 2
    block = ResidualBlock(
        dim, spatial, hidden=(8, 8), coeff=0.8, activation="elu", power_tol=1e-12, max_power_iterations=3000
    ).double()
    with torch.no_grad():
        for layer in block.g.layers:
            layer.weight.mul_(10)
    block.eval()
    z = torch.randn(64, *block.event_shape, dtype=F64)
    lip = torch.linalg.matrix_norm(_jac_g(block, z), 2)
    bound = block.lipschitz_bound
    assert bound == pytest.approx(0.8**3)
    assert float(lip.max()) <= bound * (1 + 1e-9), (float(lip.max()), bound)


def test_the_lipschitz_bound_is_attained_by_aligned_layers():
    """With orthogonal weights (inflated, then normalised to c Q_i) and the ELU in its linear range, J_g is
    c^3 times an orthogonal matrix: its singular values are all c^3, so the bound is exact, not loose."""
    torch.manual_seed(2)
    c = 0.8
    block = ResidualBlock(
        3, hidden=(3, 3), coeff=c, activation="elu", power_tol=1e-12, max_power_iterations=3000
    ).double()
    with torch.no_grad():
        for layer in block.g.layers:
            q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=F64))
            layer.weight.copy_(4 * q)
        block.g.layers[0].bias.fill_(3.0)  # with |z| small, both hidden layers' inputs stay positive
        block.g.layers[1].bias.fill_(10.0)
    block.eval()
    sv = torch.linalg.svdvals(_jac_g(block, 0.3 * torch.randn(16, 3, dtype=F64)))
    assert torch.allclose(sv, torch.full_like(sv, c**3), rtol=1e-9)


# ----------------------------------------------------------------------------- the fixed-point inverse


@pytest.mark.parametrize("tol", [1e-4, 1e-8, 1e-12])
@pytest.mark.parametrize("spatial", [None, (3, 3)])
def test_inverse_meets_its_tolerance(tol, spatial):
    """The returned z is within tol * max(1, ||x||) of the true preimage (Banach's a-posteriori bound)."""
    torch.manual_seed(2)
    dim = 4 if spatial is None else 2
    block = ResidualBlock(dim, spatial, coeff=0.95, tol=tol).double().eval()
    with torch.no_grad():
        for layer in block.g.layers:
            layer.weight.mul_(5)
        z = torch.randn(32, *block.event_shape, dtype=F64) * 2
        x, _ = block(z)
        z_back, _ = block.inverse(x)
    err = (z_back - z).reshape(32, -1).norm(dim=1)
    allowed = tol * x.reshape(32, -1).norm(dim=1).clamp(min=1.0)
    assert (err <= allowed).all(), float((err / allowed).max())
    if tol >= 1e-8:  # and it stopped early, not at round-off
        assert float(err.max()) > 1e-14


def test_non_convergence_raises_a_clear_error():
    torch.manual_seed(3)
    block = ResidualBlock(3, coeff=0.9, max_iter=3).double().eval()
    x = torch.randn(4, 3, dtype=F64)
    with pytest.raises(ConvergenceError, match="did not converge in 3 iterations.*max_iter"):
        block.inverse(x)
    # a g that is not a contraction (the normalisation bypassed): the iteration diverges
    block = ResidualBlock(3, coeff=0.9).double().eval()
    for layer in block.g.layers:
        layer.coeff = 50.0
    with torch.no_grad():
        for layer in block.g.layers:
            layer.weight.mul_(20)
    with pytest.raises(ConvergenceError, match=r"Lip\(g\) < 1"):
        block.inverse(x * 10)
    assert issubclass(ConvergenceError, RuntimeError)


def test_explicit_inverse_puts_the_fixed_point_on_the_sampling_side():
    torch.manual_seed(4)
    block = ResidualBlock(3, explicit="inverse").double().eval()
    x = torch.randn(5, 3, dtype=F64)
    z, ld_inv = block.inverse(x)
    assert torch.allclose(z, x + block.g(x))  # the density direction is the explicit residual map
    x_back, ld = block(z)
    assert torch.allclose(x_back, x, atol=1e-9) and torch.allclose(ld, -ld_inv)


def test_gradients_through_the_inverse_are_the_implicit_ones():
    """d/dtheta of a loss of z = T^{-1}(x): the direct solve (exact mode) and the adjoint fixed-point
    iteration (stochastic modes) agree with each other and with central finite differences."""
    torch.manual_seed(5)
    exact = ResidualBlock(3, hidden=(8,), coeff=0.9).double().eval()
    series = ResidualBlock(3, hidden=(8,), coeff=0.9, logdet="series").double().eval()
    series.load_state_dict(exact.state_dict())
    with torch.no_grad():
        for layer in exact.g.layers:
            layer.weight.mul_(0.5)
    series.load_state_dict(exact.state_dict())
    x = torch.randn(6, 3, dtype=F64)

    def loss(block):
        return (block.inverse(x)[0] ** 3).sum()

    grads = []
    for block in (exact, series):
        block.zero_grad()
        loss(block).backward()
        grads.append(block.g.layers[0].weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-8)
    w = exact.g.layers[0].weight
    h = 1e-6
    with torch.no_grad():
        w[1, 2] += h
        up = float(loss(exact))
        w[1, 2] -= 2 * h
        down = float(loss(exact))
        w[1, 2] += h
    assert abs((up - down) / (2 * h) - float(grads[0][1, 2])) < 1e-6


# ----------------------------------------------------------------------------- log-determinants


@pytest.mark.parametrize("spatial", [None, (3, 3)])
def test_exact_log_det_matches_slogdet(spatial):
    torch.manual_seed(6)
    dim = 5 if spatial is None else 2
    block = ResidualBlock(dim, spatial, coeff=0.95).double().eval()
    with torch.no_grad():
        for layer in block.g.layers:
            layer.weight.mul_(4)
    z = torch.randn(4, *block.event_shape, dtype=F64)
    _, ld = block(z)
    n = z.shape[0]
    J = jacobian(
        lambda t: block(t.view(n, *block.event_shape))[0].reshape(n, -1).sum(0), z.reshape(n, -1), vectorize=True
    ).permute(1, 0, 2)
    assert torch.allclose(ld, torch.linalg.slogdet(J)[1], atol=1e-10)
    assert (ld.abs() > 1e-4).all()  # far from 0 at this tolerance: a missing log-det would fail


def test_series_estimator_is_unbiased_for_the_truncated_series_and_its_bias_shrinks():
    """Hutchinson's estimator of the n-term series has mean S_n = sum_{k<=n} (-1)^{k+1} tr(J^k) / k (rows are
    independent draws); |S_n - log det| is at most p ||J||^{n+1} / ((n+1)(1 - ||J||)) and shrinks with n."""
    block = _hard_block("series")
    J = _jac_g(block, POINTS)
    exact = torch.linalg.slogdet(torch.eye(3, dtype=F64) + J)[1]
    norm = torch.linalg.matrix_norm(J, 2)
    biases = []
    for n in (1, 2, 4, 8, 16, 32, 64):
        S = _series(J, n)
        bias = (S - exact).abs()
        bound = 3 * norm ** (n + 1) / ((n + 1) * (1 - norm))
        assert (bias <= bound).all(), (n, bias, bound)
        biases.append(float(bias.max()))
    assert biases[-1] < biases[0] / 100, biases
    M = 4000
    torch.manual_seed(7)
    for n in (2, 8):
        block.n_terms = n
        with torch.no_grad():
            est = block(POINTS.repeat_interleave(M, 0))[1].view(3, M)
        mean, se = est.mean(1), est.std(1) / math.sqrt(M)
        tol = _z(6) * se
        assert ((mean - _series(J, n)).abs() <= tol).all(), (mean - _series(J, n)) / se
        if n == 2:  # the truncation bias is far outside the Monte Carlo error: the test can tell
            assert ((mean - exact).abs() > 5 * tol).any()


def test_roulette_estimator_is_unbiased():
    """K independent calls (each one roulette draw N, shared by the batch, and fresh Rademacher vectors for
    M copies of each point): the mean is the exact log-det within z * SE, while the series cut after the
    n_exact = 2 terms the roulette always computes misses by more than 5 tolerances."""
    block = _hard_block("roulette")
    J = _jac_g(block, POINTS)
    exact = torch.linalg.slogdet(torch.eye(3, dtype=F64) + J)[1]
    K, M = 400, 25
    torch.manual_seed(8)
    with torch.no_grad():
        est = torch.stack([block(POINTS.repeat_interleave(M, 0))[1].view(3, M).mean(1) for _ in range(K)])
    mean, se = est.mean(0), est.std(0) / math.sqrt(K)
    tol = _z(3) * se
    assert ((mean - exact).abs() <= tol).all(), (mean - exact) / se
    assert ((_series(J, block.n_exact) - exact).abs() > 5 * tol).all()


def test_neumann_gradient_is_unbiased():
    """The roulette's gradient (Neumann series, backward in forward) averages to the gradient of the exact
    log-det, for the parameters (projected on a fixed random direction) and for the input."""
    block = _hard_block("roulette")
    params = [p for p in block.parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(9)
    direction = [torch.randn(p.shape, generator=gen, dtype=F64) for p in params]
    z = torch.tensor([[-0.95, -1.57, -0.13]], dtype=F64)  # some ELU inputs negative: J_g depends on z

    def directional(logdet_sum, inputs):
        grads = torch.autograd.grad(logdet_sum, [*params, inputs], allow_unused=True)
        g_par = sum(float((g * d).sum()) for g, d in zip(grads[:-1], direction) if g is not None)
        return torch.tensor([g_par, *grads[-1].sum(0).tolist()], dtype=F64)

    block.logdet = "exact"
    zi = z.clone().requires_grad_()
    exact = directional(block(zi)[1].sum(), zi)
    block.logdet = "roulette"
    K, M = 400, 10
    torch.manual_seed(10)
    draws = []
    for _ in range(K):
        zi = z.repeat(M, 1).requires_grad_()
        draws.append(directional(block(zi)[1].sum() / M, zi))
    draws = torch.stack(draws)
    mean, se = draws.mean(0), draws.std(0) / math.sqrt(K)
    tol = _z(4) * se
    assert ((mean - exact).abs() <= tol).all(), (mean - exact) / se
    block.logdet, block.n_terms = "series", block.n_exact  # the cut series' gradient is visibly biased
    zi = z.clone().requires_grad_()
    cut = directional(block(zi)[1].sum(), zi)
    assert ((cut - exact).abs() > 5 * tol).all()


def test_density_direction_uses_the_same_estimator():
    """Flow.log_prob goes through the inverse: the point is exact, its log-det is -(roulette estimate), so
    log_prob is unbiased for the exact log-density; sampling returns exact points."""
    block = _hard_block("roulette", coeff=0.8, explicit="forward")  # milder: the fixed point runs 300 times
    flow = Flow(block).double()
    x = block(POINTS)[0].detach()
    block.logdet = "exact"
    with torch.no_grad():
        exact = flow.log_prob(x)
    block.logdet = "roulette"
    K, M = 300, 25
    torch.manual_seed(11)
    with torch.no_grad():
        est = torch.stack([flow.log_prob(x.repeat_interleave(M, 0)).view(3, M).mean(1) for _ in range(K)])
        z1, ld1 = block.inverse(x)
        z2, ld2 = block.inverse(x)
    mean, se = est.mean(0), est.std(0) / math.sqrt(K)
    assert ((mean - exact).abs() <= _z(3) * se).all(), (mean - exact) / se
    assert torch.equal(z1, z2) and not torch.equal(ld1, ld2)  # deterministic point, stochastic log-det


# ----------------------------------------------------------------------------- training


def test_a_residual_flow_trains_with_the_roulette_estimator():
    torch.manual_seed(12)
    data = torch.randn(256, 2) @ torch.tensor([[1.0, 0.8], [0.0, 0.4]]) + torch.tensor([2.0, -1.0])
    flow = Flow(make_residual_flow(2, n_blocks=2, logdet="roulette", hidden=(16, 16)))
    opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
    with torch.no_grad():
        start = -flow.log_prob(data).mean().item()
    for _ in range(60):
        opt.zero_grad()
        loss = -flow.log_prob(data).mean()
        loss.backward()
        opt.step()
    flow.eval()
    exact = [m for m in flow.transform.maps if isinstance(m, ResidualBlock)]
    for m in exact:
        m.logdet = "exact"
    with torch.no_grad():
        end = -flow.log_prob(data).mean().item()
    assert end < start - 0.5, (start, end)


def test_the_fixed_point_solver_stops_on_every_sample_and_reports_each_failure():
    """``_iterative.solve`` (shared by residual blocks and MintNet) reads one number per iteration:
    it must still stop only when every sample meets its bound, and name NaN, inf, divergence and
    the iteration cap, whichever sample causes them."""
    from coursekit.flows._iterative import ConvergenceError, solve

    y = torch.tensor([[0.0, 0.0], [1.0, -2.0], [30.0, 4.0]], dtype=F64)
    # u <- y - L sin(u): a contraction of constant L per coordinate; Banach's factor L / (1 - L)
    for L in (0.2, 0.9):
        u = solve(lambda t, L=L: y - L * torch.sin(t), y, y, 1e-12, 2000, L / (1 - L), "test", "")
        err = (u + L * torch.sin(u) - y).norm(dim=1)
        assert (err <= 1e-10 * y.norm(dim=1).clamp(min=1.0)).all(), err
    # a slow sample (L close to 1) keeps the others iterating: all meet the bound, not only the first
    rates = torch.tensor([[0.1], [0.1], [0.99]], dtype=F64)
    u = solve(lambda t: y - rates * torch.sin(t), y, y, 1e-10, 20000, 99.0, "test", "")
    assert ((u + rates * torch.sin(u) - y).norm(dim=1) <= 1e-9 * y.norm(dim=1).clamp(min=1.0)).all()
    for bad, what in ((math.nan, "NaN or inf"), (math.inf, "NaN or inf")):
        for row in range(3):
            def step(t, row=row, bad=bad):
                out = y - 0.5 * torch.sin(t)
                out[row, 1] = bad
                return out

            with pytest.raises(ConvergenceError, match=what):
                solve(step, y, y, 1e-12, 50, 1.0, "test", "")
    with pytest.raises(ConvergenceError, match="did not converge in 3 iterations"):
        solve(lambda t: y - 0.9 * torch.sin(t), y, y, 1e-14, 3, 9.0, "test", "")
    # u <- 3 u + 1 diverges on one sample only: stopped early (after step 11), not at the cap
    grow = torch.tensor([[0.5], [0.5], [3.0]], dtype=F64)
    with pytest.raises(ConvergenceError, match=r"did not converge in 1[0-9] iterations \(max_iter=10000\)"):
        solve(lambda t: grow * t + 1.0, y, y, 1e-12, 10_000, 1.0, "test", "")
    empty = torch.zeros(0, 2, dtype=F64)
    assert solve(lambda t: t + 1.0, empty, empty, 1e-12, 5, 1.0, "test", "").shape == (0, 2)
