"""MAF, IAF, the sigmoid autoregressive layer, Reverse and the Gaussian autoregressive model."""

import math

import pytest
import torch
from torch.autograd.functional import jacobian

from coursekit.flows import (
    IAF,
    MAF,
    AutoregressiveFlow,
    Compose,
    GaussianAR,
    Reverse,
    SigmoidAR,
    count_passes,
    iaf_flow,
    invert,
    maf_flow,
)

DIM = 5


def _maps():
    torch.manual_seed(0)
    return {
        "MAF": MAF(DIM, hidden=(16, 16), order="random", seed=1),
        "IAF": IAF(DIM, hidden=(16,), order="reversed"),
        "SigmoidAR-x": SigmoidAR(DIM, hidden=(16,), order="random", seed=2),
        "SigmoidAR-z": SigmoidAR(DIM, hidden=(16,), condition_on="z"),
        "Reverse": Reverse(DIM),
    }


def _randomise(module):
    # Larger-than-default weights so that the maps are far from the identity.
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.5)
    return module


@pytest.mark.parametrize("name", list(_maps()))
def test_inverse_and_log_det_against_autograd(name):
    t = _randomise(_maps()[name]).double()
    z = torch.randn(4, DIM, dtype=torch.float64)
    x, ld = t(z)
    z_back, ld_inv = t.inverse(x)
    torch.testing.assert_close(z_back, z, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(ld + ld_inv, torch.zeros(4, dtype=torch.float64), atol=1e-9, rtol=0)
    for k in range(4):
        jf = jacobian(lambda v: t(v.unsqueeze(0))[0][0], z[k])
        ji = jacobian(lambda v: t.inverse(v.unsqueeze(0))[0][0], x[k])
        torch.testing.assert_close(torch.linalg.slogdet(jf).logabsdet, ld[k], atol=1e-9, rtol=1e-9)
        torch.testing.assert_close(torch.linalg.slogdet(ji).logabsdet, ld_inv[k], atol=1e-9, rtol=1e-9)
        if name != "Reverse":
            # Triangular in the order: x_i moves only with z_j for j at or before i.
            rank = torch.empty(DIM, dtype=torch.long)
            rank[t.order] = torch.arange(DIM)
            later = rank[None, :] > rank[:, None]
            assert (jf[later] == 0).all() and (ji[later] == 0).all()
            assert (jf.diagonal() != 0).all()


@pytest.mark.parametrize("name", ["MAF", "IAF", "SigmoidAR-x", "SigmoidAR-z"])
def test_every_parameter_gets_a_gradient(name):
    t = _randomise(_maps()[name])
    flow = AutoregressiveFlow(t)
    flow.log_prob(torch.randn(8, DIM)).mean().backward()
    for pname, p in t.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"{pname} gets no gradient"


@pytest.mark.parametrize(
    "name, fwd, inv",
    [("MAF", DIM, 1), ("IAF", 1, DIM), ("SigmoidAR-x", DIM, 1), ("SigmoidAR-z", 1, DIM)],
)
def test_network_passes(name, fwd, inv):
    t = _maps()[name]
    z = torch.randn(3, DIM)
    before = count_passes(t)
    x, _ = t(z)
    assert count_passes(t) - before == fwd
    before = count_passes(t)
    t.inverse(x)
    assert count_passes(t) - before == inv


def test_maf_and_iaf_are_mutual_inverses_sharing_one_network():
    torch.manual_seed(0)
    maf = _randomise(MAF(DIM, hidden=(16,), order="random", seed=0)).double()
    iaf = IAF.from_maf(maf)
    assert iaf.conditioner.inner is maf.conditioner  # same parameters, no copy
    x = torch.randn(6, DIM, dtype=torch.float64)
    z_maf, ld_maf = maf.inverse(x)
    z_iaf, ld_iaf = iaf(x)  # IAF's one-pass forward IS MAF's one-pass inverse
    torch.testing.assert_close(z_iaf, z_maf)
    torch.testing.assert_close(ld_iaf, ld_maf)
    torch.testing.assert_close(maf(iaf(x)[0])[0], x)
    torch.testing.assert_close(iaf.inverse(x)[0], maf(x)[0])  # and its p-pass inverse is MAF's p-pass forward
    torch.testing.assert_close(iaf.inverse(iaf(x)[0])[0], x)
    back = MAF.from_iaf(iaf)
    assert back.conditioner is maf.conditioner  # inverting twice unwraps
    # And from an IAF to a MAF.
    iaf2 = _randomise(IAF(DIM, hidden=(16,))).double()
    maf2 = MAF.from_iaf(iaf2)
    torch.testing.assert_close(maf2(iaf2(x)[0])[0], x)
    torch.testing.assert_close(maf2.inverse(x)[0], iaf2(x)[0])
    torch.testing.assert_close(maf2(x)[0], iaf2.inverse(x)[0])


def test_invert_a_stack():
    torch.manual_seed(1)
    stack = Compose(MAF(3, hidden=(8,)), Reverse(3), MAF(3, hidden=(8,), order="reversed")).double()
    _randomise(stack)
    inv = invert(stack)
    x = torch.randn(5, 3, dtype=torch.float64)
    y, ld = inv(x)
    torch.testing.assert_close(stack(y)[0], x)
    torch.testing.assert_close(ld, stack.inverse(x)[1])
    with pytest.raises(TypeError, match="invert knows"):
        invert(SigmoidAR(3))


def test_iaf_density_of_its_own_samples_in_one_pass():
    torch.manual_seed(0)
    flow = _randomise(iaf_flow(3, n_layers=3, hidden=(8,))).double()
    z = torch.randn(10, 3, dtype=torch.float64)
    before = count_passes(flow)
    x, log_p = flow.forward_and_log_prob(z)
    assert count_passes(flow) - before == 3  # one pass per layer
    torch.testing.assert_close(log_p, flow.log_prob(x))  # the p-pass route gives the same


def test_gaussian_ar_sampler_density_and_flow_view_agree():
    torch.manual_seed(0)
    model = _randomise(GaussianAR(3, hidden=(8,), order="reversed")).double()
    z = torch.randn(7, 3, dtype=torch.float64)
    x = model.sample(7, z=z)
    torch.testing.assert_close(x, model.transform(z)[0])  # sequential sampler == MAF forward
    torch.testing.assert_close(model.sample(7, z=z, naive=True), x, atol=1e-12, rtol=1e-12)  # the slides' loop
    assert x.is_contiguous()
    torch.testing.assert_close(model.log_prob(x), AutoregressiveFlow.log_prob(model, x))
    m, alpha = model.conditionals(x)
    assert torch.allclose(m[:, 2], m[0, 2]) and torch.allclose(alpha[:, 2], alpha[0, 2])  # x_3 comes first


def test_gaussian_ar_density_integrates_to_one():
    torch.manual_seed(2)
    model = GaussianAR(2, hidden=(16,)).double()
    with torch.no_grad():
        s = model.sample(20000)
        lo, hi = s.min(0).values - 3, s.max(0).values + 3
        n = 801
        g0, g1 = (
            torch.linspace(lo[0], hi[0], n, dtype=torch.float64),
            torch.linspace(lo[1], hi[1], n, dtype=torch.float64),
        )
        grid = torch.cartesian_prod(g0, g1)
        dens = model.log_prob(grid).exp().view(n, n)
        mass = torch.trapezoid(torch.trapezoid(dens, g1, dim=1), g0)
    assert abs(float(mass) - 1) < 2e-3


def test_maf_flow_trains_on_a_correlated_gaussian():
    torch.manual_seed(0)
    cov = torch.tensor([[1.0, 0.9], [0.9, 1.0]])
    data = torch.randn(2000, 2) @ torch.linalg.cholesky(cov).T
    flow = maf_flow(2, n_layers=2, hidden=(16,))
    opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        loss = -flow.log_prob(data).mean()
        loss.backward()
        opt.step()
    exact = torch.distributions.MultivariateNormal(torch.zeros(2), cov).entropy()  # = E[-log p*]
    assert float(loss.detach()) < float(exact) + 0.05  # fits (the gap is KL(p*||p) plus sampling error)
    samples = flow.sample(20000)
    torch.testing.assert_close(torch.cov(samples.T), cov, atol=0.08, rtol=0)


@pytest.mark.parametrize("cls", [MAF, IAF])
def test_shift_forms_are_the_slides_map_with_their_m(cls):
    # one network, both forms: (b, a) raw outputs; "after": m = -b exp(alpha), "before": m = b
    torch.manual_seed(0)
    layers = {f: _randomise(cls(4, hidden=(12,), order="random", seed=1, shift=f)).double() for f in ("after", "before")}
    layers["before"].load_state_dict(layers["after"].state_dict())
    assert cls.SHIFT == ("after" if cls is MAF else "before") and cls(4).conditioner.shift == cls.SHIFT
    v = torch.randn(6, 4, dtype=torch.float64)
    b, a = layers["after"].conditioner.made(v).movedim(-2, 0)
    alpha = 5.0 * torch.tanh(a / 5.0)
    for form, m in (("after", -b * alpha.exp()), ("before", b)):
        layer = layers[form]
        assert layer.conditioner.shift == form and f"shift={form}" in repr(layer)
        torch.testing.assert_close(layer.conditioner(v), (m, alpha), atol=1e-12, rtol=1e-12)
        # the one-pass direction, on its own input
        one_pass = layer.inverse if cls is MAF else layer.forward
        out, ld = one_pass(v)
        expected = (v - m) * torch.exp(-alpha) if cls is MAF else torch.exp(alpha) * v + m
        torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(ld, (-alpha if cls is MAF else alpha).sum(-1), atol=1e-12, rtol=1e-12)
    assert not torch.allclose(layers["after"].inverse(v)[0], layers["before"].inverse(v)[0], atol=1e-3)
    with pytest.raises(ValueError, match="shift"):
        cls(4, shift="middle")
    with pytest.raises(ValueError, match="not both"):
        cls(4, conditioner=layers["after"].conditioner, shift="after")


def test_scale_is_softly_clamped():
    maf = MAF(3, hidden=(8,), bound=2.0)
    with torch.no_grad():
        for p in maf.parameters():
            p.fill_(50.0)
    _, alpha = maf.conditioner(torch.ones(4, 3))
    assert alpha.abs().max() <= 2.0
    x, ld = maf(torch.randn(4, 3))
    assert torch.isfinite(x).all() and torch.isfinite(ld).all()


def test_bad_inputs_raise_clear_errors():
    maf = MAF(3, hidden=(8,))
    with pytest.raises(ValueError, match="NaN"):
        maf.inverse(torch.tensor([[0.0, float("nan"), 1.0]]))
    with pytest.raises(ValueError, match=r"expected \(batch, 3\)"):
        maf(torch.randn(4, 2))
    with pytest.raises(ValueError, match="condition_on"):
        SigmoidAR(3, condition_on="y")
    with pytest.raises(ValueError, match="bound"):
        MAF(3, bound=0.0)
    with pytest.raises(ValueError, match="n_layers"):
        maf_flow(3, n_layers=0)
    with pytest.raises(TypeError, match="expected a MAF"):
        IAF.from_maf(IAF(3))


def test_repr_is_readable():
    text = repr(maf_flow(2, n_layers=2, hidden=(8,)))
    assert "order=[0, 1]" in text and "order=[1, 0]" in text and "tanh" in text
    flow = maf_flow(5, n_layers=3, hidden=(8,), seed=0)
    for layer in flow.transform:
        assert f"order={layer.order.tolist()}" in repr(flow)


def test_builders_draw_one_order_per_layer_and_start_at_the_identity():
    """dim > 2: a random MADE order per layer, reproducible with seed (seed, seed + 1, ...) or
    with torch's generator; dim = 2: natural and reversed alternate. Affine layers start as the
    identity (last MADE layer zero), so a fresh flow is its base."""
    orders = [[m.order.tolist() for m in maf_flow(6, n_layers=4, hidden=(8,), seed=s).transform] for s in (3, 3, 4)]
    assert orders[0] == orders[1] != orders[2]
    assert len({tuple(o) for o in orders[0]}) == 4  # (four random permutations of 6: distinct here)
    torch.manual_seed(0)
    a = [m.order.tolist() for m in iaf_flow(6, n_layers=3, hidden=(8,)).transform]
    torch.manual_seed(0)
    assert a == [m.order.tolist() for m in iaf_flow(6, n_layers=3, hidden=(8,)).transform]
    assert [m.order.tolist() for m in maf_flow(2, n_layers=3, hidden=(8,)).transform] == [[0, 1], [1, 0], [0, 1]]
    flow = maf_flow(6, n_layers=3, hidden=(8,), seed=0)
    x = torch.randn(5, 6)
    torch.testing.assert_close(flow.log_prob(x), flow.base.log_prob(x))
    torch.testing.assert_close(flow.transform(x)[0], x)
    assert not all(bool((q == 0).all()) for q in flow.parameters())  # only the last layers are zero
    gate = SigmoidAR(4)  # its own initialisation (a gate bias), not zeroed
    assert not bool((gate.conditioner.made._linears()[-1].weight == 0).all())
    assert "condition_on='z'" in repr(SigmoidAR(3, condition_on="z"))


@pytest.mark.parametrize("cls", [MAF, IAF, SigmoidAR, Reverse, GaussianAR])
def test_constructible_from_dim(cls):
    obj = cls(4)
    assert obj.dim == 4
    assert math.prod(obj.event_shape) == 4


def _sequential_directions():
    """(name, layer, direction) for every p-step direction, the layers far from the identity."""
    torch.manual_seed(3)
    iaf = IAF(6, hidden=(16, 12), order="random", seed=5)
    return [
        ("MAF forward", MAF(6, hidden=(16, 12), order="random", seed=1), "forward"),
        ("IAF inverse", iaf, "inverse"),
        ("MAF.from_iaf forward", MAF.from_iaf(iaf), "forward"),
        ("IAF.from_maf inverse", IAF.from_maf(MAF(6, hidden=(16, 12), order="reversed")), "inverse"),
        ("MAF shift-before forward", MAF(6, hidden=(16, 12), order="random", seed=2, shift="before"), "forward"),
        ("IAF shift-after inverse", IAF(6, hidden=(16, 12), order="random", seed=3, shift="after"), "inverse"),
        ("MAF.from_iaf shift-after forward", MAF.from_iaf(IAF(6, hidden=(12,), shift="after")), "forward"),
        ("SigmoidAR-x forward", SigmoidAR(6, hidden=(12,), order="reversed"), "forward"),
        ("SigmoidAR-z inverse", SigmoidAR(6, hidden=(12,), condition_on="z", order="random", seed=2), "inverse"),
    ]


@pytest.mark.parametrize("case", range(9), ids=[c[0] for c in _sequential_directions()])
@pytest.mark.parametrize("batch", [1, 5])
def test_incremental_sequential_direction_matches_naive(case, batch, block):
    _, layer, direction = _sequential_directions()[case]
    layer = _randomise(layer).double()
    v = torch.randn(batch, 6, dtype=torch.float64)
    with torch.no_grad():
        out, ld = getattr(layer, direction)(v)
        layer.naive = True
        before = count_passes(layer)
        out_ref, ld_ref = getattr(layer, direction)(v)
        assert count_passes(layer) - before == 6  # the reference makes p full passes
        layer.naive = False
        before = count_passes(layer)
        getattr(layer, direction)(v)
        assert count_passes(layer) - before == 6  # p sequential rounds, one pass of arithmetic
    torch.testing.assert_close(out, out_ref, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(ld, ld_ref, atol=1e-12, rtol=1e-12)
    # differentiable: the same gradients as through the p-pass reference
    grads = []
    for naive in (True, False):
        layer.naive = naive
        x, ld = getattr(layer, direction)(v)
        grads.append(torch.autograd.grad((x**2).sum() + ld.sum(), list(layer.parameters())))
    for g_ref, g in zip(*grads):
        torch.testing.assert_close(g, g_ref, atol=1e-10, rtol=1e-10)
    assert "naive=True" not in repr(layer)
    layer.naive = True
    assert "naive=True" in repr(layer)


@pytest.mark.parametrize("form", ["after", "before"])
@pytest.mark.parametrize("inverse", [False, True])
def test_in_place_steps_return_the_networks_outputs_at_the_solution(form, inverse, block):
    # the in-place steps fold factors (and, shifting first, the target) into the output layer:
    # what MADE.solve returns must still be the network's raw outputs at the solution
    cond = _randomise(MAF(5, hidden=(10, 10), order="random", seed=4, shift=form)).double().conditioner
    step = cond.step(inverse)
    assert (step.fold is None) == step.scale_first and step.scale_first == ((form == "before") != inverse)
    t = torch.randn(7, 5, dtype=torch.float64)
    with torch.no_grad():
        u, raw = cond.made.solve(step, t)
        torch.testing.assert_close(raw, cond.made(u), atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(step(raw.movedim(-2, 0), t), u, atol=1e-12, rtol=1e-12)
        # and the plan kept for the next call gives the same again
        u2, raw2 = cond.made.solve(step, t)
    assert torch.equal(u, u2) and torch.equal(raw, raw2)


def test_one_network_solved_with_steps_of_different_factors(block):
    """The MAF's sampling step and the IAF's inverse step fold different factors into the same
    network's sorted output weights: alternating them on one MADE must give each its own
    solution (the kept weights are gathered again when the factors change)."""
    cond = _randomise(MAF(6, hidden=(12, 12), order="random", seed=2)).double().conditioner
    t = torch.randn(5, 6, dtype=torch.float64)
    steps = [cond.step(False), cond.step(True)]
    assert steps[0].scale != steps[1].scale
    with torch.no_grad():
        refs = [cond.made.solve(step, t, naive=True)[0] for step in steps]
        for k in (0, 1, 0, 0, 1, 1, 0):
            torch.testing.assert_close(cond.made.solve(steps[k], t)[0], refs[k], atol=1e-12, rtol=1e-12)
            # and a plain update (no factors) in between
            torch.testing.assert_close(cond.made.solve(steps[k].__call__, t)[0], refs[k], atol=1e-12, rtol=1e-12)


def test_incremental_maf_sampling_float32_and_flow_sample():
    torch.manual_seed(0)
    flow = maf_flow(12, n_layers=3, hidden=(24, 24))  # default initialisation: float32 errors stay small
    z = torch.randn(64, 12)
    with torch.no_grad():
        x, ld = flow.transform(z)
        for m in flow.modules():
            if isinstance(m, MAF):
                m.naive = True
        x_ref, ld_ref = flow.transform(z)
    torch.testing.assert_close(x, x_ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ld, ld_ref, atol=1e-4, rtol=1e-4)
    assert MAF(3, naive=True).naive and IAF.from_maf(MAF(3, naive=True)).naive
    # Flow.sample: the same map of the same noise, and a sample another model can train on
    for m in flow.modules():
        if isinstance(m, MAF):
            m.naive = False
    torch.manual_seed(5)
    xs = flow.sample(64)
    torch.manual_seed(5)
    torch.testing.assert_close(xs, flow.transform(flow.base.sample((64,)))[0].detach(), atol=1e-6, rtol=1e-6)
    assert not xs.is_inference() and not xs.requires_grad
    # row-major, as every sampler returns, although the layers pass each other coordinate-major
    assert xs.is_contiguous() and x.T.is_contiguous()
    assert flow.rsample_and_log_prob(3)[0].is_contiguous()
    flow.log_prob(xs).mean().backward()  # usable with autograd (not an inference tensor)
