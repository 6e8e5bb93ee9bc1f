"""Free-form score networks: s_theta(x) in R^p directly, with no energy behind it.

A score network need not be a gradient field; score matching fits it all the same (its Fisher
divergence to the data is still defined), and it saves the backward pass that turns an energy
into a score. :class:`NoiseConditionalScore` takes the noise level as a second input, with the
parametrisation s_theta(x, sigma) = NN_theta(x, log sigma) / sigma of Song & Ermon (2020): the score
of p_sigma scales like 1 / sigma, so the network's output stays of order one at every level.

>>> import torch
>>> s = NoiseConditionalScore(2, hidden=16)
>>> s(torch.randn(5, 2), 0.1).shape, s(torch.randn(5, 2), torch.full((5,), 0.1)).shape
(torch.Size([5, 2]), torch.Size([5, 2]))
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

_ACTIVATIONS = {"silu": nn.SiLU, "softplus": nn.Softplus, "tanh": nn.Tanh, "elu": nn.ELU}


def _activation(name: str) -> nn.Module:
    # smooth activations: Langevin samplers follow the score, which ReLU would make piecewise constant
    if name not in _ACTIVATIONS:
        raise ValueError(f"activation {name!r} unknown; choose one of {', '.join(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()

__all__ = ["ScoreMLP", "NoiseConditionalScore"]


def _mlp(n_in: int, n_out: int, hidden: int, depth: int, activation: str) -> nn.Sequential:
    if not isinstance(hidden, int) or not isinstance(depth, int) or hidden < 1 or depth < 1:
        raise ValueError(f"hidden and depth must be positive integers, got hidden={hidden!r}, depth={depth!r}")
    layers: list[nn.Module] = []
    width = n_in
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), _activation(activation)]
        width = hidden
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


def _check_x(x: Tensor, dim: int, who: str) -> None:
    if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] != dim:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{who} input x must have shape (n, {dim}), got {got}")


class ScoreMLP(nn.Module):
    """s_theta(x) = MLP(x), a map R^p -> R^p (``depth`` hidden layers of width ``hidden``)."""

    def __init__(self, dim: int, hidden: int = 128, depth: int = 2, activation: str = "silu"):
        super().__init__()
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self.dim, self.hidden, self.depth, self.activation = dim, hidden, depth, activation
        self.net = _mlp(dim, dim, hidden, depth, activation)

    def forward(self, x: Tensor) -> Tensor:
        _check_x(x, self.dim, "ScoreMLP")
        return self.net(x)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, hidden={self.hidden}, depth={self.depth}, activation={self.activation}"


class NoiseConditionalScore(nn.Module):
    """s_theta(x, sigma) = MLP([x, log sigma]) / sigma: one network for every noise level.

    ``sigma`` is a positive number or a tensor of shape ``(n,)`` (one level per sample).
    """

    def __init__(self, dim: int, hidden: int = 128, depth: int = 3, activation: str = "silu"):
        super().__init__()
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self.dim, self.hidden, self.depth, self.activation = dim, hidden, depth, activation
        self.net = _mlp(dim + 1, dim, hidden, depth, activation)

    def forward(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        _check_x(x, self.dim, "NoiseConditionalScore")
        if not isinstance(sigma, Tensor):
            if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
                raise ValueError(f"sigma must be a positive noise level, got {sigma!r}")
            sigma = torch.full((x.shape[0],), float(sigma), device=x.device, dtype=x.dtype)
        sigma = sigma.to(x.dtype).expand(x.shape[0]) if sigma.dim() == 0 else sigma.to(x.dtype)
        if sigma.shape != (x.shape[0],):
            raise ValueError(f"sigma must be a number or a tensor of shape ({x.shape[0]},), got {tuple(sigma.shape)}")
        s = sigma.unsqueeze(1)
        return self.net(torch.cat([x, torch.log(s)], dim=1)) / s

    def extra_repr(self) -> str:
        return f"dim={self.dim}, hidden={self.hidden}, depth={self.depth}, activation={self.activation}"
