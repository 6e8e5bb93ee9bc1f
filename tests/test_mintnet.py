"""MintNet layers: triangular Jacobians (vectors, 8x8 images with 1 and 3 channels), exact log-dets, the
diagonal fixed-point inverse and its implicit gradient."""

from __future__ import annotations

import pytest
import torch
from torch.autograd.functional import jacobian

from coursekit.flows import ConvergenceError, Flow, MintLayer, make_mintnet

F64 = torch.float64


def _layer(dim, spatial=None, seed=0, **kw):
    torch.manual_seed(seed)
    m = MintLayer(dim, spatial, **kw).double().eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # away from the initialisation
        for p in m.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=F64))
    return m


def _jac(fn, v):
    n = v.shape[0]
    J = jacobian(lambda t: fn(t.view(v.shape)).reshape(n, -1).sum(0), v.reshape(n, -1), vectorize=True)
    return J.permute(1, 0, 2)


CONFIGS = [
    pytest.param({"dim": 5}, id="vector"),
    pytest.param({"dim": 5, "reverse": True}, id="vector-reversed"),
    pytest.param({"dim": 1, "spatial": (8, 8)}, id="1x8x8"),
    pytest.param({"dim": 3, "spatial": (8, 8), "activation": "tanh"}, id="3x8x8-tanh"),
    pytest.param({"dim": 3, "spatial": (8, 8), "reverse": True, "kernel_size": 5}, id="3x8x8-reversed-k5"),
]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_jacobian_is_triangular_and_log_det_is_its_diagonal(cfg):
    """In the raster order (pixel by pixel, channel by channel) the autograd Jacobian is lower triangular,
    its diagonal is the closed-form one (>= exp(log_scale) > 0), and slogdet equals the sum of its logs."""
    m = _layer(**cfg)
    z = torch.randn(2, *m.event_shape, dtype=F64) * 2
    _, ld = m(z)
    J = _jac(lambda t: m(t)[0], z)
    o = m.order
    Jo = J[:, o][:, :, o]
    assert Jo.triu(1).abs().max() == 0, "a variable depends on later ones"
    assert Jo.tril(-1).abs().max() > 0.01, "and it does depend on earlier ones"
    diag = m.jacobian_diagonal(z).reshape(2, -1)
    assert torch.allclose(J.diagonal(dim1=1, dim2=2), diag, atol=1e-12)
    floor = m.log_scale.exp().repeat_interleave(m.dim // m.channels).expand(2, -1)
    assert (diag >= floor * (1 - 1e-12)).all()
    assert torch.allclose(ld, torch.linalg.slogdet(J)[1], atol=1e-10)
    assert torch.allclose(ld, diag.log().sum(1), atol=1e-12)


@pytest.mark.parametrize("tol", [1e-6, 1e-10])
@pytest.mark.parametrize("cfg", CONFIGS)
def test_inverse_accuracy(cfg, tol):
    """The diagonal Newton iteration stops when its step is below tol * max(1, ||x||); being superlinear near
    the solution (the linearised error matrix is strictly triangular), its error is then below that too."""
    m = _layer(**cfg, tol=tol)
    with torch.no_grad():
        z = torch.randn(16, *m.event_shape, dtype=F64) * 2
        x, ld = m(z)
        z_back, ld_inv = m.inverse(x)
    err = (z_back - z).reshape(16, -1).norm(dim=1)
    allowed = tol * x.reshape(16, -1).norm(dim=1).clamp(min=1.0)
    assert (err <= allowed).all(), float((err / allowed).max())
    assert torch.allclose(ld_inv, -ld, atol=1e-6 if tol > 1e-8 else 1e-9)


def test_the_inverse_is_differentiable_by_the_implicit_function_theorem():
    """d/dtheta of a loss of z = T^{-1}(x) (adjoint triangular solve) against central finite differences."""
    m = _layer(2, (3, 3))
    x = torch.randn(4, 2, 3, 3, dtype=F64)

    def loss():
        z, ld = m.inverse(x)
        return (z**3).sum() + ld.sum()

    m.zero_grad()
    loss().backward()
    for p, idx in ((m.weight1, (3, 0, 0, 1)), (m.weight2, (1, 2, 1, 1)), (m.log_scale, (1,))):
        h = 1e-6
        with torch.no_grad():
            p[idx] += h
            up = float(loss())
            p[idx] -= 2 * h
            down = float(loss())
            p[idx] += h
        assert abs((up - down) / (2 * h) - float(p.grad[idx])) < 1e-5 * max(1.0, abs(up - down) / (2 * h))


def test_non_convergence_raises_and_bad_settings_are_refused():
    m = _layer(1, (4, 4), max_iter=1, tol=1e-12)
    with pytest.raises(ConvergenceError, match="did not converge in 1 iterations.*step_size"):
        m.inverse(torch.randn(2, 1, 4, 4, dtype=F64) * 3)
    for bad in (0.0, 2.0, -1.0):
        with pytest.raises(ValueError, match="step_size"):
            MintLayer(2, step_size=bad)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        MintLayer(1, (4, 4), kernel_size=4)
    with pytest.raises(ValueError, match="activation"):
        MintLayer(2, activation="relu")
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        MintLayer(1, spatial=(4, 4, 4))


def test_a_damped_step_also_converges():
    m = _layer(3, (4, 4), step_size=0.5)
    with torch.no_grad():
        z = torch.randn(4, 3, 4, 4, dtype=F64)
        z_back = m.inverse(m(z)[0])[0]
    assert torch.allclose(z_back, z, atol=1e-8)


def test_a_mintnet_trains():
    torch.manual_seed(0)
    data = torch.randn(256, 2) @ torch.tensor([[1.0, 0.9], [0.0, 0.3]]) + 1.0
    flow = Flow(make_mintnet(2, n_layers=4))
    opt = torch.optim.Adam(flow.parameters(), lr=2e-2)
    with torch.no_grad():
        start = -flow.log_prob(data).mean().item()
    for _ in range(60):
        opt.zero_grad()
        loss = -flow.log_prob(data).mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        end = -flow.log_prob(data).mean().item()
    assert end < start - 0.5, (start, end)
