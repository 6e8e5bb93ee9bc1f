"""THE generic contract of every invertible map in ``coursekit.flows.__all__``.

Every Bijection subclass exported there (except the abstract ``Bijection`` and the container
``Compose``) is built as ``cls(dim)`` and checked, in float64, for:

* inverse(forward(z)) = z and forward(inverse(x)) = x;
* both log-determinants equal ``slogdet`` of the autograd Jacobian;
* the two log-determinants at matching points sum to zero;
* every parameter receives a (finite, non-zero) gradient through forward AND through inverse;
* the density of ``Flow(map)`` integrates to one on a 2-D grid (tolerance ``MASS_TOL``): over a box,
  the grid integral equals the fraction of the flow's samples in the box, and on the full plane
  (``tests/test_planar.py`` integrates planar and radial flows over the whole plane). This test
  uses the milder perturbation ``DENSITY_PERTURB`` so that densities stay resolvable on the grid;
* a clear ``ValueError`` on a wrong dimension or a NaN;
* ``push(z)`` (the sampling direction without the log-determinant) equals ``forward(z)[0]``;
* a map with an ``order`` (MADE orders, raster scans) has a lower-triangular Jacobian in that order.

Maps that need an image shape (``IMAGE_ONLY``), maps whose two sides differ in shape (``latent_shape``)
and non-default settings (image versions, other directions) are listed in ``CASES`` and checked for
the same contracts (round trips, log-dets against autograd in float64, gradients, bad inputs);
``test_every_exported_map_is_covered`` fails when an exported map is in neither list. Maps with a
stochastic log-determinant are built with their exact mode here (``ResidualBlock``'s default
``logdet="exact"``); ``tests/test_residual.py`` tests the estimators statistically.

Maps added later join automatically. Protocol, so that every kind of map is really tested:

* ``m.inverse(x_warmup)`` is called once first (data-dependent initialisations, e.g. ActNorm),
  then the module is put in eval mode;
* every parameter is then perturbed by ``PERTURB * N(0, 1)`` (seeded), so that maps initialised
  at the identity (zero-initialised last layers, ActNorm) are tested away from it;
* test points are drawn by ``cls.test_inputs(n, dim, generator)`` when a class defines this
  optional classmethod (maps whose domain is not all of R^p, e.g. a logit map on (0, 1)^p),
  and otherwise from N(0, I).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd.functional import jacobian

import coursekit.flows as flows
from coursekit.flows import Bijection, Compose, Flow

DIM = 3
PERTURB = 0.3
ATOL = 1e-8  # float64 round trips
DENSITY_PERTURB = 0.1
MASS_TOL = 1e-2  # |grid integral of p_theta over a box - sampled mass in the box| (grid + Monte Carlo error)


# maps that cannot be built as cls(dim) (an image shape (C, H, W), or another map to wrap): CASES tests them
IMAGE_ONLY = ("Squeeze", "Flattened", "MultiScale", "Inverted")


def _map_classes():
    out = []
    for name in flows.__all__:
        obj = getattr(flows, name)
        is_map = isinstance(obj, type) and issubclass(obj, Bijection) and obj not in (Bijection, Compose)
        if is_map and name not in IMAGE_ONLY:
            out.append(obj)
    return out


CLASSES = _map_classes()


def _inputs(cls, n, dim, seed):
    g = torch.Generator().manual_seed(seed)
    hook = getattr(cls, "test_inputs", None)
    if hook is not None:
        return hook(n, dim, g).to(torch.float64)
    return torch.randn(n, dim, generator=g, dtype=torch.float64)


def _build(cls, dim=DIM, seed=0, perturb=PERTURB):
    torch.manual_seed(seed)
    m = cls(dim).double()
    m.inverse(_inputs(cls, 64, dim, seed + 100))  # warm-up: data-dependent initialisation happens here
    m.eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(perturb * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return m


def _batch_jacobian(fn, v):
    # per-sample Jacobians of a row-wise map; vectorised autograd over the batch
    J = jacobian(lambda t: fn(t).sum(0), v, vectorize=True)  # (d_out, n, d_in)
    return J.permute(1, 0, 2)


def test_there_are_maps_to_test():
    names = {c.__name__ for c in CLASSES}
    assert {"Planar", "Radial"} <= names, names


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_round_trips(cls):
    m = _build(cls)
    z = _inputs(cls, 32, DIM, 1)
    x, _ = m(z)
    z_back, _ = m.inverse(x)
    assert torch.allclose(z_back, z, atol=ATOL, rtol=1e-7), (z_back - z).abs().max()
    # the other order, from points of the range of T
    x2, _ = m(_inputs(cls, 32, DIM, 2))
    x2_back, _ = m(m.inverse(x2)[0])
    assert torch.allclose(x2_back, x2, atol=ATOL, rtol=1e-7), (x2_back - x2).abs().max()


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_log_dets_match_autograd_and_cancel(cls):
    m = _build(cls)
    z = _inputs(cls, 8, DIM, 3)
    x, ld_fwd = m(z)
    z_back, ld_inv = m.inverse(x)
    J = _batch_jacobian(lambda t: m(t)[0], z)
    J_inv = _batch_jacobian(lambda t: m.inverse(t)[0], x)
    sign, logabs = torch.linalg.slogdet(J)
    sign_i, logabs_i = torch.linalg.slogdet(J_inv)
    assert ld_fwd.shape == (8,) and ld_inv.shape == (8,)
    assert (sign != 0).all() and (sign_i != 0).all(), "singular Jacobian: the map is not invertible here"
    assert torch.allclose(ld_fwd, logabs, atol=1e-7), (ld_fwd - logabs).abs().max()
    assert torch.allclose(ld_inv, logabs_i, atol=1e-7), (ld_inv - logabs_i).abs().max()
    assert torch.allclose(ld_fwd + ld_inv, torch.zeros_like(ld_fwd), atol=1e-8)


@pytest.mark.parametrize("direction", ["forward", "inverse"])
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_parameter_gets_a_gradient(cls, direction):
    m = _build(cls)
    if not list(m.parameters()):
        pytest.skip(f"{cls.__name__} has no parameters")
    v = _inputs(cls, 16, DIM, 4)
    if direction == "inverse":
        v = m(v)[0].detach()
    out, ld = getattr(m, direction)(v)
    loss = (out**2).sum() + ld.sum()
    m.zero_grad()
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None, f"{cls.__name__}.{name} gets no gradient through {direction}"
        assert torch.isfinite(p.grad).all(), f"{cls.__name__}.{name}: non-finite gradient through {direction}"
        assert p.grad.abs().max() > 0, f"{cls.__name__}.{name}: zero gradient through {direction}"


def _check_push(m, z, name):
    """``push`` is ``forward``'s first output, with autograd on and off (the two solver paths of
    the autoregressive maps), and checks its input the same way."""
    x = m(z)[0].detach()
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            torch.testing.assert_close(m.push(z).detach(), x, atol=1e-12, rtol=1e-12,
                                       msg=lambda s: f"{name}.push (grad={grad}) differs from forward: {s}")
    with pytest.raises(ValueError, match="shape"):
        m.push(torch.zeros(2, z.shape[1] + 1, *z.shape[2:], dtype=torch.float64))


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_push_is_the_forward_map(cls):
    _check_push(_build(cls), _inputs(cls, 16, DIM, 8), cls.__name__)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_flow_density_integrates_to_one(cls):
    """The grid integral of p_theta over a box equals the probability that samples of the flow
    fall in that box (Monte Carlo, 20 000 samples: standard error < 0.004). The box holds the
    central 98 % of each coordinate, so heavy tails of perturbed maps do not blow up the grid."""
    # a milder perturbation here: deep maps perturbed by PERTURB can squeeze mass into ridges
    # thinner than any affordable grid, which would test the grid, not the map
    m = _build(cls, dim=2, seed=5, perturb=DENSITY_PERTURB)
    flow = Flow(m).double()
    with torch.no_grad():
        torch.manual_seed(6)
        xs = flow.sample(20_000)
    q = torch.tensor([0.01, 0.99], dtype=torch.float64)
    lo, hi = torch.quantile(xs, q[0], dim=0), torch.quantile(xs, q[1], dim=0)
    inside = ((xs >= lo) & (xs <= hi)).all(1).double().mean().item()
    n = 400
    h = (hi - lo) / n
    ax0 = lo[0] + h[0] * (torch.arange(n, dtype=torch.float64) + 0.5)
    ax1 = lo[1] + h[1] * (torch.arange(n, dtype=torch.float64) + 0.5)
    grid = torch.cartesian_prod(ax0, ax1)
    with torch.no_grad():
        mass = float(flow.log_prob(grid).exp().sum() * h[0] * h[1])
    assert math.isfinite(mass) and abs(mass - inside) < MASS_TOL, (
        f"{cls.__name__}: density integrates to {mass:.4f} over a box holding {inside:.4f} of the samples"
    )


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_bad_input_is_rejected(cls):
    m = _build(cls)
    good = _inputs(cls, 4, DIM, 7)
    for method in (m.forward, m.inverse):
        with pytest.raises(ValueError, match="shape"):
            method(torch.zeros(4, DIM + 1, dtype=torch.float64))
        with pytest.raises(ValueError, match="batch dimension"):
            method(good[0])
        bad = good.clone()
        bad[1, 0] = float("nan")
        with pytest.raises(ValueError, match="NaN"):
            method(bad)
    with pytest.raises(ValueError):
        cls(0)


# ----------------------------------------------------------------------------- configured and image maps
#
# The same contracts for maps that ``cls(dim)`` cannot build or does not reach: image event shapes
# (C, H, W), maps whose two sides differ in shape (Squeeze: ``latent_shape`` is the noise side), and
# non-default settings. Same protocol as ``_build`` (float64, warm-up in the density direction, eval,
# every parameter perturbed by PERTURB).

CASES = {
    "ResidualBlock-2x3x3": lambda: flows.ResidualBlock(2, spatial=(3, 3), hidden=(4, 4)),
    "ResidualBlock-explicit-inverse": lambda: flows.ResidualBlock(DIM, explicit="inverse"),
    "MintLayer-1x4x4": lambda: flows.MintLayer(1, spatial=(4, 4)),
    "MintLayer-2x3x4-reversed": lambda: flows.MintLayer(2, spatial=(3, 4), reverse=True, activation="tanh"),
    "MintLayer-vector-reversed": lambda: flows.MintLayer(4, reverse=True),
    "PixelMAF-2x3x3": lambda: flows.PixelMAF(2, spatial=(3, 3), features=8, n_layers=2),
    "Squeeze-2x4x6": lambda: flows.Squeeze((2, 4, 6)),
    "Flattened-coupling-2x3x3": lambda: flows.Flattened(
        flows.AffineCoupling(18, flows.image_checkerboard_mask((2, 3, 3)), hidden=(16,)), (2, 3, 3)
    ),
    "MultiScale-1x4x4": lambda: flows.make_multiscale((1, 4, 4), n_scales=1, hidden=(16,)),
    "Inverted-AffineCoupling": lambda: flows.Inverted(flows.AffineCoupling(DIM, hidden=(16,))),
    "AffineCoupling-shift-before": lambda: flows.AffineCoupling(DIM, hidden=(16,), shift="before"),
    "Inverted-MintLayer-1x4x4": lambda: flows.Inverted(flows.MintLayer(1, spatial=(4, 4))),
    # clamp=1: with PERTURB on every weight, 8-channel couplings at clamp 3 compound to scales ~1e6, and the
    # round trip would test the conditioning of the perturbed map rather than the code
    "MultiScale-2x4x4": lambda: flows.make_multiscale((2, 4, 4), n_scales=2, n_steps=1, hidden=(16,), clamp=1.0),
}


def _noise_shape(m):
    return getattr(m, "latent_shape", m.event_shape)


def _build_case(name, seed=0):
    torch.manual_seed(seed)
    m = CASES[name]().double()
    g = torch.Generator().manual_seed(seed + 100)
    m.inverse(torch.randn(64, *m.event_shape, generator=g, dtype=torch.float64))
    m.eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(PERTURB * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return m


def _randn(shape, n, seed):
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _flat_jacobian(fn, v):
    # per-sample Jacobians of a map between (possibly different) shapes, flattened
    n = v.shape[0]
    J = jacobian(lambda t: fn(t.view(n, *v.shape[1:])).reshape(n, -1).sum(0), v.reshape(n, -1), vectorize=True)
    return J.permute(1, 0, 2)


def test_every_exported_map_is_covered():
    built = {c.__name__ for c in CLASSES}
    cased = {name.split("-")[0] for name in CASES}
    for name in flows.__all__:
        obj = getattr(flows, name)
        if isinstance(obj, type) and issubclass(obj, Bijection) and obj not in (Bijection, Compose):
            assert name in built or name in cased, f"{name} is in no generic test: add it to CASES"
    assert set(IMAGE_ONLY) <= cased


@pytest.mark.parametrize("name", CASES)
def test_configured_round_trips(name):
    m = _build_case(name)
    z = _randn(_noise_shape(m), 8, 1)
    x, _ = m(z)
    assert x.shape == (8, *m.event_shape)
    z_back, _ = m.inverse(x)
    assert torch.allclose(z_back, z, atol=ATOL, rtol=1e-7), (z_back - z).abs().max()
    x2 = _randn(m.event_shape, 8, 2)
    x2_back, _ = m(m.inverse(x2)[0])
    assert torch.allclose(x2_back, x2, atol=ATOL, rtol=1e-7), (x2_back - x2).abs().max()


@pytest.mark.parametrize("name", CASES)
def test_configured_push_is_the_forward_map(name):
    m = _build_case(name)
    _check_push(m, _randn(_noise_shape(m), 8, 8), name)


@pytest.mark.parametrize("name", CASES)
def test_configured_log_dets_match_autograd(name):
    m = _build_case(name)
    z = _randn(_noise_shape(m), 3, 3)
    x, ld_fwd = m(z)
    _, ld_inv = m.inverse(x)
    J = _flat_jacobian(lambda t: m(t)[0], z)
    J_inv = _flat_jacobian(lambda t: m.inverse(t)[0], x.detach())
    sign, logabs = torch.linalg.slogdet(J)
    sign_i, logabs_i = torch.linalg.slogdet(J_inv)
    assert (sign != 0).all() and (sign_i != 0).all(), "singular Jacobian: the map is not invertible here"
    assert torch.allclose(ld_fwd, logabs, atol=1e-7), (ld_fwd - logabs).abs().max()
    assert torch.allclose(ld_inv, logabs_i, atol=1e-7), (ld_inv - logabs_i).abs().max()
    assert torch.allclose(ld_fwd + ld_inv, torch.zeros_like(ld_fwd), atol=1e-8)


@pytest.mark.parametrize("direction", ["forward", "inverse"])
@pytest.mark.parametrize("name", CASES)
def test_configured_parameters_get_gradients(name, direction):
    m = _build_case(name)
    if not list(m.parameters()):
        pytest.skip(f"{name} has no parameters")
    v = _randn(_noise_shape(m), 4, 4)
    if direction == "inverse":
        v = m(v)[0].detach()
    out, ld = getattr(m, direction)(v)
    m.zero_grad()
    ((out**2).sum() + ld.sum()).backward()
    for pname, p in m.named_parameters():
        assert p.grad is not None, f"{name}.{pname} gets no gradient through {direction}"
        assert torch.isfinite(p.grad).all(), f"{name}.{pname}: non-finite gradient through {direction}"
        assert p.numel() == 0 or p.grad.abs().max() > 0, f"{name}.{pname}: zero gradient through {direction}"


@pytest.mark.parametrize("name", CASES)
def test_configured_bad_input_is_rejected(name):
    m = _build_case(name)
    for method, shape in ((m.forward, _noise_shape(m)), (m.inverse, m.event_shape)):
        good = _randn(shape, 2, 7)
        with pytest.raises(ValueError, match="shape"):
            method(torch.zeros(2, shape[0] + 1, *shape[1:], dtype=torch.float64))
        with pytest.raises(ValueError, match="batch dimension"):
            method(good[0])
        bad = good.clone()
        bad.view(2, -1)[1, 0] = float("nan")
        with pytest.raises(ValueError, match="NaN"):
            method(bad)


def _autoregressive():
    # maps with an ``order`` (a property of the class: MADE orders, raster scans)
    names = [c.__name__ for c in CLASSES if isinstance(getattr(c, "order", None), property)]
    return names + [n for n in CASES if n.split("-")[0] in names]


def test_the_autoregressive_maps_are_found():
    assert {"MAF", "IAF", "MintLayer", "PixelMAF", "MintLayer-1x4x4", "PixelMAF-2x3x3"} <= set(_autoregressive())


@pytest.mark.parametrize("name", _autoregressive())
def test_autoregressive_maps_have_triangular_jacobians(name):
    """A map with an ``order`` has a lower-triangular Jacobian in that order, in both directions, with a
    non-zero diagonal (checked with autograd in float64)."""
    m = _build_case(name) if name in CASES else _build(getattr(flows, name))
    z = _randn(m.event_shape, 3, 8)
    x = m(z)[0].detach()
    o = m.order
    for direction, J in (
        ("forward", _flat_jacobian(lambda t: m(t)[0], z)),
        ("inverse", _flat_jacobian(lambda t: m.inverse(t)[0], x)),
    ):
        Jo = J[:, o][:, :, o]
        assert Jo.triu(1).abs().max() < 1e-12, f"{name}.{direction}: a variable depends on later ones in the order"
        assert (Jo.diagonal(dim1=1, dim2=2).abs() > 0).all(), f"{name}.{direction}: zero on the diagonal"


def test_inverted_refuses_what_it_cannot_invert():
    with pytest.raises(TypeError, match="coursekit map"):
        flows.Inverted(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="same shape"):
        flows.Inverted(flows.Squeeze((1, 4, 4)))
    T = flows.AffineCoupling(DIM, hidden=(8,)).double()
    x = torch.randn(5, DIM, dtype=torch.float64)
    twice = flows.Inverted(flows.Inverted(T))
    assert torch.equal(twice(x)[0], T(x)[0]) and torch.equal(twice.inverse(x)[1], T.inverse(x)[1])
