r"""Flows on images of integer pixels: dequantisation, the logit transform, NLL in nats and bits/dim.

Pixels take ``K`` integer values ``k in {0, ..., K-1}`` (``K = 17`` for scikit-learn's digits,
``K = 256`` for 8-bit images). A continuous density on such data is meaningless as it stands:
it can put unbounded mass on the atoms. The recipe of :cite:`uria2013rnade` and
:cite:`theis2016note`, used by NICE and Real-NVP, is:

1. **uniform dequantisation**: fit a density to ``y = (k + u) / K`` with ``u ~ U[0, 1)^p``,
   so ``y`` lies in ``[0, 1)^p`` and the cube ``[k, k+1) / K`` belongs to pixel value ``k``;
2. a **logit transform** (:class:`Logit`) so that the flow's base lives on all of R^p;
3. report the negative log-likelihood **of the discrete data**, which the continuous model
   bounds. Writing ``P(k) = \int_{[0,1)^p} p_v(k + u) du`` for the discrete law induced by the
   density ``p_v`` of ``v = K y = k + u`` on ``[0, K)^p``, Jensen's inequality gives

   .. math:: \log P(k) \ge \mathbb{E}_u[\log p_v(k + u)] = \mathbb{E}_u[\log p_y((k+u)/K)] - p \log K,

   where ``- p log K`` is the log-Jacobian of the rescaling ``v -> y = v / K`` to ``[0, 1]``.
   So ``-E_u log p_y(y) + p log K`` is an upper bound on the discrete NLL ``-log P(k)``
   (in nats per image), and dividing by ``p log 2`` gives **bits per dimension**: the
   numbers are comparable across data sets, across pixel scalings and with discrete models
   (a uniform model scores exactly ``log2 K`` bits/dim). :func:`discrete_nll` computes it,
   optionally with several dequantisation draws combined by log-mean-exp, a tighter bound.

>>> import torch
>>> k = torch.randint(0, 17, (5, 64)).float()
>>> uniform = lambda y: torch.zeros(y.shape[0])       # the uniform density on [0, 1]^64
>>> round(float(bits_per_dim(discrete_nll(uniform, k, levels=17).mean(), 64)), 4)  # log2(17)
4.0875
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .. import _validate as V
from .base import Bijection, validation_enabled

__all__ = ["Logit", "bits_per_dim", "discrete_nll", "uniform_dequantize"]


def uniform_dequantize(k: Tensor, levels: int, generator: torch.Generator | None = None) -> Tensor:
    """``y = (k + u) / levels`` with ``u ~ U[0, 1)``: integer pixels ``0..levels-1`` to ``[0, 1)``.

    ``k`` holds integer values (any dtype); the result is floating point (float32 for integer
    input). Raises if a value is not an integer in ``0..levels-1``.
    """
    V.integer("levels (the number of pixel values)", levels, 2)
    V.tensor("k", k, min_dim=1, floating=False, finite=False)
    if k.dtype == torch.bool or k.is_complex():
        raise TypeError(f"k must hold integer pixel values, got dtype {k.dtype}")
    kf = k if torch.is_floating_point(k) else k.to(torch.get_default_dtype())
    if validation_enabled() and (
        not torch.isfinite(kf).all() or (kf != kf.round()).any() or kf.min() < 0 or kf.max() > levels - 1
    ):
        raise ValueError(
            f"uniform_dequantize expects integer pixel values in 0..{levels - 1}; got values in "
            f"[{float(kf.min()):g}, {float(kf.max()):g}] (scale the data back to integers first)"
        )
    # draw on the generator's device (a CPU generator also serves GPU data), then move
    where = generator.device if generator is not None else kf.device
    u = torch.rand(kf.shape, generator=generator, dtype=kf.dtype, device=where).to(kf.device)
    return (kf + u) / levels


class Logit(Bijection):
    r"""The logit transform of Real-NVP :cite:`dinh2017density` as a map X = T(Z), data in [0, 1].

    With the squeeze ``alpha`` (default 0.05), data ``x in [0, 1]`` are first moved away from
    the boundary, ``y = alpha + (1 - 2 alpha) x in [alpha, 1 - alpha]``, then sent to R:

    * inverse (density direction): z = logit(y) = log y - log(1 - y)
    * map (sampling direction): x = (sigmoid(z) - alpha) / (1 - 2 alpha)
    * log|det J_{T^{-1}}(x)| = sum_i [log(1 - 2 alpha) - log y_i - log(1 - y_i)]
      (the forward log-determinant is its negative at z = T^{-1}(x)).

    The squeeze keeps the logit finite at pixels 0 and 1 and its log-determinant bounded
    (|d logit / dy| <= 1/(alpha (1 - alpha))). Counting this log-determinant is what makes the
    likelihood a likelihood of the data in [0, 1], not of their logits.

    Its domain: :meth:`inverse` accepts values whose squeezed ``y`` lies in (0, 1), i.e.
    ``x in (-alpha/(1-2alpha), 1 + alpha/(1-2alpha))``, and raises otherwise.
    """

    def __init__(self, dim: int, alpha: float = 0.05):
        super().__init__(dim)
        self.alpha = V.in_range("alpha", alpha, 0.0, 0.5, high_open=True)

    @classmethod
    def test_inputs(cls, n: int, dim: int, generator: torch.Generator | None = None) -> Tensor:
        """Points of the domain for the generic tests: uniform on [0.01, 0.99]^dim."""
        return 0.01 + 0.98 * torch.rand(n, dim, generator=generator)

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        x = (torch.sigmoid(z) - self.alpha) / (1.0 - 2.0 * self.alpha)
        # log sigmoid(z) + log sigmoid(-z) = log y + log(1 - y), stable for large |z|
        ld = (torch.nn.functional.logsigmoid(z) + torch.nn.functional.logsigmoid(-z)).sum(1)
        return x, ld - self.dim * math.log(1.0 - 2.0 * self.alpha)

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y = self.alpha + (1.0 - 2.0 * self.alpha) * x
        if validation_enabled() and ((y <= 0) | (y >= 1)).any():
            raise ValueError(
                f"Logit.inverse expects data in [0, 1] (values with alpha={self.alpha} squeezed into (0, 1)); "
                f"got values in [{float(x.min()):g}, {float(x.max()):g}]. Scale pixels to [0, 1] first."
            )
        ld = self.dim * math.log(1.0 - 2.0 * self.alpha) - (torch.log(y) + torch.log1p(-y)).sum(1)
        return torch.log(y) - torch.log1p(-y), ld

    def extra_repr(self) -> str:
        return f"dim={self.dim}, alpha={self.alpha}"


def discrete_nll(
    log_prob: Callable[[Tensor], Tensor],
    k: Tensor,
    levels: int,
    n_draws: int = 1,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Upper bound on the NLL ``-log P(k)`` of integer images, in nats, one value per image.

    ``log_prob(y)`` is the model's log-density of dequantised data ``y in [0, 1)^p`` (e.g.
    ``flow.log_prob`` of a flow whose first map in the density direction is :class:`Logit`).
    With ``n_draws = S`` dequantisation draws ``u_1..u_S`` the bound is

    .. math:: -\log \frac1S \sum_s p_y((k + u_s)/K) + p \log K \;\ge\; -\log P(k) \text{ on average},

    a valid bound for every S (it is the importance-sampling bound with the uniform proposal)
    and tighter as S grows; ``S = 1`` is the usual -log p_y(y) + p log K. See the module
    docstring for the derivation, and :func:`bits_per_dim` to convert.
    """
    V.positive_int("n_draws", n_draws)
    V.function("log_prob", log_prob, "a function of a batch (e.g. flow.log_prob)")
    V.integer("levels (the number of pixel values)", levels, 2)
    V.tensor("k", k, floating=False, finite=False)
    if k.dim() < 2:
        raise ValueError(f"k must be a batch of images (batch, ...), got shape {tuple(k.shape)}")
    p = k[0].numel()
    lps = torch.stack([log_prob(uniform_dequantize(k, levels, generator)) for _ in range(n_draws)])
    lp = torch.logsumexp(lps, 0) - math.log(n_draws)
    return -lp + p * math.log(levels)


def bits_per_dim(nll_nats: Tensor | float, dim: int) -> Tensor | float:
    """Convert an NLL per image in nats to bits per dimension: ``nll / (dim * log 2)``."""
    V.positive_int("dim", dim)
    if not isinstance(nll_nats, Tensor):
        V.real("nll_nats", nll_nats, allow_inf=True)
    return nll_nats / (dim * math.log(2.0))
