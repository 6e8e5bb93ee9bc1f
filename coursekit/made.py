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

__all__ = ["MADE", "MaskedLinear", "made_masks", "make_order"]


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


def made_masks(order: Tensor, hidden: Sequence[int], n_params: int = 1) -> list[Tensor]:
    """The binary masks (``(out, in)``, like ``nn.Linear.weight``) of a MADE network.

    Hidden degrees cycle through ``1..p-1`` (deterministically, so that every degree is
    represented when a layer has at least ``p-1`` units). The last mask has ``n_params * p`` rows,
    laid out as ``n_params`` blocks of ``p`` (block ``k`` holds parameter ``k`` of every input).
    """
    p = order.numel()
    d_in = torch.empty(p, dtype=torch.long)
    d_in[order] = torch.arange(1, p + 1)  # degree = rank in the generation order
    masks, d_prev = [], d_in
    for h in hidden:
        # p = 1: the single output has no predecessor, hidden units get degree 0 and see nothing.
        d_h = torch.arange(h) % max(p - 1, 1) + min(1, p - 1)
        masks.append(d_h[:, None] >= d_prev[None, :])
        d_prev = d_h
    d_out = d_in.repeat(n_params)
    masks.append(d_out[:, None] > d_prev[None, :])
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
