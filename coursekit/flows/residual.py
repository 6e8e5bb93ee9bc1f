r"""Invertible residual blocks ``x = z + g(z)`` with ``Lip(g) < 1`` (i-ResNet) and the Residual Flow estimators.

A residual block :cite:`behrmann2019invertible` is the map

.. math:: T(z) = z + g(z), \qquad \mathrm{Lip}(g) < 1,

invertible because for every ``x`` the map ``z -> x - g(z)`` is a contraction (Banach). The
network ``g`` is unconstrained apart from its Lipschitz constant, which spectral normalisation
bounds: every linear (or convolutional) layer is divided by an estimate of its largest singular
value, and the activations are 1-Lipschitz, so ``Lip(g) <= c^L`` for ``L`` layers each of norm
``<= c < 1``.

* map (sampling direction, explicit):     ``x = z + g(z)``;
* inverse (density direction, iterative): ``z_{k+1} = x - g(z_k)`` from ``z_0 = x``, which converges
  geometrically at the rate ``Lip(g)``; gradients through it come from the implicit function theorem,
  ``dz = (I + J_g)^{-1} (dx - dg/dtheta dtheta)``: a direct solve with the Jacobian in exact mode, the
  same fixed-point iteration on ``(I + J_g)^T w = grad`` otherwise (never backpropagation through the loop);
* log-determinant: ``log|det J_T(z)| = log det(I + J_g(z)) = sum_{k>=1} (-1)^{k+1} tr(J_g(z)^k) / k``
  (``I + J_g`` has eigenvalues with positive real part, so its determinant is positive, and the
  series converges because ``||J_g|| < 1``). ``log|det J_{T^{-1}}(x)|`` is minus that at ``z = T^{-1}(x)``.

Three ways to compute the log-determinant (``logdet=``):

``"exact"``
    the autograd Jacobian ``J_g`` (``p`` backward passes) and ``slogdet(I + J_g)``: exact, for small ``p``.
``"series"``
    i-ResNet's estimator :cite:`behrmann2019invertible`: the series truncated after ``n_terms`` terms,
    each trace by Hutchinson's estimator :cite:`hutchinson1989stochastic` ``tr(A) = E[v^T A v]`` with
    Rademacher ``v`` (``n_samples`` of them, shared by the terms; one per row of the batch). Unbiased for
    the *truncated* series; its bias is at most ``p sum_{k>n} Lip^k / k <= p Lip^{n+1} / ((n+1)(1-Lip))``,
    since ``|tr(J^k)| <= p ||J||^k``. Its gradient is backpropagated through the ``n_terms`` products
    (memory grows with ``n_terms``).
``"roulette"``
    Residual Flows' unbiased estimator :cite:`chen2019residual`: ``n_exact`` terms always, then a random
    number ``G`` more, ``P(G >= j) = (1 - q)^j`` (``q = roulette_p``; one draw per call, shared by the
    batch, so the cost is that of ``N = n_exact + G`` terms), each term divided by the probability that
    it is computed: ``E[sum_{k<=N} a_k / P(N >= k)] = sum_k a_k``. The variance is finite
    if ``Lip(g)^2 < 1 - q``; the default ``q = (1 - L^2) / 2``, with ``L = c^{layers}`` the bound, keeps it
    so. Its gradient is the Neumann-series estimator, computed in the forward pass ("backward in
    forward"): ``d log det(I + J) = tr((I + J)^{-1} dJ) = E[w^T dJ v]`` with
    ``w = sum_{k=0}^N (-1)^k (J^T)^k v / P(N >= k)``; so ``w`` is built without a graph and only ``w^T J v``
    is differentiated: memory of one backward pass whatever ``N``.

Which direction is stochastic: with ``"series"`` or ``"roulette"`` the *log-determinants* of both
directions are random (fresh noise at every call; the points themselves are not), and
``Flow.log_prob`` (the density direction) returns an estimate of ``log p(x)``, unbiased with
``"roulette"``; the sample ``x`` of ``Flow.sample`` is exact. ``explicit="inverse"`` swaps the roles,
``z = x + g(x)``, as i-ResNet and Residual Flows use the block for density estimation: the density then
needs no fixed point, sampling does.

Spectral normalisation and power iteration (:class:`SpectralNormLinear`, :class:`SpectralNormConv2d`,
:cite:`miyato2018spectral`): the weight is divided by ``max(1, sigma / c)``, with ``sigma = u^T W v``
from the stored singular vectors ``u, v``. How many power iterations, and what they guarantee:

* training mode with autograd on (a training step): ``n_power_iterations`` (default 1) per call,
  warm-started from the previous call's vectors (Miyato et al.'s scheme). The estimate tracks slowly
  moving weights, but it is a lower bound on ``sigma``, so ``||W_normalised|| <= c`` holds only up to
  its lag (``tests/test_residual.py`` shows a jump of the weights being caught up in a few dozen calls);
  two calls, e.g. a forward and an inverse, may then use slightly different weights;
* otherwise (eval mode, or under ``torch.no_grad``): whenever the weight has changed since the last
  time (an in-place update bumps its version), iterate until the relative change of ``sigma`` is below
  ``power_tol`` (at most ``max_power_iterations``), then reuse those vectors: ``||W_normalised|| <= c``
  up to that tolerance, and repeated calls use exactly the same map (round trips are exact to the
  fixed-point tolerance). Construction also iterates to convergence.

So ``Lip(g) <= c^L`` is guaranteed in eval mode up to the power iteration's tolerance, and during
training up to its lag. Convolutions are normalised as operators on images of the block's size
(power iteration with ``conv2d`` and its adjoint ``conv_transpose2d``), not as reshaped kernels.

>>> import torch
>>> block = ResidualBlock(2, hidden=(16,)).eval()
>>> z = torch.randn(5, 2)
>>> x, ld = block(z)
>>> z2, ld_inv = block.inverse(x)
>>> bool((z2 - z).abs().max() < 1e-4), bool(torch.allclose(ld, -ld_inv, atol=1e-4))
(True, True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _validate as V
from ._iterative import ConvergenceError, default_tol, implicit_inverse, richardson_adjoint, solve
from .base import Bijection, Compose
from .glow import ActNorm

__all__ = [
    "ConvergenceError",
    "LipSwish",
    "ResidualBlock",
    "SpectralNormConv2d",
    "SpectralNormLinear",
    "make_residual_flow",
]

_ESTIMATORS = ("exact", "series", "roulette")


def _coeff(coeff) -> float:
    c = V.real("coeff", coeff)
    if not 0.0 < c < 1.0:
        raise ValueError(
            f"coeff must be a number in (0, 1), got {c:g}: it bounds the spectral norm of every layer of g, "
            "and x = z + g(z) is invertible only when Lip(g) < 1. Use e.g. coeff=0.9."
        )
    return c


# ----------------------------------------------------------------------------- spectral normalisation


class _PowerIteration:
    """Spectral normalisation by power iteration, mixed into ``nn.Linear`` / ``nn.Conv2d``.

    Subclasses define ``_op(w, v)`` (the layer's linear operator, no bias), ``_adj(w, u)`` (its adjoint)
    and the shapes of the stored vectors ``u`` (output side) and ``v`` (input side).
    """

    def _setup_power(self, coeff, n_power_iterations, power_tol, max_power_iterations, u_shape, v_shape):
        self.coeff = _coeff(coeff)
        self.n_power_iterations = V.positive_int("n_power_iterations", n_power_iterations)
        self.power_tol = V.positive_float("power_tol", power_tol)
        self.max_power_iterations = V.positive_int("max_power_iterations", max_power_iterations)
        w = self.weight.detach()
        self.register_buffer("u", F.normalize(torch.randn(u_shape, dtype=w.dtype).flatten(), dim=0).view(u_shape))
        self.register_buffer("v", F.normalize(torch.randn(v_shape, dtype=w.dtype).flatten(), dim=0).view(v_shape))
        self._power(w, self.max_power_iterations, self.power_tol)
        self._converged_for = None

    @torch.no_grad()
    def _power(self, w: Tensor, n: int, tol: float | None) -> None:
        u, v = self.u, self.v
        previous = None
        for _ in range(n):
            v = F.normalize(self._adj(w, u).flatten(), dim=0).view_as(v)
            wv = self._op(w, v)
            sigma = wv.norm()
            u = F.normalize(wv.flatten(), dim=0).view_as(u)
            if tol is not None and previous is not None and abs(float(sigma - previous)) <= tol * float(sigma):
                break
            previous = sigma
        self.u.copy_(u)
        self.v.copy_(v)

    def sigma(self) -> Tensor:
        """The current estimate ``u^T W v`` of the largest singular value (no update)."""
        return (self.u * self._op(self.weight, self.v)).sum()

    def normalized_weight(self) -> Tensor:
        """``W / max(1, sigma / c)``, after the power iterations this call makes (module docstring)."""
        w = self.weight
        if self.training and torch.is_grad_enabled():
            self._power(w.detach(), self.n_power_iterations, None)
            self._converged_for = None
        else:
            # iterate only when the weight changed since the last convergence (an in-place update bumps
            # its version), so that repeated calls, e.g. forward then inverse, use the same map
            key = (w.data_ptr(), w._version, w.dtype, w.device)
            if key != getattr(self, "_converged_for", None):
                self._power(w.detach(), self.max_power_iterations, self.power_tol)
                self._converged_for = key
        # clones: the next call updates the buffers in place, and this graph must not see it
        sigma = (self.u.clone() * self._op(w, self.v.clone())).sum()
        return w / torch.clamp(sigma / self.coeff, min=1.0)

    def forward(self, x: Tensor) -> Tensor:
        return self.apply_weight(self.normalized_weight(), x)


class SpectralNormLinear(_PowerIteration, nn.Linear):
    """A linear layer ``y = W x + b`` whose weight is spectrally normalised to ``||W||_2 <= coeff``.

    See the module docstring for the power iterations. :meth:`apply_weight` applies a given
    (normalised) weight, so that a block normalises once per call and then iterates.

    >>> layer = SpectralNormLinear(3, 4, coeff=0.5).eval()
    >>> with torch.no_grad(): _ = layer.weight.mul_(10)
    >>> round(float(torch.linalg.matrix_norm(layer.normalized_weight().detach(), 2)), 4)
    0.5
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        coeff: float = 0.9,
        n_power_iterations: int = 1,
        power_tol: float = 1e-6,
        max_power_iterations: int = 100,
    ):
        super().__init__(V.positive_int("in_features", in_features), V.positive_int("out_features", out_features))
        self._setup_power(
            coeff, n_power_iterations, power_tol, max_power_iterations, (1, out_features), (1, in_features)
        )

    def _op(self, w: Tensor, v: Tensor) -> Tensor:
        return F.linear(v, w)

    def _adj(self, w: Tensor, u: Tensor) -> Tensor:
        return F.linear(u, w.t())

    def apply_weight(self, w: Tensor, x: Tensor) -> Tensor:
        return F.linear(x, w, self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", coeff={self.coeff:g}"


class SpectralNormConv2d(_PowerIteration, nn.Conv2d):
    """A 'same' convolution (odd kernel, zero padding, stride 1) spectrally normalised as an operator on
    images of size ``spatial = (H, W)``: ``||conv||_{R^{C_in H W} -> R^{C_out H W}} <= coeff``.

    The power iteration runs on the operator itself (``conv2d`` and its adjoint ``conv_transpose2d``),
    as i-ResNet does, so the bound is on the map the block uses, not on a reshaped kernel.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        spatial: Sequence[int],
        coeff: float = 0.9,
        n_power_iterations: int = 1,
        power_tol: float = 1e-6,
        max_power_iterations: int = 100,
    ):
        k = V.positive_int("kernel_size", kernel_size)
        if k % 2 == 0:
            raise ValueError(f"kernel_size must be odd (a 'same' convolution centred on each pixel), got {k}")
        spatial = _spatial(spatial)
        super().__init__(
            V.positive_int("in_channels", in_channels), V.positive_int("out_channels", out_channels), k, padding=k // 2
        )
        self.spatial = spatial
        self._setup_power(
            coeff,
            n_power_iterations,
            power_tol,
            max_power_iterations,
            (1, out_channels, *spatial),
            (1, in_channels, *spatial),
        )

    def _op(self, w: Tensor, v: Tensor) -> Tensor:
        return F.conv2d(v, w, padding=self.padding)

    def _adj(self, w: Tensor, u: Tensor) -> Tensor:
        return F.conv_transpose2d(u, w, padding=self.padding)

    def apply_weight(self, w: Tensor, x: Tensor) -> Tensor:
        return F.conv2d(x, w, self.bias, padding=self.padding)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", spatial={self.spatial}, coeff={self.coeff:g}"


def _spatial(spatial) -> tuple[int, int]:
    spatial = V.int_sequence("spatial", spatial, low=1)
    if len(spatial) != 2:
        raise ValueError(f"spatial must be the image size (H, W), got {tuple(spatial)}")
    return spatial


class LipSwish(nn.Module):
    r"""``LipSwish(x) = x sigmoid(beta x) / 1.1`` with ``beta = softplus(b) > 0`` learned :cite:`chen2019residual`.

    The derivative of ``x sigmoid(beta x)`` never exceeds 1.0998 (whatever ``beta``), so the division by
    1.1 makes the activation 1-Lipschitz; unlike ELU or ReLU it is smooth and its derivative does not
    saturate at zero, which the log-determinant's gradient needs.
    """

    def __init__(self):
        super().__init__()
        self.raw_beta = nn.Parameter(torch.tensor(0.5))

    def forward(self, x: Tensor) -> Tensor:
        beta = F.softplus(self.raw_beta)
        return F.silu(beta * x) / (1.1 * beta)  # silu(t) = t sigmoid(t), one fused kernel


_ACTIVATIONS = {"lipswish": LipSwish, "elu": nn.ELU}


class _LipschitzNet(nn.Module):
    """``g = W_L o phi o ... o phi o W_1``: spectrally normalised layers, 1-Lipschitz activations."""

    def __init__(self, channels, hidden, spatial, kernel_size, coeff, activation, power):
        super().__init__()
        sizes = [channels, *hidden, channels]
        layers = []
        for k in range(len(sizes) - 1):
            if spatial is None:
                layers.append(SpectralNormLinear(sizes[k], sizes[k + 1], coeff, **power))
            else:
                # i-ResNet's 3-1-3 pattern: wide kernels at both ends, 1x1 in between
                ks = kernel_size if k in (0, len(sizes) - 2) else 1
                layers.append(SpectralNormConv2d(sizes[k], sizes[k + 1], ks, spatial, coeff, **power))
        self.layers = nn.ModuleList(layers)
        self.acts = nn.ModuleList(_ACTIVATIONS[activation]() for _ in range(len(layers) - 1))

    def weights(self) -> list[Tensor]:
        return [layer.normalized_weight() for layer in self.layers]

    def evaluate(self, ws: list[Tensor], u: Tensor) -> Tensor:
        h = u
        for k, (layer, w) in enumerate(zip(self.layers, ws)):
            if k:
                h = self.acts[k - 1](h)
            h = layer.apply_weight(w, h)
        return h

    def forward(self, u: Tensor) -> Tensor:
        return self.evaluate(self.weights(), u)


# ----------------------------------------------------------------------------- the block


def _rademacher(like: Tensor) -> Tensor:
    return torch.randint(0, 2, like.shape, device=like.device).to(like.dtype) * 2 - 1


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).reshape(a.shape[0], -1).sum(1)


class ResidualBlock(Bijection):
    r"""An invertible residual block :cite:`behrmann2019invertible`: ``x = T(z) = z + g(z)``, ``Lip(g) < 1``.

    The module docstring states the map, its inverse, the log-determinant estimators and which
    direction is stochastic. On vectors (event shape ``(dim,)``) ``g`` is an MLP with hidden widths
    ``hidden`` (at least one layer; default two layers of ``max(32, dim)``); with ``spatial=(H, W)`` it acts on images
    ``(dim, H, W)`` and ``g`` is a CNN with ``hidden`` channels (default ``(32, 32)``), ``kernel_size`` at
    both ends and 1x1 in between. Every layer has spectral norm ``<= coeff``, so ``Lip(g) <= coeff^L`` with ``L`` layers
    (:attr:`lipschitz_bound`).

    Args:
        coeff: ``c`` in (0, 1), the bound on each layer's spectral norm.
        logdet: ``"exact"``, ``"series"`` (``n_terms``, ``n_samples``) or ``"roulette"``
            (``n_exact``, ``roulette_p``, ``n_samples``).
        explicit: ``"forward"`` (``x = z + g(z)``, the slides' direction, default) or ``"inverse"``
            (``z = x + g(x)``, the papers' density models).
        tol, max_iter: the fixed-point inverse stops when Banach's bound
            ``L / (1 - L) ||z_{k+1} - z_k||_2`` (``L`` the Lipschitz bound) is below
            ``tol * max(1, ||x||_2)`` for every sample, so the error of the returned point is within
            that (when ``Lip(g) <= L`` holds); default ``tol`` 1e-10 in float64, 100 eps otherwise.
            :class:`ConvergenceError` after ``max_iter`` iterations or on divergence.
        n_power_iterations, power_tol, max_power_iterations: spectral normalisation (module docstring).
    """

    def __init__(
        self,
        dim: int,
        spatial: Sequence[int] | None = None,
        hidden: Sequence[int] | None = None,
        kernel_size: int = 3,
        coeff: float = 0.9,
        activation: str = "lipswish",
        logdet: str = "exact",
        n_terms: int = 10,
        n_samples: int = 1,
        n_exact: int = 2,
        roulette_p: float | None = None,
        explicit: str = "forward",
        tol: float | None = None,
        max_iter: int = 1000,
        n_power_iterations: int = 1,
        power_tol: float = 1e-6,
        max_power_iterations: int = 100,
    ):
        dim = V.positive_int("dim", dim)
        if V.positive_int("kernel_size", kernel_size) % 2 == 0:
            raise ValueError(f"kernel_size must be odd (a 'same' convolution centred on each pixel), got {kernel_size}")
        if spatial is None:
            super().__init__(dim)
        else:
            spatial = _spatial(spatial)
            super().__init__(event_shape=(dim, *spatial))
        self.spatial = spatial
        coeff = _coeff(coeff)
        if hidden is None:
            hidden = (max(32, dim),) * 2 if spatial is None else (32, 32)
        # no hidden layer would make g linear (and the activation unused) in silence, as in MLP
        hidden = V.int_sequence("hidden", hidden, low=1, min_len=1)
        V.choice("activation", activation, tuple(_ACTIVATIONS))
        self.logdet = V.choice("logdet", logdet, _ESTIMATORS)
        self.explicit = V.choice("explicit", explicit, ("forward", "inverse"))
        self.n_terms = V.positive_int("n_terms", n_terms)
        self.n_samples = V.positive_int("n_samples", n_samples)
        self.n_exact = V.nonneg_int("n_exact", n_exact)
        self.tol = V.optional(V.positive_float, "tol", tol)
        self.max_iter = V.positive_int("max_iter", max_iter)
        power = {
            "n_power_iterations": n_power_iterations,
            "power_tol": power_tol,
            "max_power_iterations": max_power_iterations,
        }
        self.g = _LipschitzNet(dim, hidden, spatial, kernel_size, coeff, activation, power)
        self.coeff = coeff
        self.lipschitz_bound = coeff ** len(self.g.layers)
        if roulette_p is None:
            roulette_p = (1.0 - self.lipschitz_bound**2) / 2.0
        self.roulette_p = V.in_range("roulette_p", roulette_p, 0.0, 1.0, low_open=True, high_open=True)

    # -- log-determinants ------------------------------------------------------------------------

    def _jacobian(self, gu: Tensor, ut: Tensor, create_graph: bool) -> Tensor:
        """``(batch, p, p)``: the Jacobian of ``g`` at each sample (``p`` backward passes)."""
        b, p = gu.shape[0], self.dim
        rows = []
        for i in range(p):
            e = gu.new_zeros(b, p)
            e[:, i] = 1.0
            row = torch.autograd.grad(gu, ut, e.view_as(gu), retain_graph=True, create_graph=create_graph)[0]
            rows.append(row.reshape(b, p))
        return torch.stack(rows, 1)

    def _log_det(self, gu: Tensor, ut: Tensor, create_graph: bool) -> tuple[Tensor, Tensor | None]:
        """An estimate of ``log det(I + J_g(u))`` (and the Jacobian in exact mode)."""
        if self.logdet == "exact":
            J = self._jacobian(gu, ut, create_graph)
            eye = torch.eye(self.dim, dtype=J.dtype, device=J.device)
            return torch.linalg.slogdet(eye + J)[1], J

        def vjp(w: Tensor, graph: bool) -> Tensor:  # J_g^T w
            return torch.autograd.grad(gu, ut, w, retain_graph=True, create_graph=graph)[0]

        total = gu.new_zeros(gu.shape[0])
        if self.logdet == "series":
            for _ in range(self.n_samples):
                v = _rademacher(ut)
                w = v
                for k in range(1, self.n_terms + 1):
                    w = vjp(w, create_graph)  # (J^T)^k v, so that (w . v) = v^T J^k v
                    total = total + ((-1) ** (k + 1) / k) * _dot(w, v)
            return total / self.n_samples, None

        # Russian roulette: N = n_exact + G terms, P(G >= j) = (1 - q)^j, one N per call (shared by the batch)
        q = self.roulette_p
        u01 = 1.0 - float(torch.rand((), dtype=torch.float64))  # in (0, 1]
        n = self.n_exact + math.floor(math.log(u01) / math.log1p(-q))
        surrogate = gu.new_zeros(gu.shape[0])
        for _ in range(self.n_samples):
            v = _rademacher(ut)
            w, neumann = v, v.clone()
            for k in range(1, n + 1):
                w = vjp(w, False).detach()
                weight = 1.0 if k <= self.n_exact else (1.0 - q) ** (-(k - self.n_exact))
                total = total + ((-1) ** (k + 1) / k * weight) * _dot(w, v)
                neumann = neumann + ((-1) ** k * weight) * w
            if create_graph:  # the gradient of log det: E[w^T (dJ) v], w = sum_k (-1)^k (J^T)^k v / P(N >= k)
                surrogate = surrogate + _dot(vjp(neumann, True), v)
        total = total / self.n_samples
        if create_graph:
            surrogate = surrogate / self.n_samples
            total = total + (surrogate - surrogate.detach())
        return total, None

    # -- the two directions ------------------------------------------------------------------------

    def _explicit(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """``u + g(u)`` and ``log det(I + J_g(u))``."""
        ws = self.g.weights()
        grad = torch.is_grad_enabled()
        with torch.enable_grad():
            ut = u.view_as(u) if (grad and u.requires_grad) else u.detach().requires_grad_()
            gu = self.g.evaluate(ws, ut)
            ld, _ = self._log_det(gu, ut, create_graph=grad)
        out = u + gu
        if not grad:
            return out.detach(), ld.detach()
        return out, ld

    def _implicit(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """``u`` with ``u + g(u) = y`` (fixed point) and ``-log det(I + J_g(u))``."""
        what = f"{type(self).__name__}.{'inverse' if self.explicit == 'forward' else 'forward'}"
        hint = (
            "The iteration converges when Lip(g) < 1: call .eval() (spectral norms are then re-estimated to "
            "convergence), lower coeff, or raise max_iter."
        )
        ws = self.g.weights()

        def g(t: Tensor) -> Tensor:
            return self.g.evaluate(ws, t)

        L = self.lipschitz_bound
        factor = L / (1.0 - L)
        tol = self.tol if self.tol is not None else default_tol(y.dtype)
        u_star = solve(lambda t: y - g(t), y.detach(), y, tol, self.max_iter, factor, what, hint)

        grad = torch.is_grad_enabled()
        needed = grad and (y.requires_grad or any(p.requires_grad for p in self.parameters()))
        jac = {}
        fixed = min(self.max_iter, math.ceil(math.log(tol * (1.0 - L)) / math.log(L)) + 1)

        def adjoint(vjp, g_out: Tensor) -> Tensor:
            if "J" in jac:  # exact mode: solve (I + J_g)^T w = g directly
                J = jac["J"]
                eye = torch.eye(self.dim, dtype=J.dtype, device=J.device)
                w = torch.linalg.solve((eye + J).transpose(-1, -2), g_out.reshape(J.shape[0], self.dim))
                return w.reshape(g_out.shape)
            return richardson_adjoint(vjp, g_out, None, tol, self.max_iter, factor, fixed, what, hint)

        u = implicit_inverse(lambda t: t + g(t), u_star, y, adjoint, needed)
        with torch.enable_grad():
            ut = u.view_as(u) if needed else u.detach().requires_grad_()
            gu = g(ut)
            ld, J = self._log_det(gu, ut, create_graph=needed)
        if J is not None:
            jac["J"] = J.detach()
        if not needed:
            return u.detach(), -ld.detach()
        return u, -ld

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return self._explicit(z) if self.explicit == "forward" else self._implicit(z)

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._implicit(x) if self.explicit == "forward" else self._explicit(x)

    def extra_repr(self) -> str:
        shape = f"dim={self.dim}" if self.spatial is None else f"event_shape={self.event_shape}"
        return (
            f"{shape}, coeff={self.coeff:g}, Lip(g) <= {self.lipschitz_bound:.3g}, logdet={self.logdet!r}, "
            f"explicit={self.explicit!r}"
        )


def make_residual_flow(
    dim: int,
    n_blocks: int = 4,
    spatial: Sequence[int] | None = None,
    actnorm: bool = True,
    **block_kwargs,
) -> Compose:
    """A Residual Flow :cite:`chen2019residual`: ``n_blocks`` :class:`ResidualBlock` s, each followed (in
    the sampling direction) by an :class:`~coursekit.flows.glow.ActNorm`, so that the density direction
    normalises before each block. ``block_kwargs`` go to every block (e.g. ``logdet="roulette"``)."""
    V.positive_int("n_blocks", n_blocks)
    V.boolean("actnorm", actnorm)
    maps: list[Bijection] = []
    for _ in range(n_blocks):
        maps.append(ResidualBlock(dim, spatial, **block_kwargs))
        if actnorm:
            maps.append(ActNorm(dim, spatial))
    return Compose(*maps)
