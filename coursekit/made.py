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

import operator
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
    # the Tensor methods: a third cheaper to call than torch.relu_ / torch.tanh_
    if type(act) is nn.ReLU:
        return torch.Tensor.relu_
    if type(act) is nn.Tanh:
        return torch.Tensor.tanh_
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

    ``solve_block`` (a class attribute, settable per instance) is the number of sequential steps
    per block of :meth:`solve`'s in-place solver; any positive integer gives the same solution up
    to rounding, a value ``>= dim`` no blocking. The default, 16, was chosen on one CPU thread at
    p = 64 (``benchmarks/bench_autoregressive.py --only blocks``, ``benchmarks/RESULTS.md``): over
    the runs made, it sampled 1.3 to 1.5 times as fast as unblocked at a batch of 4096, 1.0 to
    1.1 times at 512 and 0.9 to 1.0 times at 64, where the products it adds per block cost about
    what they save (a small batch may prefer ``solve_block = dim``).
    """

    solve_block: int = 16

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
                act = activation()
                if type(act) is nn.ReLU:  # onto the masked product's own output: no copy, same values
                    act.inplace = True
                layers.append(act)
            layers.append(MaskedLinear(mask))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).unflatten(-1, (self.n_params, self.dim))

    def solve(self, update, target: Tensor, naive: bool = False, outputs: bool = True) -> tuple[Tensor, Tensor | None]:
        """Solve ``u_i = update(MADE(u)_i, target_i)`` for every ``i``, in the order; ``u`` and ``MADE(u)``
        (``None`` instead of ``MADE(u)`` with ``outputs=False``, which saves gathering them).

        ``update(raw, t)`` is elementwise: ``raw`` holds the ``n_params`` outputs of some coordinates
        along its *first* axis (shape ``(n_params, *t.shape)``) and ``t`` the matching entries of
        ``target`` (``(batch, dim)``). A MAF samples with ``update = exp(alpha) z + m``, an IAF
        inverts with ``update = exp(-alpha) (x - m)``. An ``update`` may also carry a method
        ``inplace(scratch)``, which returns a function ``f(rows, t, out)`` that writes the same
        values into ``out`` (``rows``: a tuple of the ``n_params`` output rows; ``scratch``: a row
        of the shape of ``t`` that ``f`` may overwrite); the solver without autograd then calls
        ``f`` at every step instead, which saves the allocations of the out-of-place form. With
        it, an optional ``scale`` (one factor per output parameter) is folded into the last layer,
        so that ``f`` receives ``scale[j] * raw[j]``, and an optional ``fold`` (a number ``c``) adds
        ``c * t`` to the first of those rows inside the output layer's matrix product (a step of
        the form ``(t - shift) * scale`` then needs no subtraction of its own); the returned
        outputs are unscaled and unfolded.

        Output ``i`` reads only the inputs before ``i``, so the solution comes coordinate by
        coordinate. ``naive=True`` takes ``dim`` full passes (after pass ``k`` the first ``k``
        coordinates are exact), the textbook sampler, kept as the reference. The default is
        incremental: with the hidden units sorted by degree, step ``t`` computes only the units of
        degree ``t`` of each layer (the ones that ``u_{1:t}`` has just made final), each from the
        units of degree ``<= t`` below it, and the ``n_params`` outputs of coordinate ``t + 1``.
        Those reads are exactly the unmasked weights, so the ``dim`` steps together make the
        multiply-adds of ONE pass with the masked products skipped (fewer than a dense pass);
        what remains of ``dim`` is the number of small sequential steps. The in-place steps come in
        blocks of ``solve_block``: at the start of a block, what the coordinates and units made
        final so far contribute to every unit and output still to come is added on in one matrix
        product per layer, so that a step reads only what became final within its block (a blocked
        forward substitution: the same multiply-adds, some in larger products). With autograd on (a
        parameter or ``target`` requires a gradient), the steps are assembled out of place and
        the result is differentiable; otherwise they read and write views of buffers that are
        built once per batch size, dtype and device and kept for the next call (see
        :class:`_SolvePlan`), so a step costs a handful of kernel calls and nothing else. The
        incremental solver returns ``u`` (and the outputs) coordinate-major, as the transpose of a
        contiguous ``(dim, batch)`` tensor: the layout its steps write, and the one in which the
        next solve (a MAF's next layer) reads its targets by rows, where a row-major result would
        cost a transposing gather on the way out and another on the way in. Call ``.contiguous()``
        where a row-major tensor is needed (``Flow.sample`` does).

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
            return u, out if outputs else None
        self._check_block()  # with autograd on too, where blocks are not used: reported at once
        grad = torch.is_grad_enabled() and (target.requires_grad or any(q.requires_grad for q in self.parameters()))
        if grad:
            u_steps, out_steps, rank = self._steps_autograd(update, target)
            scale = None
        else:
            with torch.no_grad():
                plan = self._solve_plan(target)
                u_steps, out_steps, scale = plan.run(self, update, target, outputs)
            rank = plan.rank
        # coordinate j was solved at step rank[j]; index_select copies (rows), so no buffer escapes
        u = u_steps.index_select(0, rank).T
        if not outputs:
            return u, None
        out = out_steps.view(self.dim, self.n_params, -1).index_select(0, rank).permute(2, 1, 0)
        if scale is not None:
            out = out / scale[:, None]
        return u, out

    def _check_block(self) -> None:
        block = self.solve_block
        try:  # any integer (a NumPy one too), not a bool, a float or a string
            ok = not isinstance(block, bool) and operator.index(block) >= 1
        except TypeError:
            ok = False
        if not ok:
            raise ValueError(
                f"MADE.solve_block must be a positive integer (steps per block), got {block!r}; "
                "e.g. made.solve_block = made.dim for no blocks, or delete the instance attribute for the default"
            )

    def _solve_plan(self, target: Tensor) -> _SolvePlan:
        key = _SolvePlan.key(self, target)
        plan = self.__dict__.get("_plan_cache")
        if plan is None or plan.key != key:
            plan = _SolvePlan(self, target, key)
            # kept for the next call unless its buffers are large (then rebuilding costs little
            # next to the arithmetic, and holding them would keep memory for nothing)
            self.__dict__["_plan_cache"] = plan if plan.numel <= _SolvePlan.KEEP_NUMEL else None
        return plan

    def clear_solve_buffers(self) -> None:
        """Drop the buffers, views and sorted weights that :meth:`solve` keeps for its last batch
        size, dtype and device (:class:`_SolvePlan`): frees their memory; the next call builds them
        again. The results do not change. A benchmark that times the solver round by round can call
        it between rounds, so that its figures cover several allocations of the buffers (on a CPU
        their placement in memory moves the speed of the small steps by several percent), as the
        calls of code that allocates afresh every time do."""
        self.__dict__.pop("_plan_cache", None)

    def __getstate__(self):
        state = self.__dict__.copy()
        for cache in ("_plan_cache", "_index_cache"):  # rebuilt on demand: not part of the model
            state.pop(cache, None)
        return state

    def _indices(self) -> dict:
        """:func:`_sort_indices` with its index tensors on the order's device, kept per order, so
        that the sequential direction reads nothing back from the device once they exist."""
        order = self.order
        key = (order.data_ptr(), order._version, order.device)
        cached = self.__dict__.get("_index_cache")
        if cached is None or cached[0] != key:
            idx = _sort_indices(self)
            idx = {k: v.to(order.device) if isinstance(v, Tensor) else
                   ([i.to(order.device) for i in v] if k in ("weight", "bias") else v) for k, v in idx.items()}
            cached = (key, idx)
            self.__dict__["_index_cache"] = cached
        return cached[1]

    def _sorted(self) -> tuple[list[Tensor], list[Tensor], list[list[int]], Tensor]:
        """Differentiable weights and biases with hidden units sorted by degree and outputs by step,
        the cumulative unit counts per degree of each hidden layer, and the step of each coordinate
        (:meth:`_indices`)."""
        idx = self._indices()
        linears = self._linears()
        weights = [lin.weight.flatten()[i] for lin, i in zip(linears, idx["weight"])]
        biases = [lin.bias[i] for lin, i in zip(linears, idx["bias"])]
        return weights, biases, idx["starts"], idx["rank"]

    def _steps_autograd(self, update, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # Out of place, so that autograd sees every step: the rows of degree t read the prefix of
        # the layer below (its units of degree <= t, contiguous after sorting).
        p, k, n = self.dim, self.n_params, target.shape[0]
        weights, biases, starts, rank = self._sorted()
        acts = [m for m in self.net if not isinstance(m, MaskedLinear)]
        t_rows = target.T[self.order].unbind(0)
        u_rows, out_rows = [], []
        hidden = [[] for _ in starts]
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
        return torch.stack(u_rows), torch.cat(out_rows), rank

    def _linears(self) -> list[MaskedLinear]:
        return [m for m in self.net if isinstance(m, MaskedLinear)]

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


def _sort_indices(made: MADE) -> dict:
    """Where each weight of ``made`` goes when hidden units are sorted by degree (stably), input
    columns come in generation order and output rows step by step (step ``s``: the ``n_params``
    outputs of the coordinate of degree ``s + 1``). Static for a given order and hidden sizes.

    Returns flat indices into each layer's weight and bias, the cumulative unit counts per degree
    of each hidden layer (``starts[l][d]`` = number of units of degree ``< d``) and the step
    ``rank[j]`` at which coordinate ``j`` is solved.
    """
    p, k = made.dim, made.n_params
    order = made.order.cpu()
    degrees = made_degrees(order, made.hidden)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(p)
    linears = made._linears()
    weight, bias, starts = [], [], []
    cols = order
    for lin, d_h in zip(linears[:-1], degrees[1:]):
        rows = torch.argsort(d_h, stable=True)
        weight.append(rows[:, None] * lin.in_features + cols[None, :])
        bias.append(rows)
        starts.append([0] + torch.bincount(d_h, minlength=p).cumsum(0).tolist())
        cols = rows
    rows = (torch.arange(k)[None, :] * p + order[:, None]).flatten()
    weight.append(rows[:, None] * linears[-1].in_features + cols[None, :])
    bias.append(rows)
    return {"weight": weight, "bias": bias, "starts": starts, "rank": rank}


def _blocked_steps(starts, k, weights, below, outs, acts, out, targets, u, block):
    """The calls of :class:`_SolvePlan`'s steps, in blocks of ``block`` steps: a list of
    ``(products, steps, first)``, one per block.

    Layer ``j`` (the hidden layers, then the head, whose rows come ``k`` per step) has the sorted
    weight ``weights[j]`` (bias in column 0), reads the buffer ``below[j]`` (a ones row, then the
    rows in the order they become final) and writes ``outs[j]``. At step ``t`` it writes its rows
    of that step (the units of degree ``t``; the outputs of coordinate ``t + 1``), which read the
    first ``1 + reads(t)`` rows below. Unblocked, a step reads that whole prefix, which grows with
    ``t``, and from a batch of hundreds reading it costs a step's matrix products time of their own.
    Blocked (a blocked forward substitution, as blocked triangular solvers do it): at the start of
    each block after the first, ``products`` add onto every row still to come the contributions of
    the rows below that have become final since the previous block, one matrix product per layer
    (``(w, x, h, acc)``: ``h += w x`` if ``acc`` else ``h = w x``), and a step of that block then
    reads only the rows below that became final within the block (``(w, x, h, act)``, ``w`` None
    when there are none) and adds them on. In the first block (``first``) every hidden row is
    written afresh; the head's rows always accumulate onto the starting values the solver writes
    into ``out``. Every unmasked weight is still read exactly once per sample.
    """
    p = len(targets)
    rows_at = [(lambda t, s=s: (s[t], s[t + 1])) for s in starts] + [lambda t: (k * t, k * (t + 1))]
    reads = [lambda t: t] + [(lambda t, s=s: s[t + 1]) for s in starts]  # rows below read at step t
    ready = [lambda t: t] + [(lambda t, s=s: s[t]) for s in starts]  # rows below final before step t
    done = [0] * len(weights)  # per layer: columns already added onto every row still to come
    blocks = []
    for b0 in range(0, p, block):
        products = []
        for j, (w, x, h) in enumerate(zip(weights, below, outs)):
            lo, end = rows_at[j](b0)[0], 1 + ready[j](b0)
            if b0 > 0 and end > done[j]:
                if w.shape[0] > lo:
                    products.append((w[lo:, done[j] : end], x[done[j] : end], h[lo:], done[j] > 0 or j == len(starts)))
                done[j] = end
        steps = []
        for t in range(b0, min(p, b0 + block)):
            calls = []
            for j, (w, x, h) in enumerate(zip(weights, below, outs)):
                lo, hi = rows_at[j](t)
                if hi > lo:
                    c0, c1 = done[j], 1 + reads[j](t)
                    calls.append((w[lo:hi, c0:c1] if c1 > c0 else None, x[c0:c1], h[lo:hi], acts[j] if j < len(acts) else None))
            hw, hx, ho = calls.pop()[:3]  # the head (every step has outputs)
            steps.append((tuple(calls), (hw, hx, ho), out[k * t : k * (t + 1)].unbind(0), targets[t], u[t]))
        blocks.append((tuple(products), tuple(steps), b0 == 0))
    return blocks


class _SolvePlan:
    """The state of :meth:`MADE.solve`'s in-place steps for one batch size, dtype and device.

    Buffers, each with a first row of ones (so that a bias is one more column of its weight and
    every step is a plain matrix product, not a product plus a broadcast add): the solution in
    step order, one buffer per hidden layer; then the targets in step order and the raw outputs.
    The weights, sorted as in :func:`_sort_indices` with the bias as column 0, are gathered
    from the parameters again whenever these differ from the copy kept at the last gather
    (compared by value, on a CPU; on a GPU at every call), so training between calls needs no
    invalidation. Per step ``t``, the views that step reads and writes: for each hidden layer,
    its units of degree ``t`` (a range of rows of the sorted weight) against the units of degree
    ``<= t`` below (a prefix of the buffer below), then the outputs of step ``t`` against the
    prefix of the last hidden layer; in blocks of ``made.solve_block`` steps, the part of those
    prefixes that was final before the block began is added on at its start, for all the rows
    still to come at once (:func:`_blocked_steps`). Each view reads only unmasked weights, so no
    mask is applied at all. Creating a view costs about a microsecond, and a network needs several
    hundred: that is why the plan is kept (by the MADE, for its last batch size) rather than
    rebuilt per call.
    """

    KEEP_NUMEL = 1 << 22  # buffers up to 4M numbers (16 MB in float32) stay cached between calls

    @staticmethod
    def key(made: MADE, target: Tensor) -> tuple:
        order = made.order
        return (target.shape[0], target.dtype, target.device, order.data_ptr(), order._version,
                torch.is_inference_mode_enabled(), made.solve_block)

    def __init__(self, made: MADE, target: Tensor, key: tuple):
        p, k, n = made.dim, made.n_params, target.shape[0]
        like = {"dtype": target.dtype, "device": target.device}
        idx = made._indices()
        self.key = key
        self.rank = idx["rank"]
        self.weight_idx = idx["weight"]
        self.bias_idx = [i[:, None] for i in idx["bias"]]
        self.scales: dict[tuple, Tensor] = {}
        self.sources: list | None = None  # copies of the parameters last gathered (CPU only)
        self.scaled: tuple | None = None  # the factors the head's sorted weights hold
        self.weights = [torch.empty(i.shape[0], 1 + i.shape[1], **like) for i in self.weight_idx]
        self.u = torch.empty(1 + p, n, **like)
        self.hidden = [torch.empty(1 + h, n, **like) for h in made.hidden]
        for buf in (self.u, *self.hidden):
            buf[0] = 1.0
        self.targets = torch.empty(p, n, **like)
        self.out = torch.empty(p * k, n, **like)
        self.scratch = torch.empty(n, **like)
        self.numel = sum(b.numel() for b in [self.targets, self.u, self.out, *self.hidden])
        acts = [_inplace(m) for m in made.net if not isinstance(m, MaskedLinear)]
        self.blocks = _blocked_steps(
            idx["starts"], k, self.weights, [self.u, *self.hidden], [h[1:] for h in self.hidden] + [self.out],
            acts, self.out, self.targets, self.u[1:], made.solve_block,
        )

    def _sorted_current(self, linears) -> bool:
        """Whether the sorted weights were gathered from parameters equal to the current ones (on a
        CPU only: there the comparison costs a third of the gathers; on a GPU it would read a
        result back to the host, and the gathers are cheap kernels). By value, so that any write
        to the parameters counts, in place, through ``.data`` or by replacing them."""
        if self.sources is None:
            return False
        for lin, (w, b) in zip(linears, self.sources):
            if not torch.equal(w, lin.weight) or (b is None) != (lin.bias is None):
                return False
            if b is not None and not torch.equal(b, lin.bias):
                return False
        return True

    def _sort(self, linears, layers) -> None:
        """Gather the sorted weights (bias as column 0) of ``layers`` from the parameters."""
        for j in layers:
            lin, w = linears[j], self.weights[j]
            torch.take(lin.weight, self.weight_idx[j], out=w[:, 1:])
            if lin.bias is None:
                w[:, 0].zero_()
            else:
                torch.take(lin.bias, self.bias_idx[j], out=w[:, :1])
        if self.weights[0].device.type == "cpu":
            self.sources = [(lin.weight.detach().clone(), None if lin.bias is None else lin.bias.detach().clone())
                            for lin in linears]
        self.scaled = None

    def run(self, made: MADE, update, target: Tensor, outputs: bool = True) -> tuple[Tensor, Tensor, Tensor | None]:
        """The solution and the raw outputs, both in step order (rows), in the plan's buffers, and
        the factors folded into the outputs (``update.scale``, or None). With ``outputs=False``
        the outputs are left as the steps used them (``update.fold`` not taken back out)."""
        linears = made._linears()
        for lin in linears:
            if lin.weight.dtype != target.dtype:
                raise TypeError(
                    f"MADE.solve: the network is {lin.weight.dtype} and the target {target.dtype}; "
                    "convert one of them (e.g. made.to(target.dtype))"
                )
        inplace = hasattr(update, "inplace")
        scale, fold = None, getattr(update, "fold", None) if inplace else None
        key = tuple(update.scale) if inplace and getattr(update, "scale", None) is not None else None
        if not self._sorted_current(linears):
            self._sort(linears, range(len(linears)))
        elif self.scaled != key:  # the head holds other factors: gathered again
            self._sort(linears, [len(linears) - 1])
        if key is not None:
            scale = self.scales.get(key)
            if scale is None:
                scale = self.scales[key] = torch.tensor(key, dtype=target.dtype).to(target.device)
            if self.scaled != key:
                head = self.weights[-1]
                head.view(-1, scale.numel(), head.shape[1]).mul_(scale[:, None])
        self.scaled = key
        torch.index_select(target.T, 0, made.order, out=self.targets)
        step = update.inplace(self.scratch) if inplace else None
        start = self.out.view(made.dim, made.n_params, -1)
        if fold is None:
            self.out.zero_()  # the outputs accumulate (block by block) onto zeros...
        else:  # ... or onto (c t, 0, ...)
            torch.mul(self.targets, fold, out=start[:, 0])
            start[:, 1:].zero_()
        # Inference mode skips the version counters and view tracking of every kernel call (about
        # a tenth of a step's cost at these sizes); the buffers stay normal tensors, so what the
        # caller gets back is one too. addmm(out=) onto its own input, not addmm_ (which
        # torch.utils.flop_counter does not count); onto another tensor it would copy it first.
        mm, addmm = torch.mm, torch.addmm
        with torch.inference_mode():
            for products, steps, first in self.blocks:
                for w, x, h, acc in products:
                    addmm(h, w, x, out=h) if acc else mm(w, x, out=h)
                for calls, (hw, hx, ho), rows, t_row, u_row in steps:
                    if first:
                        for w, x, h, act in calls:
                            act(mm(w, x, out=h))
                    else:  # onto the sums so far (no new rows below: nothing to add)
                        for w, x, h, act in calls:
                            if w is not None:
                                addmm(h, w, x, out=h)
                            act(h)
                    if hw is not None:
                        addmm(ho, hw, hx, out=ho)
                    if step is None:
                        u_row.copy_(update(ho, t_row))
                    else:
                        step(rows, t_row, u_row)
            if fold is not None and outputs:
                start[:, 0].sub_(self.targets, alpha=fold)  # the outputs, unfolded
        return self.u[1:], self.out, scale
