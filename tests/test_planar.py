"""Planar and radial flows: the invertibility constraint, the root-find inverse and its tolerance,
gradients through the inverse (implicit differentiation), densities on the whole plane, training."""

import math

import pytest
import torch

from coursekit.data import sample_toy
from coursekit.flows import Compose, Flow, Planar, Radial
from coursekit.flows.planar import solve_monotone
from coursekit.train import fit_mle


def _set(m, **values):
    with torch.no_grad():
        for k, v in values.items():
            getattr(m, k).copy_(torch.as_tensor(v, dtype=getattr(m, k).dtype))
    return m


@pytest.mark.parametrize("wu", [-50.0, -5.0, -1.0, 0.0, 3.0, 40.0])
def test_planar_constraint_holds_for_any_parameters(wu):
    # w^T u is free; the reparametrised u_hat always has w^T u_hat > -1
    m = _set(Planar(2).double(), w=[1.0, 0.0], u=[wu, 2.0], b=0.3)
    s = float((m.w @ m.u_hat()).detach())
    assert s >= -1 + Planar.margin
    assert math.isclose(s, -1 + Planar.margin + math.log1p(math.exp(wu)), rel_tol=1e-12)
    z = torch.linspace(-4, 4, 101, dtype=torch.float64)[:, None] * torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    x, ld = m(z)
    assert torch.isfinite(ld).all()
    # along the line z = t w, x_1 is strictly increasing in t: no fold
    assert (x[1:, 0] > x[:-1, 0]).all()


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 64 * torch.finfo(torch.float32).eps),
                                       (torch.float64, 64 * torch.finfo(torch.float64).eps)])
@pytest.mark.parametrize("wu", [-30.0, 0.5, 25.0])
def test_planar_inverse_meets_stated_tolerance(dtype, tol, wu):
    # near-singular (w^T u_hat -> -1) and strongly stretching maps, points far out included
    m = _set(Planar(3).to(dtype), w=[2.0, -1.0, 0.5], u=[wu, 1.0, -2.0], b=-0.7)
    z = torch.randn(500, 3, dtype=dtype, generator=torch.Generator().manual_seed(0)) * 5
    x, ld = m(z)
    z_back, ld_back = m.inverse(x)
    # the scalar equation a + s tanh(a) = w^T x + b is solved to tol * (1 + |w^T x + b|)
    with torch.no_grad():
        s = m.w @ m.u_hat()
        c = x @ m.w + m.b
        a = z_back @ m.w + m.b
    residual = (a + s * torch.tanh(a) - c).abs() / (1 + c.abs())
    assert float(residual.max()) <= 4 * tol  # one more Newton step in autograd, a few ulps of rounding
    scale = 1e-4 if dtype == torch.float32 else 1e-10
    assert torch.allclose(z_back, z, atol=scale * 50, rtol=scale)
    assert torch.allclose(ld + ld_back, torch.zeros_like(ld), atol=scale * 10)


def test_solve_monotone_bracket_and_newton():
    g = lambda a: (a**3 + a, 3 * a**2 + 1)  # noqa: E731
    target = torch.tensor([-1000.0, 0.0, 2.0, 1e6], dtype=torch.float64)
    lo, hi = torch.full((4,), -200.0, dtype=torch.float64), torch.full((4,), 200.0, dtype=torch.float64)
    a = solve_monotone(g, target, lo, hi)
    assert torch.allclose(g(a)[0], target, rtol=1e-12, atol=1e-12)


class _Inverse(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m.inverse(x)


def test_gradients_through_the_inverse_are_implicit_derivatives():
    # gradcheck compares autograd through the inverse (root find + one differentiable Newton
    # step) with finite differences, in x and in every parameter
    torch.manual_seed(0)
    inv = _Inverse(_set(Planar(3).double(), u=[1.5, -2.0, 0.7], b=0.4))
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    params = {k: v.detach().clone().requires_grad_(True) for k, v in inv.named_parameters()}
    names = list(params)

    def f(x, *ps):
        return torch.func.functional_call(inv, dict(zip(names, ps)), (x,))

    assert torch.autograd.gradcheck(f, (x, *params.values()), atol=1e-6)


@pytest.mark.parametrize("make", [lambda: Compose(*[Planar(2) for _ in range(6)]),
                                  lambda: Compose(Radial(2), Radial(2))], ids=["planar x6", "radial x2"])
def test_density_integrates_to_one_on_the_plane(make):
    torch.manual_seed(3)
    flow = Flow(make()).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.5 * torch.randn_like(p))
    n, lim = 600, 9.0
    h = 2 * lim / n
    t = -lim + h * (torch.arange(n, dtype=torch.float64) + 0.5)
    with torch.no_grad():
        mass = float(flow.log_prob(torch.cartesian_prod(t, t)).exp().sum() * h * h)
    assert abs(mass - 1) < 5e-3, mass


def test_radial_is_invertible_at_the_constraint_boundary():
    m = _set(Radial(2).double(), alpha_raw=0.0, beta_raw=-30.0, z0=[0.5, -0.5])  # beta = -alpha + 1e-13
    alpha, beta = m.alpha_beta()
    assert float((beta + alpha).detach()) > 0
    z = torch.randn(200, 2, dtype=torch.float64) * 3
    x, ld = m(z)
    z_back, ld_back = m.inverse(x)
    assert torch.allclose(z_back, z, atol=1e-6)
    assert torch.isfinite(ld).all() and torch.allclose(ld + ld_back, torch.zeros_like(ld), atol=1e-8)


def test_planar_flow_trains_by_maximum_likelihood():
    torch.manual_seed(0)
    data = sample_toy("moons", 2000, seed=1)
    flow = Flow(Compose(*[Planar(2) for _ in range(8)]))
    with torch.no_grad():
        before = float(-flow.log_prob(data).mean())
    hist = fit_mle(flow, data, steps=150, batch_size=256, lr=2e-2, seed=0)
    with torch.no_grad():
        after = float(-flow.log_prob(data).mean())
    assert len(hist) == 150
    assert after < before - 0.3, (before, after)


def test_repr_and_bad_construction():
    assert "dim=3" in repr(Planar(3)) and "tanh" in repr(Planar(3))
    assert "dim=2" in repr(Radial(2))
    for cls in (Planar, Radial):
        with pytest.raises(ValueError):
            cls(0)


# ----------------------------------------------------------------------------- numerical edges of the inverse


def _g(a):
    return a + 0.5 * a.tanh(), 1 + 0.5 * (1 - a.tanh() ** 2)


def test_solve_monotone_refuses_a_root_outside_the_bracket():
    t = torch.tensor([0.0, 10.0])
    with pytest.raises(ValueError, match="not bracketed for 1 element"):
        solve_monotone(_g, t, torch.tensor([-1.0, -1.0]), torch.tensor([1.0, 1.0]))


def test_solve_monotone_refuses_a_decreasing_function():
    with pytest.raises(ValueError, match="check that g increases"):
        solve_monotone(lambda a: (-a, -torch.ones_like(a)), torch.tensor([0.5]), torch.tensor([-1.0]), torch.tensor([1.0]))


def test_solve_monotone_reports_non_convergence_and_bad_settings():
    from coursekit.flows.planar import NotConverged

    t = torch.tensor([0.3], dtype=torch.float64)
    with pytest.raises(NotConverged, match="did not converge in max_iter=2"):
        solve_monotone(_g, t, t - 100, t + 100, max_iter=2)
    with pytest.raises(ValueError, match="max_iter must be a positive integer, got 0"):
        solve_monotone(_g, t, t - 1, t + 1, max_iter=0)
    with pytest.raises(ValueError, match="bracket is empty"):
        solve_monotone(_g, t, t + 1, t - 1)


def test_solve_monotone_midpoint_does_not_overflow_near_the_largest_float():
    big = torch.finfo(torch.float32).max
    t = torch.tensor([0.95 * big])
    a = solve_monotone(lambda a: (a, torch.ones_like(a)), t, torch.tensor([0.9 * big]), torch.tensor([big]))
    assert bool(torch.isfinite(a).all()) and torch.allclose(a, t, rtol=1e-6)


@pytest.mark.parametrize("scale", [1e30, 1e38])
def test_planar_inverse_is_finite_for_huge_float32_inputs(scale):
    torch.manual_seed(0)
    T = Planar(2)
    x = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [1.0, -0.5]]) * scale
    z, ld = T.inverse(x)
    assert bool(torch.isfinite(z).all()) and bool(torch.isfinite(ld).all())
    with torch.no_grad():  # far from the hyperplane tanh saturates: z = x - u_hat * sign(w^T x + b)
        expect = x - torch.sign(x @ T.w + T.b).unsqueeze(-1) * T.u_hat()
    assert torch.allclose(z, expect, rtol=1e-6)


def test_planar_inverse_says_so_when_w_x_overflows():
    T = Planar(2)
    with torch.no_grad():
        T.w.fill_(10.0)
    with pytest.raises(ValueError, match="overflows torch.float32.*float64"):
        T.inverse(torch.full((1, 2), 3e38))


@pytest.mark.parametrize("check_every", [None, 1, 3, 8])  # None: the default, 1 on the CPU
def test_solve_monotone_reads_the_device_every_check_every_iterations(check_every, monkeypatch):
    """Reading the stopping test back only every k iterations (a host synchronisation on a GPU)
    gives the same roots: converged elements are frozen between reads."""
    torch.manual_seed(0)
    target = torch.randn(1000, dtype=torch.float64) * 5
    slope = torch.rand(1000, dtype=torch.float64) * 3

    def g(a):
        return a + slope * a.tanh(), 1 + slope * (1 - a.tanh() ** 2)

    lo, hi = target - 10, target + 10
    ref = solve_monotone(g, target, lo, hi, check_every=1)
    calls = {"g": 0, "reads": 0}

    def counted_g(a):
        calls["g"] += 1
        return g(a)

    for name in ("__bool__", "tolist", "item", "__float__"):
        original = getattr(torch.Tensor, name)

        def read(t, *args, _original=original, **kwargs):
            calls["reads"] += 1
            return _original(t, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, read)
    root = solve_monotone(counted_g, target, lo, hi, check_every=check_every)
    monkeypatch.undo()
    torch.testing.assert_close(root, ref, atol=1e-12, rtol=0)
    assert (root + slope * root.tanh() - target).abs().max() <= 1e-12 * (1 + target.abs().max())
    iterations = calls["g"] - 2  # g(lo) and g(hi) check the bracket
    # one read for the three input checks, at most two per check (converged? collapsed?)
    assert calls["reads"] <= 1 + 2 * math.ceil(iterations / (check_every or 1)), calls
    assert iterations < 60


def test_solve_monotone_rejects_a_bad_check_every():
    with pytest.raises(ValueError, match="check_every"):
        solve_monotone(lambda a: (a, torch.ones_like(a)), torch.zeros(2), -torch.ones(2), torch.ones(2), check_every=0)
