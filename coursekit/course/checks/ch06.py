"""Checks of the chapter 6 exercises (notebook ``ex06_ebm``): the gradient and the Hessian of
log Z(theta) (Proposition 1, the blanks of slide lines 719-721), the ULA step, ULA's stationary
variance on a Gaussian target, and the loss of Algorithm 1.

The Monte Carlo formulas are checked against finite differences of log Z computed by quadrature
on the 1-D family :class:`~coursekit.ebm.QuarticEnergy1D`, with samples drawn by inverting its
CDF at stratified quantiles (so the check is deterministic and accurate to about 1e-4).
"""

from __future__ import annotations

import math

import torch

from ...ebm.energy import QuarticEnergy1D, log_partition_1d, sample_1d
from ..registry import ExerciseFailure, exercise
from ._common import require_callable

__all__ = ["grad_log_z", "hess_log_z", "ula_step", "ula_variance", "algorithm1_loss",
           "reference_grad_log_z", "reference_hess_log_z", "reference_ula_step", "reference_ula_variance",
           "reference_algorithm1_loss", "quartic_problem"]

NOTEBOOK = "ex06_ebm"
THETA = (0.7, -0.3)


def _tensor(result, shape, what: str) -> torch.Tensor:
    if not isinstance(result, torch.Tensor):
        raise ExerciseFailure(f"{what} must return a torch tensor, got {type(result).__name__}")
    if tuple(result.shape) != tuple(shape):
        raise ExerciseFailure(f"{what} must return a tensor of shape {tuple(shape)}, got {tuple(result.shape)}")
    if not torch.isfinite(result).all():
        raise ExerciseFailure(f"{what} returned NaN or infinite values")
    return result.to(torch.float64)


def _close(a: torch.Tensor, b: torch.Tensor, tol: float) -> bool:
    return bool((a - b).abs().max() <= tol * (1 + b.abs().max()))


def quartic_problem(n: int = 20_000):
    """Samples of p_theta for the quartic family at THETA, and the exact gradient and Hessian of
    log Z by central finite differences of the quadrature (float64).

    Returns ``(x, grad_U, hess_U, grad_exact, hess_exact)``.
    """
    q = QuarticEnergy1D()
    theta = torch.tensor(THETA, dtype=torch.float64)

    def log_z(t):
        return log_partition_1d(lambda x: q(x, t), lo=-6.0, hi=6.0, n=24_001)

    h = 1e-3
    eye = torch.eye(2, dtype=torch.float64)
    grad = torch.stack([(log_z(theta + h * e) - log_z(theta - h * e)) / (2 * h) for e in eye])
    hess = torch.empty(2, 2, dtype=torch.float64)
    for i in range(2):
        for j in range(2):
            ei, ej = h * eye[i], h * eye[j]
            hess[i, j] = (log_z(theta + ei + ej) - log_z(theta + ei - ej) - log_z(theta - ei + ej)
                          + log_z(theta - ei - ej)) / (4 * h * h)
    x = sample_1d(lambda x: q(x, theta), n, lo=-6.0, hi=6.0, stratified=True)
    return x, q.grad_theta(x, theta), q.hess_theta(x, theta), grad, hess


_PROBLEM = None


def _problem():
    global _PROBLEM
    if _PROBLEM is None:
        _PROBLEM = quartic_problem()
    return _PROBLEM


# ------------------------------------------------------------------ 6.1: grad log Z (slide line 720)


def reference_grad_log_z(grad_U):
    return -grad_U.mean(0)


@exercise("6.1", notebook=NOTEBOOK, title="The gradient of log Z (Proposition 1)", points=2)
def grad_log_z(answer):
    require_callable(answer, "grad_log_Z")
    _, gU, _, exact, _ = _problem()
    got = _tensor(answer(gU.clone()), (2,), "grad_log_Z(grad_U)")
    if _close(got, exact, 2e-3):
        return
    if _close(got, -exact, 2e-3):
        raise ExerciseFailure("wrong sign: Z = int exp(-U), so differentiating brings down -grad U: "
                              "grad log Z = -E_theta[grad_theta U].")
    if _close(got, gU.shape[0] * exact, 2e-3) or _close(got, -gU.shape[0] * exact, 2e-3):
        raise ExerciseFailure("your value scales with the number of samples: average over the samples "
                              "(an expectation under p_theta), do not sum.")
    raise ExerciseFailure(f"expected about {exact.tolist()} (finite differences of log Z by quadrature), "
                          f"got {got.tolist()}. Hint: write grad Z / Z and recognise p_theta.")


grad_log_z.reference = lambda: reference_grad_log_z
grad_log_z.mistakes = {
    "sign error": (lambda: (lambda g: g.mean(0)), "sign"),
    "sum instead of mean": (lambda: (lambda g: -g.sum(0)), "average"),
}


# ------------------------------------------------------------------ 6.2: Hessian of log Z (slide line 721)


def reference_hess_log_z(grad_U, hess_U):
    centred = grad_U - grad_U.mean(0)
    return -hess_U.mean(0) + centred.T @ centred / grad_U.shape[0]


@exercise("6.2", notebook=NOTEBOOK, title="The Hessian of log Z (Proposition 1)", points=3)
def hess_log_z(answer):
    require_callable(answer, "hess_log_Z")
    _, gU, hU, _, exact = _problem()
    got = _tensor(answer(gU.clone(), hU.clone()), (2, 2), "hess_log_Z(grad_U, hess_U)")
    if _close(got, exact, 2e-3):
        return
    n = gU.shape[0]
    second = gU.T @ gU / n
    centred = gU - gU.mean(0)
    cov = centred.T @ centred / n
    if _close(got, -hU.mean(0), 2e-3):
        raise ExerciseFailure("the covariance term is missing: differentiating p_theta = exp(-U)/Z in theta "
                              "gives a second term, Cov_theta(grad_theta U).")
    if _close(got, -hU.mean(0) + second, 2e-3):
        raise ExerciseFailure("centre the gradients: the second term is the covariance "
                              "E[(grad U - E grad U)(grad U - E grad U)^T], not the second moment E[grad U grad U^T].")
    if _close(got, hU.mean(0) + cov, 2e-3) or _close(got, hU.mean(0) - cov, 2e-3) or _close(got, -hU.mean(0) - cov, 2e-3):
        raise ExerciseFailure("a sign is wrong: grad^2 log Z = -E[grad^2 U] + Cov(grad U) (the covariance "
                              "term is positive semi-definite: log Z is convex when U is linear in theta).")
    raise ExerciseFailure(f"expected about {exact.tolist()} (finite differences of log Z by quadrature), "
                          f"got {got.tolist()}.")


hess_log_z.reference = lambda: reference_hess_log_z
hess_log_z.mistakes = {
    "missing covariance": (lambda: (lambda g, h: -h.mean(0)), "covariance"),
    "uncentred second moment": (lambda: (lambda g, h: -h.mean(0) + g.T @ g / g.shape[0]), "centre"),
    "sign of the Hessian term": (lambda: (lambda g, h: h.mean(0) + torch.cov(g.T, correction=0)), "sign"),
}


# ------------------------------------------------------------------ 6.3: one ULA step


def reference_ula_step(x, grad_U, gamma, z):
    return x - gamma * grad_U + math.sqrt(2 * gamma) * z


@exercise("6.3", notebook=NOTEBOOK, title="One step of the Unadjusted Langevin Algorithm", points=2)
def ula_step(answer):
    require_callable(answer, "ula_step")
    g = torch.Generator().manual_seed(6)
    x, grad, z = (torch.randn(7, 3, generator=g, dtype=torch.float64) for _ in range(3))
    for gamma in (0.01, 0.3):
        got = _tensor(answer(x.clone(), grad.clone(), gamma, z.clone()), x.shape, "ula_step(x, grad_U, gamma, z)")
        if torch.allclose(got, reference_ula_step(x, grad, gamma, z), atol=1e-10):
            continue
        if torch.allclose(got, x + gamma * grad + math.sqrt(2 * gamma) * z, atol=1e-10):
            raise ExerciseFailure("wrong sign of the drift: p is proportional to exp(-U), so ULA steps DOWN the "
                                  "energy, x - gamma grad U (the + in line 11 of the slides' Algorithm 1 is a slip).")
        if torch.allclose(got - x + gamma * grad, 0 * x, atol=1e-10):
            raise ExerciseFailure("the noise is missing: without sqrt(2 gamma) z this is gradient descent, which "
                                  "goes to a mode of p instead of sampling it.")
        noise = got - (x - gamma * grad)  # what is left once the right drift is taken out
        scale = float((noise * z).sum() / (z * z).sum())
        if torch.allclose(noise, scale * z, atol=1e-10):
            raise ExerciseFailure(f"the noise has scale {scale:.4g} for gamma = {gamma}; it must be sqrt(2 gamma) = "
                                  f"{math.sqrt(2 * gamma):.4g}, the Euler step of sqrt(2) dB_t over a time gamma.")
        raise ExerciseFailure("expected x - gamma * grad_U + sqrt(2 * gamma) * z.")


ula_step.reference = lambda: reference_ula_step
ula_step.mistakes = {
    "plus sign (the slip of Algorithm 1)": (lambda: (lambda x, g, gamma, z: x + gamma * g + math.sqrt(2 * gamma) * z), "DOWN"),
    "noise sqrt(gamma)": (lambda: (lambda x, g, gamma, z: x - gamma * g + math.sqrt(gamma) * z), "sqrt(2 gamma)"),
    "no noise": (lambda: (lambda x, g, gamma, z: x - gamma * g), "noise is missing"),
}


# ------------------------------------------------------------------ 6.4: ULA's stationary variance


def reference_ula_variance(s2, gamma):
    return s2 / (1 - gamma / (2 * s2))


@exercise("6.4", notebook=NOTEBOOK, title="The bias of ULA on a Gaussian target", points=2)
def ula_variance(answer):
    require_callable(answer, "ula_variance")
    cases = [(1.0, 0.1), (1.0, 1.0), (0.5, 0.3), (3.0, 0.5)]
    for s2, gamma in cases:
        try:
            got = float(answer(s2, gamma))
        except (TypeError, ValueError) as err:
            raise ExerciseFailure(f"ula_variance({s2}, {gamma}) must return a number: {err}") from err
        v = reference_ula_variance(s2, gamma)
        if math.isclose(got, v, rel_tol=1e-9):
            continue
        if math.isclose(got, s2, rel_tol=1e-9):
            raise ExerciseFailure("ULA is biased: with a fixed step its stationary variance is not s2. Write the "
                                  "step as an AR(1) recursion and solve for its stationary variance.")
        if math.isclose(got, s2 + gamma / 2, rel_tol=1e-9):
            raise ExerciseFailure("s2 + gamma/2 is only the first-order expansion; the fixed point of "
                                  "v = (1 - gamma/s2)^2 v + 2 gamma is exact.")
        raise ExerciseFailure(f"for s2 = {s2}, gamma = {gamma} expected {v:.6g}, got {got:.6g}: solve the fixed point "
                              "v = (1 - gamma/s2)^2 v + 2 gamma.")


ula_variance.reference = lambda: reference_ula_variance
ula_variance.mistakes = {
    "unbiased": (lambda: (lambda s2, gamma: s2), "biased"),
    "first order only": (lambda: (lambda s2, gamma: s2 + gamma / 2), "first-order"),
    "wrong fixed point": (lambda: (lambda s2, gamma: s2 / (1 - gamma / s2)), "fixed point"),
}


# ------------------------------------------------------------------ 6.5: the loss of Algorithm 1


def reference_algorithm1_loss(U, x_pos, x_neg, reg):
    e_pos, e_neg = U(x_pos), U(x_neg.detach())
    return e_pos.mean() - e_neg.mean() + reg * (e_pos.pow(2).mean() + e_neg.pow(2).mean())


@exercise("6.5", notebook=NOTEBOOK, title="The loss of Algorithm 1", points=2)
def algorithm1_loss(answer):
    require_callable(answer, "algorithm1_loss")
    g = torch.Generator().manual_seed(65)
    w = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)

    def U(x):
        return torch.tanh(x @ w) + 0.5 * (x**2).sum(-1)

    x_pos = torch.randn(16, 3, generator=g, dtype=torch.float64)
    # negatives that still carry a graph to w, as if the sampler had been differentiated
    x_neg = torch.randn(16, 3, generator=g, dtype=torch.float64) - 0.3 * w
    for reg in (0.0, 0.5):
        loss = answer(U, x_pos, x_neg, reg)
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            raise ExerciseFailure("algorithm1_loss must return a scalar tensor (one number to backpropagate)")
        (got,) = torch.autograd.grad(loss, w, allow_unused=True, retain_graph=True)
        if got is None:
            raise ExerciseFailure("the loss does not depend on theta: compute it from U(x_pos) and U(x_neg)")
        (exp,) = torch.autograd.grad(reference_algorithm1_loss(U, x_pos, x_neg, reg), w)
        if torch.allclose(got, exp, atol=1e-10):
            continue
        (flipped,) = torch.autograd.grad(U(x_neg.detach()).mean() - U(x_pos).mean()
                                         + reg * (U(x_pos).pow(2).mean() + U(x_neg.detach()).pow(2).mean()), w)
        if torch.allclose(got, flipped, atol=1e-10):
            raise ExerciseFailure("wrong sign: minimising the loss must push the data's energy DOWN and the "
                                  "samples' energy UP: mean U(x_pos) - mean U(x_neg).")
        (undetached,) = torch.autograd.grad(reference_algorithm1_loss(U, x_pos, x_neg, reg)
                                            + U(x_neg.detach()).mean() - U(x_neg).mean()
                                            - reg * U(x_neg.detach()).pow(2).mean() + reg * U(x_neg).pow(2).mean(), w)
        if torch.allclose(got, undetached, atol=1e-10):
            raise ExerciseFailure("the negatives must be treated as fixed samples: detach x_neg (line 14 of "
                                  "Algorithm 1 does not differentiate through the sampler).")
        if reg:
            raise ExerciseFailure("with reg > 0 add reg * (mean U(x_pos)^2 + mean U(x_neg)^2), the energy "
                                  "penalty of Du & Mordatch (2019): the squares of the energies, averaged.")
        raise ExerciseFailure("expected mean U(x_pos) - mean U(x_neg.detach()) + reg * (...)")


algorithm1_loss.reference = lambda: reference_algorithm1_loss
algorithm1_loss.mistakes = {
    "sign": (lambda: (lambda U, xp, xn, reg: U(xn.detach()).mean() - U(xp).mean()
                      + reg * (U(xp).pow(2).mean() + U(xn.detach()).pow(2).mean())), "sign"),
    "not detached": (lambda: (lambda U, xp, xn, reg: U(xp).mean() - U(xn).mean()
                              + reg * (U(xp).pow(2).mean() + U(xn).pow(2).mean())), "detach"),
    "penalty on the difference": (lambda: (lambda U, xp, xn, reg: U(xp).mean() - U(xn.detach()).mean()
                                           + reg * (U(xp).mean() - U(xn.detach()).mean()) ** 2), "squares"),
}
