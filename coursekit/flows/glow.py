"""Glow's building blocks: activation normalisation and the invertible 1x1 convolution.

Glow :cite:`kingma2018glow` keeps Real-NVP's affine coupling and adds two linear maps per step:

* :class:`ActNorm`, a per-channel affine map whose parameters are initialised from data so
  that the first batch comes out standardised (a normalisation layer without batch statistics);
* :class:`InvConv1x1` / :class:`InvConv1x1LU`, a learned C x C matrix applied to every pixel,
  a *learned* generalisation of the fixed permutation (or alternation) between couplings.

Every map acts on vectors (event shape ``(C,)``: the channel dimension is the data
dimension) or, with ``spatial=(H, W)``, on images of event shape ``(C, H, W)``, where the same
per-channel map is applied at each of the H*W pixels and the log-determinant is multiplied by
H*W.

>>> import torch
>>> step = GlowStep(4)
>>> x = torch.randn(16, 4) * 3 + 1
>>> z, ld = step.inverse(x)          # first call in the density direction initialises ActNorm
>>> x2, ld2 = step(z)
>>> bool(torch.allclose(x, x2, atol=1e-4)), bool(torch.allclose(ld, -ld2, atol=1e-4))
(True, True)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .. import _validate as V
from .base import Bijection, Compose
from .coupling import AffineCoupling, half_mask

__all__ = ["ActNorm", "GlowStep", "InvConv1x1", "InvConv1x1LU", "make_glow"]


class _ChannelMap(Bijection):
    """A map acting on the channel axis 1 of ``(B, C)`` or ``(B, C, H, W)`` inputs."""

    def __init__(self, dim: int, spatial: Sequence[int] | None = None):
        if spatial is None:
            super().__init__(dim)
            self.pixels = 1
        else:
            spatial = V.int_sequence("spatial", spatial, low=1)
            if len(spatial) != 2:
                raise ValueError(f"spatial must be (H, W), got {tuple(spatial)}")
            super().__init__(event_shape=(V.positive_int("dim", dim), *spatial))
            self.pixels = int(spatial[0]) * int(spatial[1])
        self.channels = int(dim)

    def _bcast(self, v: Tensor, ndim: int) -> Tensor:
        """Reshape a per-channel vector to broadcast along axis 1."""
        return v.view(1, -1, *([1] * (ndim - 2)))

    def _matmul(self, w: Tensor, t: Tensor) -> Tensor:
        """Apply the C x C matrix ``w`` to the channel vector of every pixel."""
        if t.dim() == 2:
            return t @ w.T
        return torch.einsum("ij,bjhw->bihw", w, t)

    def extra_repr(self) -> str:
        return f"channels={self.channels}" + (f", event_shape={self.event_shape}" if self.pixels > 1 else "")


class ActNorm(_ChannelMap):
    r"""Activation normalisation :cite:`kingma2018glow`: a per-channel affine map.

    * map (sampling direction):  x_c = z_c * exp(log_scale_c) + loc_c
    * inverse (density direction): z_c = (x_c - loc_c) * exp(-log_scale_c)
    * log|det J_T| = H W sum_c log_scale_c (H W = 1 for vectors), the inverse's is its negative.

    Data-dependent initialisation: the FIRST call of :meth:`inverse` (the density direction,
    i.e. on a batch of data, as in the first training step) sets ``loc`` to the per-channel
    mean of the batch and ``log_scale`` to the log of its per-channel standard deviation
    (over the batch and the pixels), so that this batch comes out with zero mean and unit
    variance per channel. The buffer ``initialized`` then records it (it is saved in the
    ``state_dict``), and every later call is a pure function of the parameters. A call of
    :meth:`forward` before any data does not initialise (the layer is the identity then).
    Set ``initialized`` yourself (``layer.initialized.fill_(True)``) to skip the data init.
    """

    def __init__(self, dim: int, spatial: Sequence[int] | None = None, eps: float = 1e-6):
        super().__init__(dim, spatial)
        self.loc = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))
        self.register_buffer("initialized", torch.tensor(False))
        self.eps = V.positive_float("eps", eps)

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Data-dependent initialisation from a batch ``x`` (see the class docstring)."""
        if x.shape[0] * self.pixels < 2:
            raise ValueError(
                "ActNorm's data-dependent initialisation needs at least 2 values per channel: "
                "call inverse() first on a batch of several data points"
            )
        flat = x.transpose(0, 1).reshape(self.channels, -1)  # (C, B*H*W)
        self.loc.copy_(flat.mean(1))
        self.log_scale.copy_(torch.log(flat.std(1, unbiased=False) + self.eps))
        self.initialized.fill_(True)

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        x = z * self._bcast(self.log_scale.exp(), z.dim()) + self._bcast(self.loc, z.dim())
        return x, (self.pixels * self.log_scale.sum()).expand(z.shape[0])

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if not bool(self.initialized):
            self.initialize(x)
        z = (x - self._bcast(self.loc, x.dim())) * self._bcast(torch.exp(-self.log_scale), x.dim())
        return z, (-self.pixels * self.log_scale.sum()).expand(x.shape[0])

    def extra_repr(self) -> str:
        return super().extra_repr() + f", initialized={bool(self.initialized)}"


def _random_rotation(c: int) -> Tensor:
    q, r = torch.linalg.qr(torch.randn(c, c))
    return q * torch.sign(torch.diagonal(r))  # Haar-distributed orthogonal matrix


class InvConv1x1(_ChannelMap):
    r"""Invertible 1x1 convolution :cite:`kingma2018glow`, dense version: x = W z per pixel.

    * inverse: z = W^{-1} x
    * log|det J_T| = H W log|det W| (``torch.linalg.slogdet``, O(C^3) per call).

    W starts as a random rotation (log-determinant 0), so the layer starts as a random
    orthogonal mixing of the channels, a "soft permutation" that training can then adapt.
    """

    def __init__(self, dim: int, spatial: Sequence[int] | None = None):
        super().__init__(dim, spatial)
        self.weight = nn.Parameter(_random_rotation(dim))

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        ld = torch.linalg.slogdet(self.weight)[1]
        return self._matmul(self.weight, z), (self.pixels * ld).expand(z.shape[0])

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        ld = torch.linalg.slogdet(self.weight)[1]
        return self._matmul(torch.linalg.inv(self.weight), x), (-self.pixels * ld).expand(x.shape[0])


class InvConv1x1LU(_ChannelMap):
    r"""Invertible 1x1 convolution, LU-parametrised :cite:`kingma2018glow`.

    W = P L (U + diag(sign * exp(log_s))) with P a fixed permutation, L unit lower-triangular,
    U strictly upper-triangular and the diagonal kept apart, so that

    * log|det J_T| = H W sum_i log_s_i   (O(C), no determinant to compute),
    * the inverse z = W^{-1} x uses two triangular solves,
    * W is invertible for every value of the parameters (its diagonal never vanishes).

    Initialised from the LU factors of a random rotation, like :class:`InvConv1x1`.
    """

    def __init__(self, dim: int, spatial: Sequence[int] | None = None):
        super().__init__(dim, spatial)
        p, low, up = torch.linalg.lu(_random_rotation(dim))
        d = torch.diagonal(up)
        rows, cols = torch.tril_indices(dim, dim, -1)
        self.register_buffer("perm", p)
        self.register_buffer("sign", torch.sign(d))
        self.register_buffer("rows", rows)
        self.register_buffer("cols", cols)
        self.register_buffer("eye", torch.eye(dim))
        # only the free entries are parameters: C(C-1)/2 below the diagonal of L, as many above U's
        self.lower = nn.Parameter(low[rows, cols].clone())
        self.upper = nn.Parameter(up[cols, rows].clone())
        self.log_s = nn.Parameter(torch.log(d.abs()))

    def _factors(self) -> tuple[Tensor, Tensor]:
        low = self.eye.index_put((self.rows, self.cols), self.lower)
        up = torch.diag(self.sign * self.log_s.exp()).index_put((self.cols, self.rows), self.upper)
        return low, up

    @property
    def weight(self) -> Tensor:
        """The assembled matrix W = P L U."""
        low, up = self._factors()
        return self.perm @ low @ up

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return self._matmul(self.weight, z), (self.pixels * self.log_s.sum()).expand(z.shape[0])

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        low, up = self._factors()
        # W^{-1} = U^{-1} L^{-1} P^T, with the triangular inverses obtained by solves (C x C only)
        w_inv = torch.linalg.solve_triangular(
            up, torch.linalg.solve_triangular(low, self.perm.T, upper=False, unitriangular=True), upper=True
        )
        return self._matmul(w_inv, x), (-self.pixels * self.log_s.sum()).expand(x.shape[0])


class GlowStep(Compose):
    """One step of Glow for vectors: ActNorm, then a 1x1 convolution, then an affine coupling
    (in the density direction; the sampling direction runs them in reverse).

    ``lu=True`` uses :class:`InvConv1x1LU`; ``permutation="none"`` drops the linear mixing (to
    measure what it buys), in which case the coupling mask alternates with ``flip``.
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (64, 64),
        lu: bool = True,
        permutation: str = "conv",
        flip: bool = False,
        clamp: float | None = 3.0,
    ):
        V.choice("permutation", permutation, ("conv", "none"))
        V.boolean("lu", lu)
        V.boolean("flip", flip)
        # sampling direction: coupling, then the 1x1 conv, then ActNorm (so the density direction
        # sees the data through ActNorm first, which is where it initialises)
        maps: list[Bijection] = [AffineCoupling(dim, half_mask(dim, flip), hidden, clamp=clamp)]
        if permutation == "conv":
            maps.append(InvConv1x1LU(dim) if lu else InvConv1x1(dim))
        maps.append(ActNorm(dim))
        super().__init__(*maps)


def make_glow(
    dim: int,
    n_steps: int = 4,
    hidden: Sequence[int] = (64, 64),
    lu: bool = True,
    permutation: str = "conv",
    clamp: float | None = 3.0,
) -> Compose:
    """A stack of ``n_steps`` :class:`GlowStep` on vectors (one scale, no squeeze), as a :class:`Compose`.

    With ``permutation="none"`` the steps alternate the coupling partition instead, which is
    Real-NVP with ActNorm: the comparison isolates what the learned permutation buys.
    """
    V.positive_int("n_steps", n_steps)
    return Compose(*[GlowStep(dim, hidden, lu, permutation, flip=bool(k % 2), clamp=clamp) for k in range(n_steps)])
