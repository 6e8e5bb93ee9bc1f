"""The Gaussian family fitted by maximum likelihood: closed form, SGD, and the copying test.

Chapter 2 of the course fits ``mu_theta = N(m, diag(sigma^2))`` (and full-covariance Gaussians)
to data by maximising the log-likelihood

    L_N(theta) = (1/N) sum_i log p_theta(x_i),

first in closed form (:func:`gaussian_mle`), then with the stochastic gradient ascent of the
slides (:func:`sgd_mle`, after Robbins and Monro, 1951)

    theta_{k+1} = theta_k + gamma_{k+1} sum_{x_i in B_{k+1}} grad_theta log p_theta(x_i) |_{theta_k},

with step sizes ``gamma_k = gamma_0 k^{-alpha}``, ``1/2 < alpha <= 1`` (:func:`robbins_monro`),
so that ``sum gamma_k = inf`` and ``sum gamma_k^2 < inf``. The diagonal family is parametrised
by ``theta = (m, s)`` with ``s = log sigma``, which keeps ``sigma > 0`` without constraints.

:func:`nearest_neighbour_distance` measures how far samples lie from the training set: samples
of the empirical measure are training points (distance 0), samples of a fitted model are not.

>>> x = torch.tensor([[0.0], [2.0]])
>>> m, var = gaussian_mle(x, diagonal=True)
>>> m.tolist(), var.tolist()  # the MLE divides by N, not N - 1
([1.0], [1.0])
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import torch
from torch import Tensor
from torch.distributions import MultivariateNormal

from . import _validate as V
from .train import guard, progress

__all__ = [
    "gaussian_log_density",
    "gaussian_grad_log_density",
    "gaussian_mle",
    "fit_gaussian",
    "kl_gaussian",
    "robbins_monro",
    "SGDResult",
    "sgd_mle",
    "sample_empirical",
    "nearest_neighbour_distance",
]

_LOG_2PI = math.log(2.0 * math.pi)


def _check_data(x: Tensor, what: str = "x") -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{what} must be a torch.Tensor of shape (N, p), got {type(x).__name__}")
    if x.dim() != 2:
        hint = " For scalar data use x.unsqueeze(-1) to get shape (N, 1)." if x.dim() == 1 else ""
        raise ValueError(f"{what} has shape {tuple(x.shape)}, expected (N, p).{hint}")
    if x.shape[0] < 1:
        raise ValueError(f"{what} holds no data point")
    if not x.is_floating_point():
        raise TypeError(f"{what} has dtype {x.dtype}; it must be floating point: call {what}.float()")
    if not torch.isfinite(x).all():
        raise ValueError(f"{what} contains NaN or infinite values; clean the data first")


def _check_params(x: Tensor, mean: Tensor, log_std: Tensor) -> None:
    for name, t in (("mean", mean), ("log_std", log_std)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a tensor broadcastable to ({x.shape[1]},), got {V.describe(t)}")
        if t.dim() > 1 or (t.dim() == 1 and t.shape[0] not in (1, x.shape[1])):
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected ({x.shape[1]},) to match the data")
        V.check_dtype_device(name, t, x.dtype, x.device)


def gaussian_log_density(x: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    """Log-density of ``N(mean, diag(exp(log_std)^2))`` at each row of ``x``.

    ``log p(x) = -sum_j [ (x_j - m_j)^2 / (2 sigma_j^2) + log sigma_j + log(2 pi) / 2 ]``.

    Args:
        x: ``(N, p)``; mean, log_std: broadcastable to ``(p,)``.
    Returns:
        ``(N,)``.

    >>> gaussian_log_density(torch.zeros(1, 1), torch.zeros(1), torch.zeros(1))
    tensor([-0.9189])
    """
    _check_data(x)
    _check_params(x, mean, log_std)
    z = (x - mean) * torch.exp(-log_std)
    return -(0.5 * z**2 + log_std + 0.5 * _LOG_2PI).sum(-1)


def gaussian_grad_log_density(x: Tensor, mean: Tensor, log_std: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample gradient of :func:`gaussian_log_density` in ``(m, s = log sigma)``.

    ``d/dm log p(x) = (x - m) / sigma^2`` and ``d/ds log p(x) = (x - m)^2 / sigma^2 - 1``
    (coordinate-wise). Both are ``(N, p)``; their mean over the data vanishes exactly at the
    closed-form MLE (:func:`gaussian_mle`).
    """
    _check_data(x)
    _check_params(x, mean, log_std)
    inv_var = torch.exp(-2.0 * log_std)
    r = x - mean
    return r * inv_var, r**2 * inv_var - 1.0


def gaussian_mle(x: Tensor, diagonal: bool = False) -> tuple[Tensor, Tensor]:
    """Closed-form maximum likelihood estimate of a Gaussian from the rows of ``x``.

    ``m_N = (1/N) sum_i x_i`` and ``Sigma_N = (1/N) sum_i (x_i - m_N)(x_i - m_N)^T``: the MLE divides
    by ``N`` (it is biased; the unbiased ``N - 1`` estimator is *not* the maximiser).

    Returns ``(mean (p,), cov (p, p))``, or ``(mean (p,), var (p,))`` when ``diagonal``.
    """
    _check_data(x)
    V.boolean("diagonal", diagonal)
    mean = x.mean(0)
    r = x - mean
    if diagonal:
        return mean, (r**2).mean(0)
    return mean, r.T @ r / x.shape[0]


def fit_gaussian(x: Tensor, jitter: float = 1e-3) -> MultivariateNormal:
    """The maximum likelihood Gaussian of ``x`` as a ``torch.distributions.MultivariateNormal``.

    Pixels that never vary (the corners of the digits) make the MLE covariance singular; a
    ridge ``jitter * (tr Sigma_N / p) * I`` is added so that the density exists everywhere.
    """
    V.nonneg_float("jitter", jitter)
    mean, cov = gaussian_mle(x)
    p = cov.shape[0]
    ridge = jitter * torch.diagonal(cov).mean().clamp_min(torch.finfo(cov.dtype).tiny)
    cov = cov + ridge * torch.eye(p, dtype=cov.dtype, device=cov.device)
    try:
        return MultivariateNormal(mean, covariance_matrix=cov)
    except (ValueError, RuntimeError) as err:  # Cholesky failed
        raise ValueError(
            f"the fitted covariance is not positive definite with jitter={jitter}; increase jitter"
        ) from err


def kl_gaussian(mean0: Tensor, cov0: Tensor, mean1: Tensor, cov1: Tensor) -> Tensor:
    """``KL(N(mean0, cov0) || N(mean1, cov1))`` in closed form (full covariances ``(p, p)``).

    ``KL = [ tr(S1^{-1} S0) + (m1 - m0)^T S1^{-1} (m1 - m0) - p + log det S1 - log det S0 ] / 2``.
    """
    for name, t in (("mean0", mean0), ("cov0", cov0), ("mean1", mean1), ("cov1", cov1)):
        V.tensor(name, t, dim=1 if name.startswith("mean") else 2, like=mean0 if name != "mean0" else None)
    p = mean0.shape[0]
    if mean1.shape != (p,) or cov0.shape != (p, p) or cov1.shape != (p, p):
        raise ValueError(f"shapes do not match: mean0 {tuple(mean0.shape)}, cov0 {tuple(cov0.shape)}, "
                         f"mean1 {tuple(mean1.shape)}, cov1 {tuple(cov1.shape)}")
    try:
        return torch.distributions.kl_divergence(MultivariateNormal(mean0, cov0), MultivariateNormal(mean1, cov1))
    except (ValueError, RuntimeError) as err:
        raise ValueError("cov0 and cov1 must be symmetric positive definite matrices") from err


def robbins_monro(k: int | Tensor, gamma0: float, alpha: float = 1.0):
    """Step size ``gamma_k = gamma0 * k^{-alpha}`` for ``k >= 1``.

    For ``1/2 < alpha <= 1``: ``sum_k gamma_k = inf`` (the iterates can travel anywhere) and
    ``sum_k gamma_k^2 < inf`` (the gradient noise averages out), the conditions under which SGD
    converges almost surely (Robbins and Monro, 1951).
    """
    gamma0 = V.positive_float("gamma0", gamma0)
    alpha = V.real("alpha", alpha)
    if not 0.5 < alpha <= 1.0:
        raise ValueError(f"alpha={alpha} breaks the Robbins-Monro conditions; choose 1/2 < alpha <= 1")
    if isinstance(k, Tensor):
        if (k < 1).any():
            raise ValueError("step indices start at k = 1")
        return gamma0 * k.to(torch.get_default_dtype()) ** (-alpha)
    k = V.integer("k", k)
    if k < 1:
        raise ValueError(f"step indices start at k = 1, got {k}")
    return gamma0 * float(k) ** (-alpha)


class SGDResult(NamedTuple):
    """``theta``: final parameters; ``trajectory``: one tensor per parameter, ``(n_steps + 1, *shape)``
    holding every iterate from ``theta_0``; ``step_sizes``: ``(n_steps,)``."""

    theta: tuple[Tensor, ...]
    trajectory: tuple[Tensor, ...]
    step_sizes: Tensor


def sgd_mle(
    x: Tensor,
    log_density: Callable[..., Tensor],
    theta0: Sequence[Tensor],
    n_steps: int,
    batch_size: int,
    gamma0: float,
    alpha: float = 1.0,
    generator: torch.Generator | None = None,
) -> SGDResult:
    """Maximum likelihood by stochastic gradient ascent, as in the slides:

    ``theta_{k+1} = theta_k + gamma_{k+1} sum_{x_i in B_{k+1}} grad_theta log p_theta(x_i)``

    with ``B_k`` a batch of ``batch_size`` indices drawn uniformly (with replacement) and
    ``gamma_k = gamma0 k^{-alpha}`` (:func:`robbins_monro`). Note the *sum* over the batch: the
    step size absorbs the batch size.

    Args:
        x: data ``(N, p)``.
        log_density: ``log_density(batch, *theta) -> (B,)`` log-densities, differentiable in theta
            (e.g. :func:`gaussian_log_density`).
        theta0: initial parameters (tensors; copied, not modified).
        n_steps, batch_size, gamma0, alpha: as above.
        generator: for the batches (reproducibility).

    Raises:
        TrainingDiverged: when the batch log-likelihood becomes NaN or infinite (lower gamma0).

    >>> g = torch.Generator().manual_seed(0)
    >>> x = 3.0 + 2.0 * torch.randn(500, 1, generator=g)
    >>> res = sgd_mle(x, gaussian_log_density, (torch.zeros(1), torch.zeros(1)), 2000, 10, 0.05, 0.6, g)
    >>> m, var = gaussian_mle(x, diagonal=True)
    >>> bool((res.theta[0] - m).abs() < 0.1), bool((res.theta[1].exp() ** 2 - var).abs() < 0.3)
    (True, True)
    """
    _check_data(x)
    V.positive_int("n_steps", n_steps)
    V.positive_int("batch_size", batch_size)
    V.function("log_density", log_density, "a function (batch, *theta) -> log-densities")
    if isinstance(theta0, Tensor) or not all(isinstance(t, Tensor) for t in theta0):
        raise TypeError("theta0 must be a sequence of tensors (the initial parameters), e.g. (mean, log_std)")
    if not all(bool(torch.isfinite(t).all()) for t in theta0):
        raise ValueError("theta0 contains NaN or infinite values")
    theta = [t.detach().to(device=x.device, dtype=x.dtype).clone().requires_grad_(True) for t in theta0]
    steps = robbins_monro(torch.arange(1, n_steps + 1, device="cpu"), gamma0, alpha)
    # all batches drawn at once: one RNG call instead of n_steps
    batches = torch.randint(x.shape[0], (n_steps, batch_size), generator=generator).to(x.device)
    trajectory = [torch.empty((n_steps + 1, *t.shape), dtype=t.dtype, device=t.device) for t in theta]
    for traj, t in zip(trajectory, theta):
        traj[0] = t.detach()
    for k in progress(range(n_steps), desc="SGD"):
        objective = log_density(x[batches[k]], *theta).sum()
        guard(objective, k + 1, what="batch log-likelihood", advice="Lower gamma0 (or the batch size).")
        grads = torch.autograd.grad(objective, theta)
        with torch.no_grad():
            gamma = float(steps[k])
            for t, g, traj in zip(theta, grads, trajectory):
                t.add_(g, alpha=gamma)  # ascent on the log-likelihood
                traj[k + 1] = t
    # a NaN produced by the last step is not seen by the guard above (it checks the next objective)
    if not all(bool(torch.isfinite(t).all()) for t in theta):
        guard(float("nan"), n_steps, what="parameter", advice="Lower gamma0 (or the batch size).")
    return SGDResult(tuple(t.detach() for t in theta), tuple(trajectory), steps)


def sample_empirical(x: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
    """``n`` samples of the empirical measure ``(1/N) sum_i delta_{x_i}``: training rows drawn
    uniformly with replacement."""
    _check_data(x)
    V.positive_int("n", n)
    idx = torch.randint(x.shape[0], (n,), generator=generator).to(x.device)
    return x[idx]


def nearest_neighbour_distance(samples: Tensor, reference: Tensor, chunk: int = 2048) -> Tensor:
    """Euclidean distance from each row of ``samples`` to its nearest row of ``reference``.

    ``d(y) = min_i ||y - x_i||``, computed in chunks of ``chunk`` samples (memory ``chunk * N``).
    A sample of the empirical measure has ``d = 0``: it *is* a training point.
    """
    _check_data(samples, "samples")
    _check_data(reference, "reference")
    V.positive_int("chunk", chunk)
    if samples.shape[1] != reference.shape[1]:
        raise ValueError(f"samples have dimension {samples.shape[1]} but reference has {reference.shape[1]}")
    out = []
    for start in range(0, samples.shape[0], chunk):
        block = samples[start: start + chunk]
        # direct differences, not the |a|^2 - 2ab + |b|^2 expansion: a copy of a training point
        # must come out at exactly 0, which the expansion misses by round-off
        d = torch.cdist(block, reference, compute_mode="donot_use_mm_for_euclid_dist")
        out.append(d.min(1).values)
    return torch.cat(out)
