"""Helpers shared by the chapter checks: answer validation and numerical comparison."""

from __future__ import annotations

import torch
from torch import nn

from ..grading import ExerciseFailure

__all__ = ["require_callable", "close", "tensor_pair", "randomised"]


def require_callable(answer, name: str) -> None:
    """Fail unless the student submitted the function itself."""
    if not callable(answer):
        raise ExerciseFailure(f"submit your function {name} itself (not its result)")


def close(a, b: torch.Tensor, tol: float = 1e-7) -> bool:
    """``a`` is a tensor of ``b``'s shape, equal to it within ``tol`` (absolute and relative)."""
    return (
        isinstance(a, torch.Tensor)
        and a.shape == b.shape
        and bool(torch.allclose(a.to(b.dtype), b, rtol=tol, atol=tol))
    )


def tensor_pair(result, what: str, shapes=None, names=("the first", "the second"), hint: str = ""):
    """Check that ``result`` is a pair of tensors (of the given ``shapes``); return it in float64."""
    if not (isinstance(result, (tuple, list)) and len(result) == 2):
        raise ExerciseFailure(f"{what} must return a pair, got {type(result).__name__}")
    a, b = result
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        raise ExerciseFailure(f"{what} must return two torch tensors, got {type(a).__name__} and {type(b).__name__}")
    if shapes is not None and (tuple(a.shape), tuple(b.shape)) != (tuple(shapes[0]), tuple(shapes[1])):
        raise ExerciseFailure(
            f"{what}: expected {names[0]} of shape {tuple(shapes[0])} and {names[1]} of shape {tuple(shapes[1])}, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}" + (f" ({hint})" if hint else "")
        )
    return a.to(torch.float64), b.to(torch.float64)


def randomised(module: nn.Module, seed: int, scale: float = 0.5) -> nn.Module:
    """The module in float64 with every parameter redrawn from N(0, scale^2), so that an
    identity-initialised layer is really exercised."""
    g = torch.Generator().manual_seed(seed)
    module = module.double()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g, dtype=torch.float64))
    return module
