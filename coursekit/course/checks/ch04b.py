"""Checks of the exercises of chapter 4's section on residual flows (notebook ``ex04b_residual``): the
truncated power series of ``log det(I + Jac g(z))`` estimated with vector-Jacobian products and a probe
vector (Exercise 4.4), and Banach's fixed-point iteration for the inverse of ``x = z + g(z)`` with its
a-posteriori error bound (Exercise 4.5).

The exercises are numbered 4.4 and 4.5 because the book numbers exercises per chapter in the order of the
table of contents, and this notebook follows ``ex04_coupling`` (4.1-4.3) in chapter 4.

Each check draws several independent problems: the dimension ``p``, the batch size, the number of terms
or iterations, a network ``g`` with random weights rescaled so that its Lipschitz constant is a random
``L < 1`` (``g = W_2 tanh(W_1 z + b_1) + b_2`` with ``||W_2|| ||W_1|| = L``), Gaussian and Rademacher
probes, float64 inputs (precision), float64 inputs and networks that require grad, and float32 inputs.
The expected values are computed by the check before the answer runs, from the exact Jacobian
(matrix powers, float64) or from the iteration written out; the answer runs through :func:`call`
(inputs unchanged, no coursekit residual block or solver), and a last probe runs it on the ``meta``
device (and on CUDA when there is one) to catch results moved to the CPU.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.autograd.functional import jacobian

from ...flows.coupling import MLP
from ..registry import exercise
from ._common import (
    CASES,
    F64,
    batch_size,
    call,
    close,
    draws,
    expect,
    expect_pair,
    fail,
    layer_delegation,
    per_row,
    probes,
    randint,
    random_input,
    randomised,
    require_callable,
    same_gradients,
    tol,
)

__all__ = ["fixed_point_inverse", "logdet_power_series"]

NOTEBOOK = "ex04b_residual"


# ------------------------------------------------------------------ helpers of this section


def _delegation() -> dict[str, str]:
    """The residual block's own maps, estimators and inverse, and coursekit's fixed-point solver."""
    rule = layer_delegation("coursekit.flows.residual", "ResidualBlock")
    rule.update({
        "coursekit.flows.residual.ResidualBlock._log_det": "the residual block's own log-determinant estimators",
        "coursekit.flows.residual.ResidualBlock._explicit": "the residual block's own explicit direction",
        "coursekit.flows.residual.ResidualBlock._implicit": "the residual block's own fixed-point inverse",
        "coursekit.flows._iterative.solve": "coursekit's fixed-point solver",
    })
    return rule


def contraction(g: torch.Generator, p: int, lip: float, dtype, grad: bool) -> nn.Module:
    """``z -> W_2 tanh(W_1 z + b_1) + b_2`` on R^p with random weights scaled so that
    ``||W_2||_2 ||W_1||_2 = lip``: a contraction with Lipschitz constant at most ``lip`` (tanh is 1-Lipschitz)."""
    h = randint(g, p + 1, p + 4)
    net = randomised(MLP(p, p, hidden=(h,), activation=nn.Tanh, zero_init=False), g, scale=0.5, dtype=F64)
    share = float(torch.rand((), generator=g, dtype=F64)) * 0.4 + 0.3  # how lip splits between the layers
    with torch.no_grad():
        for layer, part in ((net[0], share), (net[2], 1.0 - share)):
            layer.weight.mul_(lip**part / torch.linalg.matrix_norm(layer.weight, 2))
    return net.to(dtype).requires_grad_(grad)


def _as_f64(net: nn.Module) -> nn.Module:
    return copy.deepcopy(net).to(F64).requires_grad_(False)


def _jacobians(net: nn.Module, z: Tensor, create_graph: bool = False) -> Tensor:
    """``(n, p, p)``: the Jacobian of the row-wise map ``net`` at each row of ``z``."""
    J = jacobian(lambda t: net(t).sum(0), z, create_graph=create_graph, vectorize=True)
    return J.permute(1, 0, 2)


def _quadratic_forms(J: Tensor, v: Tensor, n_max: int) -> list[Tensor]:
    """``[v^T J^k v for k = 1..n_max]``, one value per row."""
    out, P = [], None
    for _ in range(n_max):
        P = J if P is None else P @ J
        out.append(torch.einsum("ni,nij,nj->n", v, P, v))
    return out


def _traces(J: Tensor, n_max: int) -> list[Tensor]:
    out, P = [], None
    for _ in range(n_max):
        P = J if P is None else P @ J
        out.append(P.diagonal(dim1=1, dim2=2).sum(-1))
    return out


def _series(terms: list[Tensor], n: int, signs: bool = True, over_k: bool = True) -> Tensor:
    total = torch.zeros_like(terms[0])
    for k in range(1, n + 1):
        total = total + (-1.0) ** (k + 1 if signs else 0) / (k if over_k else 1) * terms[k - 1]
    return total


# ------------------------------------------------------------------ 4.4: the power series of log det(I + J_g)


@exercise("4.4", notebook=NOTEBOOK, answer="logdet_series", points=2,
          title="The power series of log det(I + Jac g), with vector-Jacobian products",
          mistakes={
              "no-alternation": "added every term: the signs (-1)^(k+1) are missing",
              "no-1/k": "left out the factor 1/k of the k-th term",
              "sign": "the opposite sign: the series starts with -v^T J v",
              "powers-the-estimate": "raised the first estimate v^T J v to the k-th power instead of using v^T J^k v",
              "off-by-one": "summed one term too few or too many",
              "ignores-probe": "used the exact traces tr(J^k) instead of the probe's v^T J^k v",
          },
          forbidden=_delegation())
def logdet_power_series(answer):
    """``answer(g, z, v, n_terms) -> sum_{k=1}^{n} (-1)^{k+1} / k * v_i^T J_i^k v_i`` for each row ``i``, with
    ``J_i = Jac g(z_i)``; shape ``(n,)``, dtype and device of ``z``, differentiable in ``z`` and the weights of
    ``g``."""
    require_callable(answer, "logdet_series")
    what = "logdet_series(g, z, v, n_terms)"
    gens = list(draws(len(CASES) + 1))
    for case, (g, (dtype, grad)) in enumerate(zip(gens, CASES)):
        p = randint(g, 3, 7)
        n = batch_size(g, (p,))
        n_terms = randint(g, 3, 6)
        lip = 0.6 + 0.3 * float(torch.rand((), generator=g, dtype=F64))
        net = contraction(g, p, lip, dtype, grad)
        z = random_input(g, (n, p), dtype, grad)
        v = torch.randn(n, p, generator=g, dtype=F64)
        if case % 2:  # Rademacher probes in one draw, Gaussian in the others
            v = v.sign()
        v = v.to(dtype)
        J = _jacobians(_as_f64(net), z.detach().to(F64))
        v64 = v.to(F64)
        quad = _quadratic_forms(J, v64, n_terms + 1)
        want = _series(quad, n_terms)
        t = tol(dtype)
        result = call(answer, net, z, v, n_terms, what=what)
        got = per_row(result, "the estimate", n, z, grad)
        if not close(got, want, t):
            if close(got, -want, t):
                fail("the sign of the series is wrong: log(1 + x) = x - x^2/2 + x^3/3 - ..., so the first term, "
                     "v^T J v, counts with a plus sign and the signs alternate from there", mistake="sign")
            if close(got, _series(quad, n_terms, signs=False), t):
                fail("the signs are missing: the terms of log(1 + x) = x - x^2/2 + x^3/3 - ... alternate, "
                     "(-1)^(k+1) / k for the k-th", mistake="no-alternation")
            if close(got, _series(quad, n_terms, over_k=False), t):
                fail("the k-th term must be divided by k: log(1 + x) = x - x^2/2 + x^3/3 - ...",
                     mistake="no-1/k")
            powers = [quad[0] ** k for k in range(1, n_terms + 1)]
            if close(got, _series(powers, n_terms), t):
                fail("the k-th term is v^T J^k v (k vector-Jacobian products, v^T J (J (... J v))), not the k-th "
                     "power of the first estimate (v^T J v)^k: the expectation of a power is not the power of "
                     "the expectation", mistake="powers-the-estimate")
            if close(got, _series(quad, n_terms - 1), t) or close(got, _series(quad, n_terms + 1), t):
                fail("the number of terms is wrong: sum the terms k = 1, ..., n_terms, each one vector-Jacobian "
                     "product further than the previous one (w_k = J^T w_(k-1), w_0 = v)", mistake="off-by-one")
            if close(got, _series(_traces(J, n_terms), n_terms), t):
                fail("you computed the exact traces tr(J^k): the estimator replaces each trace by v^T J^k v with "
                     "the probe v you are given (that is what makes it cheap: no Jacobian matrix at all)",
                     mistake="ignores-probe")
            fail("the estimate is wrong: it should be sum_{k=1}^{n_terms} (-1)^(k+1) / k * (w_k . v) per row, "
                 "with w_0 = v and w_k = Jac g(z)^T w_(k-1), one vector-Jacobian product each")
        if grad:
            Jg = _jacobians(net, z, create_graph=True)
            want_graph = _series(_quadratic_forms(Jg, v, n_terms), n_terms)
            same_gradients(result, want_graph, [z, *net.parameters()], "the estimate", g, dtype)
    g = gens[-1]

    def make(device):
        p = randint(g, 3, 7)
        n = batch_size(g, (p,))
        net = contraction(g, p, 0.8, F64, False).to(device)
        z = random_input(g, (n, p), F64, False).to(device)
        v = torch.randn(n, p, generator=g, dtype=F64).sign().to(device)
        return net, z, v, randint(g, 3, 6)

    for device, (net, z, v, n_terms), result in probes(answer, make, what):
        n, p = z.shape
        got = per_row(result, "the estimate", n, z, None)
        if device != "meta":
            J = _jacobians(_as_f64(net).cpu(), z.detach().to("cpu", F64))
            if not close(got, _series(_quadratic_forms(J, v.to("cpu", F64), n_terms), n_terms), 1e-9):
                fail(f"the estimate is wrong on the {device} device, though right on the CPU: compute on the "
                     "input's device")


# ------------------------------------------------------------------ 4.5: the fixed-point inverse


def _iterates(net, x: Tensor, n: int, start: Tensor | None = None, sign: float = -1.0) -> list[Tensor]:
    """``[z_0, ..., z_n]`` of ``z_{k+1} = x + sign * g(z_k)`` from ``z_0 = start`` (default ``x``)."""
    zs = [x if start is None else start]
    for _ in range(n):
        zs.append(x + sign * net(zs[-1]))
    return zs


@exercise("4.5", notebook=NOTEBOOK, answer="fixed_point", points=2,
          title="Banach's fixed-point inverse of a residual block, with its error bound",
          mistakes={
              "sign": "iterated z <- x + g(z), whose fixed point solves x = z - g(z), not x = z + g(z)",
              "start": "started the iteration elsewhere than at z_0 = x",
              "off-by-one": "made one iteration too few or too many",
              "old-iterate": "returned the previous iterate z_(n-1) instead of z_n",
              "no-factor": "bounded the error by ||z_n - z_(n-1)|| without the factor L / (1 - L)",
              "factor": "used the factor 1 / (1 - L) (the bound for z_(n-1)) instead of L / (1 - L)",
              "squared": "used the squared norm of z_n - z_(n-1)",
          },
          forbidden=_delegation())
def fixed_point_inverse(answer):
    """``answer(g, x, lip, n_iter) -> (z, bound)``: ``z = z_n`` of ``z_{k+1} = x - g(z_k)`` from ``z_0 = x``, shape
    ``(n, p)``, dtype and device of ``x``, differentiable (unrolled) in ``x`` and the weights of ``g``; ``bound`` the
    a-posteriori bound ``lip / (1 - lip) * ||z_n - z_{n-1}||`` per row, shape ``(n,)`` (no gradient required)."""
    require_callable(answer, "fixed_point")
    what = "fixed_point(g, x, lip, n_iter)"
    gens = list(draws(len(CASES) + 1))
    for g, (dtype, grad) in zip(gens, CASES):
        p = randint(g, 3, 7)
        n = batch_size(g, (p,))
        n_iter = randint(g, 3, 7)
        lip = 0.55 + 0.35 * float(torch.rand((), generator=g, dtype=F64))
        net = contraction(g, p, lip, dtype, grad)
        x = random_input(g, (n, p), dtype, grad, scale=2.0)
        zs = _iterates(net, x, n_iter + 1)
        want_z = zs[n_iter]
        net64, x64 = _as_f64(net), x.detach().to(F64)
        with torch.no_grad():
            z64 = _iterates(net64, x64, n_iter + 1)
            plus = _iterates(net64, x64, n_iter, sign=1.0)
            zero = _iterates(net64, x64, n_iter, start=torch.zeros_like(x64))
        step = (z64[n_iter] - z64[n_iter - 1]).norm(dim=1)
        want_bound = lip / (1 - lip) * step
        t = tol(dtype)
        z_raw, b_raw = expect_pair(call(answer, net, x, lip, n_iter, what=what), what, ("z", "the bound"))
        z = expect(z_raw, "z", shape=(n, p), like=x, grad=grad)
        bound = per_row(b_raw, "the bound", n, x, None)
        if not close(z, z64[n_iter], t):
            if close(z, plus[n_iter], t):
                fail("z is wrong: x = z + g(z) means z = x - g(z), so the iteration is z <- x - g(z); with a plus "
                     "sign its fixed point solves another equation", mistake="sign")
            if close(z, zero[n_iter], t):
                fail("z is wrong: start the iteration at z_0 = x (the data point itself), as asked",
                     mistake="start")
            if close(z, z64[n_iter - 1], t):
                if close(bound, want_bound, t):
                    fail("z is one iteration behind its bound: return the last iterate z_n, the one the bound is "
                         "about, not the previous one", mistake="old-iterate")
                fail("z is wrong: it is the iterate after n_iter - 1 steps; make exactly n_iter steps "
                     "z_(k+1) = x - g(z_k) from z_0 = x", mistake="off-by-one")
            if close(z, z64[n_iter + 1], t):
                fail("z is wrong: it is the iterate after n_iter + 1 steps; make exactly n_iter steps "
                     "z_(k+1) = x - g(z_k) from z_0 = x", mistake="off-by-one")
            fail("z is wrong: make n_iter steps of z_(k+1) = x - g(z_k) from z_0 = x and return the last one")
        if not close(bound, want_bound, t):
            factor = lip / (1 - lip)
            if close(bound, step, t):
                fail("the bound is missing its factor: Banach's a-posteriori bound on the error of z_n is "
                     "L / (1 - L) times ||z_n - z_(n-1)||", mistake="no-factor")
            if close(bound, step / (1 - lip), t):
                fail("the bound's factor is the one for z_(n-1): ||z_(n-1) - z*|| <= ||z_n - z_(n-1)|| / (1 - L); "
                     "one more contraction step multiplies by L", mistake="factor")
            if close(bound, factor * step**2, t) or close(bound, step**2, t):
                fail("the bound uses the Euclidean norm of z_n - z_(n-1) per row, not its square",
                     mistake="squared")
            fail("the bound is wrong: per row, L / (1 - L) * ||z_n - z_(n-1)||_2 (the norm over the p coordinates)")
        if grad:
            same_gradients(z_raw, want_z, [x, *net.parameters()], "z", g, dtype)
    g = gens[-1]

    def make(device):
        p = randint(g, 3, 7)
        n = batch_size(g, (p,))
        net = contraction(g, p, 0.7, F64, False).to(device)
        return net, random_input(g, (n, p), F64, False, scale=2.0).to(device), 0.7, randint(g, 3, 7)

    for device, (net, x, lip, n_iter), result in probes(answer, make, what):
        n, p = x.shape
        z_raw, b_raw = expect_pair(result, what, ("z", "the bound"))
        z = expect(z_raw, "z", shape=(n, p), like=x)
        per_row(b_raw, "the bound", n, x, None)
        if device != "meta":
            with torch.no_grad():
                want = _iterates(_as_f64(net).cpu(), x.to("cpu", F64), n_iter)[n_iter]
            if not close(z, want, 1e-9):
                fail(f"z is wrong on the {device} device, though right on the CPU: compute on the input's device")
