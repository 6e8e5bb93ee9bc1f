"""Linear inverse problems ``y = A x + G`` on images, solved as MAP problems with any prior.

The observation of an image ``x`` in ``R^p`` is ``y = A x + G`` with ``A`` an ``(m, p)`` matrix
and ``G ~ N(0, sigma^2 I_m)``. Given a prior density ``p(x)``, the maximum a posteriori
(MAP) estimate minimises

    J(x) = ||A x - y||^2 / (2 sigma^2) - log p(x),

the negative log-posterior up to a constant (the slides write ``||A x - y||^2 - log p*(x)``,
i.e. ``2 sigma^2 = 1``). :func:`map_estimate` minimises ``J`` for ANY differentiable
``log_prior`` (a Gaussian here, a trained flow in chapter 4); :func:`gaussian_map` is the
closed form for a Gaussian prior ``N(m, S)``:

    x_MAP = m + S A^T (A S A^T + sigma^2 I_m)^{-1} (y - A m),

which needs no inverse of ``S`` (it is also the posterior mean). Operators: pixel masking
(:func:`mask_operator`, inpainting), blur (:func:`blur_operator`) and the identity
(:func:`denoising_operator`). Errors are measured with :func:`mse` and :func:`psnr`.

Images are batches of flattened rows ``(n, p)``, so ``A x`` is computed as ``x @ A.T``.

>>> A = mask_operator(torch.tensor([True, False, True]))
>>> A
tensor([[1., 0., 0.],
        [0., 0., 1.]])
>>> simulate(A, torch.tensor([[1.0, 2.0, 3.0]]), sigma=0.0)
tensor([[1., 3.]])
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
from torch import Tensor

from . import _validate as V
from .train import TrainingDiverged

__all__ = [
    "mask_operator",
    "random_mask",
    "blur_operator",
    "denoising_operator",
    "simulate",
    "data_fit",
    "MAPResult",
    "map_estimate",
    "gaussian_map",
    "mse",
    "psnr",
]


def _check_batch(x: Tensor, dim: int, what: str, like: Tensor | None = None, n: int | None = None) -> None:
    rows = "n" if n is None else str(n)
    if not isinstance(x, Tensor):
        raise TypeError(f"{what} must be a torch.Tensor of shape ({rows}, {dim}), got {type(x).__name__}")
    if x.dim() != 2 or x.shape[1] != dim or (n is not None and x.shape[0] != n):
        hint = " A single image needs a batch dimension: use x.unsqueeze(0)." if x.dim() == 1 else ""
        raise ValueError(f"{what} has shape {tuple(x.shape)}, expected ({rows}, {dim}).{hint}")
    if like is not None:
        V.check_dtype_device(what, x, like.dtype, like.device)
    elif not x.is_floating_point():
        raise TypeError(f"{what} has dtype {x.dtype}; it must be floating point: call .float()")
    if not torch.isfinite(x).all():
        raise ValueError(f"{what} contains NaN or infinite values")


def _check_operator(A: Tensor) -> None:
    if not isinstance(A, Tensor):
        raise TypeError(f"the operator A must be a matrix (m, p) (a torch.Tensor), got {type(A).__name__}")
    if A.dim() != 2:
        raise ValueError(f"the operator A must be a matrix (m, p), got shape {tuple(A.shape)}")
    if not A.is_floating_point():
        raise TypeError(f"the operator A has dtype {A.dtype}; it must be floating point: call A.float()")
    if not torch.isfinite(A).all():
        raise ValueError("the operator A contains NaN or infinite entries")


def _check_sigma(sigma: float, allow_zero: bool) -> float:
    if isinstance(sigma, (bool, str, bytes)) or sigma is None:
        raise TypeError(f"noise level sigma must be a number, got {V.describe(sigma)}")
    sigma = float(sigma)
    if not math.isfinite(sigma) or sigma < 0 or (sigma == 0 and not allow_zero):
        need = "sigma >= 0" if allow_zero else "sigma > 0 (the MAP problem needs noise)"
        raise ValueError(f"noise level sigma={sigma} is invalid: expected {need}")
    return sigma


def mask_operator(observed: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """Inpainting: the ``(m, p)`` matrix that keeps the ``m`` pixels where ``observed`` is True.

    Its rows are the rows of ``I_p`` at the observed pixels, so ``A x`` lists the observed values
    and ``A^T y`` puts them back in place with zeros elsewhere.
    """
    if not isinstance(observed, Tensor) or observed.dtype != torch.bool or observed.dim() != 1:
        raise ValueError("observed must be a 1-D boolean tensor over the p pixels (True = observed)")
    if not observed.any():
        raise ValueError("the mask observes no pixel; keep at least one")
    eye = torch.eye(observed.numel(), dtype=dtype or torch.get_default_dtype(), device=observed.device)
    return eye[observed]


def random_mask(p: int, keep: float, generator: torch.Generator | None = None) -> Tensor:
    """A boolean mask observing ``round(keep * p)`` pixels chosen uniformly at random."""
    V.positive_int("p", p)
    V.in_range("keep (the observed fraction of pixels)", keep, 0.0, 1.0, low_open=True)
    k = max(1, int(round(keep * p)))
    mask = torch.zeros(p, dtype=torch.bool)
    mask[torch.randperm(p, generator=generator)[:k]] = True
    return mask


def blur_operator(shape: tuple[int, int] = (8, 8), width: float = 1.0, dtype: torch.dtype | None = None) -> Tensor:
    """Gaussian blur on ``h x w`` images as a ``(p, p)`` matrix, ``p = h w``.

    ``(A x)_i = sum_j k_ij x_j`` with ``k_ij`` proportional to ``exp(-|pos_i - pos_j|^2 / (2 width^2))``,
    each row normalised to sum to one (a constant image stays constant; no padding at borders).
    """
    V.positive_float("width (the blur width in pixels)", width)
    shape = V.int_sequence("shape", shape, low=1)
    if len(shape) != 2:
        raise ValueError(f"shape must be an image shape (h, w), got {shape}")
    h, w = shape
    dtype = dtype or torch.get_default_dtype()
    rows, cols = torch.meshgrid(torch.arange(h, dtype=dtype), torch.arange(w, dtype=dtype), indexing="ij")
    pos = torch.stack([rows.reshape(-1), cols.reshape(-1)], 1)
    k = torch.exp(-torch.cdist(pos, pos) ** 2 / (2.0 * width**2))
    return k / k.sum(1, keepdim=True)


def denoising_operator(p: int, dtype: torch.dtype | None = None) -> Tensor:
    """Denoising: ``A = I_p`` (the whole image is observed, with noise)."""
    V.positive_int("p", p)
    return torch.eye(p, dtype=dtype or torch.get_default_dtype())


def simulate(A: Tensor, x: Tensor, sigma: float, generator: torch.Generator | None = None) -> Tensor:
    """Observations ``y = A x + G``, ``G ~ N(0, sigma^2 I)``, for each row of ``x`` ``(n, p)``; returns ``(n, m)``."""
    _check_operator(A)
    _check_batch(x, A.shape[1], "x", like=A)
    sigma = _check_sigma(sigma, allow_zero=True)
    y = x @ A.T
    if sigma > 0:
        y = y + sigma * torch.randn(y.shape, generator=generator, dtype=y.dtype).to(y.device)
    return y


def data_fit(A: Tensor, y: Tensor, sigma: float, x: Tensor) -> Tensor:
    """``||A x - y||^2 / (2 sigma^2)`` for each row, shape ``(n,)``: minus the Gaussian log-likelihood
    of the observation, up to a constant. ``x`` is ``(n, p)``, ``y`` is ``(n, m)`` (the same n:
    no broadcasting of one observation against several images) and ``sigma > 0``."""
    _check_operator(A)
    _check_batch(x, A.shape[1], "x", like=A)
    _check_batch(y, A.shape[0], "observations y", like=A)
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"x has {x.shape[0]} rows but the observations y have {y.shape[0]}: one observation per "
                         f"image (y would be broadcast against the wrong images)")
    sigma = _check_sigma(sigma, allow_zero=False)
    return _data_fit(A, y, sigma, x)


def _data_fit(A: Tensor, y: Tensor, sigma: float, x: Tensor) -> Tensor:
    return ((x @ A.T - y) ** 2).sum(-1) / (2.0 * sigma**2)


class MAPResult(NamedTuple):
    """``x``: the estimate ``(n, p)``; ``objective``: ``J(x)`` per image ``(n,)``; ``n_iter``: iterations run."""

    x: Tensor
    objective: Tensor
    n_iter: int


def map_estimate(
    A: Tensor,
    y: Tensor,
    sigma: float,
    log_prior: Callable[[Tensor], Tensor],
    x0: Tensor | None = None,
    max_iter: int = 500,
    tol: float = 1e-7,
    box: tuple[float, float] | None = None,
    wall: float = 1e4,
) -> MAPResult:
    """MAP estimate ``argmin_x ||A x - y||^2 / (2 sigma^2) - log_prior(x)`` by L-BFGS.

    Args:
        A: ``(m, p)`` operator; y: ``(n, m)`` observations; sigma: noise level (> 0).
        log_prior: ``log_prior(x) -> (n,)`` log-density of the prior, differentiable with autograd
            (``fit_gaussian(train).log_prob``, a flow's ``log_prob``, ...). It need not be normalised.
        x0: starting point ``(n, p)``; default the least-squares start ``A^T y`` (the observed pixels
            in place for a mask).
        max_iter: L-BFGS iterations; tol: tolerance on the gradient and on changes.
        box: ``(lo, hi)``, for a prior that is only defined on the box ``[lo, hi]^p`` (a flow
            whose last layer is a logit map, a Beta density). L-BFGS's line search may try
            points outside it; there the prior is evaluated at the point clipped into the box
            and a quadratic wall ``wall * ||x - clip(x)||^2`` is added, which leaves the
            minimiser unchanged when it lies inside the box and keeps the objective finite
            and smooth enough for the line search. The estimate is clipped into the box.
        wall: curvature of that wall (per squared unit of ``x``); only used with ``box``.

    The images are independent, so the objectives are summed and solved as one problem.
    Raises :class:`~coursekit.train.TrainingDiverged` if the objective turns NaN or infinite.

    >>> y = torch.tensor([[1.0, -1.0]])
    >>> res = map_estimate(denoising_operator(2), y, 1.0, lambda x: -0.5 * (x**2).sum(-1))  # N(0, I) prior
    >>> res.x  # halfway between the observation and the prior mean
    tensor([[ 0.5000, -0.5000]])
    """
    _check_operator(A)
    m, p = A.shape
    _check_batch(y, m, "observations y", like=A)
    sigma = _check_sigma(sigma, allow_zero=False)
    V.function("log_prior", log_prior, "a function x -> log p(x), one value per image")
    # max_iter=0 used to return the start as if it were the estimate
    V.positive_int("max_iter", max_iter)
    V.positive_float("tol", tol)
    if box is not None:
        if (isinstance(box, (str, bytes)) or not hasattr(box, "__len__") or len(box) != 2
                or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b) for b in box)
                or box[0] >= box[1]):
            raise ValueError(f"box must be a pair (lo, hi) of finite numbers with lo < hi, got {box!r}")
        if isinstance(wall, bool) or not (isinstance(wall, (int, float)) and math.isfinite(wall) and wall > 0):
            raise ValueError(f"wall must be a positive number, got {wall!r}")
    if x0 is None:
        x0 = y @ A
    else:
        if isinstance(x0, Tensor):  # its dtype is converted to y's, its device is not
            V.check_dtype_device("x0", x0, None, y.device, floating=True)
        _check_batch(x0, p, "x0", n=y.shape[0])
    # contiguous: L-BFGS flattens gradients with .view(-1), which fails on a transposed x0 (as from gaussian_map)
    x = x0.detach().to(y.dtype).clone(memory_format=torch.contiguous_format).requires_grad_(True)
    opt = torch.optim.LBFGS(
        [x], lr=1.0, max_iter=max_iter, tolerance_grad=tol, tolerance_change=tol * 1e-2,
        history_size=20, line_search_fn="strong_wolfe",
    )

    def objective_per_image(z):
        inside = z if box is None else z.clamp(*box)
        lp = log_prior(inside)
        if lp.shape != (z.shape[0],):
            raise ValueError(f"log_prior must return one value per image, shape ({z.shape[0]},), got {tuple(lp.shape)}")
        if box is not None:
            lp = lp - wall * ((z - inside) ** 2).sum(-1)
        return _data_fit(A, y, sigma, z) - lp

    def closure():
        opt.zero_grad()
        loss = objective_per_image(x).sum()  # images are independent: per-image gradients
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                "the MAP objective became NaN or infinite; check that log_prior is finite everywhere "
                "(e.g. add jitter to a Gaussian prior) and that sigma is not tiny"
            )
        loss.backward()
        return loss

    opt.step(closure)
    n_iter = int(opt.state[opt._params[0]].get("n_iter", 0))
    with torch.no_grad():
        if box is not None:
            x.clamp_(*box)
        obj = objective_per_image(x)
    return MAPResult(x.detach(), obj.detach(), n_iter)


def gaussian_map(A: Tensor, y: Tensor, sigma: float, mean: Tensor, cov: Tensor) -> Tensor:
    """Closed-form MAP (= posterior mean) for the prior ``N(mean, cov)``:

    ``x = mean + cov A^T (A cov A^T + sigma^2 I)^{-1} (y - A mean)``; rows of ``y`` are ``(n, m)``.
    """
    _check_operator(A)
    m, p = A.shape
    _check_batch(y, m, "observations y", like=A)
    sigma = _check_sigma(sigma, allow_zero=False)
    V.tensor("mean", mean, like=A)
    V.tensor("cov", cov, like=A)
    if mean.shape != (p,) or cov.shape != (p, p):
        raise ValueError(f"prior mean {tuple(mean.shape)} / cov {tuple(cov.shape)} do not match p = {p}")
    SAt = cov @ A.T  # (p, m)
    K = A @ SAt + sigma**2 * torch.eye(m, dtype=cov.dtype, device=cov.device)
    L = torch.linalg.cholesky(K)
    r = (y - mean @ A.T).T  # (m, n)
    return mean + (SAt @ torch.cholesky_solve(r, L)).T


def mse(x_hat: Tensor, x: Tensor) -> Tensor:
    """Mean squared error per image, ``(1/p) ||x_hat - x||^2``, shape ``(n,)``."""
    V.tensor("x_hat", x_hat, finite=False)
    V.tensor("x", x, finite=False, like=x_hat)
    if x_hat.shape != x.shape:
        raise ValueError(f"shapes differ: estimate {tuple(x_hat.shape)} vs truth {tuple(x.shape)}")
    return ((x_hat - x) ** 2).mean(-1)


def psnr(x_hat: Tensor, x: Tensor, data_range: float = 16.0) -> Tensor:
    """Peak signal-to-noise ratio per image in dB, ``10 log10(data_range^2 / MSE)``; higher is better.

    ``data_range`` is the span of pixel values: 16 for the digits in their ``0..16`` scale.
    """
    data_range = V.positive_float("data_range", data_range)
    return 10.0 * torch.log10(data_range**2 / mse(x_hat, x).clamp_min(1e-12))
