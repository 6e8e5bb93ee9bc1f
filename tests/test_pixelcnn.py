"""PixelCNN: masks, the autoregressive property and the exact receptive field (no blind spot), and the discrete
model of the digits' 17 levels (normalised, bits/dim, sampling). The MAF layer on the same network:
``tests/test_pixelmaf.py``."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch.autograd.functional import jacobian

from coursekit.data.digits import load_digits_split
from coursekit.pixelcnn import GatedPixelCNN, MaskedConv2d, PixelCNN, causal_mask, raster_order

F64 = torch.float64


def _dependence(net, shape, n_inputs=3, seed=0):
    """Boolean (outputs, inputs): which output may move with which input (autograd, union over random inputs;
    both flattened row-major, outputs as the network lays them out)."""
    g = torch.Generator().manual_seed(seed)
    dep = None
    for _ in range(n_inputs):
        x = torch.randn(1, *shape, generator=g, dtype=F64)
        J = jacobian(lambda t: net(t.view(1, *shape)).flatten(), x.flatten()) != 0
        dep = J if dep is None else dep | J
    return dep


def test_masks_a_and_b():
    assert causal_mask(1, 1, 3, "B")[0, 0].int().tolist() == [[1, 1, 1], [1, 1, 0], [0, 0, 0]]
    # 3 colours, one channel each: at the centre, A is strictly lower triangular, B lower triangular
    a = causal_mask(3, 3, 1, "A", n_groups=3)[:, :, 0, 0]
    b = causal_mask(3, 3, 1, "B", n_groups=3)[:, :, 0, 0]
    assert torch.equal(a, torch.tril(torch.ones(3, 3), -1)) and torch.equal(b, torch.tril(torch.ones(3, 3)))
    assert torch.equal(causal_mask(3, 3, 1, "B", n_groups=3, reverse=True)[:, :, 0, 0], torch.triu(torch.ones(3, 3)))
    assert raster_order((2, 1, 2)).tolist() == [0, 2, 1, 3]  # pixel (0,0): channels 0, 1; then pixel (0,1)
    with pytest.raises(ValueError, match="mask_type"):
        causal_mask(1, 1, 3, "C")


@pytest.mark.parametrize("channels", [1, 3])
def test_the_network_is_autoregressive_in_raster_order(channels):
    """Output (c, param, i, j) depends only on variables before (c, i, j): pixels earlier in raster order, and
    channels < c of the same pixel (autograd on random inputs and random weights)."""
    torch.manual_seed(0)
    H, W, P = 4, 5, 2
    net = GatedPixelCNN(channels, P, features=6 * channels, n_layers=3).double()
    dep = _dependence(net, (channels, H, W)).view(channels, P, H * W, channels * H * W)
    rank = torch.empty(channels * H * W, dtype=torch.long)
    rank[raster_order((channels, H, W))] = torch.arange(channels * H * W)  # position of each input in the order
    out_rank = rank.view(channels, H * W)
    for c in range(channels):
        for i in range(H * W):
            later = rank >= out_rank[c, i]
            assert not dep[c, :, i][:, later].any(), f"output ({c}, pixel {i}) reads itself or a later variable"
    assert dep.any(-1).view(channels, P, H * W)[..., 1:].all()  # every output but the first reads something


def test_receptive_field_is_the_stated_one_and_has_no_blind_spot():
    """Gated stacks, n layers, kernel k (r = k // 2): the output at (i, j) reads rows i-1-n r .. i-1 between
    columns j-n r .. j+n r, and the n r pixels to its left: exactly that set. A plain stack of masked 3x3
    convolutions misses pixels above and to the right of the current one (the blind spot)."""
    torch.manual_seed(1)
    H = W = 9
    n, r = 2, 1
    net = GatedPixelCNN(1, 1, features=8, n_layers=n, kernel_size=3).double()
    dep = _dependence(net, (1, H, W)).view(H, W, H, W)
    i, j = 5, 4
    rows, cols = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    above = (rows >= i - 1 - n * r) & (rows <= i - 1) & ((cols - j).abs() <= n * r)
    left = (rows == i) & (cols >= j - n * r) & (cols < j)
    assert torch.equal(dep[i, j], above | left)
    plain = torch.nn.Sequential(
        MaskedConv2d(1, 8, 3, "A"),
        torch.nn.ReLU(),
        MaskedConv2d(8, 8, 3, "B"),
        torch.nn.ReLU(),
        MaskedConv2d(8, 1, 3, "B"),
    ).double()
    dep_plain = _dependence(plain, (1, H, W)).view(H, W, H, W)[i, j]
    assert dep_plain[i - 3, j + 3] and not dep_plain[i - 1, j + 2]  # reaches further up, yet misses (i-1, j+2)
    gated3 = _dependence(GatedPixelCNN(1, 1, features=8, n_layers=3).double(), (1, H, W)).view(H, W, H, W)[i, j]
    assert gated3[i - 1, j + 2] and gated3[i - 3, j + 3]


# ----------------------------------------------------------------------------- the discrete model


@pytest.mark.parametrize("shape, levels", [((1, 2, 2), 3), ((2, 1, 2), 3), ((1, 2, 3), 2)])
def test_the_discrete_model_is_normalised(shape, levels):
    """Sum over every image of exp(log p) is 1: each conditional is a distribution that reads only its
    predecessors (a model that peeked at a later variable would not sum to 1)."""
    torch.manual_seed(2)
    model = PixelCNN(shape, levels, features=4 * shape[0], n_layers=2).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5 * torch.randn_like(p))
        p_dim = math.prod(shape)
        every = torch.tensor(list(itertools.product(range(levels), repeat=p_dim)), dtype=F64)
        total = model.log_prob(every).exp().sum()
    assert abs(float(total) - 1.0) < 1e-10
    # and the conditional of a variable does not move when the variables after it change
    k = every[:1].view(1, *shape)
    order = raster_order(shape)
    first = order[0]
    k2 = k.clone().view(-1)
    k2[order[1:]] = (k2[order[1:]] + 1) % levels
    la, lb = model.logits(k), model.logits(k2.view(1, *shape))
    c, ij = divmod(int(first), shape[1] * shape[2])
    assert torch.allclose(la[:, c, :].flatten(2)[..., ij], lb[:, c, :].flatten(2)[..., ij])


def _chi2_quantile(q: float, df: int) -> float:
    lo, hi = 0.0, 10.0 * df + 100.0
    for _ in range(200):  # bisection on the regularised incomplete gamma function, P(chi2_df <= x)
        mid = (lo + hi) / 2
        if float(torch.special.gammainc(torch.tensor(df / 2, dtype=F64), torch.tensor(mid / 2, dtype=F64))) < q:
            lo = mid
        else:
            hi = mid
    return lo


def test_sampling_gives_valid_levels_with_the_model_frequencies():
    """Samples are integer levels of the right shape, and their frequencies over the 9 images of a 1x1x2 model
    with 3 levels pass Pearson's chi-square test against the model's probabilities at level 1e-3."""
    torch.manual_seed(3)
    model = PixelCNN((1, 1, 2), 3, features=4, n_layers=2).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5 * torch.randn_like(p))
    n = 20_000
    k = model.sample(n, generator=torch.Generator().manual_seed(4))
    assert k.shape == (n, 1, 1, 2) and bool(((k == k.round()) & (k >= 0) & (k <= 2)).all())
    every = torch.tensor(list(itertools.product(range(3), repeat=2)), dtype=F64)
    with torch.no_grad():
        probs = model.log_prob(every).exp()
    index = (k.view(n, 2) * torch.tensor([3.0, 1.0], dtype=F64)).sum(1).long()
    counts = torch.bincount(index, minlength=9).to(F64)
    chi2 = float(((counts - n * probs) ** 2 / (n * probs)).sum())
    assert chi2 < _chi2_quantile(1 - 1e-3, 8), chi2


def test_digits_log_likelihood_bits_per_dim_and_training():
    """On the digits (flat (n, 64) levels 0..16): a model with zero logits is uniform, log2(17) bits/dim; a
    few steps of maximum likelihood bring the validation NLL below it."""
    torch.manual_seed(5)
    d = load_digits_split(seed=0)
    model = PixelCNN((1, 8, 8), 17, features=16, n_layers=3)
    with torch.no_grad():
        model.net.out.weight.zero_()
        model.net.out.bias.zero_()
    bpd = model.bits_per_dim(d.val[:50])
    assert torch.allclose(bpd, torch.full_like(bpd, math.log2(17)))
    assert torch.allclose(model.log_prob(d.val[:50]), -64 * math.log(17) * torch.ones(50))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(40):
        batch = d.train[torch.randint(0, len(d.train), (128,))]
        opt.zero_grad()
        loss = -model.log_prob(batch).mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert float(model.bits_per_dim(d.val).mean()) < math.log2(17) - 1.0
        samples = model.sample(2)
    assert samples.shape == (2, 1, 8, 8) and bool(((samples >= 0) & (samples <= 16)).all())


def test_bad_levels_are_refused():
    model = PixelCNN((1, 2, 2), 3, features=4, n_layers=1)
    with pytest.raises(ValueError, match=r"integer pixel values in 0\.\.2"):
        model.log_prob(torch.full((1, 4), 3.0))
    with pytest.raises(ValueError, match=r"integer pixel values"):
        model.log_prob(torch.full((1, 4), 0.5))
    with pytest.raises(ValueError, match=r"expected \(batch, 1, 2, 2\) or flattened \(batch, 4\)"):
        model.log_prob(torch.zeros(1, 5))
    with pytest.raises(ValueError, match="multiple of channels"):
        GatedPixelCNN(3, 2, features=8)
