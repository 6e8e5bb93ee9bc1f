"""Gaussian mixtures with isotropic components: density, score and noised law in closed form.

p(x) = sum_k w_k N(x; m_k, s_k^2 I). Its score is the posterior-weighted average of the
components' scores,

    grad log p(x) = sum_k r_k(x) (m_k - x) / s_k^2,   r_k(x) = w_k N(x; m_k, s_k^2 I) / p(x),

and adding independent N(0, sigma^2 I) noise gives the mixture with variances s_k^2 + sigma^2:
the score of the noised law p_sigma, which denoising score matching estimates, is known exactly.

>>> import torch
>>> mix = GaussianMixture(torch.tensor([[-2.0], [2.0]]), 0.5, weights=torch.tensor([0.8, 0.2]))
>>> mix.score(torch.tensor([[-2.0], [2.0]])).abs().max() < 1e-3   # zero score at both modes
tensor(True)
>>> mix.noised(1.0).stds.tolist()
[1.1180340051651, 1.1180340051651]
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..ebm.energy import Energy

__all__ = ["GaussianMixture"]


class GaussianMixture(Energy):
    """The mixture sum_k w_k N(m_k, s_k^2 I) as an energy U = -log p (normalised: Z = 1).

    ``means`` has shape ``(K, p)``; ``stds`` is a number or a tensor ``(K,)``; ``weights`` (default
    uniform) is a tensor ``(K,)`` of positive numbers, normalised to sum to one. As an
    :class:`~coursekit.ebm.Energy` it can be sampled by ULA or MALA and trained against; it also
    draws exact samples (:meth:`sample`).
    """

    def __init__(self, means: Tensor, stds: float | Tensor = 1.0, weights: Tensor | None = None):
        means = torch.as_tensor(means, dtype=torch.get_default_dtype() if not isinstance(means, Tensor) else None)
        if means.dim() != 2 or means.shape[0] < 1:
            raise ValueError(f"means must have shape (K, p) with K >= 1 components, got {tuple(means.shape)}")
        k = means.shape[0]
        stds = torch.as_tensor(stds, dtype=means.dtype).expand(k).clone()
        if not bool((stds > 0).all() and torch.isfinite(stds).all()):
            raise ValueError(f"stds must be positive and finite, got {stds.tolist()}")
        w = (torch.full((k,), 1.0 / k, dtype=means.dtype) if weights is None
             else torch.as_tensor(weights, dtype=means.dtype))
        if w.shape != (k,) or not bool((w > 0).all()):
            raise ValueError(f"weights must be {k} positive numbers (one per component), got {w.tolist()}")
        super().__init__((means.shape[1],))
        self.register_buffer("means", means.clone())
        self.register_buffer("stds", stds)
        self.register_buffer("weights", w / w.sum())

    def _log_joint(self, x: Tensor) -> Tensor:
        """log w_k + log N(x; m_k, s_k^2 I), shape ``(n, K)``."""
        p = self.dim
        d2 = (x.unsqueeze(1) - self.means.to(x.dtype)).pow(2).sum(-1)  # exact (cdist rounds in float32)
        var = self.stds.to(x.dtype).pow(2)
        return torch.log(self.weights.to(x.dtype)) - 0.5 * d2 / var - 0.5 * p * torch.log(2 * math.pi * var)

    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x), shape ``(n,)``."""
        return torch.logsumexp(self._log_joint(x), dim=1)

    def _energy(self, x: Tensor) -> Tensor:
        return -self.log_prob(x)

    def responsibilities(self, x: Tensor) -> Tensor:
        """r_k(x), the posterior probability of each component, shape ``(n, K)``."""
        return torch.softmax(self._log_joint(x), dim=1)

    def score(self, x: Tensor) -> Tensor:
        """grad log p(x) in closed form, shape of ``x`` (no autograd graph needed)."""
        r = self.responsibilities(x)
        var = self.stds.to(x.dtype).pow(2)
        return (r / var) @ self.means.to(x.dtype) - (r / var).sum(1, keepdim=True) * x

    def noised(self, sigma: float) -> "GaussianMixture":
        """The law of X + sigma Z, X from this mixture, Z ~ N(0, I): variances s_k^2 + sigma^2."""
        if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma >= 0):
            raise ValueError(f"sigma must be a non-negative noise level, got {sigma!r}")
        return GaussianMixture(self.means, torch.sqrt(self.stds**2 + sigma**2), self.weights)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` exact samples, shape ``(n, p)`` (on the CPU unless the buffers were moved)."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        dev = self.means.device
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, device=dev, dtype=self.means.dtype)
        return self.means[k] + self.stds[k, None] * z

    def assign(self, x: Tensor) -> Tensor:
        """The most probable component of each point, shape ``(n,)`` (int64)."""
        return self._log_joint(x).argmax(1)

    def extra_repr(self) -> str:
        return f"K={len(self.weights)}, p={self.dim}, weights={[round(w, 3) for w in self.weights.tolist()]}"
