"""The four 2-D target energies U1-U4 of Rezende and Mohamed (2015, table 1).

An unnormalised target density is ``exp(-U(z))``; :func:`log_target` returns ``-U`` as a
function of a ``(n, 2)`` tensor, ready for reverse-KL training
(:func:`coursekit.train.fit_reverse_kl`).

U2, U3 and U4 do not confine the first coordinate (``exp(-U)`` is not integrable on
``R^2``); the paper draws them on ``[-4, 4]^2``. :func:`log_target` therefore adds, by
default, a steep quadratic wall outside ``|z_1| <= 4`` (zero inside), which makes every
target a probability density on ``R^2``; :func:`log_normalizer` integrates it numerically.

>>> z = torch.zeros(3, 2)
>>> energy("U2", z)
tensor([0., 0., 0.])
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from .. import _validate as V

__all__ = ["TARGETS", "energy", "log_target", "log_normalizer"]


def _check(z: Tensor) -> None:
    if not isinstance(z, Tensor):
        raise TypeError(f"target energies take a tensor z of shape (n, 2), got {type(z).__name__}")
    if z.dim() != 2 or z.shape[1] != 2:
        raise ValueError(f"target energies take points z of shape (n, 2), got {tuple(z.shape)}")
    if not z.is_floating_point():
        raise TypeError(f"z has dtype {z.dtype}; target energies need floating point: call z.float()")


def _w1(z1):
    return torch.sin(2 * math.pi * z1 / 4)


def _w2(z1):
    return 3 * torch.exp(-0.5 * ((z1 - 1) / 0.6) ** 2)


def _w3(z1):
    return 3 * torch.sigmoid((z1 - 1) / 0.3)


def _lse2(a, b):
    return torch.logsumexp(torch.stack([a, b]), dim=0)


def U1(z: Tensor) -> Tensor:
    """A ring broken in two: ``0.5((|z|-2)/0.4)^2 - log(e^{-0.5((z1-2)/0.6)^2} + e^{-0.5((z1+2)/0.6)^2})``."""
    _check(z)
    z1 = z[:, 0]
    r = z.norm(dim=1)
    return 0.5 * ((r - 2) / 0.4) ** 2 - _lse2(-0.5 * ((z1 - 2) / 0.6) ** 2, -0.5 * ((z1 + 2) / 0.6) ** 2)


def U2(z: Tensor) -> Tensor:
    """A sine wave: ``0.5((z2 - w1(z1))/0.4)^2``, ``w1 = sin(2 pi z1 / 4)``."""
    _check(z)
    return 0.5 * ((z[:, 1] - _w1(z[:, 0])) / 0.4) ** 2


def U3(z: Tensor) -> Tensor:
    """Two sine waves splitting: ``-log(e^{-0.5((z2-w1)/0.35)^2} + e^{-0.5((z2-w1+w2)/0.35)^2})``."""
    _check(z)
    z1, z2 = z[:, 0], z[:, 1]
    w1 = _w1(z1)
    return -_lse2(-0.5 * ((z2 - w1) / 0.35) ** 2, -0.5 * ((z2 - w1 + _w2(z1)) / 0.35) ** 2)


def U4(z: Tensor) -> Tensor:
    """A sine wave and a shifted copy: ``-log(e^{-0.5((z2-w1)/0.4)^2} + e^{-0.5((z2-w1+w3)/0.35)^2})``."""
    _check(z)
    z1, z2 = z[:, 0], z[:, 1]
    w1 = _w1(z1)
    return -_lse2(-0.5 * ((z2 - w1) / 0.4) ** 2, -0.5 * ((z2 - w1 + _w3(z1)) / 0.35) ** 2)


TARGETS: dict[str, Callable[[Tensor], Tensor]] = {"U1": U1, "U2": U2, "U3": U3, "U4": U4}


def energy(name: str, z: Tensor) -> Tensor:
    """The energy ``U_name(z)`` of the paper (no wall), one value per row of ``z``."""
    V.choice("name (the target)", name, tuple(TARGETS))
    return TARGETS[name](z)


def log_target(name: str, wall: float | None = 4.0) -> Callable[[Tensor], Tensor]:
    """``z -> -U_name(z) - W(z)``: the unnormalised log-density of the target.

    ``W(z) = 0.5 * (max(|z_1| - wall, 0) / 0.1)^2`` confines the first coordinate (see the
    module docstring); ``wall=None`` gives the paper's ``-U`` alone.
    """
    V.choice("name (the target)", name, tuple(TARGETS))
    fn = TARGETS[name]
    wall = V.optional(V.positive_float, "wall", wall)

    def log_p(z: Tensor) -> Tensor:
        out = -fn(z)
        if wall is not None:
            out = out - 0.5 * ((z[:, 0].abs() - wall).clamp_min(0) / 0.1) ** 2
        return out

    log_p.__name__ = f"log_target_{name}"
    return log_p


def log_normalizer(name: str, wall: float = 4.0, lim: float = 6.0, n_grid: int = 1201) -> float:
    """``log Z = log integral exp(log_target(name)(z)) dz`` by the midpoint rule on ``[-lim, lim]^2``
    (float64). With the default wall the mass outside the box is negligible (below 1e-12)."""
    V.choice("name (the target)", name, tuple(TARGETS))
    V.positive_float("wall", wall)
    V.positive_float("lim", lim)
    V.integer("n_grid", n_grid, 1, 20_000)  # n_grid^2 points in float64: 20,000 is 3.2 GB already
    h = 2 * lim / n_grid
    t = -lim + h * (torch.arange(n_grid, dtype=torch.float64) + 0.5)
    zz = torch.cartesian_prod(t, t)
    lp = log_target(name, wall)(zz)
    return float(torch.logsumexp(lp, 0) + 2 * math.log(h))
