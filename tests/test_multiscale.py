"""Multi-scale image flows: squeeze, image masks, factoring out, and the Real-NVP/Glow builder on 8x8 digits."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd.functional import jacobian

from coursekit.data.digits import load_digits_split, to_unit
from coursekit.flows import (
    AffineCoupling,
    Compose,
    Flattened,
    Flow,
    Logit,
    MultiScale,
    Squeeze,
    channel_mask,
    checkerboard_mask,
    half_mask,
    image_checkerboard_mask,
    make_multiscale,
    squeeze,
    unsqueeze,
)

F64 = torch.float64


def _jac(fn, v):
    n = v.shape[0]
    J = jacobian(lambda t: fn(t.view(v.shape)).reshape(n, -1).sum(0), v.reshape(n, -1), vectorize=True)
    return J.permute(1, 0, 2)


def _perturbed(m, scale=0.1, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return m


def test_squeeze_is_a_permutation_with_the_stated_layout():
    x = torch.arange(2 * 4 * 6, dtype=F64).view(1, 2, 4, 6)
    s = squeeze(x)
    assert s.shape == (1, 8, 2, 3)
    for c, a, b, i, j in [(0, 0, 0, 0, 0), (1, 1, 0, 1, 2), (0, 1, 1, 1, 1)]:
        assert s[0, 4 * c + 2 * a + b, i, j] == x[0, c, 2 * i + a, 2 * j + b]
    assert torch.equal(unsqueeze(s), x)
    sq = Squeeze((2, 4, 6))
    assert sq.latent_shape == (8, 2, 3)
    z, ld = sq.inverse(x)
    assert torch.equal(z, s) and torch.equal(ld, torch.zeros(1, dtype=F64))
    J = _jac(lambda t: sq.inverse(t)[0], x)[0]
    assert torch.equal(J.sum(0), torch.ones(48, dtype=F64)) and torch.equal(J.sum(1), torch.ones(48, dtype=F64))


@pytest.mark.parametrize("shape", [(1, 5, 4), (2, 4, 3), (1, 1, 1)])
def test_odd_sides_are_refused(shape):
    with pytest.raises(ValueError, match="even image sides"):
        Squeeze(shape)
    with pytest.raises(ValueError, match="even image sides"):
        squeeze(torch.zeros(1, *shape))


def test_image_masks_reuse_the_coupling_masks():
    m = image_checkerboard_mask((3, 2, 4), parity=1)
    assert torch.equal(m.view(3, 8), checkerboard_mask((2, 4), 1).expand(3, 8))
    c = channel_mask((4, 2, 2), flip=True)
    assert torch.equal(c.view(4, 4), half_mask(4, flip=True).view(4, 1).expand(4, 4))
    with pytest.raises(ValueError, match="at least 2 channels"):
        channel_mask((1, 4, 4))


def test_shapes_are_checked():
    with pytest.raises(ValueError, match=r"expected \(12,\) = C\*H\*W"):
        Flattened(AffineCoupling(10), (3, 2, 2))
    with pytest.raises(ValueError, match="post acts on event shape"):
        MultiScale((1, 4, 4), post=Flattened(AffineCoupling(16), (1, 4, 4)))
    with pytest.raises(ValueError, match="divisible by 4"):
        make_multiscale((1, 6, 8), n_scales=2)
    with pytest.raises(ValueError, match="image shape"):
        make_multiscale((8, 8))


def test_factored_variables_skip_the_inner_scales():
    """The channels factored out at the first scale reach the latent without the inner scale: changing the
    inner scale's parameters moves only the other half of z."""
    torch.manual_seed(0)
    flow = make_multiscale((1, 4, 4), n_scales=1, hidden=(8,)).double()
    x = torch.rand(3, 1, 4, 4, dtype=F64)
    z1, _ = flow.inverse(x)
    _perturbed(flow.inner, scale=0.5)
    z2, _ = flow.inverse(x)
    factored = squeeze(torch.ones(1, 1, 4, 4))[:, :2]
    mask = unsqueeze(torch.cat([factored, torch.zeros_like(factored)], 1)).bool().expand_as(z1)
    assert torch.equal(z1[mask], z2[mask]) and not torch.allclose(z1[~mask], z2[~mask])


@pytest.mark.parametrize("shape, n_scales", [((1, 4, 4), 1), ((2, 4, 4), 1), ((1, 4, 8), 2)])
def test_round_trip_and_log_det_match_autograd(shape, n_scales):
    torch.manual_seed(1)
    flow = make_multiscale(shape, n_scales=n_scales, hidden=(16,)).double()
    flow.inverse(torch.rand(32, *shape, dtype=F64))  # ActNorm's data initialisation
    _perturbed(flow)
    x = torch.rand(4, *shape, dtype=F64)
    z, ld_inv = flow.inverse(x)
    x_back, ld = flow(z)
    assert z.shape == x.shape and torch.allclose(x_back, x, atol=1e-10)
    J_inv = _jac(lambda t: flow.inverse(t)[0], x)
    J = _jac(lambda t: flow(t)[0], z.detach())
    assert torch.allclose(ld_inv, torch.linalg.slogdet(J_inv)[1], atol=1e-9)
    assert torch.allclose(ld, torch.linalg.slogdet(J)[1], atol=1e-9)


def test_the_digits_builder():
    """make_multiscale((1, 8, 8)) on the digits: exact round trip and log-det (64 x 64 autograd Jacobian),
    and a few steps of maximum likelihood (with the logit map) lower the dequantised NLL."""
    torch.manual_seed(2)
    d = load_digits_split(seed=0)
    ms = make_multiscale((1, 8, 8), n_scales=2, n_steps=2, hidden=(64,))
    flow = Flow(Compose(ms, Flattened(Logit(64), (1, 8, 8))))

    def batch(n):
        k = d.train[torch.randint(0, len(d.train), (n,))]
        return ((k + torch.rand_like(k)) / 17.0).view(n, 1, 8, 8)

    with torch.no_grad():
        first = batch(256)
        start = -flow.log_prob(first).mean().item()  # also initialises ActNorm
    opt = torch.optim.Adam(flow.parameters(), lr=2e-3)
    for _ in range(30):
        opt.zero_grad()
        loss = -flow.log_prob(batch(128)).mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        end = -flow.log_prob(first).mean().item()
    assert math.isfinite(end) and end < start - 20, (start, end)

    flow64 = flow.double()
    x = to_unit(d.val[:2]).double().view(2, 1, 8, 8) * 0.9 + 0.05
    with torch.no_grad():
        z, ld_inv = ms.inverse(x)
        x_back, ld = ms(z)
    assert torch.allclose(x_back, x, atol=1e-9) and torch.allclose(ld, -ld_inv, atol=1e-9)
    J = _jac(lambda t: flow64.transform.maps[0].inverse(t)[0], x)
    assert torch.allclose(ld_inv, torch.linalg.slogdet(J)[1], atol=1e-8)
