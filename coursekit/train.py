"""Training utilities shared by every model: progress bars and a divergence guard.

Model-specific training loops (maximum likelihood, reverse KL, distillation, EBM training)
use :func:`progress` for their loop and :func:`guard` on every loss they compute.
"""

from __future__ import annotations

import math
import os
import sys

from typing import Callable

import torch

__all__ = ["History", "TrainingDiverged", "guard", "progress", "fit_mle", "fit_reverse_kl"]


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
    forced = os.environ.get("COURSEKIT_PROGRESS")
    if forced is not None:
        disable = forced.strip() in ("0", "false", "no", "")
    else:
        interactive = sys.stderr.isatty() or "ipykernel" in sys.modules
        quiet = bool(os.environ.get("CI")) or "PYTEST_CURRENT_TEST" in os.environ or bool(os.environ.get("COURSEKIT_QUIET"))
        disable = quiet or not interactive
    from tqdm import tqdm

    if not disable and "ipykernel" in sys.modules:
        try:  # a widget bar in notebooks when ipywidgets is installed (Colab has it); text otherwise
            import ipywidgets  # noqa: F401
            from tqdm.notebook import tqdm
        except ImportError:
            pass
    return tqdm(iterable, total=total, desc=desc, disable=disable, leave=False, **kwargs)


def _step(opt: torch.optim.Optimizer, loss: torch.Tensor, model: torch.nn.Module, clip: float | None) -> None:
    """One optimiser step on ``loss``, with optional gradient-norm clipping."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()


def _param_device_dtype(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next(model.parameters(), None)
    if p is None:
        raise ValueError(f"{type(model).__name__} has no parameters to train")
    return p.device, p.dtype


def _check_training_args(steps, lr, batch_size, what_batch):
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"{what_batch} must be a positive integer, got {batch_size!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive learning rate, got {lr!r}")


class History(list):
    """The per-step training losses (a plain ``list`` of floats), with the validation record.

    ``val`` lists ``(step, value)`` pairs, one per validation pass (empty without validation
    data); ``best_step`` is the step whose parameters were kept (``None`` without validation).
    """

    def __init__(self, *args):
        super().__init__(*args)
        self.val: list[tuple[int, float]] = []
        self.best_step: int | None = None


def fit_mle(flow, data: torch.Tensor, steps: int = 1000, batch_size: int = 256, lr: float = 1e-3,
            weight_decay: float = 0.0, clip: float | None = 10.0, seed: int | None = None,
            optimizer: torch.optim.Optimizer | None = None, desc: str = "MLE",
            transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
            val_data: torch.Tensor | None = None, val_every: int = 100) -> History:
    """Fit ``flow`` to ``data`` by maximum likelihood (Adam on minibatches); return the loss history.

    Each step draws ``batch_size`` rows of ``data`` uniformly (with replacement) and takes a step
    on the negative log-likelihood ``-mean log p_theta(x)`` (nats per sample), the empirical
    KL divergence to the data up to a constant. ``data`` is moved to the flow's device and dtype
    once. ``clip`` bounds the gradient norm (``None``: no clipping); ``seed`` seeds the batch
    draws. Raises :class:`TrainingDiverged` on a NaN/infinite loss.

    ``transform`` is applied to every minibatch before its log-likelihood, e.g. fresh
    dequantisation noise for integer pixels (``transform=lambda k: uniform_dequantize(k, 17)``):
    noise drawn once for the whole data set and reused for many epochs lets a flow fit the
    noise itself, a spiky density that scores worse on fresh noise the longer it trains.

    With ``val_data``, the negative log-likelihood of the validation data (``transform`` applied
    once, so that every pass sees the same noise) is computed every ``val_every`` steps and after
    the last step, and the parameters with the lowest value are restored at the end (early
    stopping). The passes are recorded in ``history.val``, the step kept in ``history.best_step``.

    >>> from coursekit.flows import Flow, Planar, Compose
    >>> _ = torch.manual_seed(0)
    >>> flow = Flow(Compose(*[Planar(2) for _ in range(4)]))
    >>> hist = fit_mle(flow, torch.randn(512, 2) * 0.5 + 1, steps=20, lr=1e-2, seed=0)
    >>> len(hist), hist[-1] < hist[0]
    (20, True)
    """
    _check_training_args(steps, lr, batch_size, "batch_size")
    if not isinstance(val_every, int) or isinstance(val_every, bool) or val_every < 1:
        raise ValueError(f"val_every must be a positive integer (steps between validation passes), got {val_every!r}")
    if transform is not None and not callable(transform):
        raise TypeError(f"transform must be a function of a batch, got {type(transform).__name__}")
    dev, dtype = _param_device_dtype(flow)
    data = _check_data(flow, data, "data")
    history = History()
    val = None
    if val_data is not None:
        val = _check_data(flow, val_data, "val_data")
        with torch.no_grad():
            val = _batch(val, transform, "val_data")
        best = (math.inf, None)
    gen = torch.Generator(device=dev)
    # without a seed, the batch order follows torch's global RNG (seeded by coursekit.setup)
    gen.manual_seed(int(torch.randint(2**62, ())) if seed is None else seed)
    opt = optimizer or torch.optim.Adam(flow.parameters(), lr=lr, weight_decay=weight_decay)
    flow.train()
    bar = progress(range(steps), total=steps, desc=desc)
    for step in bar:
        idx = torch.randint(0, data.shape[0], (batch_size,), generator=gen, device=dev)
        loss = -flow.log_prob(_batch(data[idx], transform, "data")).mean()
        value = guard(loss, step, "negative log-likelihood",
                      advice="Lower the learning rate (lr), enable gradient clipping (clip=...), "
                             "or standardise the data (flows with a standard normal base expect data of scale ~1).")
        _step(opt, loss, flow, clip)
        history.append(value)
        if step % 50 == 0:
            bar.set_postfix(nll=f"{value:.3f}")
        if val is not None and ((step + 1) % val_every == 0 or step + 1 == steps):
            flow.eval()
            with torch.no_grad():
                v = float(-flow.log_prob(val).mean())
            flow.train()
            history.val.append((step + 1, v))
            if v < best[0]:  # a NaN never wins, so a diverged model is not kept
                best = (v, {k: t.detach().clone() for k, t in flow.state_dict().items()})
                history.best_step = step + 1
    flow.eval()
    if val is not None:
        if best[1] is None:
            raise TrainingDiverged("the validation negative log-likelihood was never finite; "
                                   "lower the learning rate or check val_data against the training data")
        flow.load_state_dict(best[1])
    return history


def _check_data(flow, data, name: str) -> torch.Tensor:
    """``data`` as a tensor of the flow's event shape, on its device and dtype; clear errors otherwise."""
    dev, dtype = _param_device_dtype(flow)
    if not isinstance(data, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, {flow.dim}), got {type(data).__name__}")
    if data.dim() < 2 or tuple(data.shape[1:]) != tuple(flow.event_shape):
        raise ValueError(f"{name} has shape {tuple(data.shape)}, expected (N, {', '.join(map(str, flow.event_shape))}) "
                         f"to match the flow's event shape")
    if data.shape[0] < 1:
        raise ValueError(f"{name} is empty; it needs at least one row")
    if not torch.isfinite(data).all():
        raise ValueError(f"{name} contains NaN or infinite values; remove or impute them before training")
    return data.to(device=dev, dtype=dtype)


def _batch(x: torch.Tensor, transform, name: str) -> torch.Tensor:
    if transform is None:
        return x
    y = transform(x)
    if not isinstance(y, torch.Tensor) or y.shape != x.shape:
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"transform must return a tensor of the batch's shape {tuple(x.shape)}, got {got} (on {name})")
    return y


def fit_reverse_kl(flow, log_target: Callable[[torch.Tensor], torch.Tensor], steps: int = 1000, n_samples: int = 256,
                   lr: float = 1e-3, anneal: int = 0, clip: float | None = 10.0,
                   optimizer: torch.optim.Optimizer | None = None, desc: str = "reverse KL") -> list[float]:
    """Fit ``flow`` to an unnormalised target ``exp(log_target)`` by minimising the reverse KL.

    The loss is the Monte Carlo estimate, with ``n_samples`` reparametrised samples
    ``x = T(z)``, of ``KL(p_theta || pi) - log Z = E_{p_theta}[log p_theta(X) - log_target(X)]``
    (the negative ELBO, Rezende and Mohamed 2015): it needs samples and their log-density in one
    forward pass, never the inverse. ``anneal > 0`` multiplies ``log_target`` by
    ``beta_t = min(1, 0.01 + t / anneal)`` during the first ``anneal`` steps, as in the paper.
    Returns the loss history (add ``log Z`` to get the KL divergence).
    Raises :class:`TrainingDiverged` on a NaN/infinite loss.

    >>> from coursekit.flows import Flow, Planar, Compose
    >>> from coursekit.data import log_target
    >>> _ = torch.manual_seed(0)
    >>> flow = Flow(Compose(*[Planar(2) for _ in range(4)]))
    >>> hist = fit_reverse_kl(flow, log_target("U1"), steps=30, n_samples=64, lr=1e-2)
    >>> len(hist), hist[-1] < hist[0]
    (30, True)
    """
    _check_training_args(steps, lr, n_samples, "n_samples")
    if not callable(log_target):
        raise TypeError("log_target must be a function mapping a (n, p) tensor to n log-densities")
    if not isinstance(anneal, int) or anneal < 0:
        raise ValueError(f"anneal must be a non-negative number of steps, got {anneal!r}")
    _param_device_dtype(flow)  # the flow samples on its own device (its base buffers follow it)
    opt = optimizer or torch.optim.Adam(flow.parameters(), lr=lr)
    history: list[float] = []
    flow.train()
    bar = progress(range(steps), total=steps, desc=desc)
    for step in bar:
        beta = min(1.0, 0.01 + step / anneal) if anneal else 1.0
        x, log_q = flow.rsample_and_log_prob(n_samples)
        lt = log_target(x)
        if lt.shape != log_q.shape:
            raise ValueError(
                f"log_target returned shape {tuple(lt.shape)}, expected ({n_samples},): one value per sample"
            )
        loss = (log_q - beta * lt).mean()
        value = guard(loss, step, "reverse-KL loss",
                      advice="Lower the learning rate (lr), anneal the target (anneal=...), or clip gradients; "
                             "check that log_target is finite everywhere the flow can put mass.")
        _step(opt, loss, flow, clip)
        history.append(value)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{value:.3f}")
    flow.eval()
    return history
