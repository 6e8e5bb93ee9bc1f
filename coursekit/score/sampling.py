"""Samplers that need only a score: annealed Langevin dynamics, and MALA, the corrected ULA.

**Annealed Langevin dynamics** (Song & Ermon, 2019, Algorithm 1) runs :func:`coursekit.ebm.ula`
with the learned score of p_sigma at each level of a ladder sigma_1 > ... > sigma_L, the step
scaled with the level, gamma_i = eps sigma_i^2 / sigma_L^2 (their alpha_i = 2 gamma_i), each level's
chains starting where the previous level's stopped. Large sigma's connect the modes (the noised
law has mass between them), small ones refine. A last denoising step (Tweedie's formula,
E[X | X + sigma Z = x] = x + sigma^2 grad log p_sigma(x)) removes the noise of the smallest level.

**MALA** (Metropolis-adjusted Langevin algorithm; Roberts & Tweedie, 1996) proposes the ULA step
y = x - gamma grad U(x) + sqrt(2 gamma) Z and accepts it with probability

    alpha(x, y) = min{1, exp(-U(y)) q(x | y) / (exp(-U(x)) q(y | x))},
    q(y | x) = N(y; x - gamma grad U(x), 2 gamma I),

so that p proportional to exp(-U) is exactly invariant (detailed balance), whatever gamma:
MALA removes the bias of ULA that chapter 6 measures, at the price of rejections and of needing
U itself (not only its gradient).

>>> import torch
>>> from coursekit.ebm import GaussianEnergy
>>> x, acc = mala(GaussianEnergy(torch.zeros(1), 1.0), torch.zeros(20_000, 1), gamma=1.0, n_steps=100,
...               generator=torch.Generator().manual_seed(0), return_acceptance=True)
>>> round(x.var().item(), 1), bool(0 < acc.mean() < 1)   # ULA with gamma = 1 has variance 2
(1.0, True)
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable, Sequence

import torch
from torch import Tensor

from ..ebm.langevin import energy_and_grad, step_sizes, ula
from ..flows.base import set_validation, validation_enabled
from .objectives import model_score

__all__ = ["mala_log_acceptance", "mala", "score_drift", "annealed_langevin"]


def _check_start(x0: Tensor) -> None:
    if not isinstance(x0, Tensor) or not x0.is_floating_point():
        raise TypeError(f"x0 must be a floating-point tensor of shape (n, ...), got {type(x0).__name__}"
                        + (f" of dtype {x0.dtype}" if isinstance(x0, Tensor) else ""))
    if x0.dim() < 2:
        raise ValueError(f"x0 has shape {tuple(x0.shape)}: it must be (n, ...), one chain per row "
                         "(for scalar chains use x0.unsqueeze(-1))")
    if not torch.isfinite(x0).all():
        raise ValueError("x0 contains NaN or infinite values; start the chains from finite points")


@contextmanager
def _inputs_trusted():
    # inside a chain the energy's input is the previous state: skip its per-call NaN check
    old = validation_enabled()
    set_validation(False)
    try:
        yield
    finally:
        set_validation(old)


def mala_log_acceptance(x: Tensor, y: Tensor, u_x: Tensor, u_y: Tensor, grad_x: Tensor, grad_y: Tensor,
                        gamma: float) -> Tensor:
    """log alpha(x, y) for MALA's proposal y from x, one value per chain (shape ``(n,)``, <= 0):

        log alpha = min{0, U(x) - U(y) + (|y - x + gamma grad U(x)|^2 - |x - y + gamma grad U(y)|^2) / (4 gamma)}.

    ``u_*`` are the energies ``(n,)`` and ``grad_*`` the gradients of U (shape of x) at x and y.
    """
    n = x.shape[0]
    forward = (y - x + gamma * grad_x).reshape(n, -1).pow(2).sum(-1)
    backward = (x - y + gamma * grad_y).reshape(n, -1).pow(2).sum(-1)
    return torch.clamp(u_x - u_y + (forward - backward) / (4 * gamma), max=0.0)


def mala(energy: Callable[[Tensor], Tensor], x0: Tensor, gamma: float | Sequence[float] | Callable[[int], float],
         n_steps: int, *, generator: torch.Generator | None = None, return_chain: bool = False,
         return_acceptance: bool = False):
    """Run ``x0.shape[0]`` MALA chains for ``n_steps`` steps on ``x0``'s device.

    ``gamma`` is a step size, a schedule of ``n_steps`` values or a callable (as for
    :func:`~coursekit.ebm.ula`). Returns the last states (or the chain ``(n_steps + 1, *x0.shape)``
    with ``return_chain=True``), and with ``return_acceptance=True`` also each chain's fraction of
    accepted proposals, shape ``(n,)``. Raises ``FloatingPointError`` with advice if a proposal
    leaves the finite numbers (then rejection cannot save the chain: lower gamma).
    """
    _check_start(x0)
    gammas = step_sizes(gamma, n_steps)
    x = x0.detach()
    chain = [x] if return_chain else None
    accepted = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
    shape = (x.shape[0],) + (1,) * (x.dim() - 1)
    with _inputs_trusted():
        u_x, g_x = energy_and_grad(energy, x)
        for k, g in enumerate(gammas):
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            y = (x - g * g_x + math.sqrt(2 * g) * noise).detach()
            u_y, g_y = energy_and_grad(energy, y)
            log_a = mala_log_acceptance(x, y, u_x.detach(), u_y.detach(), g_x, g_y, g)
            if not bool(torch.isfinite(log_a).all()):
                raise FloatingPointError(f"MALA diverged: a proposal left the finite numbers at step {k + 1} "
                                         f"(step size {g:g}); lower gamma (below 2 / L for an L-Lipschitz grad U)")
            log_u = torch.log(torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype))
            accept = log_u < log_a
            x = torch.where(accept.reshape(shape), y, x)
            u_x = torch.where(accept, u_y.detach(), u_x.detach())
            g_x = torch.where(accept.reshape(shape), g_y, g_x)
            accepted = accepted + accept.to(x.dtype)
            if chain is not None:
                chain.append(x)
    out = torch.stack(chain) if chain is not None else x
    if return_acceptance:
        return out, accepted / max(n_steps, 1)
    return out


def score_drift(score: Callable, *args) -> Callable[[Tensor], Tensor]:
    """An "energy" whose gradient is -score(x, *args): U_s(x) = -<x, sg[s(x)]>, with sg a stop-gradient.

    :func:`~coursekit.ebm.ula` only uses grad_x U, and grad_x U_s = -s(x) exactly, so ULA driven by
    U_s is Langevin dynamics with the drift s, for any score field (a gradient or not). U_s is not
    an energy of anything: use it only as a drift.
    """

    def drift_energy(x: Tensor) -> Tensor:
        with torch.enable_grad():
            xs = x.detach().requires_grad_(True)
            s = model_score(score, xs, *args, create_graph=False).detach()
        return -(x * s).reshape(x.shape[0], -1).sum(-1)

    return drift_energy


def annealed_langevin(score: Callable[[Tensor, Tensor], Tensor], x0: Tensor, sigmas: Sequence[float] | Tensor,
                      n_steps_each: int = 100, eps: float = 1e-5, *, denoise: bool = True,
                      generator: torch.Generator | None = None, return_levels: bool = False):
    """Annealed Langevin dynamics (Song & Ermon, 2019): ``n_steps_each`` ULA steps with the score
    ``score(x, sigma)`` at each level of ``sigmas`` (largest first), step eps * sigma_i^2 / sigma_L^2.

    ``score(x, sigma)`` receives the level as a tensor of shape ``(n,)`` and returns a score of the
    shape of ``x`` (e.g. a :class:`~coursekit.score.NoiseConditionalScore`) or an energy ``(n,)``.
    ``eps`` is the ULA step at the smallest level (Song & Ermon's epsilon is 2 eps). With
    ``denoise`` the result is x + sigma_L^2 s(x, sigma_L) (Tweedie's denoiser). With
    ``return_levels`` a list of the states after each level comes back as well.
    """
    _check_start(x0)
    sig = [float(s) for s in torch.as_tensor(sigmas, dtype=torch.float64).flatten()]
    if not sig or any(not (math.isfinite(s) and s > 0) for s in sig):
        raise ValueError(f"sigmas must be positive finite noise levels, got {sigmas!r}")
    if any(b > a for a, b in zip(sig, sig[1:])):
        raise ValueError("sigmas must be sorted from the largest noise level to the smallest (annealing goes down)")
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a positive step size, got {eps!r}")
    if not isinstance(n_steps_each, int) or isinstance(n_steps_each, bool) or n_steps_each < 1:
        raise ValueError(f"n_steps_each must be a positive integer, got {n_steps_each!r}")
    x, levels = x0.detach(), []
    for s in sig:
        level = torch.full((x.shape[0],), s, device=x.device, dtype=x.dtype)
        x = ula(score_drift(score, level), x, eps * s**2 / sig[-1] ** 2, n_steps_each, generator=generator)
        levels.append(x)
    if denoise:
        level = torch.full((x.shape[0],), sig[-1], device=x.device, dtype=x.dtype)
        with torch.enable_grad():
            xs = x.detach().requires_grad_(True)
            x = (x + sig[-1] ** 2 * model_score(score, xs, level, create_graph=False)).detach()
    return (x, levels) if return_levels else x
