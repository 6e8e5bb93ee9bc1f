r"""Multi-scale image flows (Real-NVP, Glow): squeeze, checkerboard and channel masks, factoring out.

Real-NVP's multi-scale architecture :cite:`dinh2017density`, with Glow's blocks :cite:`kingma2018glow`,
in the density direction (data ``x`` of shape ``(C, H, W)`` to noise):

1. couplings with **checkerboard** masks on ``(C, H, W)``;
2. **squeeze** (:class:`Squeeze`): every ``2 x 2`` block of pixels becomes 4 channels,
   ``(C, H, W) -> (4C, H/2, W/2)``, a permutation of the variables (log-determinant 0);
3. steps of ActNorm, invertible 1x1 convolution and a coupling with a **channel** mask on ``(4C, H/2, W/2)``;
4. **factor out** half of the channels: they go straight to the latent (standard normal), and only the
   other half ``(2C, H/2, W/2)`` is processed by the next scale (steps 1-4 again, with its own parameters).

The last scale runs checkerboard couplings only. Factoring out halves the work at every scale and
gives the latent a coarse-to-fine structure; :class:`MultiScale` is one scale, with the next scale
inside it, and puts the latent back together with the data's shape (the factored channels and
the inner latent are concatenated and un-squeezed), so that the whole model is one
:class:`~coursekit.flows.base.Bijection` on ``(C, H, W)``: ``Flow(make_multiscale(...))`` works as is.

The couplings are the vector :class:`~coursekit.flows.coupling.AffineCoupling` layers acting on the
flattened image (:class:`Flattened`), with masks built from :func:`~coursekit.flows.coupling.checkerboard_mask`
and :func:`~coursekit.flows.coupling.half_mask` (:func:`image_checkerboard_mask`, :func:`channel_mask`); their
conditioner is an MLP, not Real-NVP's ResNet, which is enough for 8x8 digits. ActNorm and the 1x1
convolutions are those of :mod:`coursekit.flows.glow`. Non-square images are fine: each scale only
needs even sides.

>>> import torch
>>> flow = make_multiscale((1, 8, 8), n_scales=2, hidden=(32,))
>>> x = torch.rand(4, 1, 8, 8)
>>> z, ld = flow.inverse(x)          # also initialises ActNorm on this batch
>>> x2, ld2 = flow(z)
>>> z.shape, bool(torch.allclose(x2, x, atol=1e-4)), bool(torch.allclose(ld, -ld2, atol=1e-3))
(torch.Size([4, 1, 8, 8]), True, True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .. import _validate as V
from .base import Bijection, Compose, check_input, validation_enabled
from .coupling import AffineCoupling, checkerboard_mask, half_mask
from .glow import ActNorm, InvConv1x1LU

__all__ = [
    "Flattened",
    "MultiScale",
    "Squeeze",
    "channel_mask",
    "image_checkerboard_mask",
    "make_multiscale",
    "squeeze",
    "unsqueeze",
]


def _image_shape(shape, what: str = "shape") -> tuple[int, int, int]:
    shape = V.int_sequence(what, shape, low=1)
    if len(shape) != 3:
        raise ValueError(f"{what} must be an image shape (C, H, W), got {tuple(shape)}")
    return shape


def squeeze(x: Tensor) -> Tensor:
    """Space to depth: ``(B, C, H, W) -> (B, 4C, H/2, W/2)``; channel ``4c + 2a + b`` holds pixel
    ``(2i + a, 2j + b)`` of channel ``c``. Any dtype and device (a permutation of the entries)."""
    V.tensor("x", x, dim=4, floating=False, finite=False, shape_hint="(batch, C, H, W)")
    B, C, H, W = x.shape
    if H % 2 or W % 2:
        raise ValueError(f"squeeze needs even image sides, got H={H}, W={W}: crop or pad the images to even sides")
    return x.view(B, C, H // 2, 2, W // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(B, 4 * C, H // 2, W // 2)


def unsqueeze(z: Tensor) -> Tensor:
    """Depth to space, the inverse of :func:`squeeze`: ``(B, 4C, H, W) -> (B, C, 2H, 2W)``."""
    V.tensor("z", z, dim=4, floating=False, finite=False, shape_hint="(batch, 4C, H, W)")
    B, C4, H, W = z.shape
    if C4 % 4:
        raise ValueError(f"unsqueeze needs a number of channels divisible by 4, got {C4}")
    C = C4 // 4
    return z.view(B, C, 2, 2, H, W).permute(0, 1, 4, 2, 5, 3).reshape(B, C, 2 * H, 2 * W)


def _check_any_device(t, shape, what: str) -> None:
    # a permutation has no parameters: any floating dtype and device will do (the NaN check cannot read meta tensors)
    if validation_enabled():
        check_input(t, shape, what, finite=not (isinstance(t, Tensor) and t.device.type == "meta"))


class Squeeze(Bijection):
    """Real-NVP's squeeze as a map X = T(Z): the data side is ``(C, H, W)``, the noise side ``(4C, H/2, W/2)``.

    * inverse (density direction): ``z = squeeze(x)``, every 2x2 block of pixels to 4 channels;
    * map (sampling direction): ``x = unsqueeze(z)``;
    * log-determinants 0 (a permutation of the variables).

    ``event_shape`` is the data shape and :attr:`latent_shape` the noise shape: ``forward`` checks its
    input against the latter. Both sides must be even. :class:`MultiScale` uses it inside a scale;
    on its own it changes shapes, so it cannot sit in a :class:`Compose` with maps of one shape.

    >>> import torch
    >>> Squeeze((1, 2, 2)).inverse(torch.arange(4.0).view(1, 1, 2, 2))[0].flatten().tolist()
    [0.0, 1.0, 2.0, 3.0]
    """

    def __init__(self, shape: Sequence[int]):
        C, H, W = _image_shape(shape)
        if H % 2 or W % 2:
            raise ValueError(
                f"Squeeze needs even image sides (it groups 2x2 blocks of pixels), got shape {(C, H, W)}: "
                "crop or pad the images to even sides"
            )
        super().__init__(event_shape=(C, H, W))
        self.latent_shape = (4 * C, H // 2, W // 2)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        _check_any_device(z, self.latent_shape, "Squeeze.forward input z")
        return self._forward(z)

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        _check_any_device(x, self.event_shape, "Squeeze.inverse input x")
        return self._inverse(x)

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return unsqueeze(z), z.new_zeros(z.shape[0])

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return squeeze(x), x.new_zeros(x.shape[0])

    def extra_repr(self) -> str:
        return f"data {self.event_shape} <-> noise {self.latent_shape}"


def image_checkerboard_mask(shape: Sequence[int], parity: int = 0) -> Tensor:
    """Real-NVP's checkerboard on a ``(C, H, W)`` image, flattened row-major: the same
    :func:`~coursekit.flows.coupling.checkerboard_mask` in every channel."""
    C, H, W = _image_shape(shape)
    if H * W < 2:
        raise ValueError(
            f"a checkerboard mask needs at least 2 pixels per channel, got shape {(C, H, W)}: use channel_mask"
        )
    return checkerboard_mask((H, W), parity).repeat(C)


def channel_mask(shape: Sequence[int], flip: bool = False) -> Tensor:
    """Real-NVP's channel mask on a ``(C, H, W)`` image, flattened row-major: the first ``C // 2``
    channels condition (:func:`~coursekit.flows.coupling.half_mask` over the channels; ``flip`` swaps)."""
    C, H, W = _image_shape(shape)
    if C < 2:
        raise ValueError(f"a channel mask needs at least 2 channels, got shape {(C, H, W)}: squeeze first")
    return half_mask(C, flip).repeat_interleave(H * W)


class Flattened(Bijection):
    """A map on vectors of dimension ``C*H*W`` applied to images ``(C, H, W)`` flattened row-major.

    Same map, same log-determinants (a reshape has none): this is how the vector couplings of
    :mod:`coursekit.flows.coupling` act on images, with :func:`image_checkerboard_mask` or
    :func:`channel_mask` as their mask.
    """

    def __init__(self, transform: Bijection, shape: Sequence[int]):
        shape = _image_shape(shape)
        if not isinstance(transform, Bijection):
            raise TypeError(f"transform must be a coursekit Bijection, got {type(transform).__name__}")
        if transform.event_shape != (math.prod(shape),):
            raise ValueError(
                f"transform acts on event shape {transform.event_shape}, expected ({math.prod(shape)},) = C*H*W "
                f"for images of shape {shape}"
            )
        super().__init__(event_shape=shape)
        self.transform = transform

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        x, ld = self.transform._forward(z.reshape(z.shape[0], -1))
        return x.view(z.shape), ld

    def _push(self, z: Tensor) -> Tensor:
        return self.transform._push(z.reshape(z.shape[0], -1)).view(z.shape)

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z, ld = self.transform._inverse(x.reshape(x.shape[0], -1))
        return z.view(x.shape), ld


class MultiScale(Bijection):
    """One scale of a multi-scale flow, on images ``(C, H, W)`` (module docstring).

    Density direction: ``pre`` (on ``(C, H, W)``), squeeze, ``post`` (on ``(4C, H/2, W/2)``), then the
    first ``2C`` channels are factored out and the other ``2C`` go through ``inner`` (the next scale,
    on ``(2C, H/2, W/2)``); the latent is ``unsqueeze(cat(factored, inner latent))``, of shape
    ``(C, H, W)``. The sampling direction runs the same steps backwards. Each of ``pre``, ``post`` and
    ``inner`` may be ``None`` (nothing there). Log-determinants add (the squeeze's is 0).
    """

    def __init__(
        self,
        shape: Sequence[int],
        pre: Bijection | None = None,
        post: Bijection | None = None,
        inner: Bijection | None = None,
    ):
        C, H, W = _image_shape(shape)
        squeezer = Squeeze((C, H, W))  # checks the sides
        super().__init__(event_shape=(C, H, W))
        self.squeezer = squeezer
        expected = {"pre": (C, H, W), "post": squeezer.latent_shape, "inner": (2 * C, H // 2, W // 2)}
        for name, m in (("pre", pre), ("post", post), ("inner", inner)):
            if m is not None:
                if not isinstance(m, Bijection):
                    raise TypeError(f"{name} must be a coursekit Bijection or None, got {type(m).__name__}")
                if m.event_shape != expected[name]:
                    raise ValueError(f"{name} acts on event shape {m.event_shape}, expected {expected[name]}")
        self.pre, self.post, self.inner = pre, post, inner
        self.split = 2 * C

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        total = x.new_zeros(x.shape[0])
        h = x
        if self.pre is not None:
            h, ld = self.pre._inverse(h)
            total = total + ld
        h = squeeze(h)
        if self.post is not None:
            h, ld = self.post._inverse(h)
            total = total + ld
        out, rest = h[:, : self.split], h[:, self.split :]
        if self.inner is not None:
            rest, ld = self.inner._inverse(rest)
            total = total + ld
        return unsqueeze(torch.cat([out, rest], 1)), total

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        total = z.new_zeros(z.shape[0])
        s = squeeze(z)
        out, rest = s[:, : self.split], s[:, self.split :]
        if self.inner is not None:
            rest, ld = self.inner._forward(rest)
            total = total + ld
        h = torch.cat([out, rest], 1)
        if self.post is not None:
            h, ld = self.post._forward(h)
            total = total + ld
        h = unsqueeze(h)
        if self.pre is not None:
            h, ld = self.pre._forward(h)
            total = total + ld
        return h, total

    def extra_repr(self) -> str:
        C, H, W = self.event_shape
        return f"{(C, H, W)} -> squeeze {self.squeezer.latent_shape} -> factor out {self.split} channels"


def _step(shape, mask, hidden, clamp, conv):
    """One step in sampling order [coupling, 1x1 conv, ActNorm], so that data meet ActNorm first."""
    C, H, W = shape
    maps: list[Bijection] = [Flattened(AffineCoupling(C * H * W, mask, hidden, clamp=clamp), shape)]
    if conv:
        maps.append(InvConv1x1LU(C, (H, W)))
    maps.append(ActNorm(C, (H, W)))
    return maps


def make_multiscale(
    shape: Sequence[int] = (1, 8, 8),
    n_scales: int = 2,
    n_steps: int = 2,
    hidden: Sequence[int] = (64, 64),
    clamp: float | None = 3.0,
) -> Bijection:
    """A Real-NVP / Glow multi-scale flow on images of ``shape = (C, H, W)`` (module docstring).

    Each of the ``n_scales`` scales runs ``n_steps`` checkerboard steps, squeezes, runs ``n_steps``
    channel steps (with 1x1 convolutions), and factors out half the channels; a final block of
    ``n_steps`` checkerboard steps (channel steps if a single pixel is left) processes the rest. A step
    is ActNorm, [1x1 convolution], affine coupling (in the density direction). For the 8x8 digits:
    ``make_multiscale((1, 8, 8))``. Both sides must be divisible by ``2^n_scales``.
    """
    C, H, W = _image_shape(shape)
    n_scales = V.positive_int("n_scales", n_scales)
    n_steps = V.positive_int("n_steps", n_steps)
    f = 2**n_scales
    if H % f or W % f:
        raise ValueError(
            f"make_multiscale with n_scales={n_scales} squeezes {n_scales} times, so the image sides must be "
            f"divisible by {f}; got shape {(C, H, W)}: lower n_scales or pad the images"
        )
    if C * H * W < 2:
        raise ValueError(f"an image of shape {(C, H, W)} has a single variable: nothing to couple")

    def final(shape):
        c, h, w = shape
        if h * w >= 2:
            masks = [image_checkerboard_mask(shape, k % 2) for k in range(n_steps)]
        else:
            masks = [channel_mask(shape, bool(k % 2)) for k in range(n_steps)]
        return Compose(*[m for mask in masks for m in _step(shape, mask, hidden, clamp, conv=c > 1 and h * w < 2)])

    def scale(shape, level):
        if level == n_scales:
            return final(shape)
        c, h, w = shape
        pre = None
        if h * w >= 2:
            steps = [_step(shape, image_checkerboard_mask(shape, k % 2), hidden, clamp, False) for k in range(n_steps)]
            pre = Compose(*[m for step in steps for m in step])
        sq = (4 * c, h // 2, w // 2)
        steps = [_step(sq, channel_mask(sq, bool(k % 2)), hidden, clamp, True) for k in range(n_steps)]
        post = Compose(*[m for step in steps for m in step])
        return MultiScale(shape, pre, post, scale((2 * c, h // 2, w // 2), level + 1))

    return scale((C, H, W), 0)
