"""Coupling flows: NICE's additive coupling and rescaling, Real-NVP's affine coupling.

A coupling layer splits the coordinates with a boolean ``mask`` into a conditioning part
``a`` (``mask == True``, copied unchanged) and a transformed part ``b`` (``mask == False``)
that is moved by an elementwise invertible map whose parameters depend on ``a`` only
(:cite:`dinh2014nice`, :cite:`dinh2017density`). The Jacobian is then block-triangular,

    J_T(z) = [[I, 0], [d x_b / d z_a, diag(d x_b / d z_b)]]      (after reordering a, b)

so its determinant is the product of the diagonal: O(p), with no restriction on the network.
Layers alternate (or permute) the partition so that every coordinate gets transformed.

Direction convention: ``forward`` is T (noise z to data x), ``inverse`` is T^{-1}.

>>> import torch
>>> flow = make_realnvp(4, n_layers=4)
>>> z = torch.randn(3, 4)
>>> x, ld = flow(z)
>>> z2, ld_inv = flow.inverse(x)
>>> bool(torch.allclose(z, z2, atol=1e-5)), bool(torch.allclose(ld, -ld_inv, atol=1e-5))
(True, True)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .. import _validate as V
from .base import Bijection, Compose

__all__ = [
    "MLP",
    "AdditiveCoupling",
    "AffineCoupling",
    "Rescale",
    "alternating_masks",
    "checkerboard_mask",
    "half_mask",
    "make_nice",
    "make_realnvp",
    "random_partition",
]


# ----------------------------------------------------------------------------- partitions


def half_mask(dim: int, flip: bool = False) -> Tensor:
    """The slides' partition: the first ``r = dim // 2`` coordinates condition (``True``).

    ``flip=True`` swaps the roles, which is how consecutive layers alternate.
    """
    _split_dim(dim)
    V.boolean("flip", flip)
    mask = torch.zeros(dim, dtype=torch.bool)
    mask[: dim // 2] = True
    return ~mask if flip else mask


def checkerboard_mask(shape: Sequence[int], parity: int = 0) -> Tensor:
    """Checkerboard partition of an image of ``shape = (h, w)``, flattened row-major.

    Pixel (i, j) conditions when ``(i + j) % 2 == parity`` (Real-NVP's spatial checkerboard).
    """
    shape = V.int_sequence("shape", shape, low=1)
    if len(shape) != 2 or shape[0] * shape[1] < 2:
        raise ValueError(f"checkerboard_mask needs an image shape (h, w) with at least 2 pixels, got {tuple(shape)}")
    if isinstance(parity, bool) or parity not in (0, 1):
        raise ValueError(f"parity must be 0 or 1, got {parity!r}")
    i = torch.arange(shape[0]).view(-1, 1)
    j = torch.arange(shape[1]).view(1, -1)
    return (((i + j) % 2) == parity).reshape(-1)


def random_partition(dim: int, generator: torch.Generator | None = None) -> Tensor:
    """A random partition with ``dim // 2`` conditioning coordinates."""
    _split_dim(dim)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    perm = torch.randperm(dim, generator=generator)
    mask = torch.zeros(dim, dtype=torch.bool)
    mask[perm[: dim // 2]] = True
    return mask


def alternating_masks(
    dim: int,
    n_layers: int,
    kind: str = "half",
    shape: Sequence[int] | None = None,
    generator: torch.Generator | None = None,
) -> list[Tensor]:
    """Masks for ``n_layers`` coupling layers, each the complement of the previous one.

    ``kind`` is ``"half"`` (first half / second half), ``"checkerboard"`` (needs the image
    ``shape``) or ``"random"`` (a fresh random partition for every pair of layers, each
    followed by its complement). Alternating complements guarantees that after two layers
    every coordinate has been transformed once.
    """
    V.positive_int("n_layers", n_layers)
    _split_dim(dim)
    V.choice("kind", kind, ("half", "checkerboard", "random"))
    masks = []
    for k in range(n_layers):
        if k % 2 == 1:
            masks.append(~masks[-1])
        elif kind == "half":
            masks.append(half_mask(dim))
        elif kind == "checkerboard":
            if shape is None or shape[0] * shape[1] != dim:
                raise ValueError(f"kind='checkerboard' needs shape=(h, w) with h*w == dim={dim}, got {shape}")
            masks.append(checkerboard_mask(shape))
        elif kind == "random":
            masks.append(random_partition(dim, generator))
        else:
            raise ValueError(f"kind={kind!r}: expected 'half', 'checkerboard' or 'random'")
    return masks


def _split_dim(dim) -> int:
    V.positive_int("dim", dim)
    if dim < 2:
        raise ValueError(f"a coupling layer needs dim >= 2 to split the coordinates, got dim={dim}")
    return dim


# ----------------------------------------------------------------------------- conditioner


class MLP(nn.Sequential):
    """A multi-layer perceptron ``R^n_in -> R^n_out``: the conditioner m_theta / alpha_theta.

    ``zero_init=True`` zeroes the last layer, so that a coupling layer starts as the identity
    (a common trick that makes deep flows train stably from the first step).
    """

    def __init__(
        self,
        n_in: int,
        n_out: int,
        hidden: Sequence[int] = (64, 64),
        activation: type[nn.Module] = nn.ReLU,
        zero_init: bool = True,
    ):
        V.positive_int("n_in", n_in)
        V.positive_int("n_out", n_out)
        # an empty or zero-width hidden layer would make the conditioner constant or linear in silence
        hidden = V.int_sequence("hidden (the hidden layer widths)", hidden, low=1, min_len=1)
        if not (isinstance(activation, type) and issubclass(activation, nn.Module)):
            raise TypeError(f"activation must be an nn.Module class such as nn.ReLU, got {V.describe(activation)}")
        V.boolean("zero_init", zero_init)
        sizes = [n_in, *hidden, n_out]
        layers: list[nn.Module] = []
        for k in range(len(sizes) - 1):
            layers.append(nn.Linear(sizes[k], sizes[k + 1]))
            if k < len(sizes) - 2:
                layers.append(activation())
        super().__init__(*layers)
        if zero_init:
            nn.init.zeros_(layers[-1].weight)
            nn.init.zeros_(layers[-1].bias)


# ----------------------------------------------------------------------------- coupling layers


def _clamp(a: Tensor, bound: float) -> Tensor:
    """The soft clamp of the log-scale, ``B tanh(a / B)``, computed as ``2B sigmoid(2a / B) - B``
    (the same function: ``tanh(y) = 2 sigmoid(2y) - 1``). On a CPU torch's ``tanh`` costs about
    eight times a ``sigmoid`` (35 against 4.3 microseconds on 512 x 32 floats), and the four cheap
    operations of this form take a third of the time of the tanh form's three; the absolute
    rounding error, a few float32 ulps of ``B``, is far below the log-density's own."""
    return torch.sigmoid(a * (2.0 / bound)).mul(2.0 * bound).sub_(bound)


def _affine(shift: Tensor, alpha: Tensor, t: Tensor, inverse: bool, form: str) -> Tensor:
    """``exp(alpha) t + m`` (``inverse=False``) or ``(t - m) exp(-alpha)``, with ``m = shift``
    (``form="before"``) or ``m = -shift exp(alpha)`` (``"after"``), without forming ``m``."""
    if form == "after":
        return torch.addcmul(shift, t, torch.exp(-alpha)) if inverse else (t - shift) * torch.exp(alpha)
    return (t - shift) * torch.exp(-alpha) if inverse else torch.addcmul(shift, t, torch.exp(alpha))


class _Coupling(Bijection):
    """Split by ``mask``, transform the ``False`` part given the ``True`` part, merge back."""

    def __init__(self, dim: int, mask: Tensor | None, n_params: int, hidden: Sequence[int], zero_init: bool):
        _split_dim(dim)
        super().__init__(dim)
        if mask is not None and not isinstance(mask, Tensor):
            raise TypeError(f"mask must be a boolean tensor of {dim} entries (or None), got {V.describe(mask)}")
        mask = half_mask(dim) if mask is None else torch.as_tensor(mask, dtype=torch.bool).reshape(-1)
        if mask.numel() != dim:
            raise ValueError(f"mask has {mask.numel()} entries, expected dim={dim}")
        r = int(mask.sum())
        if r == 0 or r == dim:
            raise ValueError("the mask must keep at least one coordinate on each side (some True and some False)")
        idx_a = torch.nonzero(mask).reshape(-1)
        idx_b = torch.nonzero(~mask).reshape(-1)
        order = torch.cat([idx_a, idx_b])
        self.register_buffer("mask", mask)
        self.register_buffer("idx_a", idx_a)
        self.register_buffer("idx_b", idx_b)
        self.register_buffer("undo", torch.argsort(order))  # puts [a, b] back in coordinate order
        self.r = r
        # Two contiguous blocks (half/half masks): split by views and merge by one concatenation
        # instead of gathering, which saves two copies of the batch per layer.
        lo_a, lo_b = int(idx_a[0]), int(idx_b[0])
        blocks = bool((idx_a == torch.arange(lo_a, lo_a + r)).all() and (idx_b == torch.arange(lo_b, lo_b + dim - r)).all())
        self._blocks = (lo_a, lo_b) if blocks else None
        self.net = MLP(r, n_params * (dim - r), hidden, zero_init=zero_init)

    def _split(self, t: Tensor) -> tuple[Tensor, Tensor]:
        if self._blocks is not None:
            return t.narrow(1, self._blocks[0], self.r), t.narrow(1, self._blocks[1], self.dim - self.r)
        return t.index_select(1, self.idx_a), t.index_select(1, self.idx_b)

    def _merge(self, a: Tensor, b: Tensor) -> Tensor:
        if self._blocks is not None:
            return torch.cat([a, b] if self._blocks[0] == 0 else [b, a], dim=1)
        return torch.cat([a, b], dim=1).index_select(1, self.undo)

    def extra_repr(self) -> str:
        m = "".join("a" if v else "b" for v in self.mask.tolist())
        if len(m) > 32:
            m = m[:32] + "..."
        return f"dim={self.dim}, r={self.r}, mask={m} (a: conditions, b: transformed)"


class AdditiveCoupling(_Coupling):
    r"""NICE's additive coupling layer :cite:`dinh2014nice`.

    With ``a`` the coordinates where ``mask`` is True (the slides' z_{1:r}) and ``b`` the others:

    * map:      x_a = z_a,   x_b = z_b + m_theta(z_a)
    * inverse:  z_a = x_a,   z_b = x_b - m_theta(x_a)
    * Jacobian: [[I, 0], [dm/dz_a, I]] (unit lower block-triangular), so log|det J| = 0.

    Volume preserving: alone (or composed) it cannot change the scale of the base.

    >>> layer = AdditiveCoupling(4)
    >>> layer.extra_repr()
    'dim=4, r=2, mask=aabb (a: conditions, b: transformed)'
    """

    def __init__(self, dim: int, mask: Tensor | None = None, hidden: Sequence[int] = (64, 64), zero_init: bool = True):
        super().__init__(dim, mask, 1, hidden, zero_init)

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        za, zb = self._split(z)
        return self._merge(za, zb + self.net(za)), z.new_zeros(z.shape[0])

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        xa, xb = self._split(x)
        return self._merge(xa, xb - self.net(xa)), x.new_zeros(x.shape[0])


class AffineCoupling(_Coupling):
    r"""Real-NVP's affine coupling layer :cite:`dinh2017density`.

    * map:      x_a = z_a,   x_b = z_b * exp(alpha(z_a)) + m(z_a)
    * inverse:  z_a = x_a,   z_b = (x_b - m(x_a)) * exp(-alpha(x_a))
    * Jacobian: [[I, 0], [*, diag(exp(alpha(z_a)))]], so log|det J_T(z)| = sum_i alpha_i(z_a)
      and log|det J_{T^{-1}}(x)| = -sum_i alpha_i(x_a).

    Shift parametrisation. One network reads ``z_a`` and outputs a raw log-scale ``s`` and a
    shift. With ``shift="after"`` (default) the shift ``b`` is added *after* the scaling in the
    density direction, ``z_b = x_b * exp(-alpha) + b``, i.e. ``m = -b * exp(alpha)`` in the map
    above; with ``shift="before"`` the network outputs ``m`` itself (the slides' form). Both give
    the same family of maps; they differ in how a step of the optimiser moves it. In the density
    direction, which maximum likelihood trains, the "after" form is linear in the network's
    outputs ``(b, exp(-alpha))``, while the "before" form multiplies the shift's error by the
    scale. The "after" form reached a lower test NLL on two moons (nine seeds) and on the digits
    (three seeds), and a level one on 8 Gaussians (``benchmarks/ablation_nll.py --model realnvp``,
    README).

    Scale parametrisation (numerical stability): the log-scale is soft-clamped,
    ``alpha = clamp * tanh(s / clamp)`` (default ``clamp = 3``).
    An unbounded ``exp(s)`` can overflow (or divide by almost zero in the inverse) after a
    single bad gradient step, and those steps compound over layers; the ``tanh`` bounds each
    layer's scale to ``[exp(-clamp), exp(clamp)]`` while staying smooth and equal to ``s``
    to first order near zero, so it does not change the model where it behaves. (Real-NVP
    itself used ``scale * tanh``; Glow a sigmoid; this is the soft clamp of invertible
    neural networks.) ``clamp=None`` turns it off.
    """

    SHIFTS = ("after", "before")

    def __init__(
        self,
        dim: int,
        mask: Tensor | None = None,
        hidden: Sequence[int] = (64, 64),
        zero_init: bool = True,
        clamp: float | None = 3.0,
        shift: str = "after",
    ):
        super().__init__(dim, mask, 2, hidden, zero_init)
        # clamp=inf would compute inf * tanh(s / inf) = NaN
        self.clamp = V.optional(V.positive_float, "clamp", clamp)
        self.shift = V.choice("shift", shift, self.SHIFTS)

    def _params(self, a: Tensor) -> tuple[Tensor, Tensor]:
        """``(alpha, shift)``: the shift is ``b`` (``shift="after"``) or ``m`` (``"before"``)."""
        s, shift = self.net(a).chunk(2, dim=1)
        return self._alpha(s), shift

    def _alpha(self, s: Tensor) -> Tensor:
        return _clamp(s, self.clamp) if self.clamp is not None else s

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        za, zb = self._split(z)
        alpha, shift = self._params(za)
        return self._merge(za, _affine(shift, alpha, zb, False, self.shift)), alpha.sum(1)

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        xa, xb = self._split(x)
        alpha, shift = self._params(xa)
        return self._merge(xa, _affine(shift, alpha, xb, True, self.shift)), -alpha.sum(1)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", clamp={self.clamp}, shift={self.shift}"


class Rescale(Bijection):
    r"""NICE's diagonal rescaling layer :cite:`dinh2014nice`: T(z)_i = s_i z_i, s_i > 0.

    Parametrised by ``log_s`` (so s = exp(log_s) > 0 with no constraint on the parameter).

    * inverse:  z_i = x_i / s_i
    * Jacobian: diag(s_1, ..., s_p), so log|det J_T| = sum_i log s_i (the same at every z)
      and log|det J_{T^{-1}}| = -sum_i log s_i.

    >>> import torch
    >>> layer = Rescale(3)
    >>> with torch.no_grad(): _ = layer.log_s.fill_(torch.log(torch.tensor(2.0)))
    >>> with torch.no_grad(): x, ld = layer(torch.ones(1, 3))
    >>> x.tolist(), round(ld.item(), 4)  # 3 log 2
    ([[2.0, 2.0, 2.0]], 2.0794)
    """

    def __init__(self, dim: int):
        super().__init__(dim)
        self.log_s = nn.Parameter(torch.zeros(dim))

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return z * self.log_s.exp(), self.log_s.sum().expand(z.shape[0])

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x * torch.exp(-self.log_s), (-self.log_s.sum()).expand(x.shape[0])

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


# ----------------------------------------------------------------------------- whole models


def _masks(dim, n_layers, masks, kind, shape):
    V.positive_int("n_layers", n_layers)
    if masks is None:
        return alternating_masks(dim, n_layers, kind=kind, shape=shape)
    masks = list(masks)
    if len(masks) != n_layers:
        raise ValueError(f"got {len(masks)} masks for n_layers={n_layers}")
    return masks


def make_nice(
    dim: int,
    n_layers: int = 4,
    hidden: Sequence[int] = (64, 64),
    masks: Sequence[Tensor] | None = None,
    kind: str = "half",
    shape: Sequence[int] | None = None,
    zero_init: bool = True,
    rescale: bool = True,
) -> Compose:
    """NICE :cite:`dinh2014nice`: ``n_layers`` additive couplings with alternating partitions, then
    the diagonal rescaling. In the sampling direction ``T = S o C_L o ... o C_1``, so in the
    density direction the data are rescaled first. ``rescale=False`` drops S (volume preserving).

    Whole models are built by functions returning a :class:`Compose` of the layers (each layer
    class is covered by the generic map tests; a stack is their composition).
    """
    V.boolean("rescale", rescale)
    layers: list[Bijection] = [
        AdditiveCoupling(dim, m, hidden, zero_init) for m in _masks(dim, n_layers, masks, kind, shape)
    ]
    if rescale:
        layers.append(Rescale(dim))
    return Compose(*layers)


def make_realnvp(
    dim: int,
    n_layers: int = 4,
    hidden: Sequence[int] = (64, 64),
    masks: Sequence[Tensor] | None = None,
    kind: str = "half",
    shape: Sequence[int] | None = None,
    zero_init: bool = True,
    clamp: float | None = 3.0,
    shift: str = "after",
) -> Compose:
    """Real-NVP :cite:`dinh2017density` for vectors: ``n_layers`` affine couplings with alternating
    partitions (half/half, checkerboard or random; see :func:`alternating_masks`); ``clamp`` and
    ``shift`` as in :class:`AffineCoupling`."""
    return Compose(
        *[AffineCoupling(dim, m, hidden, zero_init, clamp, shift) for m in _masks(dim, n_layers, masks, kind, shape)]
    )
