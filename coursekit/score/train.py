"""Training by score matching: one loop for the four objectives, with no sampling in it.

Each iteration draws a minibatch of the data and takes an optimiser step on the chosen objective
(:mod:`coursekit.score.objectives`); unlike Algorithm 1 (:func:`coursekit.ebm.train_ebm`) there
is no MCMC inside the loop. The loop has a progress bar, stops with
:class:`~coursekit.train.TrainingDiverged` and advice when the loss is NaN, infinite or runs
past ``max_loss`` in absolute value, and calls ``callback(iteration, model)`` after every step
(for checkpoints or to measure quality against wall-clock time).

>>> import torch
>>> from coursekit.ebm import MLPEnergy
>>> r = train_score(MLPEnergy(2, hidden=16), torch.randn(256, 2), objective="exact", n_iter=5, batch_size=32)
>>> len(r.loss)
5
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor

from ..train import progress, read_losses
from .objectives import (
    denoising_score_matching, exact_score_matching, noise_conditional_score_matching, sliced_score_matching,
)

__all__ = ["OBJECTIVES", "ScoreTrainingResult", "score_matching_loss", "train_score"]

OBJECTIVES = ("exact", "sliced", "dsm", "ncsm")


@dataclass
class ScoreTrainingResult:
    """What :func:`train_score` returns: the per-iteration losses and the training time."""

    loss: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def __repr__(self) -> str:
        last = f", last loss {self.loss[-1]:.4g}" if self.loss else ""
        return f"ScoreTrainingResult({len(self.loss)} iterations in {self.seconds:.1f} s{last})"


def score_matching_loss(model: Callable, x: Tensor, objective: str, *, sigma: float | None = None,
                        sigmas: Sequence[float] | Tensor | None = None, n_projections: int = 1,
                        generator: torch.Generator | None = None) -> Tensor:
    """The objective named ``objective`` (one of :data:`OBJECTIVES`) on the batch ``x``."""
    if objective == "exact":
        return exact_score_matching(model, x)
    if objective == "sliced":
        return sliced_score_matching(model, x, n_projections=n_projections, generator=generator)
    if objective == "dsm":
        if sigma is None:
            raise ValueError("objective='dsm' needs the noise level: pass sigma=... (e.g. 0.1 for data of scale 1)")
        return denoising_score_matching(model, x, sigma, generator=generator)
    if objective == "ncsm":
        if sigmas is None:
            raise ValueError("objective='ncsm' needs the noise ladder: pass sigmas=geometric_sigmas(...)")
        return noise_conditional_score_matching(model, x, sigmas, generator=generator)
    raise ValueError(f"objective={objective!r} unknown; choose one of {', '.join(OBJECTIVES)}")


READ_EVERY = 25  # iterations between two reads of the losses from the device


def train_score(model: torch.nn.Module, data: Tensor, *, objective: str, n_iter: int, batch_size: int = 256,
                lr: float = 1e-3, sigma: float | None = None, sigmas: Sequence[float] | Tensor | None = None,
                n_projections: int = 1, optimizer: torch.optim.Optimizer | None = None, clip: float | None = 100.0,
                max_loss: float = 1e8, generator: torch.Generator | None = None,
                callback: Callable[[int, torch.nn.Module], object] | None = None,
                desc: str | None = None) -> ScoreTrainingResult:
    """Fit ``model`` (an energy, a score network, or for ``"ncsm"`` a noise-conditional network
    ``model(x, sigma)``) to ``data`` (shape ``(N, ...)``, on the model's device) by score matching.

    ``objective``: ``"exact"`` (Hyvarinen), ``"sliced"`` (``n_projections`` Rademacher projections),
    ``"dsm"`` (noise level ``sigma``) or ``"ncsm"`` (the ladder ``sigmas``). Adam with learning rate
    ``lr`` unless ``optimizer`` is given; ``clip`` bounds the gradient norm (``None``: off).
    Minibatches are drawn with replacement with ``generator``.

    The losses are read back from the device every 25 iterations (one transfer, no per-step
    wait on a GPU) and checked then: a NaN, infinite or larger than ``max_loss`` loss stops
    training with :class:`~coursekit.train.TrainingDiverged` naming its iteration (the model
    then holds the parameters of the last iteration run, at most 24 later).
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective={objective!r} unknown; choose one of {', '.join(OBJECTIVES)}")
    if not isinstance(data, Tensor) or data.dim() < 2 or data.shape[0] < 1:
        raise ValueError(f"data must be a tensor of shape (N, ...) with N >= 1, got "
                         f"{tuple(data.shape) if isinstance(data, Tensor) else type(data).__name__}")
    if not data.is_floating_point() or not torch.isfinite(data).all():
        raise ValueError("data must be floating point and finite; convert and clean (or standardise) it first")
    for name, v in (("n_iter", n_iter), ("batch_size", batch_size)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive learning rate, got {lr!r}")
    if clip is not None and not (isinstance(clip, (int, float)) and clip > 0):
        raise ValueError(f"clip must be a positive gradient-norm bound or None, got {clip!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{type(model).__name__} has no trainable parameters")
    if data.device != params[0].device:
        raise ValueError(f"data is on {data.device} but the model's parameters are on {params[0].device}; "
                         "move one of them (e.g. data.to(next(model.parameters()).device))")
    if objective == "dsm" and sigma is None:
        raise ValueError("objective='dsm' needs the noise level: pass sigma=... (e.g. 0.1 for data of scale 1)")
    if objective == "ncsm" and sigmas is None:
        raise ValueError("objective='ncsm' needs the noise ladder: pass sigmas=geometric_sigmas(...)")
    opt = optimizer or torch.optim.Adam(params, lr=lr)
    advice = {
        "exact": "Exact and sliced score matching are unbounded below on a finite sample (a score network can "
                 "make tr grad s very negative at the data points): lower lr, train less, or use 'dsm'.",
        "dsm": "Lower lr, or raise sigma (tiny noise levels make the target -z/sigma huge).",
        "ncsm": "Lower lr, or check that the smallest sigma is not far below the data's resolution.",
    }
    advice["sliced"] = advice["exact"]
    result = ScoreTrainingResult()
    start = time.perf_counter()
    model.train()
    what = f"{objective} score matching loss"
    pending: list[tuple[int, Tensor]] = []  # read back every READ_EVERY iterations, not every one
    for it in progress(range(n_iter), total=n_iter, desc=desc or f"score matching ({objective})"):
        idx = torch.randint(data.shape[0], (batch_size,), generator=generator, device=data.device)
        loss = score_matching_loss(model, data[idx], objective, sigma=sigma, sigmas=sigmas,
                                   n_projections=n_projections, generator=generator)
        pending.append((it, loss.detach()))
        if it % READ_EVERY == 0 or it == n_iter - 1:
            result.loss += read_losses(pending, what, advice[objective], limit=max_loss)
            pending = []
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        if callback is not None:
            callback(it, model)
    model.eval()
    result.seconds = time.perf_counter() - start
    return result

