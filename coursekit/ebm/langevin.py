"""The Unadjusted Langevin Algorithm (ULA), and the decoupled-noise variant used in EBM code.

ULA is the Euler-Maruyama discretisation of the Langevin diffusion
dX_t = -grad U(X_t) dt + sqrt(2) dB_t, whose stationary law is p(x) proportional to exp(-U(x)):

    X_{k+1} = X_k - gamma_k grad U(X_k) + sqrt(2 gamma_k) Z_{k+1},   Z_{k+1} ~ N(0, I).

It steps DOWN the energy (slide line 757; the plus sign in line 11 of Algorithm 1 is a slip).
With a fixed step gamma the chain has a stationary law p_gamma that is close to p but not equal
to it: for U(x) = x^2 / (2 s^2) it is N(0, s^2 / (1 - gamma / (2 s^2))) for gamma < 2 s^2
(see :func:`ula_stationary_variance`; Roberts & Tweedie 1996, Durmus & Moulines 2017).

>>> import torch
>>> from coursekit.ebm import GaussianEnergy
>>> x = ula(GaussianEnergy(torch.zeros(2), 1.0), torch.zeros(1000, 2), gamma=0.1, n_steps=50)
>>> x.shape
torch.Size([1000, 2])
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable, Sequence

import torch
from torch import Tensor

from ..flows import base as _base

__all__ = ["energy_and_grad", "ula", "decoupled_langevin", "ula_stationary_variance", "step_sizes"]


@contextmanager
def _inputs_trusted():
    # The energies check their input for NaN at every call, which synchronises with the GPU.
    # Inside a chain the input is the previous state, checked once at the end instead.
    old = _base.validation_enabled()
    _base.set_validation(False)
    try:
        yield
    finally:
        _base.set_validation(old)


def energy_and_grad(energy: Callable[[Tensor], Tensor], x: Tensor, create_graph: bool = False) -> tuple[Tensor, Tensor]:
    """Return ``(U(x), grad_x U(x))`` for a batch ``x``; ``U(x)`` has shape ``(n,)``.

    The samples are independent, so the gradient of ``U(x).sum()`` is the per-sample gradient.
    Only ``x`` is differentiated: the parameters' ``.grad`` are left untouched.
    """
    with torch.enable_grad():
        x = x if (create_graph and x.requires_grad) else x.detach().requires_grad_(True)
        u = energy(x)
        if u.dim() != 1 or u.shape[0] != x.shape[0]:
            raise ValueError(f"the energy must return one value per sample, shape ({x.shape[0]},); got {tuple(u.shape)}")
        (g,) = torch.autograd.grad(u.sum(), x, create_graph=create_graph)
    return u, g


def step_sizes(gamma, n_steps: int) -> list[float]:
    """Expand ``gamma`` into ``n_steps`` step sizes: a number (constant), a sequence of
    ``n_steps`` numbers, or a callable ``k -> gamma_k``. All must be positive and finite."""
    if not isinstance(n_steps, int) or n_steps < 0:
        raise ValueError(f"n_steps must be a non-negative integer, got {n_steps!r}")
    if callable(gamma):
        gammas = [float(gamma(k)) for k in range(n_steps)]
    elif isinstance(gamma, (int, float)) or (isinstance(gamma, Tensor) and gamma.dim() == 0):
        gammas = [float(gamma)] * n_steps
    else:
        gammas = [float(g) for g in gamma]
        if len(gammas) != n_steps:
            raise ValueError(f"a step-size schedule needs n_steps={n_steps} values, got {len(gammas)}")
    bad = [g for g in gammas if not (math.isfinite(g) and g > 0)]
    if bad:
        raise ValueError(f"step sizes must be positive and finite; got {bad[0]!r}")
    return gammas


def _check_start(x0: Tensor) -> None:
    if not isinstance(x0, Tensor) or not x0.is_floating_point():
        raise TypeError(f"x0 must be a floating-point tensor of shape (n, ...), got {type(x0).__name__}"
                        + (f" of dtype {x0.dtype}" if isinstance(x0, Tensor) else ""))
    if x0.dim() < 1:
        raise ValueError("x0 must have a batch dimension: shape (n, ...), one chain per row")
    if not torch.isfinite(x0).all():
        raise ValueError("x0 contains NaN or infinite values; start the chains from finite points")


def _diverged(name: str, k: int, gamma: float, hint: str) -> FloatingPointError:
    return FloatingPointError(
        f"{name} diverged: the chain left the finite numbers by step {k} (step size {gamma:g}). "
        f"The step is too large for the curvature of U: ULA is stable only for gamma < 2 / L when "
        f"grad U is L-Lipschitz. {hint}"
    )


def ula(energy: Callable[[Tensor], Tensor], x0: Tensor, gamma: float | Sequence[float] | Callable[[int], float],
        n_steps: int, *, return_chain: bool = False, generator: torch.Generator | None = None,
        check_every: int = 0) -> Tensor:
    """Run ``x0.shape[0]`` ULA chains for ``n_steps`` steps, in parallel, on ``x0``'s device:

        X_{k+1} = X_k - gamma_k grad U(X_k) + sqrt(2 gamma_k) Z_{k+1}.

    Parameters
    ----------
    energy: a callable (e.g. an :class:`~coursekit.ebm.Energy`) mapping ``(n, ...)`` to ``(n,)``.
    x0: starting points, one chain per row.
    gamma: the step size, a constant, a list of ``n_steps`` values or a callable ``k -> gamma_k``
        (a decreasing schedule reduces the bias; see :func:`step_sizes`).
    return_chain: return the whole chain ``(n_steps + 1, *x0.shape)`` (``X_0`` first) instead of ``X_K``.
    generator: a ``torch.Generator`` for the noise (reproducible chains).
    check_every: also check for NaN every that many steps (0: only at the end; each check
        synchronises with the GPU).

    The result is detached from the energy's parameters (it is a sample, not a function of
    theta: Algorithm 1 does not differentiate through the sampler). Raises
    ``FloatingPointError`` with advice if a chain reaches NaN or infinity.
    """
    _check_start(x0)
    gammas = step_sizes(gamma, n_steps)
    x = x0.detach()
    chain = [x] if return_chain else None
    with _inputs_trusted():
        for k, g in enumerate(gammas):
            _, grad = energy_and_grad(energy, x)
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = (x - g * grad + math.sqrt(2 * g) * noise).detach()
            if chain is not None:
                chain.append(x)
            if check_every and (k + 1) % check_every == 0 and not torch.isfinite(x).all():
                raise _diverged("ULA", k + 1, g, "Lower gamma, or use a decreasing schedule.")
    if not torch.isfinite(x).all():
        raise _diverged("ULA", n_steps, gammas[-1] if gammas else 0.0, "Lower gamma, or use a decreasing schedule.")
    return torch.stack(chain) if chain is not None else x


def decoupled_langevin(energy: Callable[[Tensor], Tensor], x0: Tensor, step_size: float, noise_std: float,
                       n_steps: int, *, clamp: tuple[float, float] | None = None, grad_clip: float | None = None,
                       return_chain: bool = False, generator: torch.Generator | None = None) -> Tensor:
    """The "Langevin" update of much EBM code (e.g. Du & Mordatch 2019; Nijkamp et al. 2019),
    whose noise scale is chosen independently of the step:

        X_{k+1} = X_k - step_size * grad U(X_k) + noise_std * Z_{k+1}.

    **This does not target p_theta.** Writing it as ULA with step gamma = noise_std^2 / 2 shows
    it is ULA for the energy U / T with temperature T = noise_std^2 / (2 step_size): it samples
    (approximately) p_theta^(1/T), not p_theta. With values common in EBM code, step_size = 10 and
    noise_std = 0.005, T ~ 1e-6: it is essentially noisy gradient descent on U towards its
    modes. Only ``noise_std = sqrt(2 step_size)`` gives :func:`ula`. Optional ``clamp`` keeps
    the state in a box (e.g. the pixel range) and ``grad_clip`` caps each gradient entry, two
    other common heuristics that also change the target.
    """
    _check_start(x0)
    if not (math.isfinite(step_size) and step_size > 0) or not (math.isfinite(noise_std) and noise_std >= 0):
        raise ValueError(f"need step_size > 0 and noise_std >= 0, got {step_size!r}, {noise_std!r}")
    if not isinstance(n_steps, int) or n_steps < 0:
        raise ValueError(f"n_steps must be a non-negative integer, got {n_steps!r}")
    x = x0.detach()
    chain = [x] if return_chain else None
    with _inputs_trusted():
        for _ in range(n_steps):
            _, grad = energy_and_grad(energy, x)
            if grad_clip is not None:
                grad = grad.clamp(-grad_clip, grad_clip)
            x = x - step_size * grad + noise_std * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            if clamp is not None:
                x = x.clamp(*clamp)
            x = x.detach()
            if chain is not None:
                chain.append(x)
    if not torch.isfinite(x).all():
        raise _diverged("decoupled Langevin", n_steps, step_size, "Lower step_size or set grad_clip.")
    return torch.stack(chain) if chain is not None else x


def ula_stationary_variance(s2: float, gamma: float) -> float:
    """Variance of the stationary law of ULA on the Gaussian target N(0, s2).

    With U(x) = x^2 / (2 s2) the chain is the AR(1) recursion X' = (1 - gamma/s2) X + sqrt(2 gamma) Z;
    a stationary variance v solves v = (1 - gamma/s2)^2 v + 2 gamma, i.e.

        v = s2 / (1 - gamma / (2 s2)),   for 0 < gamma < 2 s2

    (for gamma >= 2 s2 the chain has no stationary law: |1 - gamma/s2| >= 1). The bias
    v - s2 = gamma/2 + O(gamma^2) vanishes with the step, at rate gamma.
    """
    if not (s2 > 0 and gamma > 0):
        raise ValueError(f"need s2 > 0 and gamma > 0, got s2={s2}, gamma={gamma}")
    if gamma >= 2 * s2:
        raise ValueError(f"ULA on N(0, {s2}) has no stationary law for gamma={gamma} >= 2 s2 = {2 * s2}: it diverges")
    return s2 / (1 - gamma / (2 * s2))
