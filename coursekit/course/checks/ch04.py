"""Checks of the chapter 4 exercises (notebook ``ex04_coupling``): the inverse and log-determinant of
NICE's additive coupling (slide lines 460-461), of NICE's rescaling layer (lines 475-477) and of
Real-NVP's affine coupling (lines 507-508).

Each check draws several independent problems: the dimension ``p``, the split point ``r`` (never
``p // 2``, so that an answer which ignores ``r`` cannot pass), the batch size, random networks,
float64 inputs (precision), float64 inputs and networks that require grad (the results must carry
the right gradients: a flow is trained through its inverse), and float32 inputs (the dtype follows
the input). The expected values are computed by the check BEFORE the answer runs, from the slides'
formulas; the answer runs through :func:`call` (inputs unchanged, no coursekit layer), and a last
probe runs it on the ``meta`` device (and on CUDA when there is one) to catch results moved to the CPU.

The networks reach the answer wrapped in a :class:`~._common.Network` (:func:`conditioning`), which
fails the answer with a clear message when it feeds a network anything but the conditioning block
``x_{1:r}``, and records what each network was fed.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...flows.coupling import MLP
from ..registry import exercise
from ._common import (CASES, F64, Network, batch_size, call, close, draws, expect, expect_pair, fail, layer_delegation,
                      per_row, probes, randint, random_input, randomised, require_callable, same_gradients, tol)

__all__ = ["additive_coupling_inverse", "affine_coupling_inverse", "rescale_inverse"]

NOTEBOOK = "ex04_coupling"


# ------------------------------------------------------------------ helpers of this chapter


def conditioning(net: nn.Module, name: str, r: int) -> Network:
    """One of the layer's networks (``m`` or ``alpha``) as the answer receives it: it reads the
    conditioning block ``x_{1:r}`` (shape ``(n, r)``) and fails the answer (mistake ``split``) when fed
    anything of another width."""
    return Network(net, name, r, mistake="split",
                   reads=(f"the conditioning block x_{{1:r}}: the first r columns of x, `x[:, :r]`, of shape (n, r) "
                          f"with r = {r} here. Split x at the r you are given (not at p // 2 or a fixed index)"))


def coupling_sizes(g: torch.Generator) -> tuple[int, int, int]:
    """(p, r, n): a dimension, a split point that is neither half of p nor p - r (so an answer that
    splits elsewhere, or swaps the blocks, cannot pass), and a batch size different from all three."""
    p = randint(g, 4, 8)
    splits = [r for r in range(1, p) if r not in (p // 2, (p + 1) // 2)]
    r = splits[randint(g, 0, len(splits) - 1)]
    return p, r, batch_size(g, (p, r, p - r))


def network(g: torch.Generator, r: int, out: int, dtype, grad: bool, scale: float = 0.5) -> nn.Module:
    net = randomised(MLP(r, out, hidden=(8,), zero_init=False), g, scale=scale, dtype=dtype)
    return net.requires_grad_(grad)


def data(g: torch.Generator, n: int, p: int, dtype, grad: bool) -> Tensor:
    return random_input(g, (n, p), dtype, grad, scale=2.0)


def _z_parts(z, n: int, p: int, r: int) -> None:
    """Named shape mistakes of a coupling inverse's z, before the generic contract."""
    if isinstance(z, Tensor) and tuple(z.shape) == (n, p - r):
        fail(f"`z` has shape {tuple(z.shape)}: it holds only z_{{r+1:p}}. Return all p coordinates, the copied "
             "block z_{1:r} = x_{1:r} first: torch.cat([..., ...], dim=1)", mistake="drops-copy")


def _copy_block(z: Tensor, x: Tensor, r: int) -> None:
    if not close(z[:, :r], x[:, :r].detach().to(F64), 1e-12):
        fail("z_{1:r} is wrong: the layer copies the first r coordinates, x_{1:r} = z_{1:r}, so the inverse "
             "copies them back unchanged, z_{1:r} = x_{1:r}", mistake="copy-block")


def _delegation_rule(layer: str) -> dict[str, str]:
    return layer_delegation("coursekit.flows.coupling", layer)


# ------------------------------------------------------------------ 4.1: additive coupling (lines 460-461)


@exercise("4.1", notebook=NOTEBOOK, answer="additive_inverse", points=2,
          title="Inverse and Jacobian of NICE's additive coupling",
          mistakes={
              "adds-shift": "added m(x_{1:r}) instead of subtracting it",
              "forgets-shift": "returned x_{r+1:p} unchanged (no shift undone)",
              "drops-copy": "returned only z_{r+1:p}, without the copied block z_{1:r}",
              "copy-block": "changed the copied block z_{1:r}",
              "split": "fed m something else than x_{1:r} (ignored r, or swapped the blocks)",
              "logdet-nonzero": "a non-zero log-determinant (the layer preserves volume)",
          },
          forbidden=_delegation_rule("AdditiveCoupling"))
def additive_coupling_inverse(answer):
    """``answer(x, m, r) -> (z, log|det J_{T^{-1}}(x)|)`` for ``x_{1:r} = z_{1:r}``,
    ``x_{r+1:p} = z_{r+1:p} + m(z_{1:r})``; ``z`` of shape ``(n, p)``, the log-det ``(n,)``, both of
    the dtype and device of ``x``, ``z`` carrying gradients."""
    require_callable(answer, "additive_inverse")
    what = "additive_inverse(x, m, r)"
    gens = list(draws(len(CASES) + 1))
    for g, (dtype, grad) in zip(gens, CASES):
        p, r, n = coupling_sizes(g)
        net = network(g, r, p - r, dtype, grad)
        x = data(g, n, p, dtype, grad)
        shift = net(x[:, :r])
        want = torch.cat([x[:, :r], x[:, r:] - shift], dim=1)
        m = conditioning(net, "m", r)  # watches the passes from here on: the answer's only
        x64, shift64, t = x.detach().to(F64), shift.detach().to(F64), tol(dtype)
        z_raw, ld_raw = expect_pair(call(answer, x, m, r, what=what), what, ("z", "the log-determinant"))
        _z_parts(z_raw, n, p, r)
        z = expect(z_raw, "z", shape=(n, p), like=x, grad=grad)
        ld = per_row(ld_raw, "the log-determinant", n, x, None)
        if not close(z, want.detach().to(F64), t):
            _copy_block(z, x, r)
            zb, xb = z[:, r:], x64[:, r:]
            if close(zb, xb + shift64, t):
                fail("z_{r+1:p} is wrong: you added m(x_{1:r}). The layer adds the shift, x_{r+1:p} = "
                     "z_{r+1:p} + m(z_{1:r}); undoing it subtracts it", mistake="adds-shift")
            if close(zb, xb, t):
                fail("z_{r+1:p} is wrong: it is x_{r+1:p} unchanged, but the layer shifted those coordinates "
                     "by m(z_{1:r}); undo the shift", mistake="forgets-shift")
            if not m.saw(x[:, :r]):
                fail("z_{r+1:p} is wrong: m must be evaluated at the copied block, m(z_{1:r}) = m(x_{1:r}) "
                     "(`x[:, :r]`), which is known from x", mistake="split")
            fail("z_{r+1:p} is wrong: the layer's map does not send your z back to x. Solve x_{r+1:p} = "
                 "z_{r+1:p} + m(z_{1:r}) for z_{r+1:p}, with z_{1:r} = x_{1:r}")
        if not bool((ld == 0).all()):
            fail("the log-determinant is wrong: it is zero at every point, whatever m. The Jacobian of the "
                 "additive coupling is unit lower-triangular, [[I, 0], [dm/dz, I]], so its determinant is 1 "
                 "(the layer preserves volume)", mistake="logdet-nonzero")
        if grad:
            same_gradients(z_raw, want, [x, *net.parameters()], "z", g, dtype)
    g = gens[-1]

    def make(device):
        p, r, n = coupling_sizes(g)
        net = network(g, r, p - r, F64, False).to(device)
        return data(g, n, p, F64, False).to(device), conditioning(net, "m", r), r

    for device, (x, m, r), result in probes(answer, make, what):
        n, p = x.shape
        z_raw, ld_raw = expect_pair(result, what, ("z", "the log-determinant"))
        z = expect(z_raw, "z", shape=(n, p), like=x)
        per_row(ld_raw, "the log-determinant", n, x, None)
        if device != "meta":
            with torch.no_grad():
                want = torch.cat([x[:, :r], x[:, r:] - m.net(x[:, :r])], dim=1)
            if not close(z, want.to("cpu", F64), 1e-9):
                fail(f"z is wrong on the {device} device, though right on the CPU: compute on the input's device")


# ------------------------------------------------------------------ 4.2: rescaling layer (lines 475-477)


def _scales(g: torch.Generator, p: int, dtype, grad: bool) -> tuple[Tensor, Tensor]:
    """``(log_s, s)``: log-scales of both signs and clearly away from 0 (some s > 1, some < 1)."""
    mag = 0.3 + 0.9 * torch.rand(p, generator=g, dtype=F64)
    sign = torch.ones(p, dtype=F64)
    sign[torch.randperm(p, generator=g)[: p // 2]] = -1.0
    log_s = (sign * mag).to(dtype).requires_grad_(grad)
    return log_s, log_s.exp()


@exercise("4.2", notebook=NOTEBOOK, answer="rescale_inverse", points=1,
          title="Inverse and Jacobian of NICE's rescaling layer",
          mistakes={
              "multiplies": "multiplied by s instead of dividing",
              "logdet-sign": "the log-determinant of the forward map, +sum log s_i",
              "logdet-no-log": "summed or multiplied the s_i themselves, not their logs",
          },
          forbidden=_delegation_rule("Rescale"))
def rescale_inverse(answer):
    """``answer(x, s) -> (z, log|det J_{T^{-1}}(x)|)`` for ``T(z)_i = s_i z_i`` with ``s_i > 0``; ``z``
    of shape ``(n, p)``, the log-det ``(n,)``, both of the dtype and device of ``x``, both carrying
    gradients (``s`` is a trained parameter)."""
    require_callable(answer, "rescale_inverse")
    what = "rescale_inverse(x, s)"
    gens = list(draws(len(CASES) + 1))
    for g, (dtype, grad) in zip(gens, CASES):
        p = randint(g, 3, 8)
        n = batch_size(g, (p,))
        log_s, s = _scales(g, p, dtype, grad)
        x = data(g, n, p, dtype, grad)
        want_z = x / s
        want_ld = -torch.log(s).sum().expand(n)
        x64, s64, t = x.detach().to(F64), s.detach().to(F64), tol(dtype)
        z_raw, ld_raw = expect_pair(call(answer, x, s, what=what), what, ("z", "the log-determinant"))
        z = expect(z_raw, "z", shape=(n, p), like=x, grad=grad)
        ld = per_row(ld_raw, "the log-determinant", n, x, grad)
        if not close(z, want_z.detach().to(F64), t):
            if close(z, x64 * s64, t):
                fail("z is wrong: you multiplied by s. The layer multiplies, x_i = s_i z_i; undoing it divides "
                     "by s_i", mistake="multiplies")
            fail("z is wrong: T(z)_i = s_i z_i does not give back x with your z; solve it for z_i, coordinate "
                 "by coordinate (s has one entry per column of x)")
        if not close(ld, want_ld.detach().to(F64), t):
            lg = torch.log(s64).sum()
            if close(ld, lg.expand(n), t):
                fail("the sign of the log-determinant is wrong: sum_i log s_i is log|det| of the forward map "
                     "z -> s z; the inverse x -> x / s has Jacobian diag(1/s_i), whose log|det| is minus that",
                     mistake="logdet-sign")
            raw = [s64.sum(), s64.prod(), 1 / s64.prod(), (1 / s64).sum()]
            if any(close(ld, sign * v.expand(n), t) for v in raw for sign in (1, -1)):
                fail("the log-determinant is wrong: it is the LOG of |det diag(1/s_i)| = prod_i 1/s_i, i.e. "
                     "a sum of logs of the s_i, not a sum or product of the s_i themselves",
                     mistake="logdet-no-log")
            fail("the log-determinant is wrong: the Jacobian of x -> x / s is diagonal, diag(1/s_i); sum the "
                 "logs of its diagonal entries (one value, the same for every row)")
        if grad:
            same_gradients(z_raw, want_z, [x, log_s], "z", g, dtype)
            same_gradients(ld_raw, want_ld, [x, log_s], "the log-determinant", g, dtype)
    g = gens[-1]

    def make(device):
        p = randint(g, 3, 8)
        n = batch_size(g, (p,))
        _, s = _scales(g, p, F64, False)
        return data(g, n, p, F64, False).to(device), s.to(device)

    for device, (x, s), result in probes(answer, make, what):
        n, p = x.shape
        z_raw, ld_raw = expect_pair(result, what, ("z", "the log-determinant"))
        z = expect(z_raw, "z", shape=(n, p), like=x)
        ld = per_row(ld_raw, "the log-determinant", n, x, None)
        if device != "meta" and not (close(z, (x / s).to("cpu", F64), 1e-9)
                                     and close(ld, (-torch.log(s).sum()).expand(n).to("cpu", F64), 1e-9)):
            fail(f"the results are wrong on the {device} device, though right on the CPU: compute on the "
                 "input's device")


# ------------------------------------------------------------------ 4.3: affine coupling (lines 507-508)


@exercise("4.3", notebook=NOTEBOOK, answer="affine_inverse", points=2,
          title="Inverse and Jacobian of Real-NVP's affine coupling",
          mistakes={
              "scales-up": "multiplied by exp(alpha) instead of exp(-alpha)",
              "scale-before-shift": "undid the scale before the shift: x exp(-alpha) - m",
              "swaps-nets": "used m as the log-scale and alpha as the shift",
              "forgets-shift": "did not subtract m",
              "drops-copy": "returned only z_{r+1:p}, without the copied block z_{1:r}",
              "copy-block": "changed the copied block z_{1:r}",
              "split": "fed m or alpha something else than x_{1:r} (ignored r, or swapped the blocks)",
              "logdet-sign": "the log-determinant of the forward map, +sum alpha_i",
              "logdet-zero": "a zero log-determinant, as for NICE (this layer changes volume)",
          },
          forbidden=_delegation_rule("AffineCoupling"))
def affine_coupling_inverse(answer):
    """``answer(x, m, alpha, r) -> (z, log|det J_{T^{-1}}(x)|)`` for ``x_{1:r} = z_{1:r}``,
    ``x_{r+1:p} = z_{r+1:p} * exp(alpha(z_{1:r})) + m(z_{1:r})``; ``z`` of shape ``(n, p)``, the log-det
    ``(n,)``, both of the dtype and device of ``x``, both carrying gradients."""
    require_callable(answer, "affine_inverse")
    what = "affine_inverse(x, m, alpha, r)"
    gens = list(draws(len(CASES) + 1))
    for g, (dtype, grad) in zip(gens, CASES):
        p, r, n = coupling_sizes(g)
        m_net, a_net = network(g, r, p - r, dtype, grad), network(g, r, p - r, dtype, grad, scale=0.4)
        x = data(g, n, p, dtype, grad)
        shift, a = m_net(x[:, :r]), a_net(x[:, :r])
        m, alpha = conditioning(m_net, "m", r), conditioning(a_net, "alpha", r)
        want_z = torch.cat([x[:, :r], (x[:, r:] - shift) * torch.exp(-a)], dim=1)
        want_ld = -a.sum(-1)
        x64, t = x.detach().to(F64), tol(dtype)
        sh, a64, xb = shift.detach().to(F64), a.detach().to(F64), x64[:, r:]
        z_raw, ld_raw = expect_pair(call(answer, x, m, alpha, r, what=what), what, ("z", "the log-determinant"))
        _z_parts(z_raw, n, p, r)
        z = expect(z_raw, "z", shape=(n, p), like=x, grad=grad)
        ld = per_row(ld_raw, "the log-determinant", n, x, grad)
        if not close(z, want_z.detach().to(F64), t):
            _copy_block(z, x, r)
            zb = z[:, r:]
            if close(zb, (xb - sh) * torch.exp(a64), t):
                fail("z_{r+1:p} is wrong: you multiplied by exp(alpha). The layer scales by exp(alpha(z_{1:r})); "
                     "undoing it multiplies by exp(-alpha(x_{1:r}))", mistake="scales-up")
            if close(zb, xb * torch.exp(-a64) - sh, t):
                fail("z_{r+1:p} is wrong: undo the shift before the scale, z_{r+1:p} = (x_{r+1:p} - m) * "
                     "exp(-alpha), not x_{r+1:p} * exp(-alpha) - m: the forward scaled first, then shifted",
                     mistake="scale-before-shift")
            if close(zb, (xb - a64) * torch.exp(-sh), t) or close(zb, xb * torch.exp(-sh) - a64, t):
                fail("z_{r+1:p} is wrong: you used m as the log-scale and alpha as the shift; in "
                     "x_{r+1:p} = z_{r+1:p} * exp(alpha) + m, alpha scales and m shifts", mistake="swaps-nets")
            if close(zb, xb * torch.exp(-a64), t):
                fail("z_{r+1:p} is wrong: the shift m(x_{1:r}) is missing; subtract it before undoing the "
                     "scale", mistake="forgets-shift")
            if not (m.saw(x[:, :r]) and alpha.saw(x[:, :r])):
                fail("z_{r+1:p} is wrong: m and alpha must be evaluated at the copied block, z_{1:r} = x_{1:r} "
                     "(`x[:, :r]`), which is known from x", mistake="split")
            fail("z_{r+1:p} is wrong: the layer's map does not send your z back to x. Solve x_{r+1:p} = "
                 "z_{r+1:p} * exp(alpha) + m for z_{r+1:p}, with alpha and m evaluated at x_{1:r} = z_{1:r}")
        if not close(ld, want_ld.detach().to(F64), t):
            if close(ld, a64.sum(-1), t):
                fail("the sign of the log-determinant is wrong: sum_i alpha_i is log|det| of the forward map; "
                     "the inverse scales by exp(-alpha_i), so log|det J_{T^{-1}}(x)| = -sum_i alpha_i(x_{1:r})",
                     mistake="logdet-sign")
            if bool((ld == 0).all()):
                fail("the log-determinant is wrong: unlike NICE's coupling this layer changes volume; the "
                     "diagonal block of its Jacobian is diag(exp(-alpha_i)), not the identity", mistake="logdet-zero")
            fail("the log-determinant is wrong: the Jacobian of the inverse is block-triangular with diagonal "
                 "(1, ..., 1, exp(-alpha_1), ..., exp(-alpha_{p-r})); sum the logs of the diagonal entries, "
                 "one value per row")
        if grad:
            wrt = [x, *m_net.parameters(), *a_net.parameters()]
            same_gradients(z_raw, want_z, wrt, "z", g, dtype)
            same_gradients(ld_raw, want_ld, wrt, "the log-determinant", g, dtype)
    g = gens[-1]

    def make(device):
        p, r, n = coupling_sizes(g)
        m_net, a_net = network(g, r, p - r, F64, False).to(device), network(g, r, p - r, F64, False).to(device)
        x = data(g, n, p, F64, False).to(device)
        return x, conditioning(m_net, "m", r), conditioning(a_net, "alpha", r), r

    for device, (x, m, alpha, r), result in probes(answer, make, what):
        n, p = x.shape
        m_net, a_net = m.net, alpha.net
        z_raw, ld_raw = expect_pair(result, what, ("z", "the log-determinant"))
        z = expect(z_raw, "z", shape=(n, p), like=x)
        ld = per_row(ld_raw, "the log-determinant", n, x, None)
        if device != "meta":
            with torch.no_grad():
                a = a_net(x[:, :r])
                want = torch.cat([x[:, :r], (x[:, r:] - m_net(x[:, :r])) * torch.exp(-a)], dim=1)
            if not (close(z, want.to("cpu", F64), 1e-9) and close(ld, (-a.sum(-1)).to("cpu", F64), 1e-9)):
                fail(f"the results are wrong on the {device} device, though right on the CPU: compute on the "
                     "input's device")
