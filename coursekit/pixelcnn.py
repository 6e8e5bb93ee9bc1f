r"""PixelCNN: masked convolutions whose outputs are autoregressive in raster-scan order.

PixelCNN :cite:`oord2016pixel` models an image of ``C`` channels and ``H x W`` pixels as
``p(x) = prod_i p(x_i | x_{<i})``, the variables ordered pixel by pixel in **raster-scan order**
(row by row, left to right) and, within a pixel, channel by channel (``c = 0, 1, ...``). One pass
of a network whose output for variable ``i`` reads only ``x_{<i}`` gives every conditional at once
(the image analogue of MADE, :mod:`coursekit.made`); sampling takes one pass per variable.

Masks (:func:`causal_mask`). A ``k x k`` convolution centred on pixel ``(r, s)`` may read the rows
above and the pixels to the left; at the centre, channel groups decide: channel ``c_in`` may feed
output group ``g`` when ``g > c_in`` (**mask A**, for the first layer: a variable never sees itself)
or ``g >= c_in`` (**mask B**, for the layers after, whose features at ``(r, s)`` already exclude the
current variable).

The blind spot, and how :class:`GatedPixelCNN` removes it. Stacking masked ``k x k`` convolutions
does *not* give a pixel every predecessor: the receptive field grows as a cone that misses a
triangle of pixels above and to the right (the "blind spot" of :cite:`oord2016conditional`). Gated
PixelCNN splits the network into two stacks:

* a **vertical stack**, convolutions of ``(k//2 + 1) x k`` covering the rows up to the current one,
  whose features are shifted down by one row before anything else reads them, so that row ``r``
  sees the full width of the rows above it (a rectangle, no blind spot);
* a **horizontal stack**, ``1 x (k//2 + 1)`` convolutions over the current row up to the current pixel
  (mask A or B at the centre), which also receives the shifted vertical features.

After ``n_layers`` layers with ``r = k // 2``, the output at pixel ``(i, j)`` depends exactly on the
rows ``i - 1 - n_layers r .. i - 1`` between columns ``j - n_layers r .. j + n_layers r``, on the
``n_layers r`` pixels to its left in row ``i``, and at ``(i, j)`` itself on the channels ``< c``
(``tests/test_pixelcnn.py`` checks this set with autograd, and that a plain masked stack has the
blind spot). Each layer gates its features, ``tanh(a) * sigmoid(b)``, and the horizontal stack
has residual connections.

:class:`PixelCNN` is the discrete model of images with ``levels`` pixel values (a categorical
distribution per variable): log-likelihood in nats and bits per dimension, sampling one variable
at a time. :class:`coursekit.flows.pixelmaf.PixelMAF` uses the same network as the conditioner
of a MAF layer on images.

>>> import torch
>>> model = PixelCNN(shape=(1, 4, 4), levels=3, features=8, n_layers=2)
>>> k = model.sample(2)
>>> k.shape, bool(((k >= 0) & (k <= 2) & (k == k.round())).all())
(torch.Size([2, 1, 4, 4]), True)
>>> model.log_prob(k).shape
torch.Size([2])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _validate as V

__all__ = ["GatedPixelCNN", "MaskedConv2d", "PixelCNN", "causal_mask", "raster_order"]


def _groups(n: int, n_groups: int) -> Tensor:
    # channel i of a layer with n channels belongs to colour group floor(i * n_groups / n)
    return torch.arange(n) * n_groups // n


def causal_mask(
    out_channels: int,
    in_channels: int,
    kernel_size: int | Sequence[int],
    mask_type: str = "B",
    n_groups: int = 1,
    centre: Sequence[int] | None = None,
    reverse: bool = False,
) -> Tensor:
    """The 0/1 mask ``(out, in, kh, kw)`` of a raster-order masked convolution.

    ``centre`` is the kernel position of the current pixel (default the middle). Positions before it
    in raster order are kept, those after are zeroed; at the centre, input channel group ``g_in``
    feeds output group ``g_out`` when ``g_out > g_in`` (``"A"``) or ``g_out >= g_in`` (``"B"``), the
    groups being ``n_groups`` contiguous blocks of channels (colours). ``reverse=True`` is the same
    for the reversed order (last pixel, last channel first).

    >>> causal_mask(1, 1, 3, "A")[0, 0].int().tolist()
    [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    """
    out_channels = V.positive_int("out_channels", out_channels)
    in_channels = V.positive_int("in_channels", in_channels)
    if isinstance(kernel_size, Sequence) and not isinstance(kernel_size, str):
        kh, kw = V.int_sequence("kernel_size", kernel_size, low=1, min_len=2)[:2]
        if len(kernel_size) != 2:
            raise ValueError(f"kernel_size must be an integer or a pair (kh, kw), got {tuple(kernel_size)}")
    else:
        kh = kw = V.positive_int("kernel_size", kernel_size)
    V.choice("mask_type", mask_type, ("A", "B"))
    # every colour group needs a channel on both sides (this also keeps arange(n) * n_groups within int64)
    n_groups = V.integer("n_groups", n_groups, 1, min(out_channels, in_channels))
    V.boolean("reverse", reverse)
    if centre is None:
        ci, cj = kh // 2, kw // 2
    else:
        c = V.int_sequence("centre", centre, low=0)
        if len(c) != 2 or c[0] >= kh or c[1] >= kw:
            raise ValueError(
                f"centre must be the kernel position (i, j) of the current pixel, with 0 <= i < {kh} and "
                f"0 <= j < {kw} for kernel_size ({kh}, {kw}), got {tuple(c)}"
            )
        ci, cj = c
    pos = torch.arange(kh).view(-1, 1) * kw + torch.arange(kw).view(1, -1)
    here = ci * kw + cj
    before = (pos > here) if reverse else (pos < here)
    g_out = _groups(out_channels, n_groups).view(-1, 1)
    g_in = _groups(in_channels, n_groups).view(1, -1)
    if reverse:
        g_out, g_in = -g_out, -g_in
    centre_ok = (g_out > g_in) if mask_type == "A" else (g_out >= g_in)
    mask = before.view(1, 1, kh, kw).expand(out_channels, in_channels, kh, kw).clone()
    mask[:, :, ci, cj] = centre_ok
    return mask.to(torch.get_default_dtype())


def raster_order(shape: Sequence[int], reverse: bool = False) -> Tensor:
    """The generation order of the variables of a ``(C, H, W)`` image, as indices into its row-major
    flattening: pixel by pixel in raster order, channel by channel within a pixel."""
    shape = V.int_sequence("shape", shape, low=1)
    if len(shape) != 3:
        raise ValueError(f"shape must be an image shape (C, H, W), got {tuple(shape)}")
    V.boolean("reverse", reverse)
    C, H, W = shape
    idx = torch.arange(C * H * W).view(C, H, W).permute(1, 2, 0).reshape(-1)
    return idx.flip(0) if reverse else idx


class MaskedConv2d(nn.Conv2d):
    """A 'same' convolution (odd kernel, zero padding) with a :func:`causal_mask` (PixelCNN's layer)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, mask_type: str = "B", n_groups: int = 1):
        k = V.positive_int("kernel_size", kernel_size)
        if k % 2 == 0:
            raise ValueError(f"kernel_size must be odd (centred on the current pixel), got {k}")
        V.positive_int("in_channels", in_channels)
        V.positive_int("out_channels", out_channels)
        super().__init__(in_channels, out_channels, k, padding=k // 2)
        self.register_buffer("mask", causal_mask(out_channels, in_channels, k, mask_type, n_groups))
        self.mask_type = mask_type

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", mask_type={self.mask_type!r}"


class _Masked1x1(nn.Conv2d):
    def __init__(self, in_channels, out_channels, n_groups):
        super().__init__(in_channels, out_channels, 1)
        self.register_buffer("mask", causal_mask(out_channels, in_channels, 1, "B", n_groups))

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias)


def _gate(t: Tensor) -> Tensor:
    # value and gate channels are interleaved, so that both halves keep the colour groups
    return torch.tanh(t[:, 0::2]) * torch.sigmoid(t[:, 1::2])


class _GatedLayer(nn.Module):
    def __init__(self, c_in, features, k, n_groups, first, vertical):
        super().__init__()
        r = k // 2
        self.r, self.first = r, first
        if vertical:
            self.v_conv = nn.Conv2d(c_in, 2 * features, (r + 1, k))
            self.v_to_h = nn.Conv2d(2 * features, 2 * features, 1)  # reads rows above only: no mask
        else:
            self.v_conv = self.v_to_h = None
        self.h_conv = nn.Conv2d(c_in, 2 * features, (1, r + 1))
        self.register_buffer(
            "h_mask", causal_mask(2 * features, c_in, (1, r + 1), "A" if first else "B", n_groups, centre=(0, r))
        )
        self.h_out = _Masked1x1(features, features, n_groups)

    def forward(self, v: Tensor | None, h: Tensor) -> tuple[Tensor | None, Tensor]:
        r = self.r
        h_pre = F.conv2d(F.pad(h, (r, 0, 0, 0)), self.h_conv.weight * self.h_mask, self.h_conv.bias)
        if self.v_conv is not None:
            v_pre = self.v_conv(F.pad(v, (r, r, r, 0)))  # rows i - r .. i, columns j - r .. j + r
            v_down = F.pad(v_pre, (0, 0, 1, 0))[:, :, :-1]  # row i now holds what rows < i give
            h_pre = h_pre + self.v_to_h(v_down)
            v = _gate(v_pre)
        h_new = self.h_out(_gate(h_pre))
        return v, h_new if self.first else h + h_new


class GatedPixelCNN(nn.Module):
    """Gated PixelCNN :cite:`oord2016conditional`: vertical and horizontal stacks, no blind spot.

    Maps images ``(B, C, H, W)`` to ``(B, C, n_params, H, W)``: for every variable ``(c, i, j)``,
    ``n_params`` numbers that depend only on the variables before it in raster-scan order (module
    docstring, which also gives the exact receptive field). ``features`` (a multiple of ``C``) is the
    width of both stacks; ``zero_init`` zeroes the last layer (a flow layer then starts as the identity).
    ``vertical=False`` leaves out the vertical stack, for images of a single row (vectors are ``1 x 1``
    images), where it would see nothing.
    """

    def __init__(
        self,
        channels: int,
        n_params: int,
        features: int = 32,
        n_layers: int = 4,
        kernel_size: int = 3,
        zero_init: bool = False,
        vertical: bool = True,
    ):
        super().__init__()
        self.channels = V.positive_int("channels", channels)
        self.n_params = V.positive_int("n_params", n_params)
        self.features = V.positive_int("features", features)
        if features % channels:
            raise ValueError(
                f"features must be a multiple of channels={channels} (each colour gets features/channels units), "
                f"got {features}"
            )
        self.n_layers = V.positive_int("n_layers", n_layers)
        k = V.positive_int("kernel_size", kernel_size)
        if k % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {k}")
        V.boolean("zero_init", zero_init)
        self.vertical = V.boolean("vertical", vertical)
        self.kernel_size = k
        self.layers = nn.ModuleList(
            _GatedLayer(channels if n == 0 else features, features, k, channels, n == 0, vertical)
            for n in range(n_layers)
        )
        self.head = _Masked1x1(features, features, channels)
        self.out = _Masked1x1(features, channels * n_params, channels)
        if zero_init:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, n_params, H, W)`` from images ``x`` of shape ``(B, C, H, W)`` (checked: type, shape, dtype,
        device, finiteness; the models built on the network call :meth:`_run`, which skips the checks)."""
        V.tensor("x", x, dim=4, like=self.out.weight, shape_hint=f"(batch, {self.channels}, H, W)")
        if x.shape[1] != self.channels:
            raise ValueError(f"x has shape {tuple(x.shape)}, expected (batch, {self.channels}, H, W)")
        return self._run(x)

    def _run(self, x: Tensor) -> Tensor:
        v = x if self.vertical else None
        h = x
        for layer in self.layers:
            v, h = layer(v, h)
        out = self.out(F.relu(self.head(F.relu(h))))
        return out.unflatten(1, (self.channels, self.n_params))

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, n_params={self.n_params}, features={self.features}, "
            f"n_layers={self.n_layers}, kernel_size={self.kernel_size}"
        )


class PixelCNN(nn.Module):
    r"""A discrete autoregressive model of images with ``levels`` pixel values (PixelCNN, :cite:`oord2016pixel`).

    ``p(k) = prod_i Cat(k_i; softmax(logits_i(k_{<i})))`` over the ``C H W`` variables in raster order,
    the logits from a :class:`GatedPixelCNN` reading the pixels scaled to ``[-1, 1]``. For the
    scikit-learn digits: ``PixelCNN(shape=(1, 8, 8), levels=17)``.

    Images are given as integer levels ``0..levels-1`` (any dtype), of shape ``(B, C, H, W)`` or
    flattened row-major ``(B, C*H*W)`` (as :mod:`coursekit.data.digits` stores them).

    * :meth:`log_prob`: ``log p(k)`` in nats, one value per image (exact: no dequantisation bound);
    * :meth:`bits_per_dim`: ``-log p(k) / (C H W log 2)``, comparable with the flows' bound;
    * :meth:`sample`: one network pass per variable (``C H W`` passes).
    """

    def __init__(
        self,
        shape: Sequence[int] = (1, 8, 8),
        levels: int = 17,
        features: int = 32,
        n_layers: int = 4,
        kernel_size: int = 3,
    ):
        super().__init__()
        shape = V.int_sequence("shape", shape, low=1)
        if len(shape) != 3:
            raise ValueError(f"shape must be (C, H, W), got {tuple(shape)}")
        self.shape = tuple(shape)
        self.dim = math.prod(shape)
        self.levels = V.integer("levels (the number of pixel values)", levels, 2)
        self.net = GatedPixelCNN(shape[0], self.levels, features, n_layers, kernel_size)

    def _levels(self, k: Tensor) -> Tensor:
        V.tensor("k", k, floating=False, finite=False, device=self.net.out.weight.device)
        if k.dim() == 2 and k.shape[1] == self.dim:
            k = k.reshape(-1, *self.shape)
        if k.dim() != 4 or tuple(k.shape[1:]) != self.shape:
            raise ValueError(
                f"k has shape {tuple(k.shape)}, expected (batch, {', '.join(map(str, self.shape))}) "
                f"or flattened (batch, {self.dim})"
            )
        if k.dtype == torch.bool or k.is_complex():
            raise TypeError(f"k must hold integer pixel values, got dtype {k.dtype}")
        kf = k.to(self.net.out.weight.dtype)
        if kf.numel() and (
            not torch.isfinite(kf).all() or (kf != kf.round()).any() or kf.min() < 0 or kf.max() > self.levels - 1
        ):
            finite = bool(torch.isfinite(kf).all())
            got = f"values in [{float(kf.min()):g}, {float(kf.max()):g}]" if finite else "NaN or infinite values"
            raise ValueError(
                f"k must hold integer pixel values in 0..{self.levels - 1} (pass the integer levels, not scaled "
                f"pixels); got {got}"
            )
        return kf

    def _scaled(self, k: Tensor) -> Tensor:
        return 2.0 * k / (self.levels - 1) - 1.0

    def logits(self, k: Tensor) -> Tensor:
        """``(B, C, levels, H, W)``: the logits of every conditional ``p(k_i | k_{<i})``."""
        return self.net._run(self._scaled(self._levels(k)))

    def log_prob(self, k: Tensor) -> Tensor:
        """``log p(k)`` in nats, shape ``(B,)``."""
        kf = self._levels(k)
        logp = F.log_softmax(self.net._run(self._scaled(kf)), dim=2)
        picked = logp.gather(2, kf.long().unsqueeze(2)).squeeze(2)
        return picked.reshape(kf.shape[0], -1).sum(1)

    def bits_per_dim(self, k: Tensor) -> Tensor:
        """``-log2 p(k) / (C H W)``, shape ``(B,)``."""
        return -self.log_prob(k) / (self.dim * math.log(2.0))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` images ``(n, C, H, W)`` of float levels ``0..levels-1``, drawn variable by variable."""
        n = V.positive_int("n (the number of samples)", n)
        ref = self.net.out.weight
        k = torch.zeros(n, *self.shape, dtype=ref.dtype, device=ref.device)
        C, H, W = self.shape
        for i in range(H):
            for j in range(W):
                for c in range(C):
                    probs = F.softmax(self.net._run(self._scaled(k))[:, c, :, i, j], dim=1)
                    if generator is not None:  # draw on the generator's device (a CPU generator serves GPU models)
                        probs = probs.to(generator.device)
                    draw = torch.multinomial(probs, 1, generator=generator)
                    k[:, c, i, j] = draw.squeeze(1).to(k)
        return k

    def extra_repr(self) -> str:
        return f"shape={self.shape}, levels={self.levels}"
