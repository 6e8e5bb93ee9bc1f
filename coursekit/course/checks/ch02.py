"""Checks of the chapter 2 exercises (notebook ``ex02_mle``): the Gaussian MLE, the SGD step, and the
nearest training-neighbour distance that exposes copies."""

from __future__ import annotations

import torch

from ...gaussian import gaussian_grad_log_density, gaussian_mle
from ..registry import ExerciseFailure, exercise
from ._common import close, tensor_pair

__all__ = [
    "closed_form_mle", "sgd_step", "nn_distance", "reference_mle", "reference_sgd_step", "reference_nn_distance",
]

NOTEBOOK = "ex02_mle"


def _data(seed: int, n: int = 40, p: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(p, p, generator=g, dtype=torch.float64)
    return 2.0 + torch.randn(n, p, generator=g, dtype=torch.float64) @ mix


def _close(a, b, tol=1e-6):
    return close(a, b, tol)


# ------------------------------------------------------------------ 2.1: closed-form Gaussian MLE


def reference_mle(x: torch.Tensor):
    mean = x.mean(0)
    r = x - mean
    return mean, r.T @ r / x.shape[0]


@exercise("2.1", notebook=NOTEBOOK, title="Closed-form Gaussian MLE", points=2)
def closed_form_mle(answer):
    """``answer(x) -> (mean (p,), cov (p, p))``, the maximiser of the Gaussian log-likelihood."""
    if not callable(answer):
        raise ExerciseFailure("submit your function mle(x) itself (not its result)")
    for seed in (0, 1):
        x = _data(seed)
        n, p = x.shape
        mean, cov = tensor_pair(answer(x.clone()), "mle(x)")
        ref_mean, ref_cov = gaussian_mle(x)
        if mean.shape != (p,) or cov.shape != (p, p):
            raise ExerciseFailure(
                f"for x of shape {(n, p)} expected a mean of shape {(p,)} and a covariance of shape {(p, p)}, "
                f"got {tuple(mean.shape)} and {tuple(cov.shape)}"
            )
        if not _close(mean, ref_mean):
            raise ExerciseFailure(
                "the mean is wrong: the MLE of m is the empirical mean of the rows of x (average over axis 0)"
            )
        if _close(cov, ref_cov):
            continue
        if _close(cov, ref_cov * n / (n - 1)):
            raise ExerciseFailure(
                "you divided by N - 1 (the unbiased estimator); the maximiser of the likelihood divides by N"
            )
        if _close(cov, x.T @ x / n):
            raise ExerciseFailure("you forgot to centre the data: use (x - mean), not x, in the covariance")
        if _close(cov, torch.diag(torch.diagonal(ref_cov))):
            raise ExerciseFailure("the covariance is diagonal: the full-covariance MLE keeps the off-diagonal terms")
        if not _close(cov, cov.T):
            raise ExerciseFailure(
                "the covariance must be a symmetric (p, p) matrix: sum of outer products (x_i - m)(x_i - m)^T"
            )
        raise ExerciseFailure("the covariance is wrong: it should be (1/N) sum_i (x_i - m_N)(x_i - m_N)^T")


closed_form_mle.reference = lambda: reference_mle
closed_form_mle.mistakes = {
    "unbiased N - 1 variance": (
        lambda: (lambda x: (x.mean(0), torch.cov(x.T, correction=1))),
        "divided by N - 1",
    ),
    "uncentred second moment": (lambda: (lambda x: (x.mean(0), x.T @ x / x.shape[0])), "centre"),
    "diagonal only": (lambda: (lambda x: (x.mean(0), torch.diag(x.var(0, correction=0)))), "diagonal"),
}


# ------------------------------------------------------------------ 2.2: one SGD step (slides' update)


def reference_sgd_step(m: torch.Tensor, s: torch.Tensor, batch: torch.Tensor, gamma: float):
    inv_var = torch.exp(-2.0 * s)
    r = batch - m
    grad_m = (r * inv_var).sum(0)
    grad_s = (r**2 * inv_var - 1.0).sum(0)
    return m + gamma * grad_m, s + gamma * grad_s


@exercise("2.2", notebook=NOTEBOOK, title="One SGD step on the Gaussian log-likelihood", points=2)
def sgd_step(answer):
    """``answer(m, s, batch, gamma) -> (m_new, s_new)`` for ``N(m, diag(exp(s))^2)`` (``s = log sigma``)."""
    if not callable(answer):
        raise ExerciseFailure("submit your function sgd_step(m, s, batch, gamma) itself (not its result)")
    g = torch.Generator().manual_seed(2)
    p = 3
    batch = 1.0 + 2.0 * torch.randn(8, p, generator=g, dtype=torch.float64)
    m = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    s = torch.tensor([0.3, 0.0, -0.2], dtype=torch.float64)
    gamma = 0.01
    new_m, new_s = tensor_pair(answer(m.clone(), s.clone(), batch.clone(), gamma), "sgd_step(m, s, batch, gamma)")
    ref_m, ref_s = reference_sgd_step(m, s, batch, gamma)
    if new_m.shape != (p,) or new_s.shape != (p,):
        raise ExerciseFailure(f"expected m and s of shape {(p,)}, got {tuple(new_m.shape)} and {tuple(new_s.shape)}")
    if _close(new_m, ref_m) and _close(new_s, ref_s):
        return
    gm, gs = (t.sum(0) for t in gaussian_grad_log_density(batch, m, s))
    if _close(new_m, m - gamma * gm) or _close(new_s, s - gamma * gs):
        raise ExerciseFailure(
            "wrong sign: the slides' update is an ascent on the log-likelihood, theta + gamma * grad log p "
            "(equivalently a descent on the negative log-likelihood)"
        )
    if _close(new_m, m + gamma * gm / len(batch)) or _close(new_s, s + gamma * gs / len(batch)):
        raise ExerciseFailure("you averaged the gradients; the slides' update sums them over the batch B_{k+1}")
    if not _close(new_m, ref_m):
        raise ExerciseFailure("the update of m is wrong: d/dm log p(x) = (x - m) / sigma^2, summed over the batch")
    sigma = torch.exp(s)
    r2 = ((batch - m) ** 2).sum(0)
    if _close(new_s, s + gamma * r2 / sigma**2):
        raise ExerciseFailure(
            "the update of s misses the -1 per data point: it comes from the -log sigma = -s term of log p"
        )
    if _close(new_s, s + gamma * (r2 / sigma**3 - len(batch) / sigma)):
        raise ExerciseFailure(
            "you differentiated in sigma, but the parameter is s = log sigma: d/ds log p(x) = (x - m)^2 / sigma^2 - 1"
        )
    raise ExerciseFailure("the update of s is wrong: d/ds log p(x) = (x - m)^2 / sigma^2 - 1 with s = log sigma")


def _descent(m, s, batch, gamma):
    return reference_sgd_step(m, s, batch, -gamma)


def _no_minus_one(m, s, batch, gamma):
    inv_var = torch.exp(-2.0 * s)
    r = batch - m
    return m + gamma * (r * inv_var).sum(0), s + gamma * (r**2 * inv_var).sum(0)


def _mean_not_sum(m, s, batch, gamma):
    return reference_sgd_step(m, s, batch, gamma / len(batch))


def _grad_in_sigma(m, s, batch, gamma):
    sigma = torch.exp(s)
    r = batch - m
    return m + gamma * (r / sigma**2).sum(0), s + gamma * (r**2 / sigma**3 - 1.0 / sigma).sum(0)


sgd_step.reference = lambda: reference_sgd_step
sgd_step.mistakes = {
    "descent instead of ascent (sign)": (lambda: _descent, "wrong sign"),
    "missing -1 from the log sigma term": (lambda: _no_minus_one, "-1 per data point"),
    "mean instead of sum over the batch": (lambda: _mean_not_sum, "sums them over the batch"),
    "gradient in sigma instead of log sigma": (lambda: _grad_in_sigma, "s = log sigma"),
}


# ------------------------------------------------------------------ 2.3: nearest training-neighbour distance


def reference_nn_distance(samples: torch.Tensor, train: torch.Tensor) -> torch.Tensor:
    return torch.cdist(samples, train, compute_mode="donot_use_mm_for_euclid_dist").min(1).values


@exercise("2.3", notebook=NOTEBOOK, title="Nearest training-neighbour distance", points=1)
def nn_distance(answer):
    """``answer(samples (n, p), train (N, p)) -> (n,)``: distance of each sample to its nearest training row."""
    if not callable(answer):
        raise ExerciseFailure("submit your function nn_distance(samples, train) itself (not its result)")
    g = torch.Generator().manual_seed(3)
    train = torch.randn(30, 4, generator=g, dtype=torch.float64)
    # a mix of exact copies of training rows (distance 0) and new points
    samples = torch.cat([train[[3, 7, 7]], 2.0 * torch.randn(5, 4, generator=g, dtype=torch.float64)])
    out = answer(samples.clone(), train.clone())
    if not isinstance(out, torch.Tensor):
        raise ExerciseFailure(f"nn_distance must return a torch tensor, got {type(out).__name__}")
    out = out.to(torch.float64)
    ref = reference_nn_distance(samples, train)
    if out.shape != ref.shape:
        hint = " (you took the minimum over the samples, not over the training rows)" if out.shape == (30,) else ""
        raise ExerciseFailure(
            f"expected one distance per sample, shape {tuple(ref.shape)}, got {tuple(out.shape)}{hint}"
        )
    if torch.allclose(out, ref, atol=1e-5):
        return
    if torch.allclose(out, ref**2, atol=1e-5):
        raise ExerciseFailure("these are squared distances: take the square root of the sum of squares")
    if not torch.allclose(out[:3], torch.zeros_like(out[:3]), atol=1e-5):
        raise ExerciseFailure(
            "a sample equal to a training row must be at distance 0: take the distance to the NEAREST training row "
            "(the minimum over the training set)"
        )
    raise ExerciseFailure(
        "wrong distances: d(y) = min_i ||y - x_i||, the Euclidean distance to the nearest training row"
    )


nn_distance.reference = lambda: reference_nn_distance
nn_distance.mistakes = {
    "squared distances": (lambda: (lambda s, t: reference_nn_distance(s, t) ** 2), "squared distances"),
    "minimum over the wrong axis": (
        lambda: (lambda s, t: torch.cdist(s, t).min(0).values),
        "one distance per sample",
    ),
    "mean instead of minimum": (lambda: (lambda s, t: torch.cdist(s, t).mean(1)), "NEAREST"),
}
