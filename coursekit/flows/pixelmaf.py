r"""A MAF layer on images whose conditioner is a convolutional autoregressive network (Gated PixelCNN).

MAF :cite:`papamakarios2017masked` with a MADE conditioner treats an image as a vector and learns
every conditional with dense masked layers. On images, the conditioner can instead be a PixelCNN
(:class:`coursekit.pixelcnn.GatedPixelCNN`): convolutions share weights across positions and read
the neighbourhood of each pixel, in raster-scan order (pixel by pixel, channel by channel). As in
:class:`~coursekit.flows.autoregressive.MAF`, the parameters read the *data* ``x``:

* inverse (density direction, one network pass): ``z_i = (x_i - m_i(x_{<i})) exp(-alpha_i(x_{<i}))``;
* map (sampling direction, ``p = C H W`` passes): ``x_i = exp(alpha_i(x_{<i})) z_i + m_i(x_{<i})``,
  computed by ``p`` sweeps ``x <- exp(alpha(x)) z + m(x)`` over all variables at once: after sweep ``t``
  the first ``t`` variables in the order are exact (they read only exact ones);
* ``log|det J_T(z)| = sum_i alpha_i(x_{<i})`` and ``log|det J_{T^{-1}}(x)| = -sum_i alpha_i(x_{<i})``.

``alpha = bound * tanh(a / bound)`` as in :mod:`coursekit.flows.autoregressive`. On vectors
(``spatial=None``) the layer treats ``x`` as a ``1 x 1`` image with ``dim`` channels: a MAF whose
conditioner is the channel-masked part of the network.

>>> import torch
>>> layer = PixelMAF(1, spatial=(3, 3), features=8, n_layers=2)
>>> x = torch.randn(2, 1, 3, 3)
>>> z, ld = layer.inverse(x)
>>> torch.allclose(layer(z)[0], x, atol=1e-5)
True
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .. import _validate as V
from ..pixelcnn import GatedPixelCNN, raster_order
from .base import Bijection, check_input
from .coupling import _affine, _clamp

__all__ = ["PixelMAF"]


class PixelMAF(Bijection):
    """One MAF layer on images with a :class:`~coursekit.pixelcnn.GatedPixelCNN` conditioner (module docstring).

    Args:
        dim: channels ``C`` (the data dimension for vectors).
        spatial: ``(H, W)`` for images of event shape ``(C, H, W)``; ``None`` for vectors.
        features: width of the network (rounded up to a multiple of ``C``).
        n_layers, kernel_size: depth and kernel of the network (``kernel_size`` is 1 for vectors).
        bound: the largest ``|alpha_i|``.
        zero_init: start as the identity map.

    :attr:`order` lists the variables (indices into the row-major flattening) in the order in which
    the Jacobian is lower triangular.
    """

    def __init__(
        self,
        dim: int,
        spatial: Sequence[int] | None = None,
        features: int = 32,
        n_layers: int = 3,
        kernel_size: int = 3,
        bound: float = 5.0,
        zero_init: bool = True,
    ):
        C = V.positive_int("dim", dim)
        if V.positive_int("kernel_size", kernel_size) % 2 == 0:
            raise ValueError(f"kernel_size must be odd (centred on the current pixel), got {kernel_size}")
        if spatial is None:
            super().__init__(C)
            hw, kernel_size = (1, 1), 1
        else:
            hw = V.int_sequence("spatial", spatial, low=1)
            if len(hw) != 2:
                raise ValueError(f"spatial must be the image size (H, W), got {tuple(hw)}")
            super().__init__(event_shape=(C, *hw))
        self.spatial = None if spatial is None else tuple(hw)
        self.channels, self.hw = C, tuple(hw)
        features = V.positive_int("features", features)
        features = -(-features // C) * C
        self.bound = V.positive_float("bound", bound)
        self.net = GatedPixelCNN(C, 2, features, n_layers, kernel_size, zero_init=zero_init, vertical=hw[0] > 1)
        self.register_buffer("_order", raster_order((C, *hw)))

    def conditioner(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(m, alpha)``, each shaped like ``x``, from one network pass."""
        check_input(x, self.event_shape, f"{type(self).__name__}.conditioner input x", like=V.reference(self))
        return self._conditioner(x)

    def _conditioner(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = self.net._run(x.view(x.shape[0], self.channels, *self.hw))
        m, a = out[:, :, 0], out[:, :, 1]
        return m.reshape(x.shape), _clamp(a, self.bound).reshape(x.shape)

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.zeros_like(z)
        for _ in range(self.dim):  # sequential by nature: sweep t makes the first t variables exact
            m, alpha = self._conditioner(x)
            x = _affine(m, alpha, z, False, "before")
        return x, alpha.reshape(z.shape[0], -1).sum(1)

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        m, alpha = self._conditioner(x)
        return _affine(m, alpha, x, True, "before"), -alpha.reshape(x.shape[0], -1).sum(1)

    @property
    def order(self) -> Tensor:
        """The variables (indices into the row-major flattening) in generation order: raster scan, then channels."""
        return self._order

    def extra_repr(self) -> str:
        shape = f"dim={self.dim}" if self.spatial is None else f"event_shape={self.event_shape}"
        return f"{shape}, bound={self.bound:g}, order=raster"
