"""MADE: masks from orders, and the autoregressive property read off the Jacobian."""

import pytest
import torch
from torch.autograd.functional import jacobian

from coursekit.made import MADE, MaskedLinear, made_masks, make_order


def _jacobian_support(net: MADE, x: torch.Tensor) -> torch.Tensor:
    """[k, i, j] != 0 where output parameter k of variable i moves with input j (float64)."""
    jac = jacobian(lambda v: net(v.unsqueeze(0))[0], x)  # (n_params, dim, dim)
    return jac.abs() > 0


@pytest.mark.parametrize("order", ["natural", "reversed", "random", [2, 0, 4, 1, 3]])
@pytest.mark.parametrize("hidden", [(16,), (12, 20, 16)])
def test_output_depends_only_on_predecessors(order, hidden):
    torch.manual_seed(0)
    net = MADE(5, hidden=hidden, n_params=3, order=order, activation=torch.nn.Tanh, seed=3).double()
    rank = torch.empty(5, dtype=torch.long)
    rank[net.order] = torch.arange(5)
    allowed = rank[None, :] < rank[:, None]  # [i, j]: j comes before i
    for _ in range(3):
        support = _jacobian_support(net, torch.randn(5, dtype=torch.float64))
        assert not (support & ~allowed).any(), "an output depends on itself or on a later input"
        # With tanh (never flat) and generic weights every allowed dependence is present.
        assert torch.equal(support.any(0), allowed)
    assert torch.equal(net.connectivity(), allowed)


def test_first_output_is_constant_and_shapes():
    net = MADE(4, hidden=(8, 8), n_params=2, order="reversed")
    out = net(torch.randn(7, 4))
    assert out.shape == (7, 2, 4)
    other = net(torch.randn(7, 4))
    # The first variable in the order (index 3 for "reversed") sees no input: constant.
    torch.testing.assert_close(out[:, :, 3], other[:, :, 3])


def test_masks_match_degree_rule():
    order = torch.tensor([1, 2, 0])
    masks = made_masks(order, hidden=[4], n_params=2)
    assert [tuple(m.shape) for m in masks] == [(4, 3), (6, 4)]
    # Hidden degrees 1, 2, 1, 2; input degrees: x1 -> 1, x2 -> 2, x0 -> 3.
    assert masks[0].int().tolist() == [[0, 1, 0], [0, 1, 1], [0, 1, 0], [0, 1, 1]]
    # Output degrees (3, 1, 2) repeated twice; a unit of degree 1 feeds outputs of degree > 1.
    assert masks[1][:3].int().tolist() == [[1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 1, 0]]
    assert torch.equal(masks[1][:3], masks[1][3:])


def test_dim_one_and_orders():
    net = MADE(1, hidden=(4,), n_params=2)
    out = net(torch.randn(3, 1))
    torch.testing.assert_close(out, out[:1].expand(3, 2, 1))
    assert make_order(4, "reversed").tolist() == [3, 2, 1, 0]
    g = torch.Generator().manual_seed(0)
    assert sorted(make_order(6, "random", g).tolist()) == list(range(6))
    assert torch.equal(MADE(6, order="random", seed=1).order, MADE(6, order="random", seed=1).order)


def test_masked_linear_is_one_masked_matmul():
    mask = torch.tensor([[1, 0], [1, 1], [0, 0]], dtype=torch.bool)
    layer = MaskedLinear(mask)
    x = torch.randn(5, 2)
    torch.testing.assert_close(layer(x), x @ (layer.weight * mask).T + layer.bias)
    layer(x).sum().backward()
    assert (layer.weight.grad[~mask] == 0).all()
    assert "mask=3/6 kept" in repr(layer)


def test_repr_shows_order_and_sizes():
    text = repr(MADE(3, hidden=(8,), order="reversed"))
    assert "order=[2, 1, 0]" in text and "hidden=(8,)" in text and "n_params=2" in text


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dim": 5, "hidden": (3,)}, "too narrow"),
        ({"dim": 3, "order": [0, 0, 1]}, "not a permutation"),
        ({"dim": 3, "order": "diagonal"}, "expected 'natural'"),
        ({"dim": 0}, "positive integer"),
        ({"dim": 3, "n_params": 0}, "n_params"),
    ],
)
def test_bad_settings_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MADE(**kwargs)
