"""Coupling layers (NICE, Real-NVP): partitions, triangular Jacobians, volume, stability."""

import math

import pytest
import torch
from torch.autograd.functional import jacobian

from coursekit.flows import (
    AdditiveCoupling,
    AffineCoupling,
    Compose,
    Flow,
    Rescale,
    alternating_masks,
    checkerboard_mask,
    half_mask,
    make_nice,
    make_realnvp,
    random_partition,
)


def _jac(fn, v):
    return jacobian(lambda t: fn(t).sum(0), v, vectorize=True).permute(1, 0, 2)


def _perturb(m, scale=0.3, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return m


def test_masks():
    assert half_mask(5).tolist() == [True, True, False, False, False]
    assert (half_mask(5, flip=True) == ~half_mask(5)).all()
    cb = checkerboard_mask((3, 4)).view(3, 4)
    assert cb[0, 0] and not cb[0, 1] and not cb[1, 0] and cb[1, 1]
    assert (checkerboard_mask((3, 4), parity=1) == ~checkerboard_mask((3, 4))).all()
    g = torch.Generator().manual_seed(0)
    assert int(random_partition(9, g).sum()) == 4
    ms = alternating_masks(6, 4, kind="random", generator=g)
    for a, b in zip(ms[::2], ms[1::2]):
        assert (a == ~b).all()  # every coordinate is transformed once in each pair of layers
    with pytest.raises(ValueError, match="checkerboard"):
        alternating_masks(6, 2, kind="checkerboard")
    with pytest.raises(ValueError, match="kind"):
        alternating_masks(6, 2, kind="stripes")
    with pytest.raises(ValueError, match="dim >= 2"):
        half_mask(1)


@pytest.mark.parametrize("cls", [AdditiveCoupling, AffineCoupling])
def test_coupling_on_an_arbitrary_partition_is_triangular(cls):
    torch.manual_seed(0)
    mask = torch.tensor([False, True, False, False, True, True, False])  # scattered, r = 3
    layer = _perturb(cls(7, mask=mask, hidden=(16,)).double())
    z = torch.randn(5, 7, dtype=torch.float64)
    x, ld = layer(z)
    assert torch.equal(x[:, mask], z[:, mask])  # the conditioning part is copied
    J = _jac(lambda t: layer(t)[0], z)
    a, b = mask.nonzero().view(-1), (~mask).nonzero().view(-1)
    # reorder to (a, b): [[I, 0], [*, diagonal]]
    Jab = J[:, torch.cat([a, b])][:, :, torch.cat([a, b])]
    assert torch.allclose(Jab[:, :3, :3], torch.eye(3, dtype=torch.float64).expand(5, 3, 3))
    assert torch.all(Jab[:, :3, 3:] == 0)
    block = Jab[:, 3:, 3:]
    assert torch.all(block - torch.diag_embed(torch.diagonal(block, dim1=1, dim2=2)) == 0)
    assert torch.allclose(ld, torch.linalg.slogdet(J)[1], atol=1e-10)
    z2, ld_inv = layer.inverse(x)
    assert torch.allclose(z2, z, atol=1e-12) and torch.allclose(ld_inv, -ld, atol=1e-12)


@pytest.mark.parametrize("cls", [AdditiveCoupling, AffineCoupling])
@pytest.mark.parametrize("flip", [False, True])
def test_block_partitions_take_the_view_path_and_agree_with_the_gather_path(cls, flip):
    torch.manual_seed(0)
    layer = _perturb(cls(7, mask=half_mask(7, flip=flip), hidden=(16,)).double())
    assert layer._blocks is not None  # two contiguous blocks: split by views
    scattered = cls(7, mask=torch.tensor([True, False, True, False, True, False, False]))
    assert scattered._blocks is None  # anything else: gather
    z = torch.randn(5, 7, dtype=torch.float64)
    x, ld = layer(z)
    z2, ld_inv = layer.inverse(x)
    blocks, layer._blocks = layer._blocks, None
    x_g, ld_g = layer(z)
    z2_g, ld_inv_g = layer.inverse(x)
    layer._blocks = blocks
    for fast, gathered in ((x, x_g), (ld, ld_g), (z2, z2_g), (ld_inv, ld_inv_g)):
        assert torch.allclose(fast, gathered, rtol=0, atol=1e-13)  # the same up to BLAS rounding
    assert torch.equal(x[:, half_mask(7, flip=flip)], z[:, half_mask(7, flip=flip)])
    assert torch.allclose(z2, z, atol=1e-12)


def test_additive_coupling_preserves_volume_and_rescale_does_not():
    torch.manual_seed(0)
    nvp = _perturb(make_nice(4, n_layers=4, hidden=(16,), rescale=False).double())
    z = torch.randn(10, 4, dtype=torch.float64)
    x, ld = nvp(z)
    assert torch.all(ld == 0)
    assert torch.allclose(
        torch.linalg.slogdet(_jac(lambda t: nvp(t)[0], z))[1], torch.zeros(10, dtype=torch.float64), atol=1e-10
    )
    # entropy is preserved: a volume-preserving flow of N(0, I) cannot reach the density level of N(0, 9 I)
    flow = Flow(nvp).double()
    _, lq = flow.sample_and_log_prob(20_000)
    h_model = float(-lq.mean())
    h_base = 0.5 * 4 * (1 + math.log(2 * math.pi))
    assert abs(h_model - h_base) < 0.05  # Monte Carlo entropy of the model = entropy of the base
    r = Rescale(4).double()
    with torch.no_grad():
        r.log_s.copy_(torch.tensor([0.0, 1.0, -2.0, 0.5], dtype=torch.float64))
    x, ld = r(z)
    assert torch.allclose(x, z * r.log_s.exp()) and torch.allclose(ld, torch.full_like(ld, -0.5))
    assert torch.allclose(r.inverse(x)[0], z)


def test_zero_init_starts_at_identity_and_stacks_match_autograd():
    z = torch.randn(6, 64)
    for model in (make_nice(64, n_layers=3), make_realnvp(64, n_layers=3, kind="checkerboard", shape=(8, 8))):
        x, ld = model(z)
        assert torch.equal(x, z) and torch.all(ld == 0)
    torch.manual_seed(1)
    model = _perturb(make_realnvp(6, n_layers=4, hidden=(8, 8), kind="random").double(), 0.2)
    z = torch.randn(4, 6, dtype=torch.float64)
    x, ld = model(z)
    assert torch.allclose(ld, torch.linalg.slogdet(_jac(lambda t: model(t)[0], z))[1], atol=1e-9)
    assert torch.allclose(model.inverse(x)[0], z, atol=1e-9)


@pytest.mark.parametrize("clamp", [3.0, None])
def test_shift_after_is_the_slides_map_with_m_equal_to_minus_b_exp_alpha(clamp):
    # the two parametrisations of the same map family: with the network's outputs (s, b), "after"
    # computes x_b = z_b exp(alpha) + m with m = -b exp(alpha), and "before" reads m = b directly
    torch.manual_seed(0)
    after = _perturb(AffineCoupling(5, hidden=(16,), clamp=clamp).double())
    before = AffineCoupling(5, hidden=(16,), clamp=clamp, shift="before").double()
    before.load_state_dict(after.state_dict())
    z = torch.randn(8, 5, dtype=torch.float64)
    za, zb = after._split(z)
    s, b = after.net(za).chunk(2, dim=1)
    alpha = clamp * torch.tanh(s / clamp) if clamp is not None else s
    assert alpha.abs().max() > 0.1 and b.abs().max() > 0.1  # a layer far from the identity
    x, ld = after(z)
    expected = after._merge(za, zb * alpha.exp() - b * alpha.exp())
    assert torch.allclose(x, expected, atol=1e-12) and torch.allclose(ld, alpha.sum(1), atol=1e-12)
    x_before, ld_before = before(z)
    assert torch.allclose(x_before, before._merge(za, zb * alpha.exp() + b), atol=1e-12)
    assert torch.allclose(ld_before, ld, atol=1e-12)
    assert not torch.allclose(x_before, x, atol=1e-3)  # the same weights give another map
    # the density direction of "after" is linear in (b, exp(-alpha)): z_b = x_b exp(-alpha) + b
    xa, xb = after._split(x)
    assert torch.allclose(after.inverse(x)[0], after._merge(xa, xb * torch.exp(-alpha) + b), atol=1e-12)
    assert "shift=after" in repr(after) and "shift=before" in repr(before)


def test_soft_clamp_bounds_the_scales():
    torch.manual_seed(0)
    layer = _perturb(AffineCoupling(6, hidden=(32,), clamp=2.0), scale=50.0)  # absurd weights
    z = 100 * torch.randn(100, 6)
    x, ld = layer(z)
    assert torch.isfinite(x).all() and ld.abs().max() <= 2.0 * 3 + 1e-4  # |alpha_i| <= clamp, 3 transformed coords
    assert torch.isfinite(layer.inverse(x)[0]).all()
    # near zero the clamp is the identity to first order: it does not change a well-behaved model
    c = AffineCoupling(4, clamp=3.0)
    s = torch.tensor([[1e-3, -2e-3]])
    assert torch.allclose(c.clamp * torch.tanh(s / c.clamp), s, rtol=1e-6)


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="each side"):
        AdditiveCoupling(3, mask=torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="entries"):
        AffineCoupling(3, mask=torch.tensor([True, False]))
    with pytest.raises(ValueError, match="clamp"):
        AffineCoupling(3, clamp=0.0)
    with pytest.raises(ValueError, match="masks"):
        make_realnvp(4, n_layers=3, masks=[half_mask(4)])
    with pytest.raises(ValueError, match="expected"):
        make_nice(4)(torch.zeros(2, 5))


def test_repr_shows_the_partition():
    assert "mask=abab" in repr(AdditiveCoupling(4, mask=torch.tensor([True, False, True, False])))
    assert "clamp=3.0" in repr(AffineCoupling(4))
    assert isinstance(make_nice(4), Compose)


@pytest.mark.parametrize("bound", [0.5, 3.0, 5.0])
def test_soft_clamp_is_bound_times_tanh(bound):
    """The shared soft clamp (AffineCoupling, MAF, IAF, PixelMAF) is computed through a sigmoid for
    speed; it must be the documented ``B tanh(a / B)``: to float64 rounding, and within a few
    float32 ulps of ``B`` in float32, from deep in both tails through zero."""
    from coursekit.flows.coupling import _clamp

    a = torch.cat([torch.linspace(-60, 60, 2001, dtype=torch.float64), torch.tensor([0.0, 1e-6, -1e-6])])
    want = bound * torch.tanh(a / bound)
    torch.testing.assert_close(_clamp(a, bound), want, rtol=0, atol=1e-14)
    torch.testing.assert_close(_clamp(a.float(), bound).double(), want, rtol=0, atol=4 * bound * 2**-23)
    assert _clamp(a, bound).abs().max() <= bound
