"""Glow's blocks: ActNorm's data-dependent initialisation, the 1x1 convolutions (dense and LU)."""

import pytest
import torch
from torch.autograd.functional import jacobian

from coursekit.flows import ActNorm, Flow, GlowStep, InvConv1x1, InvConv1x1LU, make_glow


def test_actnorm_initialises_on_the_first_density_call_only():
    torch.manual_seed(0)
    x = torch.randn(500, 3) * torch.tensor([0.1, 2.0, 5.0]) + torch.tensor([1.0, -3.0, 0.0])
    layer = ActNorm(3)
    layer(torch.randn(4, 3))  # sampling direction: no initialisation
    assert not bool(layer.initialized)
    z, ld = layer.inverse(x)
    assert bool(layer.initialized) and "initialized" in layer.state_dict()
    assert torch.allclose(z.mean(0), torch.zeros(3), atol=1e-5)
    assert torch.allclose(z.std(0, unbiased=False), torch.ones(3), atol=1e-4)
    assert torch.allclose(ld, -x.std(0, unbiased=False).log().sum().expand(500), atol=1e-4)
    before = [p.detach().clone() for p in layer.parameters()]
    layer.inverse(x * 10 + 3)  # later calls are pure
    assert all(torch.equal(a, b) for a, b in zip(before, layer.parameters()))
    # a reloaded layer keeps its initialisation
    fresh = ActNorm(3)
    fresh.load_state_dict(layer.state_dict())
    assert bool(fresh.initialized) and torch.allclose(fresh.inverse(x)[0], z)


def test_actnorm_on_images_is_per_channel():
    torch.manual_seed(0)
    x = torch.randn(50, 2, 3, 4) * torch.tensor([3.0, 0.5]).view(1, 2, 1, 1) + 1.0
    layer = ActNorm(2, spatial=(3, 4))
    z, ld = layer.inverse(x)
    assert torch.allclose(z.transpose(0, 1).reshape(2, -1).mean(1), torch.zeros(2), atol=1e-5)
    assert torch.allclose(ld, (-12 * layer.log_scale.sum()).expand(50))
    with pytest.raises(ValueError, match="at least 2"):
        ActNorm(3).inverse(torch.randn(1, 3))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        ActNorm(3, spatial=(3,))


@pytest.mark.parametrize("cls", [InvConv1x1, InvConv1x1LU, ActNorm])
def test_image_maps_log_det_matches_autograd(cls):
    torch.manual_seed(0)
    m = cls(3, spatial=(2, 2)).double()
    m.inverse(torch.randn(8, 3, 2, 2, dtype=torch.float64))
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
    z = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    x, ld = m(z)
    J = jacobian(
        lambda t: m(t.view(-1, 3, 2, 2))[0].reshape(t.shape[0], -1).sum(0), z.reshape(4, -1), vectorize=True
    ).permute(1, 0, 2)
    assert torch.allclose(ld, torch.linalg.slogdet(J)[1], atol=1e-9)
    z2, ld_inv = m.inverse(x)
    assert torch.allclose(z2, z, atol=1e-10) and torch.allclose(ld_inv, -ld, atol=1e-10)


def test_lu_weight_is_invertible_and_its_log_det_is_the_diagonal():
    torch.manual_seed(0)
    m = InvConv1x1LU(5).double()
    w0 = m.weight.detach().clone()
    assert torch.allclose(w0 @ w0.T, torch.eye(5, dtype=torch.float64), atol=1e-6)  # starts as a rotation
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p))
    w = m.weight
    assert torch.allclose(torch.linalg.slogdet(w)[1], m.log_s.sum())
    z = torch.randn(3, 5, dtype=torch.float64)
    assert torch.allclose(m(z)[0], z @ w.T)
    assert torch.allclose(m.inverse(z)[0], z @ torch.linalg.inv(w).T)
    dense = InvConv1x1(5)
    assert torch.allclose(dense.weight @ dense.weight.T, torch.eye(5), atol=1e-5)


def test_glow_stacks_round_trip_and_train():
    torch.manual_seed(0)
    x = torch.randn(256, 4) @ torch.tensor([[1.0, 0.9, 0, 0], [0, 0.3, 0, 0], [0, 0, 2, 0], [0, 0, 1, 0.1]]) + 3.0
    for perm in ("conv", "none"):
        for lu in (True, False):
            flow = Flow(make_glow(4, n_steps=3, hidden=(16,), lu=lu, permutation=perm))
            lp0 = flow.log_prob(x).mean()  # initialises every ActNorm
            z, ld = flow.transform.inverse(x)
            x2, ld2 = flow.transform(z)
            assert torch.allclose(x2, x, atol=1e-4) and torch.allclose(ld, -ld2, atol=1e-4)
            opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
            for _ in range(60):  # 30 steps left one of the four stacks 0.48 nats up on this seed
                loss = -flow.log_prob(x).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            assert flow.log_prob(x).mean() > lp0 + 0.6
    with pytest.raises(ValueError, match="permutation"):
        GlowStep(4, permutation="shuffle")
    assert "initialized=False" in repr(ActNorm(2))
