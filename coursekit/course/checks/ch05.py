"""Checks of the chapter 5 exercises (notebook ``ex05_autoregressive``): the inverse of a MAF layer
(slide line 576), the reverse and log-Jacobian of the sigmoid autoregressive layer (lines 594-595),
and the IAF's density of its own samples in one pass (line 624).

Each check draws several independent problems: the dimension ``p``, the order of the autoregressive
network (a random permutation, never the identity), its width, the batch size, random MADE weights,
float64 inputs, float64 inputs and networks that require grad (the results must carry the right
gradients: these are the quantities a flow is trained with), and float32 inputs (the dtype follows
the input). The expected values are computed by the check BEFORE the answer runs, from the slides'
formulas; the answer runs through :func:`~._common.call` (inputs unchanged, no coursekit layer), and a
last probe runs it on the ``meta`` device (and on CUDA when there is one) to catch results moved to the
CPU.

The network reaches the answer wrapped in a :class:`~._common.Network`, which counts the passes through
it (5.1 and 5.3 are about doing with ONE pass what the other direction does in ``p``), records what it
was fed and fails the answer when it is fed anything but a whole batch of shape ``(n, p)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ...flows.autoregressive import AffineConditioner
from ...made import MADE
from ..registry import exercise
from ._common import (CASES, F64, Network, batch_size, call, close, draws, expect, expect_pair, fail, layer_delegation,
                      per_row, probes, randint, random_input, randomised, require_callable, same_gradients, tol)

__all__ = ["iaf_own_density", "maf_inverse", "sigmoid_ar_reverse"]

NOTEBOOK = "ex05_autoregressive"
LOG_2PI = math.log(2 * math.pi)


# ------------------------------------------------------------------ helpers of this chapter


def sizes(g: torch.Generator) -> tuple[int, int, list[int], tuple[int]]:
    """(p, n, order, hidden): a dimension, a batch size different from it, an order of the coordinates
    that is not the identity, and the width of the network's hidden layer (at least p - 1, MADE's
    minimum for every conditional to see all its predecessors)."""
    p = randint(g, 3, 7)
    order = torch.randperm(p, generator=g)
    while bool((order == torch.arange(p)).all()):
        order = torch.randperm(p, generator=g)
    return p, batch_size(g, (p,)), order.tolist(), (randint(g, p, p + 6),)


def made_conditioner(g: torch.Generator, p: int, order, hidden, dtype, grad: bool) -> AffineConditioner:
    """A MADE conditioner ``u -> (m, alpha)`` (``alpha`` softly clamped, as in coursekit's MAF and IAF)
    with random weights, in ``dtype``."""
    net = randomised(AffineConditioner(p, hidden=hidden, order=order), g, scale=0.5, dtype=dtype)
    return net.requires_grad_(grad)


class Gate(nn.Module):
    """``u -> (m, sigma)``: one MADE pass gives ``(m_i, a_i)``, and ``sigma_i = sigmoid(a_i + bias)``."""

    def __init__(self, p: int, hidden, order, bias: float):
        super().__init__()
        self.made, self.bias = MADE(p, hidden, n_params=2, order=order), bias

    def forward(self, u: Tensor) -> tuple[Tensor, Tensor]:
        m, a = self.made(u).unbind(-2)
        return m, torch.sigmoid(a + self.bias)


def watched(net: nn.Module, name: str, p: int, reads: str) -> Network:
    """The network as the answer receives it (mistake ``prefix`` when fed anything but a whole batch);
    the passes are counted from here on, so build it after the check's own evaluations."""
    return Network(net, name, p, mistake="prefix",
                   reads=(f"{reads}: a whole batch of shape (n, p), with p = {p} here. The network is masked so "
                          "that column i of its outputs depends only on the coordinates before i in its order: "
                          "one call on the whole batch gives the parameters of every coordinate at once"))


def _one_pass(net: Network, reads: str) -> None:
    if net.passes > 1:
        fail(f"the values are right, but your function called `{net.name}` more than once. Every parameter "
             f"reads {reads}, which is known, so one pass gives all of them: that single pass is the point of "
             "this direction (the other one needs p passes)", mistake="passes")


def _delegation_rule(*layers: str) -> dict[str, str]:
    return layer_delegation("coursekit.flows.autoregressive", *layers)


def _two(answer, args, what: str, n: int, p: int, like: Tensor, grad: bool, second: str):
    """The pair ``(z, second)`` an answer returns: z of shape ``(n, p)``, the second one value per row."""
    z_raw, ld_raw = expect_pair(call(answer, *args, what=what), what, ("z", second))
    z = expect(z_raw, "z", shape=(n, p), like=like, grad=grad)
    ld = per_row(ld_raw, second, n, like, grad)
    return z_raw, ld_raw, z, ld


# ------------------------------------------------------------------ 5.1: the MAF inverse (slide line 576)


@exercise("5.1", notebook=NOTEBOOK, answer="maf_inverse", points=2, title="The inverse of a MAF layer",
          mistakes={
              "scales-up": "multiplied by exp(alpha_i) instead of exp(-alpha_i)",
              "scale-before-shift": "undid the scale before the shift: exp(-alpha_i) x_i - m_i",
              "forgets-shift": "did not subtract m_i",
              "forward-map": "applied the forward map to x, exp(alpha_i) x_i + m_i, instead of undoing it",
              "swaps-outputs": "took the conditioner's outputs the wrong way round (alpha, m)",
              "prefix": "fed the conditioner a part of x instead of the whole batch",
              "logdet-sign": "the log-determinant of the forward map, +sum alpha_i",
              "logdet-not-log": "the determinant (a product or sum of exp(-alpha_i)) instead of its log",
              "passes": "right values, but more than one pass through the network",
          },
          forbidden=_delegation_rule("MAF", "IAF"))
def maf_inverse(answer):
    """``answer(x, conditioner) -> (z, log|det J_{T^{-1}}(x)|)`` for the MAF layer
    ``x_i = exp(alpha_i(x_{<i})) z_i + m_i(x_{<i})``, ``conditioner(u) -> (m, alpha)``; ``z`` of shape
    ``(n, p)``, the log-det ``(n,)``, both of the dtype and device of ``x``, both carrying gradients,
    one pass through the network."""
    require_callable(answer, "maf_inverse")
    what = "maf_inverse(x, conditioner)"
    gens = list(draws(len(CASES) + 1))
    for g, (dtype, grad) in zip(gens, CASES):
        p, n, order, hidden = sizes(g)
        net = made_conditioner(g, p, order, hidden, dtype, grad)
        x = random_input(g, (n, p), dtype, grad, scale=2.0)
        m, alpha = net(x)
        want_z, want_ld = (x - m) * torch.exp(-alpha), -alpha.sum(-1)
        x64, m64, a64, t = x.detach().to(F64), m.detach().to(F64), alpha.detach().to(F64), tol(dtype)
        conditioner = watched(net, "conditioner", p, "x")
        z_raw, ld_raw, z, ld = _two(answer, (x, conditioner), what, n, p, x, grad, "the log-determinant")
        if not close(z, want_z.detach().to(F64), t):
            if close(z, (x64 - m64) * torch.exp(a64), t):
                fail("z is wrong: you multiplied by exp(alpha_i). The layer scales z_i by exp(alpha_i); undoing "
                     "it multiplies by exp(-alpha_i)", mistake="scales-up")
            if close(z, x64 * torch.exp(-a64) - m64, t):
                fail("z is wrong: undo the shift before the scale, z_i = exp(-alpha_i) (x_i - m_i), not "
                     "exp(-alpha_i) x_i - m_i: the forward scaled first, then shifted", mistake="scale-before-shift")
            if close(z, x64 * torch.exp(-a64), t):
                fail("z is wrong: the shift m_i(x_{<i}) is missing; subtract it before undoing the scale",
                     mistake="forgets-shift")
            if close(z, x64 * torch.exp(a64) + m64, t):
                fail("z is wrong: you applied the layer's map to x (scaled and shifted it again); z is what the "
                     "map sends to x, so undo the shift, then the scale", mistake="forward-map")
            if close(z, (x64 - a64) * torch.exp(-m64), t) or close(z, x64 * torch.exp(-m64) - a64, t):
                fail("z is wrong: you took the conditioner's outputs the wrong way round; it returns the pair "
                     "(m, alpha), the shift first and the log-scale second", mistake="swaps-outputs")
            if not conditioner.saw(x):
                fail("z is wrong: evaluate the conditioner at x itself. In a MAF, m_i and alpha_i read the data "
                     "x_{<i} (not the noise z), and x is given: one pass at x gives them all")
            fail("z is wrong: the layer's map does not send your z back to x. Solve x_i = exp(alpha_i) z_i + m_i "
                 "for z_i, with m_i and alpha_i evaluated at x")
        if not close(ld, want_ld.detach().to(F64), t):
            if close(ld, a64.sum(-1), t):
                fail("the sign of the log-determinant is wrong: sum_i alpha_i is log|det| of the forward map; the "
                     "inverse scales by exp(-alpha_i), so its log|det| is minus that", mistake="logdet-sign")
            dets = [torch.exp(s * a64).prod(-1) for s in (1, -1)] + [torch.exp(s * a64).sum(-1) for s in (1, -1)]
            if any(close(ld, d, t) for d in dets):
                fail("the log-determinant is wrong: it is the LOG of |det|, a sum of the logs of the diagonal "
                     "entries exp(-alpha_i), not their product or their sum", mistake="logdet-not-log")
            fail("the log-determinant is wrong: the Jacobian of x -> z is triangular in the layer's order, with "
                 "diagonal entries dz_i/dx_i; sum their logs, one value per row")
        _one_pass(conditioner, "x")
        if grad:
            wrt = [x, *net.parameters()]
            same_gradients(z_raw, want_z, wrt, "z", g, dtype)
            same_gradients(ld_raw, want_ld, wrt, "the log-determinant", g, dtype)
    g = gens[-1]

    def make(device):
        p, n, order, hidden = sizes(g)
        net = made_conditioner(g, p, order, hidden, F64, False).to(device)
        return random_input(g, (n, p), F64, False, scale=2.0).to(device), watched(net, "conditioner", p, "x")

    for device, (x, conditioner), result in probes(answer, make, what):
        n, p = x.shape
        z_raw, ld_raw = expect_pair(result, what, ("z", "the log-determinant"))
        z = expect(z_raw, "z", shape=(n, p), like=x)
        ld = per_row(ld_raw, "the log-determinant", n, x, None)
        if device != "meta":
            with torch.no_grad():
                m, alpha = conditioner.net(x)
            if not (close(z, ((x - m) * torch.exp(-alpha)).to("cpu", F64), 1e-9)
                    and close(ld, (-alpha.sum(-1)).to("cpu", F64), 1e-9)):
                fail(f"the results are wrong on the {device} device, though right on the CPU: compute on the "
                     "input's device")


# ------------------------------------------------------------ 5.2: sigmoid layer, reverse and log-Jacobian (594-595)


def _gate(g: torch.Generator, p: int, order, hidden, dtype, grad: bool) -> Gate:
    """A gate with random weights and a random bias, so that the sigma_i spread over (0, 1) and differ
    clearly from 1/2 (where log sigma = log(1 - sigma))."""
    bias = float(torch.rand((), generator=g, dtype=F64)) * 2.0 - 0.5
    return randomised(Gate(p, hidden, order, bias), g, scale=0.5, dtype=dtype).requires_grad_(grad)


@exercise("5.2", notebook=NOTEBOOK, answer="sigmoid_ar_reverse", points=2,
          title="Reverse and log-Jacobian of the sigmoid autoregressive layer",
          mistakes={
              "shift-not-gated": "subtracted m_i instead of (1 - sigma_i) m_i",
              "multiplies": "multiplied by sigma_i instead of dividing",
              "scale-before-shift": "divided by sigma_i before removing the shift: x_i / sigma_i - (1 - sigma_i) m_i",
              "forward-map": "applied the forward map to x, sigma_i x_i + (1 - sigma_i) m_i, instead of undoing it",
              "prefix": "fed the gate a part of x instead of the whole batch",
              "logdet-sign": "the log-determinant of the reverse map, -sum log sigma_i",
              "log-one-minus": "summed log(1 - sigma_i) instead of log sigma_i",
              "logdet-not-log": "the determinant (a product or sum of the sigma_i) instead of its log",
          },
          forbidden={**_delegation_rule("SigmoidAR"),
                     "coursekit.flows.autoregressive.SigmoidAR._unmix": "the layer's own reverse, coordinate-wise",
                     "coursekit.flows.autoregressive.SigmoidAR._mix": "the layer's own map, coordinate-wise"})
def sigmoid_ar_reverse(answer):
    """``answer(x, gate) -> (z, log|det J_T(z)|)`` for ``T(z)_i = sigma_i z_i + (1 - sigma_i) m_i`` with
    ``m_i, sigma_i`` reading ``x_{<i}``, ``gate(u) -> (m, sigma)``; ``z`` of shape ``(n, p)``, the
    log-Jacobian ``(n,)``, both of the dtype and device of ``x``, both carrying gradients."""
    require_callable(answer, "sigmoid_ar_reverse")
    what = "sigmoid_ar_reverse(x, gate)"
    gens = list(draws(len(CASES) + 1))
    for g, (dtype, grad) in zip(gens, CASES):
        p, n, order, hidden = sizes(g)
        net = _gate(g, p, order, hidden, dtype, grad)
        x = random_input(g, (n, p), dtype, grad, scale=2.0)
        m, sigma = net(x)
        want_z, want_ld = (x - (1 - sigma) * m) / sigma, torch.log(sigma).sum(-1)
        x64, m64, s64, t = x.detach().to(F64), m.detach().to(F64), sigma.detach().to(F64), tol(dtype)
        gate = watched(net, "gate", p, "x")
        z_raw, ld_raw, z, ld = _two(answer, (x, gate), what, n, p, x, grad, "the log-Jacobian")
        if not close(z, want_z.detach().to(F64), t):
            if close(z, (x64 - m64) / s64, t):
                fail("z is wrong: the shift of this layer is (1 - sigma_i) m_i, not m_i: remove "
                     "(1 - sigma_i) m_i from x_i, then divide by sigma_i", mistake="shift-not-gated")
            if close(z, (x64 - (1 - s64) * m64) * s64, t):
                fail("z is wrong: after removing the shift you multiplied by sigma_i; the map multiplied z_i by "
                     "sigma_i, so undoing it divides by sigma_i", mistake="multiplies")
            if close(z, x64 / s64 - (1 - s64) * m64, t):
                fail("z is wrong: remove the shift (1 - sigma_i) m_i before dividing by sigma_i: the map scaled "
                     "z_i first, then added the shift", mistake="scale-before-shift")
            if close(z, s64 * x64 + (1 - s64) * m64, t):
                fail("z is wrong: you applied the layer's map to x; z is what the map sends to x, so solve "
                     "x_i = sigma_i z_i + (1 - sigma_i) m_i for z_i", mistake="forward-map")
            if not gate.saw(x):
                fail("z is wrong: evaluate the gate at x itself. Here m_i and sigma_i read the data x_{<i} "
                     "(not z), and x is given: one pass at x gives them all")
            fail("z is wrong: the layer's map does not send your z back to x. Solve x_i = sigma_i z_i + "
                 "(1 - sigma_i) m_i for z_i, with m_i and sigma_i evaluated at x")
        if not close(ld, want_ld.detach().to(F64), t):
            logs = torch.log(s64)
            if close(ld, -logs.sum(-1), t):
                fail("the sign of the log-Jacobian is wrong: asked is log|det J_T(z)| of the forward map z -> x, "
                     "whose diagonal entries are sigma_i < 1 (the layer contracts volume), not the reverse map's",
                     mistake="logdet-sign")
            if close(ld, torch.log1p(-s64).sum(-1), t) or close(ld, -torch.log1p(-s64).sum(-1), t):
                fail("the log-Jacobian is wrong: dT_i/dz_i = sigma_i (the shift does not read z_i), so sum the "
                     "logs of sigma_i, not of 1 - sigma_i", mistake="log-one-minus")
            dets = [s64.prod(-1), s64.sum(-1), (1 / s64).prod(-1), (1 / s64).sum(-1)]
            if any(close(ld, d, t) for d in dets):
                fail("the log-Jacobian is wrong: it is the LOG of |det|, a sum of the logs of the diagonal "
                     "entries sigma_i, not their product or their sum", mistake="logdet-not-log")
            fail("the log-Jacobian is wrong: the Jacobian of z -> x is triangular in the layer's order, with "
                 "diagonal entries dx_i/dz_i; sum their logs, one value per row")
        if grad:
            wrt = [x, *net.parameters()]
            same_gradients(z_raw, want_z, wrt, "z", g, dtype)
            same_gradients(ld_raw, want_ld, wrt, "the log-Jacobian", g, dtype)
    g = gens[-1]

    def make(device):
        p, n, order, hidden = sizes(g)
        net = _gate(g, p, order, hidden, F64, False).to(device)
        return random_input(g, (n, p), F64, False, scale=2.0).to(device), watched(net, "gate", p, "x")

    for device, (x, gate), result in probes(answer, make, what):
        n, p = x.shape
        z_raw, ld_raw = expect_pair(result, what, ("z", "the log-Jacobian"))
        z = expect(z_raw, "z", shape=(n, p), like=x)
        ld = per_row(ld_raw, "the log-Jacobian", n, x, None)
        if device != "meta":
            with torch.no_grad():
                m, sigma = gate.net(x)
            if not (close(z, ((x - (1 - sigma) * m) / sigma).to("cpu", F64), 1e-9)
                    and close(ld, torch.log(sigma).sum(-1).to("cpu", F64), 1e-9)):
                fail(f"the results are wrong on the {device} device, though right on the CPU: compute on the "
                     "input's device")


# ------------------------------------------------------------------ 5.3: IAF density of its own samples (624)


def _log_normal(u: Tensor) -> Tensor:
    """log N(u; 0, I), one value per row (the check's own, in the dtype of ``u``)."""
    return -0.5 * (u**2).sum(-1) - 0.5 * u.shape[-1] * LOG_2PI


@exercise("5.3", notebook=NOTEBOOK, answer="iaf_log_density", points=2,
          title="IAF: the density of its own samples in one pass",
          mistakes={
              "logdet-sign": "added sum_i alpha_i instead of subtracting it",
              "no-base": "left out the base log-density log q_0(z)",
              "no-logdet": "left out the log-determinant",
              "base-at-x": "evaluated the base density at the sample x = T(z) instead of at z",
              "reads-x": "evaluated alpha at the sample x = T(z) instead of at z",
              "normalising-constant": "a wrong constant: the Gaussian's normalising constant missing or wrong",
              "prefix": "fed the conditioner a part of z instead of the whole batch",
              "passes": "right values, but more than one pass through the network",
          },
          forbidden={**_delegation_rule("IAF", "MAF"),
                     "coursekit.flows.base.Flow.log_prob": "the density of a flow",
                     "coursekit.flows.autoregressive.AutoregressiveFlow.forward_and_log_prob":
                         "the IAF's density of its own samples, this very formula"})
def iaf_own_density(answer):
    """``answer(z, conditioner) -> log p_theta(T_theta(z))`` (one value per row, shape ``(n,)``, the dtype
    and device of ``z``, carrying gradients) for the IAF layer ``x_i = exp(alpha_i(z_{<i})) z_i +
    m_i(z_{<i})`` on a standard Gaussian base, in one pass through the network."""
    require_callable(answer, "iaf_log_density")
    what = "iaf_log_density(z, conditioner)"
    gens = list(draws(len(CASES) + 1))
    for g, (dtype, grad) in zip(gens, CASES):
        p, n, order, hidden = sizes(g)
        net = made_conditioner(g, p, order, hidden, dtype, grad)
        z = random_input(g, (n, p), dtype, grad)
        m, alpha = net(z)
        want = _log_normal(z) - alpha.sum(-1)
        with torch.no_grad():
            x = torch.exp(alpha) * z + m
            alpha_at_x = net(x)[1].to(F64)
        z64, x64, a64, t = z.detach().to(F64), x.to(F64), alpha.detach().to(F64), tol(dtype)
        base, sum_a = _log_normal(z64), a64.sum(-1)
        conditioner = watched(net, "conditioner", p, "z")
        raw = call(answer, z, conditioner, what=what)
        log_p = per_row(raw, "log p(T(z))", n, z, grad)
        if not close(log_p, want.detach().to(F64), t):
            if close(log_p, base + sum_a, t):
                fail("the sign of the log-determinant is wrong: the map stretches volume by exp(sum_i alpha_i), "
                     "so the density of x = T(z) is LOWER than q_0(z) by that factor: subtract sum_i alpha_i",
                     mistake="logdet-sign")
            if close(log_p, -sum_a, t):
                fail("the base log-density is missing: log p(T(z)) = log q_0(z) - log|det J_T(z)|, with "
                     "log q_0(z) = sum_i log N(z_i; 0, 1)", mistake="no-base")
            if close(log_p, base, t):
                fail("the log-determinant is missing: the layer changes volume by |det J_T(z)| = "
                     "exp(sum_i alpha_i(z_{<i})); log p(T(z)) = log q_0(z) - log|det J_T(z)|", mistake="no-logdet")
            if close(log_p, _log_normal(x64) - sum_a, t):
                fail("the base density is evaluated at the wrong point: q_0 is the density of the noise, so "
                     "evaluate it at z, the noise that produced the sample, not at x = T(z)", mistake="base-at-x")
            if close(log_p, base - alpha_at_x.sum(-1), t):
                fail("the log-determinant is evaluated at the wrong point: in an IAF, alpha_i reads the noise "
                     "z_{<i}; evaluate the conditioner at z, not at x = T(z)", mistake="reads-x")
            gap = log_p - want.detach().to(F64)
            if close(gap, gap.mean().expand(n), t):
                fail("log p(T(z)) is off by the same amount in every row (" + ("too high" if gap.mean() > 0 else
                     "too low") + "): a constant is wrong; check the normalising constant of the standard "
                     "Gaussian base, -(1/2) log(2 pi) per coordinate", mistake="normalising-constant")
            if not conditioner.saw(z):
                fail("log p(T(z)) is wrong: evaluate the conditioner at z itself; in an IAF, m_i and alpha_i read "
                     "the noise z_{<i}, and z is given: one pass at z gives them all")
            fail("log p(T(z)) is wrong: use the change of variables, log p(T(z)) = log q_0(z) - log|det J_T(z)|, "
                 "with the triangular Jacobian of the IAF map")
        _one_pass(conditioner, "z")
        if grad:
            same_gradients(raw, want, [z, *net.parameters()], "log p(T(z))", g, dtype)
    g = gens[-1]

    def make(device):
        p, n, order, hidden = sizes(g)
        net = made_conditioner(g, p, order, hidden, F64, False).to(device)
        return random_input(g, (n, p), F64, False).to(device), watched(net, "conditioner", p, "z")

    for device, (z, conditioner), result in probes(answer, make, what):
        log_p = per_row(result, "log p(T(z))", z.shape[0], z, None)
        if device != "meta":
            with torch.no_grad():
                want = _log_normal(z) - conditioner.net(z)[1].sum(-1)
            if not close(log_p, want.to("cpu", F64), 1e-9):
                fail(f"log p(T(z)) is wrong on the {device} device, though right on the CPU: compute on the "
                     "input's device")
