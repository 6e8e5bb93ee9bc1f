"""MADE: masks from orders, and the autoregressive property read off the Jacobian."""

import numpy as np
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


def _affine(raw, t):
    # a MAF-like elementwise update, x_i = exp(alpha_i) t_i + m_i with a soft clamp
    return torch.exp(2 * torch.tanh(raw[-1] / 2)) * t + raw[0]


def _random_made(dim, hidden, n_params, order, activation=torch.nn.ReLU, dtype=torch.float64):
    torch.manual_seed(dim)
    net = MADE(dim, hidden=hidden, n_params=n_params, order=order, activation=activation, seed=4).to(dtype)
    with torch.no_grad():
        for q in net.parameters():
            q.normal_(0, 0.5)
    return net


SOLVE_CASES = [
    (1, (4,), 2, "natural", torch.nn.ReLU),
    (2, (3,), 2, "reversed", torch.nn.Tanh),
    (5, (4, 7), 3, "random", torch.nn.ELU),
    (7, (6,), 1, [3, 1, 0, 6, 5, 2, 4], torch.nn.ReLU),
    (16, (40, 33, 20), 2, "random", torch.nn.Tanh),
    (32, (64, 64), 2, "natural", torch.nn.ReLU),
]


@pytest.mark.parametrize("dim, hidden, n_params, order, activation", SOLVE_CASES)
@pytest.mark.parametrize("batch", [1, 9])
def test_incremental_solve_matches_the_naive_p_pass_solver(dim, hidden, n_params, order, activation, batch, block):
    net = _random_made(dim, hidden, n_params, order, activation)
    z = torch.randn(batch, dim, dtype=torch.float64)
    with torch.no_grad():
        x_ref, out_ref = net.solve(_affine, z, naive=True)
        x, out = net.solve(_affine, z)  # the in-place steps
    torch.testing.assert_close(x, x_ref, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(out, out_ref, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(out, net(x), atol=1e-12, rtol=1e-12)  # the outputs at the solution
    # the solution solves the fixed-point equation
    torch.testing.assert_close(_affine(net(x).movedim(-2, 0), z), x, atol=1e-12, rtol=1e-12)
    x_grad, out_grad = net.solve(_affine, z)  # with autograd on: the out-of-place steps
    assert x_grad.requires_grad
    torch.testing.assert_close(x_grad, x_ref, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(out_grad, out_ref, atol=1e-12, rtol=1e-12)
    # outputs=False: the same solution on every path, no outputs
    for grad, naive in ((False, False), (True, False), (False, True)):
        with torch.set_grad_enabled(grad):
            x_only, none = net.solve(_affine, z, naive=naive, outputs=False)
        assert none is None
        torch.testing.assert_close(x_only.detach(), x_ref, atol=1e-12, rtol=1e-12)
    assert not x.is_inference()  # a normal tensor, although the steps ran in inference mode
    # the solution comes coordinate-major (the transpose of a contiguous (dim, batch) tensor, the
    # layout the steps write and the next solve reads), in memory of its own: solving again with
    # other targets, which reuses the plan's buffers, leaves it as it was
    assert x.T.is_contiguous() and out.permute(2, 1, 0).is_contiguous()
    kept, kept_out = x.clone(), out.clone()
    with torch.no_grad():
        net.solve(_affine, torch.randn(batch, dim, dtype=torch.float64))
    torch.testing.assert_close(x, kept, atol=0, rtol=0)
    torch.testing.assert_close(out, kept_out, atol=0, rtol=0)


@pytest.mark.parametrize("dim, hidden, n_params, order, activation", SOLVE_CASES[2:])
def test_incremental_solve_float32_and_gradients(dim, hidden, n_params, order, activation):
    net = _random_made(dim, hidden, n_params, order, activation, dtype=torch.float32)
    z = torch.randn(6, dim)
    with torch.no_grad():
        x_ref, _ = net.solve(_affine, z, naive=True)
        x, _ = net.solve(_affine, z)
    torch.testing.assert_close(x, x_ref, atol=1e-4, rtol=1e-4)
    # gradients through the incremental steps equal those through the p-pass reference (float64)
    net = net.double()
    z = z.double().requires_grad_()
    grads = []
    for naive in (True, False):
        x, out = net.solve(_affine, z, naive=naive)
        loss = (x**2).sum() + out.sum()
        grads.append(torch.autograd.grad(loss, [z, *net.parameters()]))
    for g_ref, g in zip(*grads):
        torch.testing.assert_close(g, g_ref, atol=1e-10, rtol=1e-10)


def test_incremental_solve_makes_one_pass_of_multiply_adds(block):
    """The steps read every unmasked weight once per sample and no masked one: the multiply-adds of
    one pass with the masked products skipped (a dense pass makes all of them). The in-place steps
    fold each bias in as one more column (one multiply-add per unit and sample), in blocks or not."""
    from torch.utils.flop_counter import FlopCounterMode

    net = _random_made(16, (32, 32), 2, "random", dtype=torch.float32)
    z = torch.randn(64, 16)
    unmasked = sum(int(m.sum()) for m in net.masks)
    dense = sum(m.numel() for m in net.masks)
    units = sum(m.shape[0] for m in net.masks)
    counts = {}
    for name, fn in {"pass": lambda: net(z), "incremental": lambda: net.solve(_affine, z),
                     "naive": lambda: net.solve(_affine, z, naive=True)}.items():
        for grad in (False, True):  # in place (buffers) and out of place (autograd)
            with torch.set_grad_enabled(grad), FlopCounterMode(display=False) as fc:
                fn()
            counts[name, grad] = fc.get_total_flops()
    for grad in (False, True):
        assert counts["pass", grad] == 2 * 64 * dense
        assert counts["incremental", grad] == 2 * 64 * (unmasked + (0 if grad else units)) < counts["pass", grad]
        assert counts["naive", grad] == 16 * counts["pass", grad]


def test_solve_buffers_follow_the_weights_batch_dtype_and_order():
    """The in-place steps keep their buffers between calls (MADE._solve_plan): every later call must
    still solve the current network, whatever changed in between, and return fresh tensors."""
    import copy
    import pickle

    net = _random_made(7, (9, 8), 2, "random")

    def check(z):
        with torch.no_grad():
            x, out = net.solve(_affine, z)
            x_ref, out_ref = net.solve(_affine, z, naive=True)
        torch.testing.assert_close(x, x_ref, atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(out, out_ref, atol=1e-12, rtol=1e-12)
        if not torch.is_inference_mode_enabled():  # the autograd steps keep their indices too
            torch.testing.assert_close(net.solve(_affine, z)[0], x_ref, atol=1e-12, rtol=1e-12)
        return x

    z = torch.randn(5, 7, dtype=torch.float64)
    first = check(z)
    kept = first.clone()
    with torch.no_grad():  # an optimiser step: parameters change in place
        for q in net.parameters():
            q.add_(0.3 * torch.randn_like(q))
    second = check(z)
    assert not torch.allclose(second, first)
    torch.testing.assert_close(first, kept, atol=0, rtol=0)  # no returned tensor aliases a buffer
    check(torch.randn(3, 7, dtype=torch.float64))  # another batch size
    check(z)  # and back
    # another order, loaded into the same module (buffers copied in place)
    other = _random_made(7, (9, 8), 2, "reversed")
    net.load_state_dict(other.state_dict())
    torch.testing.assert_close(check(z), other.solve(_affine, z, naive=True)[0], atol=1e-12, rtol=1e-12)
    net.float()  # another dtype
    with torch.no_grad():
        x32, _ = net.solve(_affine, z.float())
        torch.testing.assert_close(x32, net.solve(_affine, z.float(), naive=True)[0], atol=1e-4, rtol=1e-4)
    net.double()
    with torch.inference_mode():  # buffers made in inference mode must not leak into plain no_grad calls
        check(z)
    check(z)
    # the cached buffers are not part of the model
    for clone in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        assert "_plan_cache" not in clone.__dict__ and "_index_cache" not in clone.__dict__
        with torch.no_grad():
            torch.testing.assert_close(clone.solve(_affine, z)[0], check(z), atol=1e-12, rtol=1e-12)
    # dropped on request, rebuilt by the next call: the same results from other buffers
    before, plan = check(z), net.__dict__["_plan_cache"]
    net.clear_solve_buffers()
    assert net.__dict__.get("_plan_cache") is None
    torch.testing.assert_close(check(z), before, atol=0, rtol=0)
    assert net.__dict__["_plan_cache"] is not plan
    net.clear_solve_buffers()
    net.clear_solve_buffers()  # nothing kept: nothing to do
    # large batches are solved without keeping their buffers
    with torch.no_grad():
        net.solve(_affine, torch.randn(2**17, 7, dtype=torch.float64))
    assert net.__dict__.get("_plan_cache") is None
    with pytest.raises(TypeError, match="network is torch.float64 and the target torch.float32"):
        with torch.no_grad():
            net.solve(_affine, z.float())


def test_solve_rejects_a_wrong_target():
    with pytest.raises(ValueError, match="target must have shape"):
        MADE(3, hidden=(4,)).solve(_affine, torch.zeros(2, 4))


def test_solve_block_is_per_instance_and_checked():
    """Changing a MADE's block size rebuilds its in-place plan (the same solution up to rounding);
    a block size that is not a positive integer is refused with what was expected."""
    net = _random_made(9, (12, 10), 2, "random")
    z = torch.randn(6, 9, dtype=torch.float64)
    with torch.no_grad():
        ref = net.solve(_affine, z, naive=True)[0]
        for block in (2, 5, 9, 100, np.int64(4)):
            net.solve_block = block
            torch.testing.assert_close(net.solve(_affine, z)[0], ref, atol=1e-12, rtol=1e-12)
            assert net.__dict__["_plan_cache"].key[-1] == block
        assert MADE.solve_block == 16  # the class default is untouched
        for bad in (0, -3, 2.5, True, "8"):
            net.solve_block = bad
            with pytest.raises(ValueError, match="solve_block must be a positive integer"):
                net.solve(_affine, z)
    with torch.enable_grad(), pytest.raises(ValueError, match="solve_block must be a positive integer"):
        net.solve(_affine, z)  # the autograd path refuses it too, though it does not use blocks
    del net.solve_block  # back to the class default
    with torch.no_grad():
        torch.testing.assert_close(net.solve(_affine, z)[0], ref, atol=1e-12, rtol=1e-12)


def test_solve_sees_every_write_to_the_weights():
    """The in-place solver keeps its sorted copy of the weights while the parameters are unchanged
    (compared by value on a CPU); any write must be seen: in place, through ``.data`` (which does
    not bump the version counter), by replacing ``.data``, by zeroing a bias or one entry."""
    net = _random_made(6, (8, 7), 2, "random")
    z = torch.randn(4, 6, dtype=torch.float64)

    def agree():
        with torch.no_grad():
            x, out = net.solve(_affine, z)
            x_ref, out_ref = net.solve(_affine, z, naive=True)
        torch.testing.assert_close(x, x_ref, atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(out, out_ref, atol=1e-12, rtol=1e-12)
        return x

    last = agree()
    lins = net._linears()
    writes = [
        lambda: lins[0].weight.data.mul_(1.5),
        lambda: lins[2].weight.data.__setitem__((3, 2), 0.7 if float(lins[2].mask[3, 2]) else 0.0),
        lambda: setattr(lins[1].weight, "data", lins[1].weight.data * -0.5),
        lambda: lins[1].bias.data.zero_(),
        lambda: lins[2].bias.data.add_(0.25),
        lambda: net.load_state_dict(_random_made(6, (8, 7), 2, "random").state_dict()),
    ]
    for write in writes:
        write()
        x = agree()
        assert not torch.equal(x, last)  # each write changed the solution, and the solver saw it
        last = x
    x_again = agree()  # nothing written: the kept copy, the same solution
    assert torch.equal(x_again, last)
