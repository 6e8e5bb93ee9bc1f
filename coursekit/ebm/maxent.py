"""Maximum entropy models learned from ONE example x0 (example-based synthesis, FRAME).

    p_theta(x) = exp(-<theta, f(x) - f(x0)>) / Z(theta)

is the maximum entropy law under the moment constraints E[f(X)] = f(x0): the log-likelihood
of x0 is l(theta) = -log Z(theta) and, by Proposition 2, its gradient is mu_theta[f - f(x0)],
zero exactly when the model's mean features match the example's. The energy is linear in
theta, so l is concave (its Hessian is -Cov_theta(f)); the expectation is estimated with the
same ULA chains as any EBM (:func:`~coursekit.ebm.train_ebm` with persistent chains).

Features (:class:`FilterBank`), after Zhu, Wu & Mumford (1998): a fixed bank of linear filters
F_j (pixel, two derivatives, two Laplacians of Gaussians, four Gabor orientations), applied with
periodic boundaries, and for each response r_j = F_j * x the spatial sums

    sum_s r_j(s)^2                  (energy in the filter's frequency band: second-order
                                     statistics, i.e. a smoothed power spectrum)
    sum_s sqrt(r_j(s)^2 + eps)      (a smooth |r_j|: with the first, it measures how
                                     heavy-tailed, edge-like, the responses are)

plus sum_s x(s) (the mean grey level). FRAME matches whole histograms of the responses;
two moments per filter keep theta small (19 numbers) and the features smooth for ULA. Sums,
not means, over pixels: the energy is then a sum of local potentials, a stationary Gibbs field.

When is p_theta a probability law? The squared features make U_theta a quadratic form plus
terms that grow at most linearly. With periodic boundaries each filter is a circulant matrix,
diagonalised by the 2-D Fourier transform, so the quadratic part x^T H x / 2 has the Hessian
eigenvalues

    lambda(omega) = 2 sum_j theta_j |F_j^(omega)|^2,   one per frequency omega of the image grid.

Z(theta) is finite if every lambda(omega) > 0, and infinite if one is negative (along that
Fourier mode the energy falls like -|x|^2). Nothing in a gradient step keeps theta in that set,
and ULA run on an improper model diverges (slowly: short chains hide it). :func:`fit_maxent`
therefore follows each step with :meth:`MaxEntModel.make_proper_`, which raises the pixel
filter's weight (its |F^|^2 is 1 at every frequency) until min lambda >= ``min_curvature``.

>>> import torch
>>> bank = FilterBank()
>>> bank(torch.randn(3, 16, 16)).shape
torch.Size([3, 19])
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _validate as V
from .energy import Energy
from .train import EBMTrainingResult, train_ebm

__all__ = ["FilterBank", "MaxEntModel", "fit_maxent", "photo_patch"]


def _gaussian_grid(size: int) -> tuple[Tensor, Tensor]:
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    return torch.meshgrid(r, r, indexing="ij")


def default_filters(size: int = 9) -> tuple[Tensor, list[str]]:
    """The filter bank used by default: ``(m, size, size)`` float64 filters and their names.

    Every filter but the pixel one has zero mean; all have unit Euclidean norm.
    """
    yy, xx = _gaussian_grid(size)
    c = size // 2
    filters, names = [], []

    def add(w: Tensor, name: str, zero_mean: bool = True):
        if zero_mean:
            w = w - w.mean()
        filters.append(w / w.norm())
        names.append(name)

    pixel = torch.zeros(size, size, dtype=torch.float64)
    pixel[c, c] = 1.0
    add(pixel, "pixel", zero_mean=False)
    dx = torch.zeros(size, size, dtype=torch.float64)
    dx[c, c], dx[c, c + 1] = -1.0, 1.0
    add(dx, "d/dx")
    add(dx.T.clone(), "d/dy")
    for sigma in (0.8, 1.6):
        r2 = (xx**2 + yy**2) / (2 * sigma**2)
        add((r2 - 1) * torch.exp(-r2), f"LoG s={sigma}")
    for k in range(4):
        t = k * math.pi / 4
        u = xx * math.cos(t) + yy * math.sin(t)
        add(torch.exp(-(xx**2 + yy**2) / (2 * 1.5**2)) * torch.cos(2 * math.pi * u / 4), f"Gabor {45 * k}deg")
    return torch.stack(filters), names


class FilterBank(nn.Module):
    """Fixed filters and the features f(x) of :mod:`coursekit.ebm.maxent` (see module docstring).

    ``forward(x)``: images ``(n, h, w)`` -> features ``(n, 1 + 2m)``, ordered
    ``[sum x, sum r_1^2, ..., sum r_m^2, sum |r_1|_eps, ..., sum |r_m|_eps]``.
    """

    def __init__(self, filters: Tensor | None = None, names: list[str] | None = None, eps: float = 1e-2):
        super().__init__()
        if filters is None:
            filters, names = default_filters()
        if not isinstance(filters, Tensor):
            raise TypeError(f"filters must be a tensor of shape (m, k, k), got {V.describe(filters)}")
        if not torch.isfinite(filters).all():
            raise ValueError("filters contain NaN or infinite values")
        filters = torch.as_tensor(filters, dtype=torch.get_default_dtype())
        if filters.dim() != 3 or filters.shape[1] != filters.shape[2] or filters.shape[1] % 2 == 0:
            raise ValueError(f"filters must have shape (m, k, k) with k odd, got {tuple(filters.shape)}")
        self.register_buffer("weight", filters.unsqueeze(1))
        self.names = names or [f"filter {j}" for j in range(filters.shape[0])]
        self.eps = V.positive_float("eps", eps)

    @property
    def n_features(self) -> int:
        return 1 + 2 * self.weight.shape[0]

    def feature_names(self) -> list[str]:
        return ["sum x"] + [f"sum r^2 ({n})" for n in self.names] + [f"sum |r| ({n})" for n in self.names]

    def responses(self, x: Tensor) -> Tensor:
        """r_j = F_j * x with periodic boundaries: ``(n, h, w)`` -> ``(n, m, h, w)``."""
        if x.dim() != 3:
            raise ValueError(f"expected grey images of shape (n, h, w), got {tuple(x.shape)}")
        p = self.weight.shape[-1] // 2
        if min(x.shape[-2:]) <= p:
            raise ValueError(f"images of size {tuple(x.shape[-2:])} are too small for {2 * p + 1}x{2 * p + 1} filters")
        xp = F.pad(x.unsqueeze(1), (p, p, p, p), mode="circular")
        return F.conv2d(xp, self.weight.to(x.dtype))

    def forward(self, x: Tensor) -> Tensor:
        r = self.responses(x)
        sq = r.pow(2)
        soft_abs = torch.sqrt(sq + self.eps) - math.sqrt(self.eps)
        return torch.cat([x.sum((-2, -1)).unsqueeze(-1), sq.sum((-2, -1)), soft_abs.sum((-2, -1))], dim=-1)

    def extra_repr(self) -> str:
        return f"filters={self.names}, size={self.weight.shape[-1]}, eps={self.eps}"


class MaxEntModel(Energy):
    """U_theta(x) = <theta, f(x) - f(x0)>: the maximum entropy model of one example ``x0`` ``(h, w)``.

    theta starts at 1/2 on the feature sum x^2 (the pixel filter's squared response) and 0
    elsewhere: p_theta is then N(0, I), a proper law to start the chains from.
    """

    def __init__(self, x0: Tensor, features: FilterBank | None = None):
        if isinstance(x0, Tensor) and not x0.is_floating_point():
            raise TypeError(f"x0 must be a floating-point image, got dtype {x0.dtype}: call x0.float()")
        if features is not None and not isinstance(features, FilterBank):
            raise TypeError(f"features must be a FilterBank or None, got {V.describe(features)}")
        if not isinstance(x0, Tensor) or x0.dim() != 2:
            raise ValueError(f"x0 must be ONE grey image of shape (h, w), got "
                             f"{tuple(x0.shape) if isinstance(x0, Tensor) else type(x0).__name__}")
        if not torch.isfinite(x0).all():
            raise ValueError("x0 contains NaN or infinite values")
        super().__init__(tuple(x0.shape))
        self.features = features if features is not None else FilterBank()
        self.features.to(x0.device)
        self.register_buffer("x0", x0.detach().clone())
        with torch.no_grad():
            self.register_buffer("f0", self.features(x0.unsqueeze(0)).squeeze(0))
        theta = torch.zeros(self.features.n_features, dtype=x0.dtype, device=x0.device)
        theta[1] = 0.5
        self.theta = nn.Parameter(theta)
        self.register_buffer("filter_power", self._filter_power())

    def _filter_power(self) -> Tensor:
        """|F_j^(omega)|^2 of every filter on the image's frequency grid, ``(m, h, w)``: the filters
        wrapped onto the h x w torus (circular boundaries), then the 2-D DFT."""
        w = self.features.weight[:, 0].to(torch.float64)
        m, k, _ = w.shape
        h, wd = self.event_shape
        rows = torch.arange(k, device=w.device).remainder(h)
        cols = torch.arange(k, device=w.device).remainder(wd)
        torus = torch.zeros(m, h, wd, dtype=torch.float64, device=w.device)
        torus.index_put_((torch.arange(m, device=w.device)[:, None, None], rows[None, :, None], cols[None, None, :]),
                         w, accumulate=True)
        return torch.fft.fft2(torus).abs().pow(2).to(self.x0.dtype)

    def hessian_spectrum(self) -> Tensor:
        """Eigenvalues ``2 sum_j theta_j |F_j^(omega)|^2`` of the quadratic part of U_theta, one per
        frequency of the image grid, shape ``(h, w)`` (module docstring). All positive: p_theta is
        a probability law; one negative: Z(theta) is infinite."""
        m = self.filter_power.shape[0]
        with torch.no_grad():
            return 2 * torch.einsum("j,jhw->hw", self.theta[1:1 + m], self.filter_power)

    def is_proper(self) -> bool:
        """Whether Z(theta) is finite (sufficient condition: every Hessian eigenvalue positive)."""
        return bool(self.hessian_spectrum().min() > 0)

    def make_proper_(self, min_curvature: float = 0.1) -> float:
        """Raise the first filter's weight theta_1 so that the smallest Hessian eigenvalue of the
        quadratic part is at least ``min_curvature``. With the default bank the first filter is
        the pixel, whose power is 1 at every frequency, so this adds the same amount to every
        eigenvalue. In place; returns the increase of theta_1 (0 when nothing had to change)."""
        min_curvature = V.positive_float("min_curvature", min_curvature)
        floor = float(self.filter_power[0].min())
        if not floor > 1e-8:
            raise ValueError("make_proper_ raises the first filter's weight, so that filter must pass every "
                             f"frequency (its smallest |F^|^2 is {floor:.3g}); put a pixel (delta) filter first")
        short = min_curvature - float(self.hessian_spectrum().min())
        if short <= 0:
            return 0.0
        step = short / (2 * floor)
        with torch.no_grad():
            self.theta[1] += step
        return step

    def _energy(self, x: Tensor) -> Tensor:
        return (self.features(x) - self.f0) @ self.theta

    def moment_gap(self, samples: Tensor) -> Tensor:
        """(mean f(samples) - f(x0)) / (h w): the gap in per-pixel averages (0 at the MLE)."""
        with torch.no_grad():
            return (self.features(samples).mean(0) - self.f0) / self.x0.numel()


def fit_maxent(x0: Tensor, *, n_iter: int, n_chains: int = 16, n_steps: int = 10, gamma: float = 0.05,
               lr: float = 0.01, features: FilterBank | None = None, min_curvature: float | None = 0.1,
               generator: torch.Generator | None = None) -> tuple[MaxEntModel, EBMTrainingResult]:
    """Learn p_theta from the single example ``x0`` (standardise it first) with Algorithm 1's
    machinery: ``n_chains`` persistent ULA chains of ``n_steps`` steps per iteration, Adam on
    the contrastive loss <theta, f(x0) - mean f(X^-)> (no regularisation: U(x0) = 0 by design).

    After every step theta is moved back into the models that are probability laws, with every
    Hessian eigenvalue of the quadratic part at least ``min_curvature``
    (:meth:`MaxEntModel.make_proper_`; ``None`` turns it off, and then long chains of an improper
    model diverge). Returns the model and the training history; ``history.negatives`` are the
    last samples.
    """
    V.positive_int("n_iter", n_iter)
    V.positive_int("n_chains", n_chains)
    V.nonneg_int("n_steps", n_steps)
    V.positive_float("gamma", gamma)
    V.positive_float("lr", lr)
    V.optional(V.positive_float, "min_curvature", min_curvature)
    model = MaxEntModel(x0, features)
    # no momentum (beta1 = 0): the chains lag behind theta, and momentum makes theta overshoot
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.0, 0.999))
    after_step = None
    if min_curvature is not None:
        model.make_proper_(min_curvature)  # checks the setting before any training (the start, N(0, I), is proper)
        after_step = lambda: model.make_proper_(min_curvature)  # noqa: E731
    history = train_ebm(model, x0.unsqueeze(0), n_iter=n_iter, batch_size=n_chains, n_steps=n_steps, gamma=gamma,
                        chains="persistent", reg=0.0, optimizer=opt, max_energy=1e7, generator=generator,
                        after_step=after_step, desc="maximum entropy model")
    return model, history


def photo_patch(name: str = "china.jpg", size: int = 32, top: int = 0, left: int = 0, standardise: bool = True
                ) -> Tensor:
    """A grey ``size`` x ``size`` patch of one of scikit-learn's sample photographs (no download),
    standardised to mean 0 and variance 1 by default. Grey = ITU-R 601 luma of the RGB values."""
    from sklearn.datasets import load_sample_image

    V.choice("name", name, ("china.jpg", "flower.jpg"))
    V.positive_int("size", size)
    V.nonneg_int("top", top)
    V.nonneg_int("left", left)
    V.boolean("standardise", standardise)

    img = np.asarray(load_sample_image(name), dtype=np.float64) / 255.0
    grey = img @ np.array([0.299, 0.587, 0.114])
    h, w = grey.shape
    if not (0 <= top and top + size <= h and 0 <= left and left + size <= w):
        raise ValueError(f"a {size}x{size} patch at ({top}, {left}) does not fit in the {h}x{w} image {name!r}")
    patch = torch.tensor(grey[top:top + size, left:left + size], dtype=torch.get_default_dtype())
    if standardise:
        patch = (patch - patch.mean()) / patch.std()
    return patch
