"""Score matching objectives: the Fisher divergence to the data, up to a constant, without grad log p*.

For a model with score s_theta (an energy U_theta, s_theta = -grad_x U_theta, or a free-form score
network) and data X ~ mu*, the Fisher divergence of chapter 2 is

    F(mu*, mu_theta) = 1/2 E |grad log p*(X) - s_theta(X)|^2.

Hyvarinen (2005) integrates the cross term by parts (for scores decaying fast enough at infinity):

    F(mu*, mu_theta) = J_H(theta) + 1/2 E |grad log p*(X)|^2,
    J_H(theta) = E[ 1/2 |s_theta(X)|^2 + tr grad_x s_theta(X) ]          (:func:`exact_score_matching`)

and the constant does not depend on theta. For an energy, tr grad_x s_theta = -Laplacian U_theta:
J_H = E[1/2 |grad U|^2 - Delta U], with no Z(theta) anywhere. The trace costs p backward passes.

* :func:`sliced_score_matching` (Song, Garg, Shi & Ermon, 2019) replaces the trace by
  E_v[v^T grad_x (v^T s_theta)] with E[v v^T] = I: one backward pass per projection v.
* :func:`denoising_score_matching` (Vincent, 2011) fits the score of the noised law
  p_sigma = p* * N(0, sigma^2 I) by regression on the score of the Gaussian kernel:

      J_D(theta) = 1/2 E |s_theta(X + sigma Z) + Z / sigma|^2 = F(p_sigma, p_theta) + C(sigma).

* :func:`noise_conditional_score_matching` (Song & Ermon, 2019) averages J_D over a ladder of
  noise levels, with weight lambda(sigma) = sigma^2, for a network s_theta(x, sigma).

>>> import torch
>>> from coursekit.ebm import GaussianEnergy
>>> x = torch.randn(4096, 2, dtype=torch.float64)
>>> U = GaussianEnergy(torch.zeros(2, dtype=torch.float64), 1.0)   # the data's own law: F = 0
>>> J = exact_score_matching(U, x)      # = F - 1/2 E|grad log p*|^2 = -1/2 E|x|^2 = -1 (about)
>>> round(J.item(), 1)
-1.0
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

__all__ = [
    "model_score",
    "fisher_divergence",
    "exact_score_matching",
    "sliced_score_matching",
    "denoising_score_matching",
    "dsm_target",
    "noise_conditional_score_matching",
    "geometric_sigmas",
    "REDUCTIONS",
]

REDUCTIONS = ("mean", "none")


def _check_batch(x: Tensor, name: str = "x") -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor of shape (n, ...), got "
                        f"{type(x).__name__}" + (f" of dtype {x.dtype}" if isinstance(x, Tensor) else ""))
    if x.dim() < 2 or x.shape[0] < 1:
        raise ValueError(f"{name} must have shape (n, ...) with a batch dimension n >= 1 and the data after it, "
                         f"got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")


def _check_sigma(sigma, name: str = "sigma") -> float:
    if isinstance(sigma, Tensor) and sigma.dim() == 0:
        sigma = float(sigma)
    if not isinstance(sigma, (int, float)) or isinstance(sigma, bool) or not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"{name} must be a positive finite noise level, got {sigma!r}")
    return float(sigma)


def _reduce(per_sample: Tensor, reduction: str) -> Tensor:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r} unknown; choose one of {', '.join(REDUCTIONS)}")
    return per_sample.mean() if reduction == "mean" else per_sample


def model_score(model: Callable, x: Tensor, *args, create_graph: bool = True) -> Tensor:
    """The score of ``model`` at ``x`` (same shape as ``x``), differentiable in x and in theta.

    ``model(x, *args)`` is either an energy (one value per sample, shape ``(n,)``), whose score
    ``-grad_x U`` is taken by autograd with ``create_graph``, or a score network (output of the
    shape of ``x``), returned as is. ``x`` must require grad for the objectives' trace terms.
    """
    out = model(x, *args)
    if not isinstance(out, Tensor):
        raise TypeError(f"the model must return a tensor, got {type(out).__name__}")
    if out.shape == x.shape:
        return out
    if out.shape == x.shape[:1]:
        if not x.requires_grad:
            raise ValueError("the score of an energy needs x.requires_grad; pass x.detach().requires_grad_(True)")
        (g,) = torch.autograd.grad(out.sum(), x, create_graph=create_graph)
        return -g
    raise ValueError(f"the model must return an energy of shape ({x.shape[0]},) or a score of the input's shape "
                     f"{tuple(x.shape)}; got {tuple(out.shape)}")


def fisher_divergence(score_p: Callable[[Tensor], Tensor], score_q: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """Monte Carlo estimate of F(mu, nu) = 1/2 E_{X~mu} |grad log p_mu(X) - grad log p_nu(X)|^2
    from samples ``x`` of mu; each score maps ``(n, ...)`` to the shape of ``x`` (e.g.
    ``energy.score`` or a :class:`~coursekit.score.GaussianMixture`'s ``score``).

    The definition is chapter 2's, with the factor 1/2 (the one score matching uses).
    """
    _check_batch(x)
    sp, sq = score_p(x), score_q(x)
    if sp.shape != x.shape or sq.shape != x.shape:
        raise ValueError(f"both scores must have the shape of x {tuple(x.shape)}, got {tuple(sp.shape)} and "
                         f"{tuple(sq.shape)}")
    return 0.5 * (sp - sq).reshape(x.shape[0], -1).pow(2).sum(-1).mean()


def exact_score_matching(model: Callable, x: Tensor, reduction: str = "mean") -> Tensor:
    """Hyvarinen's objective J_H = E[1/2 |s_theta(X)|^2 + tr grad_x s_theta(X)] on the batch ``x``.

    J_H(theta) = F(mu*, mu_theta) - 1/2 E|grad log p*|^2 (Hyvarinen, 2005, Theorem 1). The trace
    is computed exactly, one backward pass per coordinate: the cost grows linearly with the
    dimension p on top of the score's own. ``model`` is an energy or a score network (see
    :func:`model_score`). The result is differentiable in theta (``reduction="none"``: one value
    per sample).

    >>> from coursekit.ebm import GaussianEnergy
    >>> U = GaussianEnergy(torch.zeros(3), 2.0)        # s(x) = -x / 4, tr grad s = -3 / 4
    >>> x = torch.ones(5, 3)
    >>> exact_score_matching(U, x, reduction="none").tolist()   # 1/2 * 3/16 - 3/4
    [-0.65625, -0.65625, -0.65625, -0.65625, -0.65625]
    """
    _check_batch(x)
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        s = model_score(model, x).reshape(x.shape[0], -1)
        trace = torch.zeros_like(s[:, 0])
        for i in range(s.shape[1]):
            (g,) = torch.autograd.grad(s[:, i].sum(), x, create_graph=True)
            trace = trace + g.reshape(x.shape[0], -1)[:, i]
        return _reduce(0.5 * s.pow(2).sum(-1) + trace, reduction)


PROJECTIONS = ("rademacher", "gaussian")


def sliced_score_matching(model: Callable, x: Tensor, n_projections: int = 1, distribution: str = "rademacher",
                          variance_reduced: bool = True, reduction: str = "mean",
                          generator: torch.Generator | None = None) -> Tensor:
    """Sliced score matching (Song, Garg, Shi & Ermon, 2019): the trace of Hyvarinen's objective
    estimated with random projections v, E[v v^T] = I (``"rademacher"`` or ``"gaussian"``),

        J_S = E_X E_v[ 1/2 |s_theta(X)|^2 + v^T grad_x (v^T s_theta(X)) ],

    whose expectation over v is J_H, at one backward pass per projection whatever p. With
    ``variance_reduced=False`` the first term is 1/2 (v^T s_theta)^2 (the paper's SSM; its
    SSM-VR is the default, which integrates that term over v in closed form).

    >>> from coursekit.ebm import GaussianEnergy
    >>> U = GaussianEnergy(torch.zeros(3), 2.0)
    >>> sliced_score_matching(U, torch.ones(5, 3), n_projections=4).item()  # grad s = -I/4: exact
    -0.65625
    """
    _check_batch(x)
    if not isinstance(n_projections, int) or isinstance(n_projections, bool) or n_projections < 1:
        raise ValueError(f"n_projections must be a positive integer, got {n_projections!r}")
    if distribution not in PROJECTIONS:
        raise ValueError(f"distribution={distribution!r} unknown; choose one of {', '.join(PROJECTIONS)}")
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        s = model_score(model, x).reshape(x.shape[0], -1)
        shape = (n_projections, *s.shape)
        v = torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)
        if distribution == "rademacher":
            v = v.sign()
        total = torch.zeros_like(s[:, 0])
        for j in range(n_projections):
            sv = (s * v[j]).sum(-1)
            (g,) = torch.autograd.grad(sv.sum(), x, create_graph=True)
            total = total + (v[j] * g.reshape(x.shape[0], -1)).sum(-1)
            if not variance_reduced:
                total = total + 0.5 * sv.pow(2)
        per_sample = total / n_projections
        if variance_reduced:
            per_sample = per_sample + 0.5 * s.pow(2).sum(-1)
        return _reduce(per_sample, reduction)


def dsm_target(x: Tensor, x_noisy: Tensor, sigma: float | Tensor) -> Tensor:
    """The regression target of denoising score matching: the score of the Gaussian kernel
    q_sigma(x_noisy | x) = N(x, sigma^2 I) in x_noisy, -(x_noisy - x) / sigma^2 = -Z / sigma.

    Its conditional mean given x_noisy is grad log p_sigma(x_noisy) (Vincent, 2011), which is why
    regressing s_theta(x_noisy) on it fits the score of the noised law.

    >>> dsm_target(torch.zeros(1, 2), torch.tensor([[0.5, -1.0]]), 0.5)
    tensor([[-2.,  4.]])
    """
    return -(x_noisy - x) / sigma**2


def denoising_score_matching(model: Callable, x: Tensor, sigma: float, reduction: str = "mean",
                             generator: torch.Generator | None = None, noise: Tensor | None = None) -> Tensor:
    """Vincent's (2011) objective J_D = 1/2 E |s_theta(X + sigma Z) - dsm_target|^2 at noise level sigma.

    J_D(theta) = F(p_sigma, p_theta) + C(sigma), with p_sigma = p* * N(0, sigma^2 I) and C independent
    of theta: its minimiser over all functions is grad log p_sigma, the score of the *noised*
    data, not of p*. No derivative of the score is needed, so the cost does not grow with p.
    ``noise`` (the Z, shape of x) may be given; otherwise it is drawn with ``generator``.

    >>> from coursekit.score import GaussianMixture
    >>> data = GaussianMixture(torch.zeros(1, 2), 1.0)   # N(0, I): p_sigma = N(0, (1 + sigma^2) I)
    >>> x = data.sample(20_000, generator=torch.Generator().manual_seed(0))
    >>> best = data.noised(0.5)                          # the minimiser, closed form
    >>> d_best = denoising_score_matching(best, x, 0.5, generator=torch.Generator().manual_seed(1))
    >>> d_worse = denoising_score_matching(data, x, 0.5, generator=torch.Generator().manual_seed(1))
    >>> bool(d_best < d_worse)
    True
    """
    _check_batch(x)
    sigma = _check_sigma(sigma)
    if noise is None:
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    elif noise.shape != x.shape:
        raise ValueError(f"noise must have the shape of x {tuple(x.shape)}, got {tuple(noise.shape)}")
    with torch.enable_grad():
        x_noisy = (x.detach() + sigma * noise).requires_grad_(True)
        s = model_score(model, x_noisy)
        per_sample = 0.5 * (s - dsm_target(x.detach(), x_noisy.detach(), sigma)).reshape(x.shape[0], -1).pow(2).sum(-1)
        return _reduce(per_sample, reduction)


def geometric_sigmas(sigma_max: float, sigma_min: float, n_levels: int, dtype=torch.float32) -> Tensor:
    """The ladder sigma_1 > ... > sigma_L of Song & Ermon (2019): ``n_levels`` noise levels from
    ``sigma_max`` down to ``sigma_min`` with a constant ratio sigma_{i+1} / sigma_i.

    >>> geometric_sigmas(10.0, 0.1, 3).tolist()
    [10.0, 1.0, 0.10000000149011612]
    """
    hi, lo = _check_sigma(sigma_max, "sigma_max"), _check_sigma(sigma_min, "sigma_min")
    if not hi > lo:
        raise ValueError(f"need sigma_max > sigma_min (the ladder goes down), got {hi} and {lo}")
    if not isinstance(n_levels, int) or isinstance(n_levels, bool) or n_levels < 2:
        raise ValueError(f"n_levels must be an integer >= 2, got {n_levels!r}")
    return torch.logspace(math.log10(hi), math.log10(lo), n_levels, dtype=torch.float64).to(dtype)


def noise_conditional_score_matching(model: Callable[[Tensor, Tensor], Tensor], x: Tensor,
                                     sigmas: Sequence[float] | Tensor,
                                     reduction: str = "mean", generator: torch.Generator | None = None) -> Tensor:
    """The objective of the noise-conditional score network (NCSN; Song & Ermon, 2019):

        L(theta) = (1/L) sum_i lambda(sigma_i) J_D(theta; sigma_i),   lambda(sigma) = sigma^2,

    estimated with one level drawn uniformly per sample: 1/2 |sigma s_theta(X + sigma Z, sigma) + Z|^2.
    The weight sigma^2 makes every level's term of order one (|sigma grad log p_sigma| ~ 1).
    ``model(x, sigma)`` takes the noise levels as a tensor of shape ``(n,)`` and returns a score
    of the shape of ``x`` (or an energy of shape ``(n,)``).
    """
    _check_batch(x)
    sig = torch.as_tensor(sigmas, dtype=x.dtype, device=x.device).flatten()
    if sig.numel() < 1 or not bool(torch.isfinite(sig).all() and (sig > 0).all()):
        raise ValueError(f"sigmas must be positive finite noise levels, got {sigmas!r}")
    idx = torch.randint(sig.numel(), (x.shape[0],), generator=generator, device=x.device)
    level = sig[idx]
    z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    scale = level.reshape(-1, *([1] * (x.dim() - 1)))
    with torch.enable_grad():
        x_noisy = (x.detach() + scale * z).requires_grad_(True)
        s = model_score(model, x_noisy, level)
        per_sample = 0.5 * (scale * s + z).reshape(x.shape[0], -1).pow(2).sum(-1)
        return _reduce(per_sample, reduction)
