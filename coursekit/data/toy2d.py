"""Two-dimensional toy data sets for flows: two moons, eight Gaussians, checkerboard, rings, pinwheel.

Every set is generated from a seeded ``torch.Generator`` (nothing global is touched and
nothing is downloaded), so ``sample_toy(name, n, seed)`` returns the same points every time.

>>> x = sample_toy("moons", 500, seed=0)
>>> tuple(x.shape), x.dtype
((500, 2), torch.float32)
>>> bool(torch.equal(x, sample_toy("moons", 500, seed=0)))
True
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import _validate as V

__all__ = ["TOY_DATASETS", "sample_toy"]


def _moons(n: int, g: torch.Generator) -> Tensor:
    n1 = n // 2
    t = math.pi * torch.rand(n, generator=g)
    upper = torch.stack([t.cos(), t.sin()], dim=1)
    lower = torch.stack([1 - t.cos(), 0.5 - t.sin()], dim=1)
    x = torch.cat([upper[:n1], lower[n1:]])
    x = x + 0.08 * torch.randn(n, 2, generator=g)
    # centre and scale to roughly unit spread
    return (x - torch.tensor([0.5, 0.25])) * 2.0


def _eight_gaussians(n: int, g: torch.Generator) -> Tensor:
    angles = 2 * math.pi * torch.arange(8) / 8
    centres = 2.5 * torch.stack([angles.cos(), angles.sin()], dim=1)
    k = torch.randint(0, 8, (n,), generator=g)
    return centres[k] + 0.25 * torch.randn(n, 2, generator=g)


def _checkerboard(n: int, g: torch.Generator) -> Tensor:
    # uniform on the 8 black squares of a 4x4 board on [-2, 2]^2
    x1 = 4 * torch.rand(n, generator=g) - 2
    # [0, 1) or [-2, -1): two of the four cells of a column, shifted up by one every other column
    x2 = torch.rand(n, generator=g) - 2 * torch.randint(0, 2, (n,), generator=g)
    x2 = x2 + torch.floor(x1) % 2
    return torch.stack([x1, x2], dim=1)


def _rings(n: int, g: torch.Generator) -> Tensor:
    radii = torch.tensor([0.75, 1.5, 2.25, 3.0])
    k = torch.randint(0, 4, (n,), generator=g)
    theta = 2 * math.pi * torch.rand(n, generator=g)
    r = radii[k] + 0.08 * torch.randn(n, generator=g)
    return torch.stack([r * theta.cos(), r * theta.sin()], dim=1)


def _pinwheel(n: int, g: torch.Generator, arms: int = 5, radial_std: float = 0.3, tangential_std: float = 0.1,
              rate: float = 0.25) -> Tensor:
    k = torch.randint(0, arms, (n,), generator=g)
    feats = torch.randn(n, 2, generator=g) * torch.tensor([radial_std, tangential_std])
    feats[:, 0] += 1.0
    angle = 2 * math.pi * k / arms + rate * torch.exp(feats[:, 0])
    c, s = angle.cos(), angle.sin()
    x = torch.stack([c * feats[:, 0] - s * feats[:, 1], s * feats[:, 0] + c * feats[:, 1]], dim=1)
    return 2 * x


_GENERATORS = {
    "moons": _moons,
    "8gaussians": _eight_gaussians,
    "checkerboard": _checkerboard,
    "rings": _rings,
    "pinwheel": _pinwheel,
}
TOY_DATASETS = tuple(_GENERATORS)


def sample_toy(name: str, n: int, seed: int = 0, device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32) -> Tensor:
    """``n`` points of the toy set ``name`` (one of :data:`TOY_DATASETS`), shape ``(n, 2)``.

    All sets live roughly in ``[-4, 4]^2``. The points are generated on the CPU with a
    ``torch.Generator`` seeded by ``seed`` and then moved to ``device``.
    """
    if name not in _GENERATORS:
        raise ValueError(f"unknown toy data set {name!r}; choose one of {', '.join(TOY_DATASETS)}")
    V.positive_int("n (the number of points)", n)
    V.seed("seed", seed)
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {V.describe(dtype)}")
    g = torch.Generator().manual_seed(seed)
    x = _GENERATORS[name](n, g)
    # shuffle so that classes (moons, mixture components) are not in blocks
    x = x[torch.randperm(n, generator=g)]
    return x.to(device=device, dtype=dtype)
