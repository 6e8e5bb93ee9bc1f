r"""MintNet-style layers: masked (triangular) networks with an exact log-determinant and an iterative inverse.

MintNet :cite:`song2019mintnet` builds invertible networks from triangular building blocks (masked
convolutions, whose Jacobian is triangular in raster-scan order), elementwise monotone
nonlinearities and sums of such maps, all of which keep the Jacobian triangular. Then

* the log-determinant is exact and cheap: ``log|det J_T(z)| = sum_i log J_ii(z)``, the diagonal
  being available in closed form (no autograd Jacobian);
* the inverse is found by the paper's parallel fixed-point iteration, a Newton step that uses only
  the diagonal of the Jacobian: ``z_{k+1} = z_k - alpha (T(z_k) - x) / diag(J_T(z_k))``. Its iteration
  matrix ``I - alpha diag(J)^{-1} J`` is triangular with ``1 - alpha`` on the diagonal, so it converges
  locally for ``0 < alpha < 2`` (Ostrowski's theorem); at ``alpha = 1`` the linearised error matrix is
  nilpotent (strictly triangular), so ``p`` iterations solve a linear layer exactly and in practice far
  fewer reach the tolerance.

:class:`MintLayer` is one such layer (a simplification of the paper's masked convolutional blocks,
written for this course):

.. math:: x = T(z) = e^{s} \odot z + L_2\, \sigma(L_1 z + b_1) + b_2,

with ``L_1`` (``C -> K C`` channels) and ``L_2`` (``K C -> C``) masked convolutions with mask B in
raster order (:func:`coursekit.pixelcnn.causal_mask`): output variable ``i`` reads only variables
``<= i``. Their "diagonal" taps (centre of the kernel, a channel to its own colour group) are
``exp`` of a parameter, hence positive, and ``sigma`` (ELU or tanh) is increasing, so

.. math::

   J_{ii}(z) = e^{s_c} + \sum_{k=1}^{K} (L_2)_{c,(c,k)}\, \sigma'(h_{(c,k)}(z))\, (L_1)_{(c,k),c}
   \;\ge\; e^{s_c} > 0

at every point: each coordinate is strictly increasing in its own variable with slope at least
``e^{s_c}``, so ``T`` is a bijection of ``R^p`` (solve coordinate by coordinate), and the
log-determinant is ``sum log J_ii``. On vectors (``spatial=None``) the same layer is the ``1 x 1``
image with ``dim`` channels: ``L_1``, ``L_2`` are block lower-triangular matrices with positive
diagonals. ``reverse=True`` uses the reversed order (MintNet alternates the two, so that information
flows both ways); :func:`make_mintnet` stacks alternating layers.

Gradients through the iterative inverse come from the implicit function theorem (a triangular
adjoint solve by the same preconditioned iteration), not from backpropagating through the loop.

>>> import torch
>>> layer = MintLayer(1, spatial=(4, 4))
>>> z = torch.randn(3, 1, 4, 4)
>>> x, ld = layer(z)
>>> z2, ld_inv = layer.inverse(x)
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
from ..pixelcnn import causal_mask, raster_order
from ._iterative import default_tol, implicit_inverse, richardson_adjoint, solve
from .base import Bijection, Compose, check_input

__all__ = ["MintLayer", "make_mintnet"]

_ACTIVATIONS = {
    "elu": (F.elu, lambda h: torch.where(h > 0, torch.ones_like(h), torch.exp(h.clamp(max=0.0)))),
    "tanh": (torch.tanh, lambda h: 1.0 - torch.tanh(h) ** 2),
}


class MintLayer(Bijection):
    r"""A MintNet-style masked layer :cite:`song2019mintnet` with a triangular Jacobian (module docstring).

    * map (sampling direction, one pass): ``x = e^s * z + L_2 sigma(L_1 z + b_1) + b_2``;
    * inverse (density direction): ``z_{k+1} = z_k - step_size (T(z_k) - x) / diag(J_T(z_k))`` from
      ``z_0 = e^{-s} x``, until ``||z_{k+1} - z_k||_2 <= tol * max(1, ||x||_2)`` for every sample
      (default ``tol`` 1e-10 in float64, 100 eps otherwise); :class:`ConvergenceError` after
      ``max_iter`` iterations or on divergence (then lower ``step_size``, the paper's alpha in (0, 2));
    * ``log|det J_T(z)| = sum_i log J_ii(z)`` (exact), ``log|det J_{T^{-1}}(x)|`` its negative at ``z = T^{-1}(x)``.

    Args:
        dim: channels ``C`` (the data dimension for vectors).
        spatial: ``(H, W)`` for images of event shape ``(C, H, W)``; ``None`` for vectors.
        hidden: ``K``, hidden channels per input channel.
        kernel_size: odd size of the masked convolutions (images only; vectors use 1).
        activation: ``"elu"`` or ``"tanh"`` (increasing, with derivative in (0, 1]).
        reverse: use the reversed raster order.

    :attr:`order` lists the variables (indices into the row-major flattening) in the order in which
    the Jacobian is lower triangular.
    """

    def __init__(
        self,
        dim: int,
        spatial: Sequence[int] | None = None,
        hidden: int = 4,
        kernel_size: int = 3,
        activation: str = "elu",
        reverse: bool = False,
        step_size: float = 1.0,
        tol: float | None = None,
        max_iter: int = 200,
    ):
        C = V.positive_int("dim", dim)
        k = V.positive_int("kernel_size", kernel_size)
        if k % 2 == 0:
            raise ValueError(f"kernel_size must be odd (centred on the current pixel), got {k}")
        if spatial is None:
            super().__init__(C)
            hw = (1, 1)
            k = 1
        else:
            hw = V.int_sequence("spatial", spatial, low=1)
            if len(hw) != 2:
                raise ValueError(f"spatial must be the image size (H, W), got {tuple(hw)}")
            super().__init__(event_shape=(C, *hw))
        self.spatial = None if spatial is None else tuple(hw)
        self.channels, self.hw, self.kernel_size = C, tuple(hw), k
        K = self.hidden = V.positive_int("hidden", hidden)
        V.choice("activation", activation, tuple(_ACTIVATIONS))
        self.activation = activation
        self.reverse = V.boolean("reverse", reverse)
        self.step_size = V.real("step_size", step_size, 0.0, 2.0, low_open=True, high_open=True)
        self.tol = V.optional(V.positive_float, "tol", tol)
        self.max_iter = V.positive_int("max_iter", max_iter)

        r = k // 2
        self.register_buffer("mask1", causal_mask(K * C, C, k, "B", C, reverse=self.reverse))
        self.register_buffer("mask2", causal_mask(C, K * C, k, "B", C, reverse=self.reverse))
        diag1 = torch.zeros_like(self.mask1, dtype=torch.bool)
        diag2 = torch.zeros_like(self.mask2, dtype=torch.bool)
        for c in range(C):
            diag1[c * K : (c + 1) * K, c, r, r] = True
            diag2[c, c * K : (c + 1) * K, r, r] = True
        self.register_buffer("diag1", diag1)
        self.register_buffer("diag2", diag2)
        self.register_buffer("_order", raster_order((C, *hw), self.reverse))

        bound1 = 1.0 / math.sqrt(C * k * k)
        bound2 = 1.0 / math.sqrt(K * C * k * k)
        w1 = torch.empty(K * C, C, k, k).uniform_(-bound1, bound1)
        w2 = torch.empty(C, K * C, k, k).uniform_(-bound2, bound2)
        # diagonal taps are exp(parameter): start them so that the nonlinear part adds about 1/2 to J_ii
        start = 0.5 * math.log(0.5 / K)
        w1[diag1] = start
        w2[diag2] = start
        self.weight1 = nn.Parameter(w1)
        self.weight2 = nn.Parameter(w2)
        self.bias1 = nn.Parameter(torch.zeros(K * C))
        self.bias2 = nn.Parameter(torch.zeros(C))
        self.log_scale = nn.Parameter(torch.zeros(C))

    # -- the map and its diagonal ----------------------------------------------------------------

    def _weights(self) -> tuple[Tensor, Tensor]:
        w1 = torch.where(self.diag1, self.weight1.exp(), self.weight1 * self.mask1)
        w2 = torch.where(self.diag2, self.weight2.exp(), self.weight2 * self.mask2)
        return w1, w2

    def _image(self, t: Tensor) -> Tensor:
        return t.view(t.shape[0], self.channels, *self.hw)

    def _map(self, ws, z: Tensor) -> tuple[Tensor, Tensor]:
        """``T(z)`` and ``diag(J_T(z))``, both shaped like ``z``."""
        w1, w2 = ws
        sigma, dsigma = _ACTIVATIONS[self.activation]
        zi = self._image(z)
        pad = self.kernel_size // 2
        h = F.conv2d(zi, w1, self.bias1, padding=pad)
        scale = self.log_scale.exp().view(1, -1, 1, 1)
        x = scale * zi + F.conv2d(sigma(h), w2, self.bias2, padding=pad)
        r, K, C = pad, self.hidden, self.channels
        a = w1[:, :, r, r].reshape(C, K, C).diagonal(dim1=0, dim2=2).T  # (C, K): L_1 tap of channel c into (c, k)
        b = w2[:, :, r, r].reshape(C, C, K).diagonal(dim1=0, dim2=1).T  # (C, K): L_2 tap of (c, k) into channel c
        ds = dsigma(h).view(h.shape[0], C, K, *self.hw)
        diag = scale + ((a * b).view(1, C, K, 1, 1) * ds).sum(2)
        return x.reshape(z.shape), diag.reshape(z.shape)

    def jacobian_diagonal(self, z: Tensor) -> Tensor:
        """``diag(J_T(z))``, shaped like ``z``: every entry is ``>= exp(log_scale)`` > 0."""
        check_input(z, self.event_shape, f"{type(self).__name__}.jacobian_diagonal input z", like=V.reference(self))
        return self._map(self._weights(), z)[1]

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        x, diag = self._map(self._weights(), z)
        return x, diag.log().reshape(z.shape[0], -1).sum(1)

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        ws = self._weights()
        alpha = self.step_size
        what = f"{type(self).__name__}.inverse"
        hint = "Lower step_size (the paper's alpha, in (0, 2)) or raise max_iter."
        tol = self.tol if self.tol is not None else default_tol(x.dtype)

        def step(z: Tensor) -> Tensor:
            tz, diag = self._map(ws, z)
            return z - alpha * (tz - x) / diag

        scale = self._image(torch.ones_like(x)) * self.log_scale.exp().view(1, -1, 1, 1)
        z0 = (x / scale.reshape(x.shape)).detach()
        z_star = solve(step, z0, x, tol, self.max_iter, 1.0, what, hint)
        needed = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters()))
        with torch.no_grad():
            precond = 1.0 / self._map(ws, z_star)[1]

        def adjoint(vjp, g: Tensor) -> Tensor:
            # J^T is upper triangular with the same diagonal: the preconditioned iteration is exact after p steps
            return richardson_adjoint(vjp, g, precond, tol, self.dim + 1, 1.0, self.dim, what, hint)

        z = implicit_inverse(lambda t: self._map(ws, t)[0], z_star, x, adjoint, needed)
        _, diag = self._map(ws, z)
        return z, -diag.log().reshape(x.shape[0], -1).sum(1)

    @property
    def order(self) -> Tensor:
        """The variables (indices into the row-major flattening) in generation order: raster scan, then channels."""
        return self._order

    def extra_repr(self) -> str:
        shape = f"dim={self.dim}" if self.spatial is None else f"event_shape={self.event_shape}"
        return (
            f"{shape}, hidden={self.hidden} per channel, kernel_size={self.kernel_size}, "
            f"activation={self.activation!r}, order={'reversed raster' if self.reverse else 'raster'}"
        )


def make_mintnet(
    dim: int,
    spatial: Sequence[int] | None = None,
    n_layers: int = 4,
    hidden: int = 4,
    kernel_size: int = 3,
    activation: str = "elu",
) -> Compose:
    """``n_layers`` :class:`MintLayer` s alternating the raster order and its reverse (as MintNet pairs
    its masks), so that every variable can depend on every other one after two layers."""
    V.positive_int("n_layers", n_layers)
    return Compose(
        *[MintLayer(dim, spatial, hidden, kernel_size, activation, reverse=bool(n % 2)) for n in range(n_layers)]
    )
