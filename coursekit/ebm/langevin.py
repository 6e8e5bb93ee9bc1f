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

from .. import _validate as V
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
    V.boolean("create_graph", create_graph)
    V.function("energy", energy)
    V.tensor("x", x, finite=False)
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
    V.nonneg_int("n_steps", n_steps)
    if callable(gamma):
        gammas = [V.real(f"gamma({k})", gamma(k)) for k in range(n_steps)]
    elif isinstance(gamma, (int, float, bool, str)) or gamma is None or (isinstance(gamma, Tensor) and gamma.dim() == 0):
        gammas = [V.positive_float("gamma (the step size)", gamma)] * n_steps
    else:
        try:
            gammas = [V.real(f"gamma[{k}]", g) for k, g in enumerate(gamma)]
        except TypeError as err:
            if "object is not iterable" not in str(err):
                raise
            raise TypeError(f"gamma must be a number, a sequence of n_steps numbers or a function k -> gamma_k, "
                            f"got {V.describe(gamma)}") from None
        if len(gammas) != n_steps:
            raise ValueError(f"a step-size schedule needs n_steps={n_steps} values, got {len(gammas)}")
    bad = [g for g in gammas if not (math.isfinite(g) and g > 0)]
    if bad:
        raise ValueError(f"step sizes must be positive and finite; got {bad[0]!r}")
    return gammas


def _check_start(x0: Tensor, energy=None) -> None:
    if not isinstance(x0, Tensor) or not x0.is_floating_point():
        raise TypeError(f"x0 must be a floating-point tensor of shape (n, ...), got {type(x0).__name__}"
                        + (f" of dtype {x0.dtype}" if isinstance(x0, Tensor) else ""))
    if not callable(energy):
        raise TypeError(f"energy must be a function (e.g. an Energy module) mapping (n, ...) to (n,), got "
                        f"{V.describe(energy)}")
    event_shape = getattr(energy, "event_shape", None)
    if x0.dim() < 2:
        hint = f"(n, {', '.join(map(str, event_shape))})" if event_shape else "(n, p)"
        raise ValueError(f"x0 has shape {tuple(x0.shape)}: it must be {hint}, one chain per row "
                         f"(for scalar chains use x0.unsqueeze(-1))")
    if event_shape is not None and tuple(x0.shape[1:]) != tuple(event_shape):
        raise ValueError(f"x0 has shape {tuple(x0.shape)}, expected (n, {', '.join(map(str, event_shape))}) "
                         f"to match the energy's event shape")
    if isinstance(energy, torch.nn.Module):
        ref = V.reference(energy)
        if ref is not None:
            V.check_dtype_device("x0", x0, ref.dtype, ref.device)
    if not torch.isfinite(x0).all():
        raise ValueError("x0 contains NaN or infinite values; start the chains from finite points")


def _check_generator(generator, x0: Tensor) -> None:
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {V.describe(generator)}")
    if generator.device.type != x0.device.type:
        raise ValueError(f"generator is on {generator.device} but x0 is on {x0.device}; "
                         f"use torch.Generator(device='{x0.device}')")


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
    _check_start(x0, energy)
    gammas = step_sizes(gamma, n_steps)
    V.boolean("return_chain", return_chain)
    V.nonneg_int("check_every", check_every)
    _check_generator(generator, x0)
    chain = [x0.detach()] if return_chain else None
    x = _ula_steps(energy, x0, gammas, generator, chain, check_every)
    if not torch.isfinite(x).all():
        raise _diverged("ULA", n_steps, gammas[-1] if gammas else 0.0, "Lower gamma, or use a decreasing schedule.")
    return torch.stack(chain) if chain is not None else x


def _ula_steps(energy, x0: Tensor, gammas: list[float], generator=None, chain: list | None = None,
               check_every: int = 0) -> Tensor:
    """The ULA recursion itself, on checked arguments, with no read back from the device unless
    ``check_every`` asks for one (:func:`ula` checks the start and the end around it; the EBM
    trainer, which watches the energies of every iteration on the device, calls it directly)."""
    x = x0.detach()
    with _inputs_trusted():
        for k, g in enumerate(gammas):
            _, grad = energy_and_grad(energy, x)
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = (x - g * grad + math.sqrt(2 * g) * noise).detach()
            if chain is not None:
                chain.append(x)
            if check_every and (k + 1) % check_every == 0 and not torch.isfinite(x).all():
                raise _diverged("ULA", k + 1, g, "Lower gamma, or use a decreasing schedule.")
    return x


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
    _check_start(x0, energy)
    step_size = V.positive_float("step_size", step_size)
    noise_std = V.nonneg_float("noise_std", noise_std)
    V.nonneg_int("n_steps", n_steps)
    # a negative grad_clip clamps every gradient entry to one constant, an inverted box the state
    grad_clip = V.optional(V.positive_float, "grad_clip", grad_clip)
    if clamp is not None:
        if isinstance(clamp, (str, bytes)) or not hasattr(clamp, "__len__") or len(clamp) != 2:
            raise TypeError(f"clamp must be a pair (lo, hi) or None, got {V.describe(clamp)}")
        clamp = (V.real("clamp[0]", clamp[0]), V.real("clamp[1]", clamp[1]))
        if not clamp[0] < clamp[1]:
            raise ValueError(f"clamp must be a box (lo, hi) with lo < hi, got {clamp}")
    V.boolean("return_chain", return_chain)
    _check_generator(generator, x0)
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
    s2 = V.positive_float("s2", s2)
    gamma = V.positive_float("gamma", gamma)
    if gamma >= 2 * s2:
        raise ValueError(f"ULA on N(0, {s2}) has no stationary law for gamma={gamma} >= 2 s2 = {2 * s2}: it diverges")
    return s2 / (1 - gamma / (2 * s2))
