"""Training utilities shared by every model: progress bars and a divergence guard.

Model-specific training loops (maximum likelihood, reverse KL, distillation, EBM training)
use :func:`progress` for their loop and one :class:`TrainingGuard` around it: it stops a
diverging run with :class:`TrainingDiverged` and advice, and on any exception (Ctrl-C
included) leaves the model at its best checked state, in eval mode.
"""

from __future__ import annotations

import math
import os
import sys

from typing import Callable

import torch

from . import _validate as V
from .flows.base import values_checked

__all__ = ["History", "TrainingDiverged", "TrainingGuard", "guard", "read_losses", "progress", "fit_mle",
           "fit_reverse_kl"]


class TrainingDiverged(RuntimeError):
    """A training run produced a NaN or infinite (or exploding) value and was stopped.

    The trainers restore the model to its last checked state before raising (see
    :class:`TrainingGuard`) and attach the loss history as ``err.history``.
    """

    history = None


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


def read_losses(pending: list[tuple[int, torch.Tensor]], what: str = "loss", advice: str = "",
                limit: float = math.inf) -> list[float]:
    """The losses ``(step, 0-d tensor)`` of several steps as floats, read back from the device in
    ONE transfer (a training loop that calls ``float(loss)`` every step waits for the GPU every
    step), each checked in order as :func:`guard` does: the first NaN, infinite or too large
    one raises :class:`TrainingDiverged` naming its step."""
    if not pending:
        return []
    values = torch.stack([v.detach().reshape(()).to(torch.float64) for _, v in pending]).tolist()
    return [guard(v, step, what, advice, limit) for (step, _), v in zip(pending, values)]


class TrainingGuard:
    """The fail-safe shared by every trainer: divergence detection, snapshots, restore on failure.

    Use it as a context manager around the loop and call :meth:`observe` with each step's loss
    before the optimiser step, as a tensor (kept on the device; the guard reads all the losses
    of a window at once, at the next checkpoint, so the loop never waits for the device) or as
    a Python float (checked at once)::

        with TrainingGuard(model, history, "negative log-likelihood", advice) as run:
            for step in range(steps):
                loss = ...
                run.observe(step, loss.detach())   # the guard appends it to history later
                ...optimiser step...
            run.finish()

    **Divergence rule.** Every ``check_every`` steps (a *checkpoint*) the guard looks at the
    losses of the window since the previous checkpoint and stops with
    :class:`TrainingDiverged` when

    * a loss is NaN or infinite (a float at once, as :func:`guard` does; a tensor at the
      checkpoint, which names the first bad step: the steps after it, at most ``check_every - 1``,
      were computed and are thrown away with the restore);
    * the *smallest* loss of the window exceeds the best loss seen so far by more than
      ``max(10, p, 3 |best|)`` nats, ``p`` the model's event size (``rule=True`` only): a
      sustained rise, not a noisy batch (the window's minimum ignores spikes shorter than the
      window). Minibatch noise of a per-sample NLL or KL is O(sqrt(p)) nats and early
      transients are a few nats, far below the margin, while a run that blows up (an NLL of
      3.8 growing to 1e24, a reverse KL of 3e10) exceeds it by orders of magnitude;
    * a parameter is NaN or infinite, or the parameters' Euclidean norm exceeds
      ``1000 (1 + |theta_0|)``: training that moves every weight by far more than its scale.

    **Snapshots.** At every checkpoint whose checks pass and whose current loss is itself
    within the margin, the parameters (``state_dict``, copied on their device: no host
    transfer) are kept: the last *checked* state. A checkpoint reads the window's losses and
    the parameter norm from the device in one transfer: one host synchronisation per
    ``check_every`` steps, none in between.

    **Losses as tensors.** They are appended to ``history`` (which must then be a list) as
    Python floats at each checkpoint, and :attr:`last` holds the latest. ``inputs_finite``
    (a boolean tensor, e.g. ``torch.isfinite(batch).all()``) lets the guard tell a bad batch
    (a ``ValueError`` naming the step) from a diverging model.

    **On any exception** (divergence, an error in the user's callback, ``KeyboardInterrupt``)
    the model gets back the best state known: with validation (:meth:`keep_best`) the best on
    validation, otherwise the last checked state; it is put in eval mode, ``history.stopped_at``
    and ``history.stop_reason`` say where and why it stopped, ``history.restored_step`` which
    step's parameters it holds, and the exception (re-raised) carries ``err.history``.
    The optimiser's state is not restored: build a new one to continue.
    """

    def __init__(self, model: torch.nn.Module, history, what: str = "loss", advice: str = "",
                 check_every: int = 25, rule: bool = True):
        self.model, self.history, self.what, self.advice = model, history, what, advice
        self.check_every = V.positive_int("check_every", check_every)
        self.rule = rule
        dims = getattr(model, "dim", None)
        self.margin_floor = max(10.0, float(dims) if isinstance(dims, int) else 0.0)
        self.best = math.inf
        self.window: list[float] = []
        self.snapshot: tuple[int, dict] | None = None
        self.best_val: tuple[float, int, dict] | None = None
        self.step = -1
        self.last: float | None = None  # the latest loss read back from the device
        self._pending: list[tuple[int, torch.Tensor, torch.Tensor | None]] = []

    # -- rule
    def margin(self) -> float:
        return max(self.margin_floor, 3.0 * abs(self.best))

    def reset_best(self) -> None:
        """Forget the best loss (the objective changed, e.g. at the end of annealing)."""
        self.best = math.inf
        self.window = []

    def _param_norm_tensor(self) -> torch.Tensor | None:
        norms = [torch.linalg.vector_norm(p.detach(), dtype=torch.float64) for p in self.model.parameters()]
        return torch.linalg.vector_norm(torch.stack(norms)) if norms else None

    def _param_norm(self) -> float:
        norm = self._param_norm_tensor()
        return 0.0 if norm is None else float(norm)

    def _diverged(self, message: str) -> TrainingDiverged:
        return TrainingDiverged(f"training stopped at step {self.step}: {message}. "
                                f"{self.advice or 'Lower the learning rate or clip gradients.'}")

    def _check_params(self, norm: float | None = None) -> None:
        norm = self._param_norm() if norm is None else norm
        if not math.isfinite(norm):
            raise self._diverged("a parameter is NaN or infinite")
        if norm > 1000.0 * (1.0 + self.norm0):
            raise self._diverged(f"the parameters blew up (norm {norm:.3g}, from {self.norm0:.3g} at the start)")

    def observe(self, step: int, value: float | torch.Tensor, inputs_finite: torch.Tensor | None = None) -> None:
        """Record step ``step``'s loss (computed with the current parameters, before they are
        updated) and run the checkpoint every ``check_every`` steps. A float is checked at once
        (NaN/inf raise); a tensor waits on the device for the checkpoint (see the class)."""
        self.step = step
        if isinstance(value, torch.Tensor):
            self._pending.append((step, value.detach().reshape(()), inputs_finite))
            if step % self.check_every == 0:
                self.checkpoint(snapshot=True)
            return
        if not math.isfinite(value):
            raise self._diverged(f"the {self.what} is {value!r}")
        self.window.append(value)
        self.last = value
        if step % self.check_every == 0:
            self.checkpoint(snapshot=True)

    def _read_pending(self) -> float | None:
        """Read the pending losses (and input flags) and the parameter norm in one transfer;
        check them step by step; return the norm (None without pending losses)."""
        if not self._pending:
            return None
        pending, self._pending = self._pending, []
        parts = [v.to(torch.float64) for _, v, _ in pending]
        flags = [(i, f) for i, (_, _, f) in enumerate(pending) if f is not None]
        parts += [f.to(torch.float64).reshape(()) for _, f in flags]
        norm = self._param_norm_tensor()
        if norm is not None:
            parts.append(norm)
        device = parts[0].device
        host = torch.stack([t.to(device) for t in parts]).tolist()  # the one synchronisation
        bad_inputs = {i for (i, _), ok in zip(flags, host[len(pending):]) if not ok}
        read_at = self.step
        later = f" (read back at step {read_at}; the steps after it are discarded)"
        for i, (step, _, _) in enumerate(pending):
            value = host[i]
            if i in bad_inputs:
                self.step = step
                raise ValueError(f"training stopped at step {step}: its batch contains NaN or infinite values "
                                 "(after the batch transform); check the transform and the data"
                                 + (later if step != read_at else ""))
            if not math.isfinite(value):
                self.step = step
                raise self._diverged(f"the {self.what} is {value!r}" + (later if step != read_at else ""))
            self.window.append(value)
            self.last = value
            if self.history is not None:
                self.history.append(value)
        return host[-1] if norm is not None else 0.0

    def _drain(self) -> None:
        """After an exception: the pending losses that are finite, up to the first that is not,
        go to ``history`` unchecked (no rule, no error)."""
        pending, self._pending = self._pending, []
        if not pending or self.history is None:
            return
        try:
            values = torch.stack([v.to(torch.float64) for _, v, _ in pending]).tolist()
        except Exception:  # noqa: BLE001 - the device itself may have failed: keep the first error
            return
        for value in values:
            if not math.isfinite(value):
                break
            self.history.append(value)

    def checkpoint(self, snapshot: bool = True) -> None:
        norm = self._read_pending()
        if self.window and self.rule:
            low = min(self.window)
            if self.best < math.inf and low > self.best + self.margin():
                raise self._diverged(
                    f"the {self.what} rose from its best {self.best:.4g} to at least {low:.4g} over the last "
                    f"{len(self.window)} steps (a rise beyond the divergence margin {self.margin():.3g})")
            self.best = min(self.best, low)
        current = self.window[-1] if self.window else None
        self.window = []
        self._check_params(norm)
        healthy = current is None or not self.rule or current <= self.best + self.margin()
        if snapshot and healthy:
            self.snapshot = (self.step, _copy_state(self.model))

    def keep_best(self, step: int, value: float) -> bool:
        """Validation: keep the parameters if ``value`` is the best so far; return whether it was."""
        if math.isfinite(value) and (self.best_val is None or value < self.best_val[0]):
            self.best_val = (value, step, _copy_state(self.model))
            return True
        return False

    # -- context
    def __enter__(self) -> "TrainingGuard":
        self.norm0 = self._param_norm()
        if not math.isfinite(self.norm0):
            raise ValueError(f"{type(self.model).__name__} has NaN or infinite parameters before training; "
                             "re-initialise it (or load a good state_dict)")
        self.snapshot = (0, _copy_state(self.model))
        return self

    def finish(self) -> None:
        """End of the loop: check the last window and the final parameters (one last sync)."""
        self.checkpoint(snapshot=False)

    def _restore(self) -> int | None:
        if self.best_val is not None:
            state, step = self.best_val[2], self.best_val[1]
        elif self.snapshot is not None:
            step, state = self.snapshot
        else:
            return None
        with torch.no_grad():
            self.model.load_state_dict(state)
        return step

    def __exit__(self, exc_type, exc, tb) -> bool:
        h = self.history
        try:
            if exc is not None:
                self._drain()
                restored = self._restore()
                if h is not None:
                    h.stopped_at = self.step
                    h.stop_reason = ("interrupted (KeyboardInterrupt)" if isinstance(exc, KeyboardInterrupt)
                                     else f"{type(exc).__name__}: {exc}")
                    h.restored_step = restored
                    try:
                        exc.history = h
                    except AttributeError:  # pragma: no cover - exceptions without __dict__
                        pass
                if restored is not None and hasattr(exc, "add_note"):
                    exc.add_note(f"coursekit: training stopped at step {self.step}; the model was restored to its "
                                 f"parameters of step {restored} (the best checked state) and put in eval mode. "
                                 f"The losses so far are in err.history.")
        finally:
            self.model.eval()
        return False


def _copy_state(model: torch.nn.Module) -> dict:
    return {k: t.detach().clone() for k, t in model.state_dict().items()}


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
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"the model must be a torch.nn.Module (a coursekit Flow), got {type(model).__name__}")
    p = next(model.parameters(), None)
    if p is None:
        raise ValueError(f"{type(model).__name__} has no parameters to train")
    return p.device, p.dtype


def _check_optimizer(optimizer, model) -> None:
    if optimizer is None:
        return
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer (or None for Adam), got {type(optimizer).__name__}")
    ids = {id(p) for p in model.parameters()}
    if not any(id(p) in ids for g in optimizer.param_groups for p in g["params"]):
        raise ValueError("optimizer does not hold any parameter of the model it should train; "
                         "build it from model.parameters()")


def _check_training_args(steps, lr, batch_size, what_batch, clip=None, desc="") -> None:
    V.positive_int("steps", steps)
    V.positive_int(what_batch, batch_size)
    V.positive_float("lr", lr)
    V.optional(V.positive_float, "clip", clip)
    if not isinstance(desc, str):
        raise TypeError(f"desc must be a string (the progress bar's label), got {V.describe(desc)}")


class History(list):
    """The per-step training losses (a plain ``list`` of floats), with the validation record.

    ``val`` lists ``(step, value)`` pairs, one per validation pass (empty without validation
    data); ``best_step`` is the step whose parameters were kept (``None`` without validation).
    When training stopped early (divergence, an error, Ctrl-C; see :class:`TrainingGuard`),
    ``stopped_at`` is the step, ``stop_reason`` why, and ``restored_step`` the step whose
    parameters the model holds; all three are ``None`` after a complete run.
    """

    def __init__(self, *args):
        super().__init__(*args)
        self.val: list[tuple[int, float]] = []
        self.best_step: int | None = None
        self.stopped_at: int | None = None
        self.stop_reason: str | None = None
        self.restored_step: int | None = None


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
    draws.

    ``transform`` is applied to every minibatch before its log-likelihood, e.g. fresh
    dequantisation noise for integer pixels (``transform=lambda k: uniform_dequantize(k, 17)``):
    noise drawn once for the whole data set and reused for many epochs lets a flow fit the
    noise itself, a spiky density that scores worse on fresh noise the longer it trains.

    With ``val_data``, the negative log-likelihood of the validation data (``transform`` applied
    once, so that every pass sees the same noise) is computed every ``val_every`` steps and after
    the last step, and the parameters with the lowest value are restored at the end (early
    stopping). The passes are recorded in ``history.val``, the step kept in ``history.best_step``.

    Fails safe (:class:`TrainingGuard`): a NaN/infinite or diverging loss stops training with
    :class:`TrainingDiverged` and advice; after it, after an error in ``transform`` or after
    Ctrl-C, the flow holds its best parameters (best on ``val_data``, else the last checked
    state), in eval mode, and ``err.history`` says where it stopped.

    >>> from coursekit.flows import Flow, Planar, Compose
    >>> _ = torch.manual_seed(0)
    >>> flow = Flow(Compose(*[Planar(2) for _ in range(4)]))
    >>> hist = fit_mle(flow, torch.randn(512, 2) * 0.5 + 1, steps=20, lr=1e-2, seed=0)
    >>> len(hist), hist[-1] < hist[0]
    (20, True)
    """
    dev, dtype = _param_device_dtype(flow)
    _check_training_args(steps, lr, batch_size, "batch_size", clip, desc)
    V.nonneg_float("weight_decay", weight_decay)
    V.optional(V.seed, "seed", seed)
    V.positive_int("val_every", val_every)
    _check_optimizer(optimizer, flow)
    if transform is not None and not callable(transform):
        raise TypeError(f"transform must be a function of a batch, got {type(transform).__name__}")
    data = _check_data(flow, data, "data")
    history = History()
    val = None
    if val_data is not None:
        val = _check_data(flow, val_data, "val_data")
        with torch.no_grad():
            val = _batch(val, transform, "val_data")
    gen = torch.Generator(device=dev)
    # without a seed, the batch order follows torch's global RNG (seeded by coursekit.setup)
    gen.manual_seed(int(torch.randint(2**62, ())) if seed is None else seed)
    advice = ("Lower the learning rate (lr), enable gradient clipping (clip=...), "
              "or standardise the data (flows with a standard normal base expect data of scale ~1).")
    # The data were checked once (finite, right shape); the losses stay on the device until the
    # guard's checkpoints, so the loop never waits for the device (see TrainingGuard).
    with TrainingGuard(flow, history, "negative log-likelihood", advice) as run, values_checked():
        opt = optimizer or torch.optim.Adam(flow.parameters(), lr=lr, weight_decay=weight_decay)
        flow.train()
        bar = progress(range(steps), total=steps, desc=desc)
        for step in bar:
            run.step = step
            idx = torch.randint(0, data.shape[0], (batch_size,), generator=gen, device=dev)
            batch = _batch(data[idx], transform, "data")
            loss = -flow.log_prob(batch).mean()
            run.observe(step, loss.detach(), None if transform is None else torch.isfinite(batch).all())
            _step(opt, loss, flow, clip)
            if step % 50 == 0 and run.last is not None:
                bar.set_postfix(nll=f"{run.last:.3f}")
            if val is not None and ((step + 1) % val_every == 0 or step + 1 == steps):
                flow.eval()
                with torch.no_grad():
                    v = float(-flow.log_prob(val).mean())
                flow.train()
                history.val.append((step + 1, v))
                if run.keep_best(step + 1, v):  # a NaN never wins, so a diverged model is not kept
                    history.best_step = step + 1
        run.step = steps
        if val is not None and run.best_val is None:
            raise TrainingDiverged("the validation negative log-likelihood was never finite; "
                                   "lower the learning rate or check val_data against the training data")
        run.finish()
    if run.best_val is not None:
        with torch.no_grad():
            flow.load_state_dict(run.best_val[2])
    flow.eval()
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
    if data.dtype == torch.bool or data.is_complex():
        raise TypeError(f"{name} has dtype {data.dtype}; it must hold real numbers (it is moved to {dtype})")
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
                   optimizer: torch.optim.Optimizer | None = None, desc: str = "reverse KL") -> History:
    """Fit ``flow`` to an unnormalised target ``exp(log_target)`` by minimising the reverse KL.

    The loss is the Monte Carlo estimate, with ``n_samples`` reparametrised samples
    ``x = T(z)``, of ``KL(p_theta || pi) - log Z = E_{p_theta}[log p_theta(X) - log_target(X)]``
    (the negative ELBO, Rezende and Mohamed 2015): it needs samples and their log-density in one
    forward pass, never the inverse. ``anneal > 0`` multiplies ``log_target`` by
    ``beta_t = min(1, 0.01 + t / anneal)`` during the first ``anneal`` steps, as in the paper.
    Returns the loss history (a :class:`History`, a list; add ``log Z`` to get the KL divergence).

    Fails safe like :func:`fit_mle` (:class:`TrainingGuard`); the divergence rule starts once the
    annealing is over (while ``beta`` grows the loss legitimately grows with it).

    >>> from coursekit.flows import Flow, Planar, Compose
    >>> from coursekit.data import log_target
    >>> _ = torch.manual_seed(0)
    >>> flow = Flow(Compose(*[Planar(2) for _ in range(4)]))
    >>> hist = fit_reverse_kl(flow, log_target("U1"), steps=30, n_samples=64, lr=1e-2)
    >>> len(hist), hist[-1] < hist[0]
    (30, True)
    """
    _param_device_dtype(flow)  # the flow samples on its own device (its base buffers follow it)
    _check_training_args(steps, lr, n_samples, "n_samples", clip, desc)
    if not callable(log_target):
        raise TypeError("log_target must be a function mapping a (n, p) tensor to n log-densities")
    V.nonneg_int("anneal", anneal)
    _check_optimizer(optimizer, flow)
    history = History()
    advice = ("Lower the learning rate (lr), anneal the target (anneal=...), or clip gradients; "
              "check that log_target is finite everywhere the flow can put mass.")
    with TrainingGuard(flow, history, "reverse-KL loss", advice) as run, values_checked():
        opt = optimizer or torch.optim.Adam(flow.parameters(), lr=lr)
        flow.train()
        bar = progress(range(steps), total=steps, desc=desc)
        for step in bar:
            run.step = step
            beta = min(1.0, 0.01 + step / anneal) if anneal else 1.0
            if anneal and step == anneal:
                run.checkpoint(snapshot=False)  # the annealed losses are read and judged without the rule
                run.reset_best()  # the objective is fixed from here on
            x, log_q = flow.rsample_and_log_prob(n_samples)
            lt = log_target(x)
            if not isinstance(lt, torch.Tensor) or lt.shape != log_q.shape:
                got = tuple(lt.shape) if isinstance(lt, torch.Tensor) else type(lt).__name__
                raise ValueError(f"log_target returned shape {got}, expected ({n_samples},): one value per sample")
            loss = (log_q - beta * lt).mean()
            run.rule = not anneal or step >= anneal
            run.observe(step, loss.detach())
            _step(opt, loss, flow, clip)
            if step % 50 == 0 and run.last is not None:
                bar.set_postfix(loss=f"{run.last:.3f}")
        run.step = steps
        run.finish()
    flow.eval()
    return history
