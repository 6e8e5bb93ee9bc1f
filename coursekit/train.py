"""Training utilities shared by every model: progress bars and a divergence guard.

Model-specific training loops (maximum likelihood, reverse KL, distillation, EBM training)
use :func:`progress` for their loop and :func:`guard` on every loss they compute.
"""

from __future__ import annotations

import math
import os
import sys

import torch

__all__ = ["TrainingDiverged", "guard", "progress"]


class TrainingDiverged(RuntimeError):
    """A training run produced a NaN or infinite (or exploding) value and was stopped."""


def guard(value: torch.Tensor | float, step: int, what: str = "loss", advice: str = "", limit: float = math.inf) -> float:
    """Return ``float(value)``; raise :class:`TrainingDiverged` if it is NaN, infinite or beyond ``limit``.

    ``advice`` is appended to the message (what to change: learning rate, step size, ...).
    """
    v = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
    if not math.isfinite(v) or abs(v) > limit:
        default = "Lower the learning rate, clip gradients, or check the data for outliers."
        raise TrainingDiverged(
            f"training stopped at step {step}: the {what} is {v!r}"
            + (f" (beyond the limit {limit:g})" if math.isfinite(v) else "")
            + f". {advice or default}"
        )
    return v


def progress(iterable=None, total: int | None = None, desc: str = "", **kwargs):
    """A tqdm progress bar that is quiet where no one watches (CI, pytest, book builds).

    Set ``COURSEKIT_PROGRESS=1`` to force it on, ``0`` to force it off.
    """
    from tqdm.auto import tqdm

    forced = os.environ.get("COURSEKIT_PROGRESS")
    if forced is not None:
        disable = forced.strip() in ("0", "false", "no", "")
    else:
        interactive = sys.stderr.isatty() or "ipykernel" in sys.modules
        quiet = bool(os.environ.get("CI")) or "PYTEST_CURRENT_TEST" in os.environ or bool(os.environ.get("COURSEKIT_QUIET"))
        disable = quiet or not interactive
    return tqdm(iterable, total=total, desc=desc, disable=disable, leave=False, **kwargs)
