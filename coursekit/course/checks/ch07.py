"""Checks of the chapter 7 exercises (notebook ``ex07_score_matching``): the regression target of
denoising score matching, Hyvarinen's objective for a given energy, and one MALA step.

Every exercise asks for a deterministic function of its inputs, so every check is exact: the
answer is compared, up to floating-point rounding, with the formula evaluated by the check (in
float64) on the same inputs, drawn afresh on every run (:func:`~coursekit.course.checks._common.draws`):
dimensions, batch sizes, noise levels (a number, or one per row), energies with off-diagonal
Hessians, step sizes, float32 and float64. Plausible wrong answers are recognised by evaluating
their formulas on the same inputs. One case probes the "meta" device (the result must stay on its
input's device), and CUDA is probed when present.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ..registry import exercise
from ._common import (call, cuda_devices, draws, expect, expect_pair, fail, randint, require_callable,
                      stays_on_meta, uniform)

__all__ = ["dsm_target", "hyvarinen_loss", "mala_step"]

NOTEBOOK = "ex07_score_matching"
F64, F32 = torch.float64, torch.float32
TOL = {F64: 1e-9, F32: 1e-4}


def _near(a: torch.Tensor, b: torch.Tensor, tol: float) -> bool:
    a, b = a.to(F64), b.to(F64)
    return a.shape == b.shape and bool((a - b).abs().max() <= tol * (1 + b.abs().max()))


def _flags_kept(inputs: dict[str, torch.Tensor], before: dict[str, tuple]) -> None:
    for name, t in inputs.items():
        if (t.requires_grad, t.grad_fn) != before[name]:
            fail(f"your function changed its input `{name}` in place: it changed its autograd flags "
                 f"(`{name}.requires_grad_()` or `{name}.detach_()` act on the caller's tensor). Use "
                 f"`{name}.detach().requires_grad_(True)`, which makes a new tensor", mistake="in-place")


def _flags(inputs: dict[str, torch.Tensor]) -> dict[str, tuple]:
    return {name: (t.requires_grad, t.grad_fn) for name, t in inputs.items()}


# ------------------------------------------------------------------ 7.1: the DSM target


_DSM_MISTAKES = {
    "sign": "the target points away from the clean point (+(x_noisy - x) / sigma^2)",
    "sigma-not-squared": "divided by sigma instead of sigma^2",
    "noise": "returned the noise z = (x_noisy - x) / sigma instead of the score of the kernel",
    "not-centred": "forgot to subtract the clean point: the score of N(0, sigma^2 I), not of N(x, sigma^2 I)",
}


def _dsm_inputs(g: torch.Generator, dtype, device, per_row: bool, grad: bool):
    n, p = randint(g, 3, 12), randint(g, 1, 5)
    if n == p:
        n += 1
    x = 2 * torch.randn(n, p, generator=g, dtype=F64) + uniform(g, -2, 2)
    # noise levels far from 1, so that sigma, sigma^2 and 1 never coincide
    if per_row:
        sigma = torch.exp(uniform(g, -1.5, 1.5) + 0.5 * torch.randn(n, 1, generator=g, dtype=F64))
        sigma = torch.where((sigma - 1).abs() < 0.2, sigma + 0.5, sigma)
    else:
        sigma = math.exp(uniform(g, 0.3, 1.2) * (1 if uniform(g, 0, 1) < 0.5 else -1))
    x_noisy = x + sigma * torch.randn(n, p, generator=g, dtype=F64)
    x, x_noisy = x.to(device=device, dtype=dtype), x_noisy.to(device=device, dtype=dtype)
    if isinstance(sigma, torch.Tensor):
        sigma = sigma.to(device=device, dtype=dtype)
    if grad:
        x, x_noisy = x.clone().requires_grad_(True) * 1, x_noisy.clone().requires_grad_(True) * 1
    return x, x_noisy, sigma


@exercise("7.1", notebook=NOTEBOOK, answer="dsm_target", points=1,
          title="The regression target of denoising score matching",
          mistakes=_DSM_MISTAKES,
          forbidden={"coursekit.score.dsm_target": "coursekit's DSM target",
                     "coursekit.score.objectives.dsm_target": "coursekit's DSM target"})
def dsm_target(answer):
    """Exact comparison with -(x_noisy - x) / sigma^2 on four draws: sigma a number (float64), one
    per row (float64), float32 inputs carrying a graph; then CUDA and meta probes."""
    require_callable(answer, "dsm_target")
    gens = list(draws(4))
    cases = [(gens[0], F64, "cpu", False, False), (gens[1], F64, "cpu", True, False),
             (gens[2], F32, "cpu", False, True), (gens[3], F64, "cpu", True, True)]
    cases += [(gens[0], F64, dev, True, False) for dev in cuda_devices()]
    what = "dsm_target(x, x_noisy, sigma)"
    for g, dtype, device, per_row, grad in cases:
        x, xn, sigma = _dsm_inputs(g, dtype, device, per_row, grad)
        X, XN = x.detach().to("cpu", F64), xn.detach().to("cpu", F64)
        S = sigma.detach().to("cpu", F64) if isinstance(sigma, torch.Tensor) else float(sigma)
        before = _flags({"x": x, "x_noisy": xn})
        result = call(answer, x, xn, sigma, what=what)
        _flags_kept({"x": x, "x_noisy": xn}, before)
        got = expect(result, what, shape=x.shape, like=x, grad=grad, hint="one target per coordinate, shaped like x")
        tol = TOL[dtype]
        if _near(got, -(XN - X) / S**2, tol):
            continue
        candidates = {
            "sign": (XN - X) / S**2,
            "sigma-not-squared": -(XN - X) / S,
            "noise": (XN - X) / S,
            "not-centred": -XN / S**2,
        }
        messages = {
            "sign": "wrong sign: the score of the kernel N(x, sigma^2 I) at x_noisy points from x_noisy back to "
                    "the clean point x, i.e. against x_noisy - x",
            "sigma-not-squared": "the target is too small for sigma below one and too large above: the log-density "
                                 "of N(x, sigma^2 I) has |x_noisy - x|^2 over 2 sigma^2, so its gradient divides by "
                                 "sigma squared",
            "noise": "you returned the noise z that was added, (x_noisy - x) / sigma; the target is the score of the "
                     "kernel, which is minus z divided by sigma",
            "not-centred": "the kernel is centred at the clean point x: subtract x before dividing (your target is "
                           "the score of a Gaussian centred at zero)",
        }
        for tag, value in candidates.items():
            if _near(got, value, 100 * tol):
                fail(messages[tag], mistake=tag)
        if per_row:
            fail("with one noise level per row (sigma of shape (n, 1)), each row must use its own sigma: write the "
                 "formula with sigma as given, so that it broadcasts over the coordinates")
        fail("the target is the gradient in x_noisy of log N(x_noisy; x, sigma^2 I): a multiple of x_noisy - x")
    meta = torch.empty(5, 3, device="meta", dtype=F64)
    stays_on_meta(answer, meta, torch.empty_like(meta), 0.7, what=what)


# ------------------------------------------------------------------ 7.2: Hyvarinen's objective


class _Energy(nn.Module):
    """U(x) = 1/2 |x M|^2 + sum_k a_k tanh(<w_k, x> + b_k) + c sum_i x_i^4 / 4: non-quadratic, with
    off-diagonal Hessians (so the trace differs from the sum of all second derivatives)."""

    def __init__(self, g: torch.Generator, p: int, dtype):
        super().__init__()
        k = randint(g, 2, 4)
        m = torch.eye(p, dtype=F64) + 0.6 * torch.randn(p, p, generator=g, dtype=F64)
        self.M = nn.Parameter((m * uniform(g, 0.6, 1.5)).to(dtype))
        self.w = nn.Parameter((1.2 * torch.randn(k, p, generator=g, dtype=F64)).to(dtype))
        self.b = nn.Parameter(torch.randn(k, generator=g, dtype=F64).to(dtype))
        self.a = nn.Parameter((1.5 * torch.randn(k, generator=g, dtype=F64)).to(dtype))
        self.c = nn.Parameter(torch.tensor(uniform(g, 0.05, 0.3), dtype=dtype))

    def forward(self, x):
        return 0.5 * (x @ self.M).pow(2).sum(-1) + (self.a * torch.tanh(x @ self.w.T + self.b)).sum(-1) \
            + self.c * x.pow(4).sum(-1) / 4


def _grad_hess(U: nn.Module, x: torch.Tensor):
    """Per-sample gradients (n, p) and Hessians (n, p, p) of U in x, kept in the graph of theta."""
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(U(x).sum(), x, create_graph=True)
    rows = [torch.autograd.grad(g[:, i].sum(), x, create_graph=True)[0] for i in range(x.shape[1])]
    return g, torch.stack(rows, 1)


_HYV_MISTAKES = {
    "laplacian-sign": "added the Laplacian instead of subtracting it",
    "no-half": "left out the 1/2 in front of |grad U|^2",
    "not-trace": "summed all second derivatives (1^T Hessian 1) instead of the diagonal (the trace)",
    "sum": "summed over the batch instead of averaging",
    "laplacian-detached": "the value is right but the Laplacian term carries no gradient in theta",
    "no-laplacian": "left out the Laplacian term",
}


@exercise("7.2", notebook=NOTEBOOK, answer="hyvarinen_loss", points=2,
          title="Hyvarinen's score matching objective for an energy", mistakes=_HYV_MISTAKES,
          forbidden={"coursekit.score.exact_score_matching": "coursekit's exact score matching objective",
                     "coursekit.score.objectives.exact_score_matching": "coursekit's exact score matching objective",
                     "coursekit.score.sliced_score_matching": "coursekit's sliced score matching objective",
                     "coursekit.score.objectives.sliced_score_matching": "coursekit's sliced score matching objective"})
def hyvarinen_loss(answer):
    """The value and the theta-gradient of the loss, compared exactly with those of
    mean(1/2 |grad U|^2 - Laplacian U) computed by the check, on three draws (p, n, energy, dtype)."""
    require_callable(answer, "hyvarinen_loss")
    gens = list(draws(3))
    cases = [(gens[0], F64, "cpu"), (gens[1], F64, "cpu"), (gens[2], F32, "cpu")]
    cases += [(gens[0], F64, dev) for dev in cuda_devices()]
    what = "hyvarinen_loss(U, x)"
    for g, dtype, device in cases:
        p = randint(g, 2, 5)
        n = randint(g, 3, 9)
        U = _Energy(g, p, dtype).to(device)
        x = (1.2 * torch.randn(n, p, generator=g, dtype=F64)).to(device=device, dtype=dtype)
        params = list(U.parameters())
        # the reference, in float64, from a float64 copy of the same energy
        U64 = copy.deepcopy(U).to(device="cpu", dtype=F64)
        X = x.detach().to("cpu", F64)
        gr, H = _grad_hess(U64, X)
        sq, lap = gr.pow(2).sum(1), torch.diagonal(H, dim1=1, dim2=2).sum(1)
        exact = (0.5 * sq - lap).mean()
        exact_grads = torch.autograd.grad(exact, list(U64.parameters()), retain_graph=True)
        before = _flags({"x": x})
        result = call(answer, U, x, what=what)
        _flags_kept({"x": x}, before)
        got = expect(result, what, shape=(), like=x, grad=True, hint="one number: the mean over the batch")
        tol = TOL[dtype]
        values = {
            "laplacian-sign": (0.5 * sq + lap).mean(),
            "no-half": (sq - lap).mean(),
            "not-trace": (0.5 * sq - H.sum((1, 2))).mean(),
            "sum": (0.5 * sq - lap).sum(),
            "no-laplacian": (0.5 * sq).mean(),
        }
        if not _near(got, exact.detach(), tol):
            for tag, value in values.items():
                if _near(got, value.detach(), 100 * tol):
                    fail({
                        "laplacian-sign": "the sign of the Laplacian term is wrong: tr grad s = -Laplacian U for "
                                          "s = -grad U, so the loss is 1/2 |grad U|^2 MINUS the Laplacian",
                        "no-half": "the first term is 1/2 |grad U|^2: the 1/2 comes from expanding 1/2 |s* - s|^2",
                        "not-trace": "your second term is the sum of ALL second derivatives (one backward pass of "
                                     "grad.sum()); the Laplacian is the trace, the sum of d^2U/dx_i^2 only: one "
                                     "backward pass per coordinate i, keeping entry i",
                        "sum": "average over the batch (an expectation under the data), do not sum",
                        "no-laplacian": "the Laplacian term is missing: without it the loss is minimised by a flat "
                                        "energy, whatever the data",
                    }[tag], mistake=tag)
            fail("the value is wrong: the loss is the batch mean of 1/2 |grad_x U|^2 - Laplacian_x U, both computed "
                 "with autograd at the points x")
        grads = torch.autograd.grad(result, params, allow_unused=True)
        got_grads = [torch.zeros_like(q, dtype=F64, device="cpu") if gq is None else gq.detach().to("cpu", F64)
                     for q, gq in zip(params, grads)]
        if all(_near(a, b, 100 * tol) for a, b in zip(got_grads, exact_grads)):
            continue
        first = torch.autograd.grad((0.5 * sq).mean(), list(U64.parameters()), retain_graph=True)
        if all(_near(a, b, 100 * tol) for a, b in zip(got_grads, first)):
            fail("the value is right but the Laplacian term carries no gradient in theta: its backward passes need "
                 "create_graph=True too (the loss is trained, so the second derivatives must stay in the graph)",
                 mistake="laplacian-detached")
        fail("the value is right but its gradient in theta is not: keep every backward pass in the graph "
             "(create_graph=True) and do not detach any part of the loss", mistake="contract")
    meta = _Energy(torch.Generator().manual_seed(1), 3, F64).to("meta")
    stays_on_meta(answer, meta, torch.empty(4, 3, device="meta", dtype=F64), what=what)


# ------------------------------------------------------------------ 7.3: one MALA step


_MALA_MISTAKES = {
    "no-correction": "accepted with the ratio of the targets only (no proposal densities): random-walk Metropolis",
    "reversed-proposal": "put the proposal densities the wrong way round (q(y | x) / q(x | y))",
    "proposal-variance": "used the variance gamma instead of 2 gamma in the proposal density",
    "energy-sign": "the target ratio has the wrong sign (exp(U(y) - U(x)))",
    "same-drift": "used the drift at x in the reverse proposal q(x | y) too",
    "no-min": "log alpha is not capped at 0 (a probability cannot exceed one)",
    "accept-rule": "log alpha is right but the accept / reject decision is not",
}


class _MalaEnergy(nn.Module):
    """A smooth non-Gaussian energy with a positive-definite quadratic part, so chains behave."""

    def __init__(self, g: torch.Generator, p: int, dtype):
        super().__init__()
        k = randint(g, 2, 3)
        m = torch.eye(p, dtype=F64) + 0.4 * torch.randn(p, p, generator=g, dtype=F64)
        self.M = nn.Parameter((m * uniform(g, 0.7, 1.4)).to(dtype))
        self.mu = nn.Parameter(torch.randn(p, generator=g, dtype=F64).to(dtype))
        self.w = nn.Parameter(torch.randn(k, p, generator=g, dtype=F64).to(dtype))
        self.a = nn.Parameter((1.5 * torch.randn(k, generator=g, dtype=F64)).to(dtype))

    def forward(self, x):
        return 0.5 * ((x - self.mu) @ self.M).pow(2).sum(-1) + (self.a * torch.tanh(x @ self.w.T)).sum(-1)


def _mala_problem(g: torch.Generator, dtype, device):
    p, n = randint(g, 1, 4), randint(g, 30, 60)
    U = _MalaEnergy(g, p, dtype).to(device)
    U64 = copy.deepcopy(U).to(device="cpu", dtype=F64)
    gamma = randint(g, 2, 8) / 10  # one decimal: a crash message that echoes it leaks no computed number
    X = U64.mu.detach() + torch.randn(n, p, generator=g, dtype=F64)
    X = X.to(dtype).to(F64)  # representable in the answer's dtype
    xr = X.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(U64(xr).sum(), xr)
    Y = (X - gamma * gx + math.sqrt(2 * gamma) * torch.randn(n, p, generator=g, dtype=F64)).to(dtype).to(F64)
    return U, U64, X, Y, gamma


def _log_ratios(U64, X, Y, gamma):
    """The MALA log-ratio and those of the named mistakes (all uncapped), float64."""
    xr, yr = X.clone().requires_grad_(True), Y.clone().requires_grad_(True)
    ux, uy = U64(xr), U64(yr)
    (gx,) = torch.autograd.grad(ux.sum(), xr)
    (gy,) = torch.autograd.grad(uy.sum(), yr)
    ux, uy = ux.detach(), uy.detach()
    fwd = (Y - X + gamma * gx).pow(2).sum(1)  # -4 gamma log q(y | x)
    bwd = (X - Y + gamma * gy).pow(2).sum(1)  # -4 gamma log q(x | y)
    same = (X - Y + gamma * gx).pow(2).sum(1)
    return {
        "exact": ux - uy + (fwd - bwd) / (4 * gamma),
        "no-correction": ux - uy,
        "reversed-proposal": ux - uy - (fwd - bwd) / (4 * gamma),
        "proposal-variance": ux - uy + (fwd - bwd) / (2 * gamma),
        "energy-sign": uy - ux + (fwd - bwd) / (4 * gamma),
        "same-drift": ux - uy + (fwd - same) / (4 * gamma),
    }


@exercise("7.3", notebook=NOTEBOOK, answer="mala_step", points=2,
          title="One step of MALA (Metropolis-adjusted Langevin)",
          mistakes=_MALA_MISTAKES,
          forbidden={"coursekit.score.mala": "coursekit's MALA sampler",
                     "coursekit.score.sampling.mala": "coursekit's MALA sampler",
                     "coursekit.score.mala_log_acceptance": "coursekit's MALA acceptance probability",
                     "coursekit.score.sampling.mala_log_acceptance": "coursekit's MALA acceptance probability"})
def mala_step(answer):
    """log alpha compared exactly with the formula, and the next states with the accept / reject
    decisions it implies for uniforms drawn away from the threshold, on three draws (p, n, energy,
    gamma, dtype)."""
    require_callable(answer, "mala_step")
    gens = list(draws(3))
    cases = [(gens[0], F64, "cpu"), (gens[1], F64, "cpu"), (gens[2], F32, "cpu")]
    cases += [(gens[0], F64, dev) for dev in cuda_devices()]
    what = "mala_step(U, x, y, gamma, u)"
    for g, dtype, device in cases:
        U, U64, X, Y, gamma = _mala_problem(g, dtype, device)
        ratios = _log_ratios(U64, X, Y, gamma)
        exact = ratios["exact"].clamp(max=0.0)
        # uniforms: log u at least 0.05 away from log alpha, so rounding cannot flip a decision, and
        # both decisions occur
        n = X.shape[0]
        log_u = torch.log(torch.rand(n, generator=g, dtype=F64).clamp_min(1e-12))
        close_ = (log_u - exact).abs() < 0.05
        log_u = torch.where(close_, exact - 0.1 * torch.sign(torch.rand(n, generator=g, dtype=F64) - 0.3), log_u)
        order = torch.argsort(exact)
        if float(exact[order[0]]) + 0.5 < -0.01:
            log_u[order[0]] = float(exact[order[0]]) + 0.5  # a rejection (its alpha is the smallest)
        log_u = log_u.clamp(-30.0, -1e-3)  # u = exp(log u) stays a normal float32 number
        away = torch.where(exact - 0.1 < -30.0, exact + 0.1, exact - 0.1)
        log_u = torch.where((log_u - exact).abs() < 0.05, away, log_u)  # never near the threshold
        u = log_u.exp()
        accept = log_u < exact
        x, y, uu = (t.to(device=device, dtype=dtype) for t in (X, Y, u))
        result = call(answer, U, x, y, gamma, uu, what=what)
        x_next, log_alpha = expect_pair(result, what, ("x_next", "log_alpha"))
        got_x = expect(x_next, "x_next", shape=x.shape, like=x, hint="the next states, one row per chain")
        got_a = expect(log_alpha, "log_alpha", shape=(n,), like=x, hint="one log-probability per chain")
        tol = 100 * TOL[dtype]
        if not _near(got_a, exact, tol):
            if _near(got_a, ratios["exact"], tol):
                fail("log alpha is a log-probability, so it is at most 0: cap the log-ratio with min(0, ...) "
                     "(torch.clamp(..., max=0))", mistake="no-min")
            messages = {
                "no-correction": "you accept with exp(U(x) - U(y)) alone: that is random-walk Metropolis, which is "
                                 "exact only for a symmetric proposal. The Langevin proposal is not symmetric: add "
                                 "log q(x | y) - log q(y | x)",
                "reversed-proposal": "the proposal densities are the wrong way round: the ratio is "
                                     "pi(y) q(x | y) / (pi(x) q(y | x)), the reverse move over the forward one",
                "proposal-variance": "the proposal's variance is 2 gamma (the noise is sqrt(2 gamma) xi), so its "
                                     "log-density has |.|^2 / (4 gamma), not / (2 gamma)",
                "energy-sign": "the target ratio is pi(y) / pi(x) = exp(U(x) - U(y)): lower energy is more likely",
                "same-drift": "the reverse proposal q(x | y) starts from y, so its mean is y - gamma grad U(y): use "
                              "the gradient at y there, not at x",
            }
            for tag, message in messages.items():
                r = ratios[tag]
                if _near(got_a, r.clamp(max=0.0), tol) or _near(got_a, r, tol):
                    fail(message, mistake=tag)
            fail("log alpha is wrong: it is min(0, U(x) - U(y) + log q(x | y) - log q(y | x)) with "
                 "q(b | a) = N(b; a - gamma grad U(a), 2 gamma I)")
        expected_x = torch.where(accept[:, None], Y, X)
        if not _near(got_x, expected_x, tol):
            fail("log alpha is right but the next states are not: accept the proposal y exactly when "
                 "log u < log alpha (with probability alpha), keep x otherwise, row by row", mistake="accept-rule")
    meta_U = _MalaEnergy(torch.Generator().manual_seed(1), 2, F64).to("meta")
    meta = torch.empty(6, 2, device="meta", dtype=F64)
    stays_on_meta(answer, meta_U, meta, torch.empty_like(meta), 0.3, torch.empty(6, device="meta", dtype=F64),
                  what=what)
