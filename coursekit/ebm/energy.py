"""Energy functions U_theta: one real number per sample, p_theta(x) = exp(-U_theta(x)) / Z(theta).

An energy is an ``nn.Module`` that maps a batch ``(n, *event_shape)`` to energies of shape
``(n,)``. Nothing here is normalised: Z(theta) is intractable except for the toy models used to
check the theory (:class:`GaussianEnergy`, whose Z is known, and :class:`QuarticEnergy1D`, whose
log Z is computed by quadrature in :func:`log_partition_1d`).

Energies compose by addition, which multiplies the unnormalised densities: ``U1 + U2`` is the
product of experts exp(-U1) exp(-U2) of Hinton (2002).

>>> import torch
>>> U = MLPEnergy(2, hidden=16)
>>> U(torch.randn(5, 2)).shape
torch.Size([5])
>>> poe = U + GaussianEnergy(torch.zeros(2), 1.0)
>>> poe(torch.randn(5, 2)).shape
torch.Size([5])
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch
from torch import Tensor, nn

from .. import _validate as V
from ..flows.base import check_input, validation_enabled

__all__ = [
    "Energy",
    "MLPEnergy",
    "ImageEnergy",
    "GaussianEnergy",
    "QuarticEnergy1D",
    "ProductOfExperts",
    "log_partition_1d",
    "sample_1d",
]


class Energy(nn.Module):
    """Base class: ``forward(x)`` checks ``x`` (shape ``(n, *event_shape)``, finite) and returns
    ``_energy(x)`` of shape ``(n,)``. Subclasses implement ``_energy``.

    ``U1 + U2`` (and ``2.0 * U``) build a :class:`ProductOfExperts`.
    """

    def __init__(self, event_shape: Iterable[int]):
        super().__init__()
        self.event_shape = V.int_sequence("event_shape", event_shape, low=1, min_len=1)
        self.dim = math.prod(self.event_shape)

    def _energy(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        if validation_enabled():
            check_input(x, self.event_shape, f"{type(self).__name__} input x", like=V.reference(self))
        u = self._energy(x)
        if u.shape != x.shape[:1]:
            raise RuntimeError(f"{type(self).__name__}._energy returned shape {tuple(u.shape)}, expected ({x.shape[0]},)")
        return u

    def score(self, x: Tensor) -> Tensor:
        """The score of p_theta: ``-grad_x U(x)``, shape of ``x`` (no graph kept)."""
        if validation_enabled():
            check_input(x, self.event_shape, f"{type(self).__name__}.score input x", like=V.reference(self))
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self(x).sum(), x)
        return -g

    def __add__(self, other: "Energy") -> "ProductOfExperts":
        if not isinstance(other, Energy):
            return NotImplemented
        return ProductOfExperts([self, other])

    def __rmul__(self, weight: float) -> "ProductOfExperts":
        if isinstance(weight, Energy):
            return NotImplemented
        return ProductOfExperts([self], weights=[V.real("weight", weight)])


def _activation(name: str) -> nn.Module:
    # Smooth activations: ULA follows grad_x U, and ReLU makes that gradient piecewise constant.
    acts = {"silu": nn.SiLU, "softplus": nn.Softplus, "tanh": nn.Tanh, "elu": nn.ELU}
    if name not in acts:
        raise ValueError(f"activation {name!r} unknown; choose one of {', '.join(acts)}")
    return acts[name]()


class MLPEnergy(Energy):
    """U_theta(x) = MLP(x) for vectors x in R^p: ``depth`` hidden layers of width ``hidden``.

    A small quadratic term ``x_quad * |x|^2 / 2`` (default 0) can be added so that exp(-U) is
    integrable whatever the network does far from the data.
    """

    def __init__(self, dim: int, hidden: int = 128, depth: int = 2, activation: str = "silu", x_quad: float = 0.0):
        V.positive_int("dim", dim)
        V.positive_int("hidden", hidden)
        V.positive_int("depth", depth)
        x_quad = V.nonneg_float("x_quad", x_quad)
        super().__init__((dim,))
        layers: list[nn.Module] = []
        width = dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), _activation(activation)]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)
        self.x_quad = float(x_quad)
        self.hidden, self.depth, self.activation = hidden, depth, activation

    def _energy(self, x: Tensor) -> Tensor:
        u = self.net(x).squeeze(-1)
        if self.x_quad:
            u = u + 0.5 * self.x_quad * x.pow(2).sum(-1)
        return u

    def extra_repr(self) -> str:
        return f"dim={self.dim}, hidden={self.hidden}, depth={self.depth}, activation={self.activation}, x_quad={self.x_quad}"


class ImageEnergy(Energy):
    """A small convolutional energy for grey images of shape ``(h, w)`` (default 8x8 digits).

    Input ``(n, h*w)`` (flattened, as :mod:`coursekit.data` gives the digits) or ``(n, h, w)``
    when ``flat=False``. Two 3x3 convolutions (stride 1 then 2), SiLU, then a linear read-out.

    A caution from chapter 6: trained with :func:`~coursekit.ebm.train_ebm` on the digits
    (ULA step 0.01, 40 steps, replay buffer, Adam 1e-3 or 1e-4) it sharpened faster than the
    chains could follow, and after a few thousand iterations its negatives were noise. The
    chapter uses :class:`MLPEnergy` instead; watch ``e_pos`` / ``e_neg`` of the result if you
    train this one.
    """

    def __init__(self, shape: Sequence[int] = (8, 8), channels: Sequence[int] = (32, 64), flat: bool = True,
                 x_quad: float = 0.0):
        shape = V.int_sequence("shape", shape, low=1)
        if len(shape) != 2:
            raise ValueError(f"shape must be an image shape (h, w), got {shape}")
        h, w = shape
        channels = V.int_sequence("channels", channels, low=1)
        if len(channels) != 2:
            raise ValueError(f"channels must be two positive widths, got {channels}")
        V.boolean("flat", flat)
        x_quad = V.nonneg_float("x_quad", x_quad)
        super().__init__((h * w,) if flat else (h, w))
        self.shape, self.flat, self.x_quad = (h, w), flat, float(x_quad)
        c1, c2 = (int(c) for c in channels)
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.SiLU(),
            nn.Conv2d(c1, c2, 3, padding=1, stride=2), nn.SiLU(),
        )
        h2, w2 = (h + 1) // 2, (w + 1) // 2
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c2 * h2 * w2, 128), nn.SiLU(), nn.Linear(128, 1))

    def _energy(self, x: Tensor) -> Tensor:
        img = x.reshape(x.shape[0], 1, *self.shape)
        u = self.head(self.features(img)).squeeze(-1)
        if self.x_quad:
            u = u + 0.5 * self.x_quad * x.reshape(x.shape[0], -1).pow(2).sum(-1)
        return u

    def extra_repr(self) -> str:
        return f"shape={self.shape}, flat={self.flat}, x_quad={self.x_quad}"


class GaussianEnergy(Energy):
    """U(x) = |x - mean|^2 / (2 std^2): the energy of N(mean, std^2 I), with
    log Z = (p/2) log(2 pi std^2) known in closed form (used to test samplers)."""

    def __init__(self, mean: Tensor, std: float | Tensor = 1.0):
        if isinstance(mean, (str, bytes)) or mean is None:
            raise TypeError(f"mean must be a vector of shape (p,), got {V.describe(mean)}")
        mean = torch.as_tensor(mean, dtype=mean.dtype if isinstance(mean, Tensor) and mean.is_floating_point()
                               else torch.get_default_dtype())
        if mean.dim() != 1 or mean.numel() < 1:
            raise ValueError(f"mean must be a vector of shape (p,), got shape {tuple(mean.shape)}")
        if not torch.isfinite(mean).all():
            raise ValueError("mean contains NaN or infinite values; it must be finite")
        if isinstance(std, (bool, str, bytes)) or std is None:
            raise TypeError(f"std must be a positive number or a (p,) tensor of them, got {V.describe(std)}")
        std = torch.as_tensor(std, dtype=mean.dtype, device=mean.device)
        if std.dim() > 1 or (std.dim() == 1 and std.shape != mean.shape):
            raise ValueError(f"std must be a number or have the mean's shape {tuple(mean.shape)}, got {tuple(std.shape)}")
        if not (torch.isfinite(std).all() and torch.all(std > 0)):
            raise ValueError(f"std must be positive and finite, got {std.tolist()}")
        super().__init__((mean.shape[0],))
        self.register_buffer("mean", mean)
        self.register_buffer("std", std.expand_as(mean).clone())

    def _energy(self, x: Tensor) -> Tensor:
        return (((x - self.mean) / self.std) ** 2).sum(-1) / 2

    def log_partition(self) -> Tensor:
        return (0.5 * torch.log(2 * math.pi * self.std**2)).sum()


class QuarticEnergy1D(nn.Module):
    """A 1-D family with a 2-D parameter whose log Z is computable by quadrature:

        U_theta(x) = x^4 / 4 + exp(theta_2) x^2 / 2 - theta_1 x,   theta = (theta_1, theta_2).

    It is non-linear in theta_2 (so the Hessian term of Proposition 2 matters) and integrable for
    every theta. ``forward(x, theta)`` accepts ``x`` of shape ``(n,)`` and ``theta`` of shape
    ``(2,)``; ``grad_theta`` and ``hess_theta`` return the per-sample gradient ``(n, 2)`` and
    Hessian ``(n, 2, 2)`` of U in theta, in closed form.
    """

    def forward(self, x: Tensor, theta: Tensor) -> Tensor:
        return x**4 / 4 + torch.exp(theta[1]) * x**2 / 2 - theta[0] * x

    @staticmethod
    def grad_theta(x: Tensor, theta: Tensor) -> Tensor:
        return torch.stack([-x, torch.exp(theta[1]) * x**2 / 2], dim=-1)

    @staticmethod
    def hess_theta(x: Tensor, theta: Tensor) -> Tensor:
        h = torch.zeros(*x.shape, 2, 2, dtype=x.dtype, device=x.device)
        h[..., 1, 1] = torch.exp(theta[1]) * x**2 / 2
        return h


def log_partition_1d(energy, lo: float = -8.0, hi: float = 8.0, n: int = 20_001, dtype=torch.float64) -> Tensor:
    """log Z = log int exp(-energy(x)) dx over [lo, hi] by the trapezoidal rule, in float64.

    ``energy`` maps a grid ``(n,)`` to energies ``(n,)``. The result is differentiable (use
    finite differences or autograd through it). Mass outside [lo, hi] is ignored: choose the
    interval wide enough (the integrand should be negligible at both ends; this is checked).
    """
    lo, hi = V.real("lo", lo), V.real("hi", hi)
    V.integer("n (the number of grid points)", n, 3)
    V.function("energy", energy)
    if not hi > lo:
        raise ValueError(f"need lo < hi, got lo={lo}, hi={hi}")
    x = torch.linspace(lo, hi, n, dtype=dtype)
    logf = -energy(x)
    if logf.shape != x.shape:
        raise ValueError(f"energy must map a grid of shape ({n},) to ({n},), got {tuple(logf.shape)}")
    top = logf.max()
    ends = torch.maximum(logf[0], logf[-1]) - top
    if ends > -30:
        raise ValueError(f"the integrand is not negligible at the ends of [{lo}, {hi}] "
                         f"(log ratio {float(ends):.1f} > -30): widen the interval")
    dx = (hi - lo) / (n - 1)
    w = torch.full_like(x, dx)
    w[0] = w[-1] = dx / 2
    return torch.logsumexp(logf + torch.log(w), dim=0)


def sample_1d(energy, n: int, lo: float = -8.0, hi: float = 8.0, n_grid: int = 200_001, stratified: bool = False,
              generator: torch.Generator | None = None, dtype=torch.float64) -> Tensor:
    """Exact samples (up to the grid) of p proportional to exp(-energy) on [lo, hi], by inverting
    the CDF computed with the trapezoidal rule and linear interpolation.

    ``stratified=True`` uses the quantiles (k + 1/2) / n instead of uniform draws: a deterministic
    point set whose averages converge at rate 1/n instead of 1/sqrt(n). Used to check the
    Monte Carlo identities of Proposition 2 against quadrature.
    """
    V.positive_int("n", n)
    lo, hi = V.real("lo", lo), V.real("hi", hi)
    if not hi > lo:
        raise ValueError(f"need lo < hi, got lo={lo}, hi={hi}")
    V.integer("n_grid", n_grid, 2)
    V.boolean("stratified", stratified)
    V.function("energy", energy)
    grid = torch.linspace(lo, hi, n_grid, dtype=dtype)
    logp = -energy(grid)
    p = torch.exp(logp - logp.max())
    cdf = torch.cumsum((p[1:] + p[:-1]) / 2, 0)
    cdf = torch.cat([torch.zeros(1, dtype=dtype), cdf / cdf[-1]])
    if stratified:
        u = (torch.arange(n, dtype=dtype) + 0.5) / n
    else:
        u = torch.rand(n, generator=generator, dtype=dtype)
    k = torch.searchsorted(cdf, u).clamp(1, n_grid - 1)
    w = (u - cdf[k - 1]) / (cdf[k] - cdf[k - 1]).clamp_min(torch.finfo(dtype).tiny)
    return grid[k - 1] + w * (grid[k] - grid[k - 1])


class ProductOfExperts(Energy):
    """U(x) = sum_i w_i U_i(x): the product of experts prod_i exp(-w_i U_i(x)) (Hinton, 2002).

    Each expert keeps its own parameters; the product is sampled with the same ULA as any
    energy. Its normalising constant is not the product of the experts' constants.
    """

    def __init__(self, experts: Sequence[Energy], weights: Sequence[float] | None = None):
        flat: list[Energy] = []
        flat_w: list[float] = []
        weights = [1.0] * len(experts) if weights is None else list(weights)
        if len(weights) != len(experts) or not experts:
            raise ValueError(f"need as many weights as experts (>= 1), got {len(weights)} for {len(experts)}")
        weights = [V.real(f"weights[{i}]", w) for i, w in enumerate(weights)]
        for e, w in zip(experts, weights):
            if not isinstance(e, Energy):
                raise TypeError(f"experts must be Energy modules, got {type(e).__name__}")
            if isinstance(e, ProductOfExperts):  # flatten nested products
                flat += list(e.experts)
                flat_w += [w * wi for wi in e.weights]
            else:
                flat.append(e)
                flat_w.append(float(w))
        shapes = {e.event_shape for e in flat}
        if len(shapes) != 1:
            raise ValueError(f"experts must share one event shape, got {sorted(shapes)}")
        super().__init__(flat[0].event_shape)
        self.experts = nn.ModuleList(flat)
        self.weights = flat_w

    def _energy(self, x: Tensor) -> Tensor:
        return sum(w * e(x) for w, e in zip(self.weights, self.experts))

    def extra_repr(self) -> str:
        return f"weights={self.weights}"
