"""Iterative inverses shared by the residual and MintNet flows: the solver, its implicit gradient, its error.

Both families invert ``y = T(u)`` by a preconditioned fixed-point (Richardson) iteration

    u_{k+1} = u_k - alpha P(u_k) (T(u_k) - y),

with ``P = I, alpha = 1`` for a residual block ``T(u) = u + g(u)`` (Banach's iteration
``u_{k+1} = y - g(u_k)``) and ``P = diag(J_T)^{-1}`` for MintNet. The solution is then made
differentiable by the implicit function theorem, not by backpropagating through the iterations:
``du = J_T(u*)^{-1} (dy - dT/dtheta dtheta)``, so the backward pass solves ``J_T(u*)^T w = grad``
(:func:`implicit_inverse`). Memory is one evaluation of T, whatever the number of iterations.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["ConvergenceError"]


class ConvergenceError(RuntimeError):
    """An iterative inverse did not reach its tolerance within its iteration cap (or diverged).

    The message says which map, how far the iteration got, and what to change.
    """


def default_tol(dtype: torch.dtype) -> float:
    """``1e-10`` in float64, ``100 eps`` in lower precisions (``1.2e-5`` in float32): a little above the
    round-off floor of the iteration, so that the tolerance can be met."""
    return max(1e-10, 100.0 * torch.finfo(dtype).eps)


def is_batched(t: Tensor) -> bool:
    """True inside ``torch.vmap`` (e.g. ``jacobian(..., vectorize=True)``), where a loop cannot stop on a
    data-dependent test; the solvers then run a fixed number of iterations that is enough by their bound."""
    functorch = getattr(torch._C, "_functorch", None)
    for name in ("is_batchedtensor", "is_legacy_batchedtensor"):  # torch.vmap / torch.autograd.functional
        check = getattr(functorch, name, None)
        if check is not None and check(t):
            return True
    return False


def _norms(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1).norm(dim=1)


def solve(
    step: Callable[[Tensor], Tensor],
    u0: Tensor,
    scale: Tensor,
    tol: float,
    max_iter: int,
    factor: float,
    what: str,
    hint: str,
) -> Tensor:
    """Iterate ``u <- step(u)`` from ``u0`` (no autograd) until, for every sample,
    ``factor * ||u_{k+1} - u_k||_2 <= tol * max(1, ||scale||_2)``.

    With a contraction of constant ``L``, ``factor = L / (1 - L)`` makes the test Banach's a-posteriori
    bound, so the returned point is within the tolerance of the solution. Raises
    :class:`ConvergenceError` after ``max_iter`` steps, or at once on a non-finite or exploding step.
    """
    if u0.shape[0] == 0:
        return u0
    with torch.no_grad():
        bound = tol * _norms(scale).clamp(min=1.0)
        u = u0
        first = ratio = math.inf
        for k in range(max_iter):
            new = step(u)
            # one reduction and one read back per iteration: the largest ratio, over the samples, of
            # the error bound to the tolerance (NaN or inf once a sample leaves the finite numbers,
            # since the maximum propagates NaN)
            ratio = float((factor * _norms(new - u) / bound).max())
            u = new
            if ratio <= 1.0:
                return u
            if not math.isfinite(ratio):
                raise ConvergenceError(f"{what}: the fixed-point iteration produced NaN or inf at step {k + 1}. {hint}")
            if k == 0:
                first = ratio
            elif k >= 10 and ratio > 1e6 * first:
                break  # diverging: report at once instead of running to the cap
        raise ConvergenceError(
            f"{what}: the fixed-point iteration did not converge in {k + 1} iterations (max_iter={max_iter}): "
            f"the error bound is still {ratio * tol:.3g}, the tolerance is {tol:g} (relative to max(1, ||x||)). {hint}"
        )


def implicit_inverse(
    T: Callable[[Tensor], Tensor],
    u_star: Tensor,
    y: Tensor,
    adjoint: Callable[[Callable[[Tensor], Tensor], Tensor], Tensor],
    needed: bool,
) -> Tensor:
    """``u*`` (the solution of ``T(u) = y``, computed without autograd) made differentiable.

    The returned tensor equals ``u_star``; its gradient with respect to ``y`` and to the parameters of
    ``T`` is the implicit one. Construction: ``r = T(u0) - y`` at a detached copy ``u0`` of ``u*``,
    and ``out = u* - (r - r.detach())``; a hook on ``r`` replaces the incoming gradient ``g`` by
    ``J_T(u*)^{-T} g``, which ``adjoint(vjp, g)`` computes from ``vjp(w) = J_T(u*)^T w``. Then
    ``y`` receives ``J^{-T} grad`` and the parameters ``-grad^T J^{-1} dT/dtheta``, as they should.
    """
    u_star = u_star.detach()
    if not (needed and torch.is_grad_enabled()):
        return u_star
    u0 = u_star.clone().requires_grad_()
    with torch.enable_grad():
        Tu = T(u0)
        r = Tu - y

    def vjp(w: Tensor) -> Tensor:
        return torch.autograd.grad(Tu, u0, w, retain_graph=True)[0]

    r.register_hook(lambda g: adjoint(vjp, g))
    return u_star - (r - r.detach())


def richardson_adjoint(
    vjp: Callable[[Tensor], Tensor],
    g: Tensor,
    precond: Tensor | None,
    tol: float,
    max_iter: int,
    factor: float,
    fixed_iter: int,
    what: str,
    hint: str,
) -> Tensor:
    """Solve ``J^T w = g`` by ``w <- w - P (J^T w - g)`` from ``w = P g`` (``P = precond`` or I).

    Stops like :func:`solve` (relative to ``max(1, ||g||)``); inside ``torch.vmap`` it runs
    ``fixed_iter`` iterations instead (enough by the solver's own bound).
    """
    w = g if precond is None else g * precond
    if is_batched(g):
        for _ in range(fixed_iter):
            d = vjp(w) - g
            w = w - (d if precond is None else d * precond)
        return w
    if g.shape[0] == 0:
        return w
    with torch.no_grad():
        bound = tol * _norms(g).clamp(min=1.0)
    for k in range(max_iter):
        d = vjp(w) - g
        if precond is not None:
            d = d * precond
        w = w - d
        ratio = float((factor * _norms(d.detach()) / bound).max())  # one read per iteration, as in solve
        if ratio <= 1.0:
            return w
        if not math.isfinite(ratio):
            raise ConvergenceError(f"{what} (backward): the adjoint iteration produced NaN or inf. {hint}")
    raise ConvergenceError(
        f"{what} (backward): the adjoint iteration J^T w = grad did not converge in {max_iter} iterations. {hint}"
    )
