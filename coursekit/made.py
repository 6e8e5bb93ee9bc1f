"""MADE: masked autoencoders whose outputs are autoregressive in their inputs.

A MADE network (Germain, Gregor, Murray and Larochelle, ICML 2015) is a multilayer perceptron whose weight matrices are
multiplied by fixed binary masks, so that output ``i`` depends only on the inputs that come
before ``i`` in a chosen order. One pass of the network therefore computes every conditional
parameter of an autoregressive model ``p(x) = prod_i p(x_i | x_{<i})`` at once.

Masks come from *degrees*. With an order (the sequence of input indices in generation order)
input ``j`` gets degree ``d(j)`` = its rank in the order, in ``1..p``; hidden unit ``k`` of every
layer gets a degree ``m(k)`` in ``1..p-1``; a connection is kept when

* input ``j`` -> hidden ``k``:  ``d(j) <= m(k)``,
* hidden ``k`` -> hidden ``k'``:  ``m(k) <= m'(k')``,
* hidden ``k`` -> output for input ``i``:  ``m(k) < d(i)``  (strict: output ``i`` never sees ``x_i``).

The product of the masks is then zero on and above the "diagonal" of the order, which is the
autoregressive property. The output with degree 1 sees no input: it is a learned constant.

The same degrees make the *sequential* direction cheap (:meth:`MADE.solve`): a hidden unit of
degree ``d`` reads only inputs of degree ``<= d``, so once the first ``t`` inputs of the order
are known, every unit of degree ``<= t`` is final and never needs recomputing. Solving
``u_i = f_i(MADE(u)_i)`` coordinate by coordinate therefore costs the arithmetic of *one* pass,
spread over ``p`` small steps, instead of ``p`` passes.

>>> import torch
>>> net = MADE(3, hidden=(8,), n_params=2, order="reversed")
>>> net(torch.randn(5, 3)).shape          # (batch, n_params, dim)
torch.Size([5, 2, 3])
>>> net.connectivity().int().tolist()     # [i, j] = 1 when output i may depend on input j
[[0, 1, 1], [0, 0, 1], [0, 0, 0]]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MADE", "MaskedLinear", "made_degrees", "made_masks", "make_order"]


def make_order(dim: int, order="natural", generator: torch.Generator | None = None) -> Tensor:
    """The generation order of ``dim`` variables, as a permutation of ``0..dim-1``.

    ``order`` is ``"natural"`` (0, 1, ..., p-1: the raster scan of an image stored row by row),
    ``"reversed"``, ``"random"`` (a random permutation, reproducible with ``generator``) or an
    explicit sequence of indices.
    """
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    if isinstance(order, str):
        if order == "natural":
            return torch.arange(dim)
        if order == "reversed":
            return torch.arange(dim - 1, -1, -1)
        if order == "random":
            return torch.randperm(dim, generator=generator)
        raise ValueError(f"order={order!r}: expected 'natural', 'reversed', 'random' or a permutation of 0..{dim - 1}")
    perm = torch.as_tensor(order, dtype=torch.long).flatten()
    if perm.numel() != dim or not torch.equal(torch.sort(perm).values, torch.arange(dim)):
        raise ValueError(f"order {perm.tolist()} is not a permutation of 0..{dim - 1} (each index exactly once)")
    return perm.clone()


def made_degrees(order: Tensor, hidden: Sequence[int]) -> list[Tensor]:
    """The degrees of the units of a MADE network: inputs (rank in ``order``, ``1..p``), then each
    hidden layer (cycling through ``1..p-1``; all ``0`` when ``p = 1``)."""
    p = order.numel()
    d_in = torch.empty(p, dtype=torch.long)
    d_in[order] = torch.arange(1, p + 1)  # degree = rank in the generation order
    # p = 1: the single output has no predecessor, hidden units get degree 0 and see nothing.
    return [d_in] + [torch.arange(h) % max(p - 1, 1) + min(1, p - 1) for h in hidden]


def made_masks(order: Tensor, hidden: Sequence[int], n_params: int = 1) -> list[Tensor]:
    """The binary masks (``(out, in)``, like ``nn.Linear.weight``) of a MADE network.

    Hidden degrees cycle through ``1..p-1`` (deterministically, so that every degree is
    represented when a layer has at least ``p-1`` units). The last mask has ``n_params * p`` rows,
    laid out as ``n_params`` blocks of ``p`` (block ``k`` holds parameter ``k`` of every input).
    """
    degrees = made_degrees(order, hidden)
    masks = [d_h[:, None] >= d_prev[None, :] for d_prev, d_h in zip(degrees[:-1], degrees[1:])]
    d_out = degrees[0].repeat(n_params)
    masks.append(d_out[:, None] > degrees[-1][None, :])
    return masks


class MaskedLinear(nn.Linear):
    """An affine layer ``y = (W * M) x + b`` with a fixed binary mask ``M`` (a registered buffer).

    The mask is applied with one elementwise product per call and one matrix product, so the
    layer costs what ``nn.Linear`` costs. Masked weights receive a zero gradient.
    """

    def __init__(self, mask: Tensor, bias: bool = True):
        mask = torch.as_tensor(mask)
        if mask.dim() != 2:
            raise ValueError(f"mask must be a 2-D (out_features, in_features) tensor, got shape {tuple(mask.shape)}")
        out_features, in_features = mask.shape
        super().__init__(in_features, out_features, bias=bias)
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)

    def extra_repr(self) -> str:
        kept = int(self.mask.sum())
        return f"{super().extra_repr()}, mask={kept}/{self.mask.numel()} kept"


def _inplace(act: nn.Module):
    """``h <- act(h)`` in place (without a copy for the usual activations)."""
    if type(act) is nn.ReLU:
        return torch.relu_
    if type(act) is nn.Tanh:
        return torch.tanh_
    return lambda h: h.copy_(act(h))


class MADE(nn.Module):
    """Masked autoencoder for distribution estimation (Germain, Gregor, Murray and Larochelle, ICML 2015).

    Maps ``x`` of shape ``(batch, dim)`` to ``(batch, n_params, dim)``: for every input ``i``,
    ``n_params`` numbers (e.g. the mean ``m_i`` and log-scale ``alpha_i`` of a Gaussian
    conditional) that depend only on the inputs before ``i`` in ``order``.

    Args:
        dim: number of variables p.
        hidden: sizes of the hidden layers (at least ``dim - 1`` units each, so that every
            conditional can depend on all its predecessors).
        n_params: outputs per input.
        order: ``"natural"``, ``"reversed"``, ``"random"`` or a permutation of ``0..dim-1``
            (indices in generation order).
        activation: activation module class between layers.
        seed: seeds the random order (only used with ``order="random"``).
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (64, 64),
        n_params: int = 2,
        order="natural",
        activation: type[nn.Module] = nn.ReLU,
        seed: int | None = None,
    ):
        super().__init__()
        if isinstance(hidden, int):
            hidden = (hidden,)
        hidden = tuple(int(h) for h in hidden)
        if any(h < 1 for h in hidden):
            raise ValueError(f"hidden layer sizes must be positive, got {hidden}")
        if dim > 1 and any(h < dim - 1 for h in hidden):
            raise ValueError(
                f"hidden layers {hidden} are too narrow for dim={dim}: each needs at least dim - 1 = {dim - 1} "
                "units, or some conditionals cannot see all their predecessors. Widen the hidden layers."
            )
        if not isinstance(n_params, int) or n_params < 1:
            raise ValueError(f"n_params must be a positive integer, got {n_params!r}")
        gen = None if seed is None else torch.Generator().manual_seed(seed)
        self.dim, self.hidden, self.n_params = dim, hidden, n_params
        self.register_buffer("order", make_order(dim, order, gen))
        masks = made_masks(self.order, hidden, n_params)
        layers: list[nn.Module] = []
        for k, mask in enumerate(masks):
            if k > 0:
                layers.append(activation())
            layers.append(MaskedLinear(mask))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).unflatten(-1, (self.n_params, self.dim))

    def solve(self, update, target: Tensor, naive: bool = False) -> tuple[Tensor, Tensor]:
        """Solve ``u_i = update(MADE(u)_i, target_i)`` for every ``i``, in the order; ``u`` and ``MADE(u)``.

        ``update(raw, t)`` is elementwise: ``raw`` holds the ``n_params`` outputs of some coordinates
        along its *first* axis (shape ``(n_params, *t.shape)``) and ``t`` the matching entries of
        ``target`` (``(batch, dim)``). A MAF samples with ``update = exp(alpha) z + m``, an IAF
        inverts with ``update = exp(-alpha) (x - m)``.

        Output ``i`` reads only the inputs before ``i``, so the solution comes coordinate by
        coordinate. ``naive=True`` takes ``dim`` full passes (after pass ``k`` the first ``k``
        coordinates are exact), the textbook sampler, kept as the reference. The default is
        incremental: with the hidden units sorted by degree, step ``t`` computes only the units of
        degree ``t`` of each layer (the ones that ``u_{1:t}`` has just made final; a unit of degree
        ``d`` reads only units of degree ``<= d`` below it) and the ``n_params`` outputs of
        coordinate ``t + 1``. Every row of every weight matrix is used once, so the ``dim`` steps
        together make exactly the multiply-adds of ONE pass; what remains of ``dim`` is the number
        of small sequential steps. With autograd on (a parameter or ``target`` requires a gradient),
        the steps are assembled out of place and the result is differentiable; otherwise they
        write into preallocated buffers (faster).

        >>> import torch
        >>> net = MADE(4, hidden=(8, 8), n_params=2, order="random", seed=0).double()
        >>> z = torch.randn(3, 4, dtype=torch.float64)
        >>> affine = lambda raw, t: torch.exp(raw[1].tanh()) * t + raw[0]   # x_i = e^{alpha_i} z_i + m_i
        >>> x, out = net.solve(affine, z)
        >>> x_ref, _ = net.solve(affine, z, naive=True)                    # 4 full passes
        >>> torch.allclose(x, x_ref) and torch.allclose(out, net(x))
        True
        """
        if target.dim() != 2 or target.shape[1] != self.dim:
            raise ValueError(f"target must have shape (batch, {self.dim}), got {tuple(target.shape)}")
        if naive:
            u = torch.zeros_like(target)
            for _ in range(self.dim):
                out = self(u)
                u = update(out.movedim(-2, 0), target)
            return u, out
        plan = self._plan(target)
        grad = torch.is_grad_enabled() and (target.requires_grad or any(q.requires_grad for q in self.parameters()))
        steps = self._steps_autograd if grad else self._steps_inplace
        u_steps, out_steps = steps(plan, update, target)
        rank = plan["rank"]  # coordinate j was solved at step rank[j]
        u = u_steps[rank].T.contiguous()
        out = out_steps.view(self.dim, self.n_params, -1)[rank].permute(2, 1, 0).contiguous()
        return u, out

    def _plan(self, like: Tensor) -> dict:
        """Weights with the hidden units sorted by degree and the outputs by step (recomputed per
        call: it costs one gather per layer, and sampling usually runs without gradients, so nothing
        needs caching or invalidating)."""
        p, k = self.dim, self.n_params
        degrees = made_degrees(self.order.cpu(), self.hidden)
        linears = [m for m in self.net if isinstance(m, MaskedLinear)]
        acts = [m for m in self.net if not isinstance(m, MaskedLinear)]
        order = self.order
        rank = torch.empty_like(order)
        rank[order] = torch.arange(p, device=order.device)
        cols = order  # inputs in generation order: input of step s has degree s + 1
        weights, biases, counts = [], [], []
        for lin, d_h in zip(linears[:-1], degrees[1:]):
            perm = torch.argsort(d_h, stable=True).to(order.device)
            w = (lin.weight * lin.mask)[perm][:, cols]
            b = lin.bias[perm] if lin.bias is not None else w.new_zeros(w.shape[0])
            weights.append(w)
            biases.append(b)
            counts.append(torch.bincount(d_h, minlength=p).tolist())  # units of degree 0..p-1
            cols = perm
        lin = linears[-1]
        rows = (torch.arange(k, device=order.device)[None, :] * p + order[:, None]).flatten()  # step-major
        w = (lin.weight * lin.mask)[rows][:, cols]
        b = lin.bias[rows] if lin.bias is not None else w.new_zeros(w.shape[0])
        weights.append(w)
        biases.append(b)
        return {"weights": weights, "biases": biases, "counts": counts, "acts": acts, "rank": rank}

    def _steps_inplace(self, plan: dict, update, target: Tensor) -> tuple[Tensor, Tensor]:
        # Every step multiplies its rows by the WHOLE (zero-initialised) buffer below: the columns
        # not yet computed meet masked (zero) weights, and skipping the column slices saves more
        # time than the extra multiply-adds cost (the steps are latency-bound).
        p, k, n = self.dim, self.n_params, target.shape[0]
        weights, biases, counts, acts = plan["weights"], plan["biases"], plan["counts"], plan["acts"]
        with torch.no_grad():
            t_rows = target.T[self.order].unbind(0)  # target in step order, (n,) each
            u = target.new_zeros(p, n)
            u_rows = u.unbind(0)
            bufs = [target.new_zeros(w.shape[0], n) for w in weights[:-1]]
            layers = []
            for w, b, c, buf, act in zip(weights[:-1], biases[:-1], counts, bufs, acts):
                layers.append((w.split(c), b[:, None].split(c), buf.split(c), c, _inplace(act)))
            out = target.new_zeros(p * k, n)
            heads = (weights[-1].split(k), biases[-1][:, None].split(k), out.split(k))
            for t in range(p):
                below = u
                for (w_t, b_t, h_t, c, act), buf in zip(layers, bufs):
                    if c[t]:
                        act(torch.addmm(b_t[t], w_t[t], below, out=h_t[t]))
                    below = buf
                raw = torch.addmm(heads[1][t], heads[0][t], below, out=heads[2][t])
                u_rows[t].copy_(update(raw, t_rows[t]))
        return u, out

    def _steps_autograd(self, plan: dict, update, target: Tensor) -> tuple[Tensor, Tensor]:
        # Out of place, so that autograd sees every step: the rows of degree t read the prefix of
        # the layer below (its units of degree <= t, contiguous after sorting).
        p, k, n = self.dim, self.n_params, target.shape[0]
        weights, biases, counts, acts = plan["weights"], plan["biases"], plan["counts"], plan["acts"]
        t_rows = target.T[self.order].unbind(0)
        starts = [[0] + torch.tensor(c).cumsum(0).tolist() for c in counts]
        u_rows, out_rows = [], []
        hidden = [[] for _ in counts]
        for t in range(p):
            below = torch.stack(u_rows) if u_rows else target.new_zeros(0, n)
            width = t  # inputs of degree <= t
            for w, b, s, act, h in zip(weights[:-1], biases[:-1], starts, acts, hidden):
                lo, hi = s[t], s[t + 1]
                if hi > lo:
                    h.append(act(torch.addmm(b[lo:hi, None], w[lo:hi, :width], below)))
                below = torch.cat(h) if h else target.new_zeros(0, n)
                width = hi
            raw = torch.addmm(biases[-1][t * k : (t + 1) * k, None], weights[-1][t * k : (t + 1) * k, :width], below)
            out_rows.append(raw)
            u_rows.append(update(raw, t_rows[t]))
        return torch.stack(u_rows), torch.cat(out_rows)

    @property
    def masks(self) -> list[Tensor]:
        """The masks of the layers, input to output (each ``(out, in)``)."""
        return [m.mask for m in self.net if isinstance(m, MaskedLinear)]

    def connectivity(self) -> Tensor:
        """Boolean ``(dim, dim)``: entry ``[i, j]`` is True when output ``i`` may depend on input ``j``
        (a path of unmasked weights joins them). Strictly lower triangular in the order."""
        path = self.masks[0].double()
        for m in self.masks[1:]:
            path = (m.double() @ path).clamp(max=1.0)
        # Output rows come in n_params blocks; any block reaching j counts.
        return path.view(self.n_params, self.dim, self.dim).amax(0) > 0

    def extra_repr(self) -> str:
        order = self.order.tolist()
        shown = order if len(order) <= 10 else order[:5] + ["..."] + order[-2:]
        return f"dim={self.dim}, hidden={self.hidden}, n_params={self.n_params}, order={shown}"
