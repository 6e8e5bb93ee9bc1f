"""Checks of the chapter 6 exercises (notebook ``ex06_ebm``): the Monte Carlo estimates of the
gradient and the Hessian of log Z(theta) (Proposition 1, slide lines 719-721), the ULA step, ULA's
stationary variance on a Gaussian target, and the loss of Algorithm 1.

Every exercise asks for a deterministic function of its inputs (the noise of the ULA step is an
argument, ``z``), so every check is exact: the answer is compared, up to floating-point rounding
(relative 1e-9 in float64, 1e-4 in float32), with the formula evaluated by the check on the same
inputs. No Monte Carlo tolerance is involved, so no plausible wrong answer (a sign, a missing
factor 2, a sum for a mean, a divisor n - 1) can hide inside one. The inputs are drawn afresh on
every run (:func:`~coursekit.course.checks._common.draws`): sample sizes, numbers of parameters,
shapes, step sizes, variances, energies, batch sizes and dtypes change between problems, and one
problem carries autograd graphs whose gradients must flow through the answer. Each check also
probes the "meta" device (the result must stay on its input's device) and CUDA when present.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from ..registry import exercise
from ._common import call, cuda_devices, draws, expect, fail, randint, require_callable, stays_on_meta, uniform

__all__ = ["grad_log_z", "hess_log_z", "ula_step", "ula_variance", "algorithm1_loss"]

NOTEBOOK = "ex06_ebm"
F64, F32 = torch.float64, torch.float32
TOL = {F64: 1e-9, F32: 1e-4}


# ------------------------------------------------------------------ helpers of this chapter


def _log_uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return math.exp(uniform(g, math.log(lo), math.log(hi)))


def _near(a: torch.Tensor, b: torch.Tensor, tol: float) -> bool:
    """``a`` (the answer, float64 copy) agrees with ``b`` (float64) within ``tol``, relative to the
    size of ``b`` as a whole (so a small entry of a large result is not held to more digits than the
    dtype carries)."""
    a, b = a.to(F64), b.to(F64)
    return a.shape == b.shape and bool((a - b).abs().max() <= tol * (1 + b.abs().max())) if b.numel() else a.shape == b.shape


def _graph_kept(inputs: dict[str, torch.Tensor], before: dict[str, tuple]) -> None:
    """Fail (in-place) if the answer cut an input off its graph in place (``x.detach_()``,
    ``x.requires_grad_(False)``): the values are unchanged, but the caller's tensor is not."""
    for name, t in inputs.items():
        if (t.requires_grad, t.grad_fn) != before[name]:
            fail(f"your function changed its input `{name}` in place: it cut it off the autograd graph "
                 f"(`{name}.detach_()` or `{name}.requires_grad_(False)` change the caller's tensor). Use "
                 f"`{name}.detach()`, which returns a new tensor", mistake="in-place")


def _keeps_graph(result, what: str) -> None:
    """Fail (contract) if ``result`` is a tensor cut off the graph of inputs that require grad."""
    if isinstance(result, torch.Tensor) and result.grad_fn is None and not result.requires_grad:
        fail(f"{what} returned a tensor detached from the autograd graph of its inputs (.detach(), .item(), "
             ".numpy(), torch.tensor(...) or torch.no_grad() on the way): keep it a torch expression of the "
             "inputs, so that a caller can differentiate through it", mistake="contract")


def _graph_state(inputs: dict[str, torch.Tensor]) -> dict[str, tuple]:
    return {name: (t.requires_grad, t.grad_fn) for name, t in inputs.items()}


def _attached(t: torch.Tensor) -> torch.Tensor:
    """``t`` as a non-leaf tensor that requires grad (so an in-place edit is allowed by autograd and
    seen by :func:`call`, and the result of a differentiable answer has a ``grad_fn``)."""
    return t.clone().requires_grad_(True) * 1


# ------------------------------------------------------------------ 6.1 and 6.2: Proposition 1


def _gradients(g: torch.Generator, dtype, device="cpu", grad=False, d_min=1):
    """Per-sample gradients grad_U (n, d) with a clear non-zero mean and unequal spreads, and
    symmetric per-sample Hessians hess_U (n, d, d); n in [6, 40] and d in [d_min, 4], so n != d."""
    n, d = randint(g, 6, 40), randint(g, d_min, 4)
    loc = (1 + 2 * torch.rand(d, generator=g, dtype=F64)) * torch.where(torch.rand(d, generator=g) < 0.5, -1.0, 1.0)
    scale = 0.5 + torch.rand(d, generator=g, dtype=F64)
    mix = torch.eye(d, dtype=F64) + 0.5 * torch.randn(d, d, generator=g, dtype=F64)
    grad_U = loc + (scale * torch.randn(n, d, generator=g, dtype=F64)) @ mix
    a = torch.randn(n, d, d, generator=g, dtype=F64)
    hess_U = (a + a.transpose(1, 2)) / 2 + torch.randn(d, d, generator=g, dtype=F64).expand(n, d, d) * 2
    hess_U = (hess_U + hess_U.transpose(1, 2)) / 2
    # sizes from a tenth to ten times one, so that no clipping or hard-coded constant matches
    grad_U, hess_U = grad_U * _log_uniform(g, 0.1, 10.0), hess_U * _log_uniform(g, 0.1, 10.0)
    grad_U, hess_U = grad_U.to(device=device, dtype=dtype), hess_U.to(device=device, dtype=dtype)
    if grad:
        grad_U, hess_U = _attached(grad_U), _attached(hess_U)
    return grad_U, hess_U


_GRAD_MISTAKES = {
    "sign": "the sign is wrong (returned +E[grad U] instead of -E[grad U])",
    "sum": "summed over the samples instead of averaging",
    "axis": "averaged over the parameter axis (dim 1) instead of the samples (dim 0)",
    "scale": "a multiple of the average: divided by something other than the number of samples",
}


@exercise("6.1", notebook=NOTEBOOK, answer="grad_log_Z", points=2,
          title="The gradient of log Z (Proposition 1)", mistakes=_GRAD_MISTAKES, forbidden={})
def grad_log_z(answer):
    """Exact comparison with -grad_U.mean(0) on three draws of (n, d) (two float64, one float32 whose
    input carries a graph), then CUDA and meta probes."""
    require_callable(answer, "grad_log_Z")
    gens = list(draws(3))
    cases = [(gens[0], F64, "cpu", False), (gens[1], F64, "cpu", False), (gens[2], F32, "cpu", True)]
    cases += [(gens[0], F64, dev, False) for dev in cuda_devices()]
    for i, (g, dtype, device, grad) in enumerate(cases):
        grad_U, _ = _gradients(torch.Generator().manual_seed(int(g.initial_seed())), dtype, device, grad,
                               d_min=2 if i == 0 else 1)
        n, d = grad_U.shape
        G = grad_U.detach().to("cpu", F64)
        exact = -G.mean(0)
        result = call(answer, grad_U, what="grad_log_Z(grad_U)")
        if isinstance(result, torch.Tensor) and tuple(result.shape) == (n,):
            fail("your estimate has one entry per sample: average over the samples (dim 0 of grad_U, "
                 "an expectation under p_theta), keeping one entry per parameter", mistake="axis")
        if grad:
            _keeps_graph(result, "grad_log_Z(grad_U)")
        got = expect(result, "grad_log_Z(grad_U)", shape=(d,), like=grad_U, grad=grad,
                     hint="one entry per parameter theta_j")
        tol = TOL[dtype]
        if _near(got, exact, tol):
            continue
        if _near(got, -exact, tol):
            fail("wrong sign: Z = int exp(-U), so differentiating it brings down -grad_theta U; your estimate "
                 "points the opposite way", mistake="sign")
        if _near(got, n * exact, tol) or _near(got, -n * exact, tol):
            fail("your estimate grows with the number of samples: it is an expectation under p_theta, so "
                 "average over the samples (do not sum)", mistake="sum")
        c = float((got * exact).sum() / (exact * exact).sum())
        if _near(got, c * exact, tol):
            fail("your estimate is a multiple of the right one: " + ("it points the opposite way and " if c < 0 else "")
                 + ("it is too large" if abs(c) > 1 else "it is too small")
                 + ". Divide the sum over the samples by their number n, read from grad_U", mistake="scale")
        fail("this is not the Monte Carlo estimate of grad log Z: write grad Z / Z, recognise an expectation "
             "under p_theta, and estimate it by an average over the rows of grad_U")
    stays_on_meta(answer, torch.empty(7, 3, device="meta", dtype=F64), what="grad_log_Z(grad_U)")


_HESS_MISTAKES = {
    "missing-covariance": "left out the covariance term (returned -E[hess U] only)",
    "uncentred": "used the second moment E[grad U grad U^T] instead of the covariance",
    "sign": "a sign is wrong in -E[hess U] + Cov(grad U)",
    "bessel": "divided by n - 1 (torch.cov's default) instead of n",
    "sum": "summed over the samples instead of averaging",
}


@exercise("6.2", notebook=NOTEBOOK, answer="hess_log_Z", points=3,
          title="The Hessian of log Z (Proposition 1)", mistakes=_HESS_MISTAKES, forbidden={})
def hess_log_z(answer):
    """Exact comparison with -mean(hess_U) + Cov(grad_U) (divisor n) on three draws of (n, d)."""
    require_callable(answer, "hess_log_Z")
    gens = list(draws(3))
    cases = [(gens[0], F64, "cpu", False), (gens[1], F64, "cpu", False), (gens[2], F32, "cpu", True)]
    cases += [(gens[0], F64, dev, False) for dev in cuda_devices()]
    for i, (g, dtype, device, grad) in enumerate(cases):
        grad_U, hess_U = _gradients(torch.Generator().manual_seed(int(g.initial_seed())), dtype, device, grad,
                                    d_min=2 if i == 0 else 1)
        n, d = grad_U.shape
        G, H = grad_U.detach().to("cpu", F64), hess_U.detach().to("cpu", F64)
        c = G - G.mean(0)
        cov, second = c.T @ c / n, G.T @ G / n
        minus_h = -H.mean(0)
        exact = minus_h + cov
        result = call(answer, grad_U, hess_U, what="hess_log_Z(grad_U, hess_U)")
        if grad:
            _keeps_graph(result, "hess_log_Z(grad_U, hess_U)")
        got = expect(result, "hess_log_Z(grad_U, hess_U)", shape=(d, d), like=grad_U, grad=grad,
                     hint="a d x d matrix, d the number of parameters")
        tol = TOL[dtype]
        if _near(got, exact, tol):
            continue
        if _near(got, minus_h, tol):
            fail("the covariance term is missing: differentiating p_theta = exp(-U)/Z in theta gives a second "
                 "term, which involves the gradients grad_U", mistake="missing-covariance")
        if _near(got, minus_h + second, tol):
            fail("centre the gradients: the second term is a covariance, E[(grad U - E grad U)(grad U - E grad U)^T], "
                 "not the second moment E[grad U grad U^T]", mistake="uncentred")
        if any(_near(got, s * minus_h + t * cov, tol) for s, t in ((-1, 1), (-1, -1), (1, -1))) \
                or any(_near(got, s * minus_h + t * second, tol) for s, t in ((-1, 1), (-1, -1), (1, -1))):
            fail("a sign is wrong: the Hessian term enters with a minus sign and the covariance term with a plus "
                 "sign (it is positive semi-definite: log Z is convex when U is linear in theta)", mistake="sign")
        if _near(got, minus_h + cov * n / (n - 1), tol):
            fail("the exercise asks for averages: divide the covariance by n, not n - 1 (torch.cov divides by "
                 "n - 1 unless correction=0)", mistake="bessel")
        if any(_near(got, a * minus_h + b * cov, tol) for a, b in ((n, n), (n, 1), (1, n), (n, n * n))):
            fail("your result grows with the number of samples: both terms are expectations under p_theta, "
                 "so average over the samples (do not sum)", mistake="sum")
        fail("this is not the Monte Carlo estimate of the Hessian of log Z: differentiate "
             "grad log Z = -E_theta[grad U] once more (product rule, and the derivative of p_theta), then "
             "replace each expectation by an average over the samples")
    stays_on_meta(answer, torch.empty(7, 3, device="meta", dtype=F64), torch.empty(7, 3, 3, device="meta", dtype=F64),
                  what="hess_log_Z(grad_U, hess_U)")


# ------------------------------------------------------------------ 6.3: one ULA step


_ULA_MISTAKES = {
    "plus-sign": "stepped up the energy, x + gamma grad U (the slip of line 11 of Algorithm 1)",
    "drift-scale": "the drift is not gamma times the gradient",
    "no-noise": "left out the noise (gradient descent)",
    "noise-sqrt-gamma": "scaled the noise by sqrt(gamma) instead of sqrt(2 gamma)",
    "noise-scale": "scaled the noise by something other than sqrt(2 gamma)",
    "noise-sign": "subtracted the noise given instead of adding it",
}


def _ula_inputs(g: torch.Generator, dtype, device="cpu", grad=False, kind=None):
    """x, grad_U, z of shape (n, p) (kind 0) or (n, 2, k) (kind 1, images), and a step gamma."""
    n = randint(g, 3, 9)
    kind = randint(g, 0, 1) if kind is None else kind
    shape = [(n, randint(g, 1, 4)), (n, 2, randint(g, 2, 3))][kind]
    x, grad_U, z = (torch.randn(shape, generator=g, dtype=F64).to(device=device, dtype=dtype) for _ in range(3))
    gamma = _log_uniform(g, 0.005, 0.8)
    if grad:
        x, grad_U = _attached(x), _attached(grad_U)
    return x, grad_U, gamma, z


def _fit(got: torch.Tensor, parts: list[torch.Tensor]):
    """Least-squares coefficients of ``got`` on ``parts`` (all float64) and whether the fit is exact."""
    A = torch.stack([p.reshape(-1) for p in parts], 1)
    coef = torch.linalg.lstsq(A, got.reshape(-1, 1)).solution.reshape(-1)
    exact = bool(((A @ coef - got.reshape(-1)).abs().max()) <= 1e-6 * (1 + got.abs().max()))
    return coef.tolist(), exact


@exercise("6.3", notebook=NOTEBOOK, answer="ula_step", points=2,
          title="One step of the Unadjusted Langevin Algorithm", mistakes=_ULA_MISTAKES,
          forbidden={
              "coursekit.ebm.ula": "coursekit's ULA sampler",
              "coursekit.ebm.langevin.ula": "coursekit's ULA sampler",
              "coursekit.ebm.decoupled_langevin": "coursekit's Langevin sampler",
              "coursekit.ebm.langevin.decoupled_langevin": "coursekit's Langevin sampler",
          })
def ula_step(answer):
    """Exact comparison with x - gamma grad_U + sqrt(2 gamma) z, the noise z given by the check, on
    three draws of (shape, gamma); a wrong answer that is linear in (x, grad_U, z) is diagnosed from
    its coefficients."""
    require_callable(answer, "ula_step")
    gens = list(draws(3))
    cases = [(gens[0], F64, "cpu", False), (gens[1], F64, "cpu", False), (gens[2], F32, "cpu", True)]
    cases += [(gens[0], F64, dev, False) for dev in cuda_devices()]
    what = "ula_step(x, grad_U, gamma, z)"
    for i, (g, dtype, device, grad) in enumerate(cases):
        x, grad_U, gamma, z = _ula_inputs(torch.Generator().manual_seed(int(g.initial_seed())), dtype, device, grad,
                                          kind=i if i < 2 else None)
        X, G, Z = (t.detach().to("cpu", F64) for t in (x, grad_U, z))
        exact = X - gamma * G + math.sqrt(2 * gamma) * Z
        result = call(answer, x, grad_U, gamma, z, what=what)
        if grad:
            _keeps_graph(result, what)
        got = expect(result, what, shape=x.shape, like=x, grad=grad, hint="the new state, shaped like x")
        tol = TOL[dtype]
        if _near(got, exact, tol):
            continue
        (cx, cg, cz), linear = _fit(got, [X, G, Z])
        ctol = 100 * tol

        def is_(c, v):
            return abs(c - v) <= ctol * (1 + abs(v))

        if linear and is_(cx, 1.0):
            if not is_(cg, -gamma):
                if is_(cg, gamma):
                    fail("wrong sign of the drift: p is proportional to exp(-U), so ULA steps DOWN the energy, "
                         "against the gradient (the plus sign in line 11 of the slides' Algorithm 1 is a slip)",
                         mistake="plus-sign")
                fail("the drift term is wrong: over a time gamma the drift -grad U moves x by gamma times the "
                     "gradient, against it" + (" (your drift does not depend on gamma)" if is_(cg, -1.0) else ""),
                     mistake="drift-scale")
            if is_(cz, 0.0):
                fail("the noise is missing: without the Gaussian term this is gradient descent, which goes to a "
                     "mode of p instead of sampling it", mistake="no-noise")
            if is_(cz, -math.sqrt(2 * gamma)):
                fail("you subtract the noise z you were given: the step adds it (in law the same, but the step "
                     "is a function of z, and the caller's chains must be reproducible)", mistake="noise-sign")
            if is_(cz, math.sqrt(gamma)):
                fail("the noise is too small by a factor sqrt(2): the Brownian part sqrt(2) dB_t over a time "
                     "gamma is Gaussian with variance 2 gamma, not gamma", mistake="noise-sqrt-gamma")
            fail("the noise has the wrong scale (too " + ("large" if abs(cz) > math.sqrt(2 * gamma) else "small")
                 + " for this gamma): the Brownian part sqrt(2) dB_t over a time gamma is Gaussian with variance "
                 "2 gamma", mistake="noise-scale")
        if linear:
            fail("the step must start from the current state x: the new state is x plus a drift step plus noise")
        fail("this is not the Euler-Maruyama step of the Langevin diffusion: the new state is x, plus the drift "
             "over a time gamma, plus the Brownian increment over a time gamma written with z")
    meta = torch.empty(4, 3, device="meta", dtype=F64)
    stays_on_meta(answer, meta, torch.empty_like(meta), 0.1, torch.empty_like(meta), what=what)


# ------------------------------------------------------------------ 6.4: ULA's stationary variance


_VAR_MISTAKES = {
    "unbiased": "returned s2: ULA with a fixed step is biased",
    "first-order": "returned the first-order expansion s2 + gamma/2",
    "sign": "the bias has the wrong direction (a variance below s2)",
    "noise-variance": "took the noise variance gamma instead of 2 gamma (half the answer)",
    "ar-not-squared": "solved v = a v + 2 gamma instead of v = a^2 v + 2 gamma",
    "std": "returned the standard deviation instead of the variance",
    "approximate": "an approximation (e.g. a simulation) instead of the exact value",
}


def _number(value, what: str) -> float:
    if isinstance(value, torch.Tensor) and value.dim() == 0:
        return float(value.detach().to("cpu", F64))
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        fail(f"{what} must return a number for numbers s2 and gamma, got {type(value).__name__}", mistake="contract")
    value = float(value)
    if not math.isfinite(value):
        fail(f"{what} returned NaN or an infinite value, for a step gamma below the stability limit",
             mistake="contract")
    return value


def _variance_inputs(g: torch.Generator, k: int, lo: float = 0.005, hi: float = 0.9):
    """``k`` pairs (s2, gamma) with s2 in [1/10, 10] and gamma/(2 s2) in [lo, hi] (stable: below 1)."""
    s2 = [_log_uniform(g, 0.1, 10.0) for _ in range(k)]
    gamma = [2 * s * _log_uniform(g, lo, hi) for s in s2]
    return s2, gamma


@exercise("6.4", notebook=NOTEBOOK, answer="ula_variance", points=2, title="The bias of ULA on a Gaussian target",
          mistakes=_VAR_MISTAKES,
          forbidden={"coursekit.ebm.ula_stationary_variance": "coursekit's closed form of this variance",
                     "coursekit.ebm.langevin.ula_stationary_variance": "coursekit's closed form of this variance"})
def ula_variance(answer):
    """Exact comparison with s2 / (1 - gamma / (2 s2)): two pairs of Python floats, then tensors of
    pairs (float32, and float64 carrying a graph)."""
    require_callable(answer, "ula_variance")
    gens = list(draws(4))
    what = "ula_variance(s2, gamma)"
    cases = []
    # a small step first (where an expansion in gamma is accurate, so it is recognised as one), then a
    # step near the stability limit gamma = 2 s2 (where the bias is large), then steps of all sizes
    ranges = [(0.005, 0.05), (0.3, 0.9), (0.005, 0.9), (0.005, 0.9)]
    for i, g in enumerate(gens):
        k = 1 if i < 2 else randint(g, 2, 5)
        s2, gamma = _variance_inputs(g, k, *ranges[i])
        if i < 2:
            cases.append((s2[0], gamma[0], None, False))
        else:
            dtype, grad = (F32, False) if i == 2 else (F64, True)
            S, Gm = torch.tensor(s2, dtype=dtype), torch.tensor(gamma, dtype=dtype)
            cases.append((_attached(S) if grad else S, _attached(Gm) if grad else Gm, dtype, grad))
    for dev in cuda_devices():
        s2, gamma = _variance_inputs(gens[0], 3)
        cases.append((torch.tensor(s2, dtype=F64, device=dev), torch.tensor(gamma, dtype=F64, device=dev), F64, False))
    for s2, gamma, dtype, grad in cases:
        tensor = dtype is not None
        S = s2.detach().to("cpu", F64) if tensor else torch.tensor([s2], dtype=F64)
        Gm = gamma.detach().to("cpu", F64) if tensor else torch.tensor([gamma], dtype=F64)
        exact = S / (1 - Gm / (2 * S))
        result = call(answer, s2, gamma, what=what)
        if tensor:
            if grad:
                _keeps_graph(result, what)
            got = expect(result, what, shape=s2.shape, like=s2, grad=grad,
                         hint="for tensors s2 and gamma, one variance per entry")
        else:
            got = torch.tensor([_number(result, what)], dtype=F64)
        tol = TOL[dtype or F64]
        if _near(got, exact, tol):
            continue
        a = 1 - Gm / S
        named = [
            (S, "unbiased", "ULA is biased: with a fixed step its stationary variance is not s2. Write the step as "
                            "an AR(1) recursion and solve for its stationary variance"),
            (S + Gm / 2, "first-order", "this is only the first-order expansion in gamma; the fixed point of the "
                                        "variance recursion gives the exact value"),
            (S / (1 + Gm / (2 * S)), "sign", "the bias goes the wrong way: the noise of each step adds variance, "
                                             "so ULA's stationary variance is larger than s2"),
            (exact / 2, "noise-variance", "your variance is too small by a factor 2: the noise sqrt(2 gamma) Z "
                                          "has variance 2 gamma"),
            (2 * Gm / (1 - a), "ar-not-squared", "the variance of a X is a^2 Var(X): the fixed point solves "
                                                 "v = a^2 v + 2 gamma"),
            (exact.sqrt(), "std", "you returned a standard deviation: the exercise asks for the variance"),
        ]
        for value, tag, message in named:
            if _near(got, value, tol):
                fail(message, mistake=tag)
        # an approximation gets the bias right to leading order: its error is a small part of the bias
        if bool(((got - exact).abs() <= 0.1 * (exact - S).abs()).all()):
            fail("your value is close but not exact: derive the stationary variance in closed form (a simulation "
                 "or an expansion in gamma only approximates it)", mistake="approximate")
        fail(("too large" if bool((got > exact).all()) else "too small" if bool((got < exact).all()) else "wrong")
             + ": write one ULA step on U(x) = x^2/(2 s2) as X' = a X + sqrt(2 gamma) Z and solve for the "
             "variance v that the step leaves unchanged")
    stays_on_meta(answer, torch.empty(3, device="meta", dtype=F64), torch.empty(3, device="meta", dtype=F64), what=what)


# ------------------------------------------------------------------ 6.5: the loss of Algorithm 1


class _MLPEnergy(nn.Module):
    """U(x) = tanh(x W + b) . w + softplus(c) |x|^2 / 2 on flattened x."""

    def __init__(self, p: int, hidden: int, g: torch.Generator):
        super().__init__()
        self.W = nn.Parameter(torch.randn(p, hidden, generator=g, dtype=F64) / math.sqrt(p))
        self.b = nn.Parameter(torch.randn(hidden, generator=g, dtype=F64))
        self.w = nn.Parameter(torch.randn(hidden, generator=g, dtype=F64))
        self.c = nn.Parameter(torch.randn((), generator=g, dtype=F64))

    def forward(self, x):
        x = x.flatten(1)
        return torch.tanh(x @ self.W + self.b) @ self.w + nn.functional.softplus(self.c) * (x**2).sum(-1) / 2


class _QuadraticEnergy(nn.Module):
    """U(x) = |(x - m) L|^2 / 2 + e on flattened x (e: an offset, seen only by the penalty)."""

    def __init__(self, p: int, hidden: int, g: torch.Generator):
        super().__init__()
        self.m = nn.Parameter(torch.randn(p, generator=g, dtype=F64))
        self.L = nn.Parameter(torch.eye(p, dtype=F64) + 0.3 * torch.randn(p, p, generator=g, dtype=F64))
        self.e = nn.Parameter(torch.randn((), generator=g, dtype=F64))

    def forward(self, x):
        return (((x.flatten(1) - self.m) @ self.L) ** 2).sum(-1) / 2 + self.e


_LOSS_MISTAKES = {
    "sign": "the contrastive term has the wrong sign",
    "not-detached": "differentiated through the negatives (x_neg not detached)",
    "energy-detached": "detached the energy U(x_neg) instead of the samples x_neg",
    "no-penalty": "left out the energy penalty",
    "penalty-difference": "penalised the squared difference of the mean energies",
    "square-of-mean": "penalised the squares of the mean energies instead of the mean of the squares",
    "penalty-one-batch": "penalised the energies of one batch only",
    "sum": "summed over the batch instead of averaging",
}


def _loss_problem(g: torch.Generator, dtype, device="cpu", kind=None):
    """An energy with random parameters (kind 0: an MLP on vectors; kind 1: a quadratic on (2, k)
    images, with batches of different sizes), data x_pos, and negatives x_neg that still carry a
    graph to the parameters (one differentiated gradient step, as if the sampler had been
    backpropagated)."""
    kind = randint(g, 0, 1) if kind is None else kind
    event = [(randint(g, 1, 4),), (2, randint(g, 2, 3))][kind]
    p = math.prod(event)
    U = [_MLPEnergy, _QuadraticEnergy][kind](p, randint(g, 2, 5), g).to(device=device, dtype=dtype)
    n_pos = randint(g, 4, 12)
    n_neg = n_pos + randint(g, 1, 4) if kind == 1 else randint(g, 4, 12)  # batch sizes may differ
    x_pos = (torch.randn(n_pos, *event, generator=g, dtype=F64) + 0.5).to(device=device, dtype=dtype)
    z = torch.randn(n_neg, *event, generator=g, dtype=F64).to(device=device, dtype=dtype).requires_grad_(True)
    (score,) = torch.autograd.grad(U(z).sum(), z, create_graph=True)
    x_neg = z.detach() - 0.2 * score
    reg = [0.0, uniform(g, 0.1, 1.0)][randint(g, 0, 1)]
    return U, x_pos, x_neg, reg


def _loss_and_grad(loss: torch.Tensor, params: list[torch.Tensor]):
    grads = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
    flat = torch.cat([(torch.zeros_like(p) if gr is None else gr).reshape(-1) for p, gr in zip(params, grads)])
    return loss.detach().to("cpu", F64).reshape(()), flat.detach().to("cpu", F64)


@exercise("6.5", notebook=NOTEBOOK, answer="algorithm1_loss", points=2, title="The loss of Algorithm 1",
          mistakes=_LOSS_MISTAKES,
          forbidden={"coursekit.ebm.contrastive_loss": "coursekit's loss of Algorithm 1",
                     "coursekit.ebm.train.contrastive_loss": "coursekit's loss of Algorithm 1"})
def algorithm1_loss(answer):
    """The value and the gradient in theta of the loss, compared exactly with those of the formula, on
    three draws of (energy, event shape, batch sizes, reg) whose negatives carry a graph to theta."""
    require_callable(answer, "algorithm1_loss")
    gens = list(draws(3))
    # a problem with reg > 0, one with reg = 0 (the penalty must vanish), one in float32
    cases = [(gens[0], F64, "cpu", 0, True), (gens[1], F64, "cpu", 1, False), (gens[2], F32, "cpu", None, True)]
    cases += [(gens[0], F64, dev, None, None) for dev in cuda_devices()]
    what = "algorithm1_loss(U, x_pos, x_neg, reg)"
    for g, dtype, device, kind, penalised in cases:
        g = torch.Generator().manual_seed(int(g.initial_seed()))
        U, x_pos, x_neg, reg = _loss_problem(g, dtype, device, kind)
        if penalised is not None:
            reg = uniform(g, 0.1, 1.0) if penalised else 0.0
        params = list(U.parameters())
        ep, en, en_attached = U(x_pos), U(x_neg.detach()), U(x_neg)

        def variant(pos, neg, contrastive=True, penalty="both", reduce=torch.mean):
            c = reduce(pos) - reduce(neg) if contrastive else -(reduce(pos) - reduce(neg))
            pen = {"both": reduce(pos**2) + reduce(neg**2), "none": 0 * reduce(pos), "pos": reduce(pos**2),
                   "neg": reduce(neg**2), "diff": (reduce(pos) - reduce(neg)) ** 2,
                   "square-of-mean": reduce(pos) ** 2 + reduce(neg) ** 2}[penalty]
            return _loss_and_grad(c + reg * pen, params)

        exact = variant(ep, en)
        graphs = _graph_state({"x_pos": x_pos, "x_neg": x_neg})
        result = call(answer, U, x_pos, x_neg, reg, what=what)
        _graph_kept({"x_pos": x_pos, "x_neg": x_neg}, graphs)
        if any(p.grad is not None for p in params):
            fail("your function backpropagates (calls .backward() or an optimiser): return the loss, and let "
                 "the training loop differentiate it", mistake="contract")
        if isinstance(result, torch.Tensor) and result.grad_fn is None and not result.requires_grad:
            fail(f"{what} returned a loss that is detached from the autograd graph (.detach(), .item(), "
                 "torch.tensor(...) or torch.no_grad() on the way): it has no gradient to train the energy with",
                 mistake="contract")
        expect(result, what, shape=(), like=x_pos, grad=True, hint="one number to backpropagate")
        got = _loss_and_grad(result, params)
        tol = TOL[dtype]

        def same(a, b):
            return _near(a[0], b[0], tol) and _near(a[1], b[1], tol)

        if same(got, exact):
            continue
        if bool(got[1].abs().max() == 0):
            fail("the loss does not depend on the energy's parameters: compute it from U(x_pos) and U(x_neg)")
        checks = [
            (variant(ep, en, contrastive=False), "sign",
             "wrong sign: minimising the loss must push the data's energy DOWN and the samples' energy UP"),
            ((-exact[0], -exact[1]), "sign",
             "wrong sign: minimising the loss must push the data's energy DOWN and the samples' energy UP"),
            (variant(ep, en_attached), "not-detached",
             "the negatives must be treated as fixed samples: detach x_neg (line 14 of Algorithm 1 does not "
             "differentiate through the sampler), i.e. evaluate U on x_neg.detach()"),
            (variant(ep, en.detach()), "energy-detached",
             "you detached the energy of the negatives, so their term has no gradient: detach the samples "
             "instead, U(x_neg.detach()), and keep the energy in the graph"),
            (variant(ep, en, penalty="none"), "no-penalty",
             "with reg > 0 the energy penalty of Du & Mordatch is missing: reg times the mean squared "
             "energy of both batches"),
            (variant(ep, en, penalty="diff"), "penalty-difference",
             "the penalty is on the squares of the energies themselves (each batch), not on the squared "
             "difference of their means"),
            (variant(ep, en, penalty="square-of-mean"), "square-of-mean",
             "the penalty averages the squared energies (the mean of the squares), not the square of the mean"),
            (variant(ep, en, penalty="pos"), "penalty-one-batch",
             "the penalty covers the energies of BOTH batches, data and negatives"),
            (variant(ep, en, penalty="neg"), "penalty-one-batch",
             "the penalty covers the energies of BOTH batches, data and negatives"),
            (variant(ep, en, reduce=torch.sum), "sum",
             "your loss grows with the batch size: average the energies over each batch (do not sum)"),
            (variant(ep, en, penalty="none", reduce=torch.sum), "sum",
             "your loss grows with the batch size: average the energies over each batch (do not sum)"),
        ]
        for target, tag, message in checks:
            if same(got, target):
                if tag == "no-penalty" and reg == 0:
                    continue
                fail(message, mistake=tag)
        if _near(got[0], exact[0], tol):
            fail("the loss has the right value but the wrong gradient in theta: keep the energies of both "
                 "batches in the graph and cut only the path through the sampler (x_neg)")
        fail("the value of the loss is wrong: it is the mean energy of the data minus the mean energy of the "
             "negatives, plus reg times the mean squared energies of both batches")
    meta = _MLPEnergy(2, 3, torch.Generator().manual_seed(0)).to("meta")
    stays_on_meta(answer, meta, torch.empty(5, 2, device="meta", dtype=F64),
                  torch.empty(6, 2, device="meta", dtype=F64), 0.5, what=what)
