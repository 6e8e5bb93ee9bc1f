"""Algorithm 1 of the slides: maximum-likelihood training of an EBM with short-run ULA chains.

The log-likelihood of p_theta = exp(-U_theta) / Z(theta) has the gradient (Proposition 2)

    grad l_N(theta) = -(1/N) sum_k grad_theta U_theta(x^k) + mu_theta[grad_theta U_theta],

and the second term is estimated with negative samples X^- from K steps of ULA. Each
iteration therefore minimises the *contrastive* loss

    L(theta) = mean U_theta(X^+) - mean U_theta(X^-)       (X^- held fixed, no gradient through ULA)

whose gradient is line 14 of Algorithm 1, plus the regularisation of Du & Mordatch (2019),
``reg * mean(U(X^+)^2 + U(X^-)^2)``, which keeps the energies near zero (the contrastive loss
alone is invariant to adding a constant to U, and its energies drift and explode).

Three ways to start the chains (``chains=``):

* ``"replay"`` (Algorithm 1): from the replay buffer B, each start replaced with probability
  ``alpha`` by a fresh N(0, I) draw; B holds the last negatives (``buffer_size=None``, as on the
  slides) or the last ``buffer_size`` negatives (as in Du & Mordatch 2019);
* ``"persistent"``: each chain continues exactly where it stopped (persistent contrastive
  divergence, Tieleman 2008);
* ``"short-run"``: every chain restarts from N(0, I) (no buffer; Nijkamp et al. 2019).

>>> import torch
>>> from coursekit.ebm import MLPEnergy
>>> result = train_ebm(MLPEnergy(2, hidden=16), torch.randn(200, 2), n_iter=3, batch_size=32, n_steps=5, gamma=0.01)
>>> len(result.loss), tuple(result.negatives.shape)
(3, (32, 2))
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from .. import _validate as V
from ..flows.base import values_checked
from ..train import TrainingDiverged, TrainingGuard, guard, progress
from .langevin import _ula_steps, step_sizes

__all__ = ["ReplayBuffer", "contrastive_loss", "train_ebm", "EBMTrainingResult", "CHAINS"]

CHAINS = ("replay", "persistent", "short-run")


def _finite_rows(x: Tensor) -> Tensor:
    """Which samples (rows of ``x``, of any shape, even ``()``) have no NaN or infinite entry."""
    return torch.isfinite(x.reshape(x.shape[0], -1)).all(1)


class ReplayBuffer:
    """The buffer B of Algorithm 1: past negative samples, used to start the next chains.

    ``capacity=None`` keeps only the last batch (B = X^-, line 15 of Algorithm 1); an integer
    keeps the last ``capacity`` samples (first in, first out).
    """

    def __init__(self, capacity: int | None = None):
        self.capacity = V.optional(V.positive_int, "capacity", capacity)
        self.samples: Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.samples is None else self.samples.shape[0]

    def push(self, x: Tensor) -> None:
        V.tensor("x", x, min_dim=1, finite=False)
        if self.samples is not None and (x.shape[1:] != self.samples.shape[1:] or x.dtype != self.samples.dtype
                                         or x.device != self.samples.device):
            raise ValueError(f"x has shape {tuple(x.shape)}, {x.dtype} on {x.device}, but the buffer holds samples of "
                             f"shape {tuple(self.samples.shape[1:])}, {self.samples.dtype} on {self.samples.device}")
        x = x.detach()
        if self.capacity is None or self.samples is None:
            self.samples = x if self.capacity is None else x[-self.capacity:]
        else:
            self.samples = torch.cat([self.samples, x])[-self.capacity:]

    def drop_nonfinite(self) -> int:
        """Remove the samples with a NaN or infinite entry (chains that diverged); returns how many.
        :func:`train_ebm` calls it when training stops on an error, so that the buffer it leaves in
        the error's ``history`` can start the chains of a resumed run."""
        if self.samples is None:
            return 0
        keep = _finite_rows(self.samples)
        dropped = int((~keep).sum())  # one read from the device, on the error path only
        if dropped:
            self.samples = self.samples[keep] if dropped < len(keep) else None
        return dropped

    def sample(self, n: int, alpha: float, generator: torch.Generator | None = None, like: Tensor | None = None,
               init_std: float = 1.0) -> Tensor:
        """n starting points i.i.d. from (1 - alpha) B + alpha N(0, init_std^2 I) (lines 5-9);
        from N(0, init_std^2 I) alone while B is empty (then ``like`` gives shape, dtype, device)."""
        V.positive_int("n", n)
        V.in_range("alpha (the restart probability)", alpha, 0.0, 1.0)
        init_std = V.positive_float("init_std", init_std)
        ref = self.samples if self.samples is not None else like
        if ref is None:
            raise ValueError("the buffer is empty: pass `like=` (a tensor of the sample shape) to draw N(0, I) starts")
        shape, dev, dt = (n, *ref.shape[1:]), ref.device, ref.dtype
        fresh = init_std * torch.randn(shape, generator=generator, device=dev, dtype=dt)
        if self.samples is None:
            return fresh
        idx = torch.randint(len(self), (n,), generator=generator, device=dev)
        restart = torch.rand(n, generator=generator, device=dev) < alpha
        restart = restart.reshape(n, *([1] * (len(shape) - 1)))
        return torch.where(restart, fresh, self.samples[idx])

    def __repr__(self) -> str:
        return f"ReplayBuffer(capacity={self.capacity}, size={len(self)})"


def contrastive_loss(energy: Callable[[Tensor], Tensor], x_pos: Tensor, x_neg: Tensor, reg: float = 0.0
                     ) -> tuple[Tensor, dict[str, Tensor]]:
    """L = mean U(x_pos) - mean U(x_neg) + reg * mean(U(x_pos)^2 + U(x_neg)^2).

    ``x_neg`` is detached: its gradient in theta is line 14 of Algorithm 1 (the sampler is not
    differentiated). Returns the loss and the batch's mean energies ``{"e_pos", "e_neg"}``.
    """
    reg = V.nonneg_float("reg", reg)
    e_pos = energy(x_pos)
    e_neg = energy(x_neg.detach())
    loss = e_pos.mean() - e_neg.mean()
    if reg:
        loss = loss + reg * (e_pos.pow(2).mean() + e_neg.pow(2).mean())
    return loss, {"e_pos": e_pos.detach().mean(), "e_neg": e_neg.detach().mean()}


@dataclass
class EBMTrainingResult:
    """What :func:`train_ebm` returns: per-iteration history and the last negative samples."""

    loss: list[float] = field(default_factory=list)
    e_pos: list[float] = field(default_factory=list)
    e_neg: list[float] = field(default_factory=list)
    negatives: Tensor | None = None  # after a stop on an error: its finite samples only (maybe none)
    buffer: ReplayBuffer | None = None
    stopped_at: int | None = None  # set when training stopped early (see coursekit.train.TrainingGuard)
    stop_reason: str | None = None
    restored_step: int | None = None

    def __repr__(self) -> str:
        last = f", last loss {self.loss[-1]:.4g}" if self.loss else ""
        return f"EBMTrainingResult({len(self.loss)} iterations{last})"


def train_ebm(energy: torch.nn.Module, data: Tensor, *, n_iter: int, batch_size: int = 128, n_steps: int = 20,
              gamma: float = 0.01, alpha: float = 0.05, chains: str = "replay", buffer_size: int | None = None,
              reg: float = 0.1, lr: float = 1e-3, optimizer: torch.optim.Optimizer | None = None,
              init_std: float = 1.0, max_energy: float = 1e4, generator: torch.Generator | None = None,
              sampler: Callable[[Callable, Tensor, int], Tensor] | None = None,
              after_step: Callable[[], object] | None = None, desc: str = "EBM (Algorithm 1)"
              ) -> EBMTrainingResult:
    """Train ``energy`` on ``data`` (shape ``(N, ...)``, on the energy's device) with Algorithm 1.

    Each of the ``n_iter`` iterations: draw ``batch_size`` data points with replacement
    (line 4); start chains as ``chains`` says (lines 5-9); run ``n_steps`` = K steps of ULA with
    step ``gamma`` (lines 10-12; or ``sampler(energy, x0, K)`` if given); take one optimiser
    step on :func:`contrastive_loss` with regularisation ``reg`` (line 14), then call
    ``after_step()`` if given (e.g. a projection of the parameters); update B (line 15).

    The optimiser defaults to Adam(lr, betas=(0, 0.999)) as in Du & Mordatch (2019); the slides'
    plain step is ``optimizer=torch.optim.SGD(energy.parameters(), lr=delta)``.

    Stops with :class:`~coursekit.train.TrainingDiverged` (with advice) when the loss is NaN,
    an energy exceeds ``max_energy`` in absolute value, a chain diverges or the parameters blow
    up. The loss and the mean energies stay on the device and are read back every 25 iterations
    (one host synchronisation per window, not several per iteration), so a failure is found up
    to 24 iterations late but reported at its own iteration. After that, an error in ``sampler``
    / ``after_step``, or Ctrl-C, the energy holds its last checked parameters (kept every 25
    iterations), in eval mode, and ``err.history`` is the result so far (see
    :class:`~coursekit.train.TrainingGuard`). ``data`` must have the energy's dtype and device.
    """
    if not isinstance(energy, torch.nn.Module):
        raise TypeError(f"energy must be an nn.Module (e.g. MLPEnergy), got {V.describe(energy)}")
    if chains not in CHAINS:
        raise ValueError(f"chains={chains!r} unknown; choose one of {', '.join(CHAINS)}")
    if not isinstance(data, Tensor) or data.dim() < 2 or data.shape[0] < 1:
        raise ValueError(f"data must be a tensor of shape (N, ...) with N >= 1, got "
                         f"{tuple(data.shape) if isinstance(data, Tensor) else type(data).__name__}")
    V.positive_int("n_iter", n_iter)
    V.positive_int("batch_size", batch_size)
    V.nonneg_int("n_steps", n_steps)
    V.in_range("alpha (the restart probability)", alpha, 0.0, 1.0)
    V.optional(V.positive_int, "buffer_size", buffer_size)
    V.nonneg_float("reg", reg)
    V.positive_float("lr", lr)
    V.positive_float("init_std", init_std)
    V.positive_float("max_energy", max_energy, allow_inf=True)
    for name, f in (("sampler", sampler), ("after_step", after_step)):
        if f is not None:
            V.function(name, f)
    if not isinstance(desc, str):
        raise TypeError(f"desc must be a string (the progress bar's label), got {V.describe(desc)}")
    params = list(energy.parameters())
    if not params:
        raise ValueError(f"{type(energy).__name__} has no parameters to train")
    event_shape = getattr(energy, "event_shape", None)
    if event_shape is not None and tuple(data.shape[1:]) != tuple(event_shape):
        raise ValueError(f"data has shape {tuple(data.shape)}, expected (N, {', '.join(map(str, event_shape))}) "
                         f"to match the energy's event shape")
    # dtype and device where the data enter (int64 pixels used to fail deep inside the first layer)
    V.check_dtype_device("data", data, params[0].dtype, params[0].device)
    if not torch.isfinite(data).all():
        raise ValueError("data contains NaN or infinite values; clean or standardise it first")
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer (or None for Adam), got {V.describe(optimizer)}")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {V.describe(generator)}")
        if generator.device.type != data.device.type:
            raise ValueError(f"generator is on {generator.device} but data is on {data.device}; "
                             f"use torch.Generator(device='{data.device}')")
    if sampler is None:
        gammas = step_sizes(gamma, n_steps)  # checked once, not at every iteration
        run_chain = lambda U, x0, K: _ula_steps(U, x0, gammas, generator)  # noqa: E731
    else:
        run_chain = sampler
    advice = ("Lower the ULA step gamma or the learning rate, or raise the energy regularisation `reg` "
              "(it keeps energies near zero).")
    buffer = ReplayBuffer(buffer_size) if chains == "replay" else None
    persistent: Tensor | None = None
    result = EBMTrainingResult(buffer=buffer)
    # the contrastive loss has no fixed scale (it is a difference of energies), so no rise rule:
    # energies beyond max_energy, diverging chains and blown-up parameters are the signs here
    with TrainingGuard(energy, result, "contrastive loss", advice, rule=False) as run:
        if optimizer is None:
            optimizer = torch.optim.Adam(params, lr=lr, betas=(0.0, 0.999))
        energy.train()
        persistent = _loop(energy, data, n_iter, batch_size, n_steps, alpha, chains, reg, optimizer, init_std,
                           max_energy, generator, run_chain, after_step, desc, advice, buffer, result, run)
        run.step = n_iter
        run.finish()
    energy.eval()
    result.negatives = persistent
    return result


def _loop(energy, data, n_iter, batch_size, n_steps, alpha, chains, reg, optimizer, init_std, max_energy, generator,
          run_chain, after_step, desc, advice, buffer, result, run):
    # The loss and the two mean energies of each iteration stay on the device, stacked, and are
    # read back together every `check_every` iterations (and at the end): one host
    # synchronisation per window instead of three per iteration. The chains and the energies
    # skip their own NaN scans (the data were checked once): a chain that leaves the finite
    # numbers makes U(X-) NaN, which the next read reports with the advice.
    pending: list[tuple[int, Tensor]] = []

    def read() -> None:
        if not pending:
            return
        rows = torch.stack([v for _, v in pending]).tolist()  # the one read back
        steps = [it for it, _ in pending]
        pending.clear()
        for it, (loss, e_pos, e_neg) in zip(steps, rows):
            run.step = it
            # the energies first: they say which side broke (the model, or the chains)
            e_pos = guard(e_pos, it, "mean data energy U(X+)", advice, limit=max_energy)
            e_neg = guard(e_neg, it, "mean sample energy U(X-) (NaN or inf: the chains diverged)", advice,
                          limit=max_energy)
            loss = guard(loss, it, "contrastive loss", advice)
            result.loss.append(loss)
            result.e_pos.append(e_pos)
            result.e_neg.append(e_neg)
            run.observe(it, loss)  # at multiples of check_every: parameters checked and kept

    persistent = None
    try:
        with values_checked():
            for it in progress(range(n_iter), total=n_iter, desc=desc):
                run.step = it
                idx = torch.randint(data.shape[0], (batch_size,), generator=generator, device=data.device)
                x_pos = data[idx]
                if chains == "replay":
                    x0 = buffer.sample(batch_size, alpha, generator=generator, like=x_pos, init_std=init_std)
                elif chains == "persistent" and persistent is not None:
                    x0 = persistent
                else:
                    x0 = init_std * torch.randn(x_pos.shape, generator=generator, device=x_pos.device,
                                                dtype=x_pos.dtype)
                try:
                    x_neg = run_chain(energy, x0, n_steps)
                except FloatingPointError as err:
                    raise TrainingDiverged(f"training stopped at step {it}: {err} {advice}") from err
                loss, stats = contrastive_loss(energy, x_pos, x_neg, reg)
                pending.append((it, torch.stack([loss.detach(), stats["e_pos"], stats["e_neg"]])))
                if it % run.check_every == 0:
                    read()  # before the step: the kept parameters are the ones this loss was computed with
                    run.step = it
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if after_step is not None:
                    after_step()
                if buffer is not None:
                    buffer.push(x_neg)
                persistent = result.negatives = x_neg
        read()
    except BaseException:
        _drain(pending, result)
        # the chains may have diverged up to a window before the read that reported it, and the
        # buffer and the last negatives hold NaN samples since: keep only the finite ones
        try:
            if buffer is not None:
                buffer.drop_nonfinite()
            if result.negatives is not None:
                result.negatives = result.negatives[_finite_rows(result.negatives)]
        except Exception:  # noqa: BLE001 - the device itself may have failed: keep the first error
            pass
        raise
    return persistent


def _drain(pending: list[tuple[int, Tensor]], result: EBMTrainingResult) -> None:
    """After an error: the unread values that are finite, up to the first that is not, go to the
    history unchecked (the error itself is the one the caller sees)."""
    if not pending:
        return
    try:
        rows = torch.stack([v for _, v in pending]).tolist()
    except Exception:  # noqa: BLE001 - the device itself may have failed: keep the first error
        return
    finally:
        pending.clear()
    for loss, e_pos, e_neg in rows:
        if not all(math.isfinite(v) for v in (loss, e_pos, e_neg)):
            break
        result.loss.append(loss)
        result.e_pos.append(e_pos)
        result.e_neg.append(e_neg)
