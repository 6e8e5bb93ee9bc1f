"""Timing helpers shared by the peer benchmarks (not a test; see the scripts beside it).

Why interleaved: on a shared machine the speed of one process drifts with the load of the others
by far more than the differences being measured. Timing each library in its own block of runs
makes the ratio between two libraries depend on what the machine did during each block (one run
of the old harness gave coursekit / normflows 0.55, the next 1.25). :func:`interleaved` instead
runs, in every round, each library's operation once, in an order that rotates from round to
round, so both terms of a per-round ratio see nearly the same load; :func:`compare` then reports
the median of the per-round ratios with their interquartile range, and calls a difference
"unresolved" when that range contains 1.

Conventions: a *ratio* is always a ratio of speeds, reference / other (equivalently the other's
time over the reference's), so > 1 means the reference (coursekit) is faster.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

# ---------------------------------------------------------------------------------------------
# the interleaved harness


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize()


def _seconds(fn: Callable[[], object], calls: int, device: torch.device | None) -> float:
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / calls


def interleaved(
    ops: dict[str, Callable[[], object]],
    rounds: int,
    device: torch.device | None = None,
    warmup: int = 1,
    min_seconds: float = 0.0,
    setup: dict[str, Callable[[], object]] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of every operation in ``ops``, one figure per round and operation.

    After ``warmup`` untimed calls of each operation, every round calls each operation once (or
    ``k`` times in a row, ``k`` chosen once from the warm-up so that one timing lasts at least
    ``min_seconds``; the figure is then the mean over the ``k`` calls), in the order of ``ops``
    rotated by one place per round: over ``len(ops)`` rounds every operation takes every place
    once. ``setup[name]``, where given and not None, runs untimed before each of that operation's
    timings (see :func:`fresh_buffers`). The GPU is synchronised around each timing when ``device`` is a CUDA
    device."""
    names = list(ops)
    if rounds < 1 or not names:
        raise ValueError(f"need at least one round and one operation, got {rounds} rounds, {len(names)} operations")
    calls = {}
    for name in names:
        for _ in range(max(warmup, 1)):
            t = _seconds(ops[name], 1, device)
        calls[name] = max(1, math.ceil(min_seconds / t)) if min_seconds > 0 and t > 0 else 1
    setup = setup or {}
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            if setup.get(name) is not None:
                setup[name]()
            times[name].append(_seconds(ops[name], calls[name], device))
    return times


def fresh_buffers(model: torch.nn.Module, op: Callable[[], object]) -> Callable[[], None] | None:
    """For a model whose calls keep buffers from one call to the next (coursekit's MADE solver, see
    ``MADE.clear_solve_buffers``), a setup for :func:`interleaved` that drops them and makes one
    untimed call, so that every round times newly allocated buffers, as it times the newly allocated
    tensors of code that keeps none. Kept for a whole run, one allocation's placement in memory
    would set every round's figure (on the course machine the same MAF sampler ran 18% apart in two
    tables of one run). ``None`` for a model that keeps no such buffers."""
    mades = [m for m in model.modules() if hasattr(m, "clear_solve_buffers")]
    if not mades:
        return None

    def setup():
        for m in mades:
            m.clear_solve_buffers()
        op()

    return setup


@dataclass
class Ratio:
    """Summary of per-round speed ratios ``a / b``: median, quartiles, number of rounds."""

    median: float
    q1: float
    q3: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Ratio:
        v = sorted(values)
        if len(v) == 1:
            return cls(v[0], v[0], v[0], 1)
        q1, med, q3 = statistics.quantiles(v, n=4, method="inclusive")
        return cls(med, q1, q3, len(v))

    def verdict(self, faster: str = "faster", slower: str = "slower") -> str:
        """``faster`` when the whole interquartile range is above 1, ``slower`` below, else unresolved."""
        if self.q1 > 1:
            return faster
        if self.q3 < 1:
            return slower
        return "unresolved"

    def inverse(self) -> Ratio:
        """The summary of the reciprocal ratios ``b / a`` (the quartiles swap)."""
        return Ratio(1 / self.median, 1 / self.q3, 1 / self.q1, self.n)

    def text(self, digits: int = 2) -> str:
        return f"{self.median:.{digits}f} [{self.q1:.{digits}f}, {self.q3:.{digits}f}]"


def speed_ratio(times: dict[str, list[float]], ref: str, other: str) -> Ratio:
    """Per-round speed of ``ref`` over that of ``other`` (``other``'s time / ``ref``'s), summarised."""
    return Ratio.of([b / a for a, b in zip(times[ref], times[other])])


def rate(seconds: Sequence[float], work: float = 1.0) -> float:
    """Median over the rounds of ``work`` per second."""
    return work / statistics.median(seconds)


def at_least(r: Ratio, threshold: float) -> str:
    """Whether a speed ratio is at least ``threshold``: judged on the interquartile range first."""
    if r.q1 >= threshold:
        return "met"
    if r.q3 < threshold:
        return "NOT met"
    return "met at the median, not resolved" if r.median >= threshold else "not met at the median, not resolved"


# ---------------------------------------------------------------------------------------------
# results as tables (printed by each script, collected by run_all.py)


@dataclass
class Table:
    """One benchmark's result: a title, column names, rows of strings, notes printed below."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.columns) + " |",
                 "|" + "|".join("---" for _ in self.columns) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        if self.notes:
            lines.append("")
            lines += [f"{note}  " if i < len(self.notes) - 1 else note for i, note in enumerate(self.notes)]
        return "\n".join(lines) + "\n"

    def text(self) -> str:
        widths = [max(len(c), *(len(r[i]) for r in self.rows)) if self.rows else len(c)
                  for i, c in enumerate(self.columns)]
        fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
        lines = [self.title, fmt.format(*self.columns)] + [fmt.format(*row) for row in self.rows]
        return "\n".join(lines + self.notes) + "\n"


def ratio_cell(r: Ratio) -> str:
    return f"{r.text()} {r.verdict()}"


def speed_table(
    title: str,
    times: dict[str, dict[str, list[float]]],
    work: dict[str, float],
    labels: dict[str, str],
    ref: str,
    params: dict[str, int] | None = None,
    notes: Sequence[str] = (),
) -> Table:
    """A library x measure table: the median rate of each library for each measure, and for each
    peer the speed ratio ``ref`` / peer with its interquartile range and verdict.

    ``times[measure][library]``: per-round seconds from :func:`interleaved`; ``work[measure]``: the
    units of work of one call (training steps, points); ``labels[measure]``: the column name."""
    measures = list(times)
    libs = list(times[measures[0]])
    columns = ["library"] + (["params"] if params else []) + [labels[m] for m in measures]
    columns += [f"{ref} / library, {labels[m]}" for m in measures]
    table = Table(title, columns)
    for lib in libs:
        row = [lib] + ([f"{params[lib]:,}"] if params else [])
        row += [_fmt_rate(rate(times[m][lib], work[m])) for m in measures]
        row += ["reference" if lib == ref else ratio_cell(speed_ratio(times[m], ref, lib)) for m in measures]
        table.rows.append(row)
    rounds = len(times[measures[0]][libs[0]])
    table.notes = [
        (f"Rates: medians over {rounds} interleaved rounds. Ratios: median of the per-round speed ratios "
         f"{ref} / library [interquartile range]; > 1: {ref} is faster; 'unresolved': the range contains 1."),
        *notes,
    ]
    return table


def library_speed(
    title: str,
    builders: dict[str, Callable[[], tuple]],
    x: torch.Tensor,
    steps: int,
    rounds: int,
    min_seconds: float = 0.0,
    ref: str = "coursekit",
    notes: Sequence[str] = (),
) -> Table:
    """Training steps/s, log-densities/s and samples/s of every library, interleaved, as a table.

    ``builders[name]()`` returns ``(model, log_prob, sample)`` (an ``ImportError`` leaves the library out,
    with a note). Every library gets the same batch ``x`` (one training call: ``steps`` Adam steps on
    its NLL; one density call: the log-densities of ``x``; one sampling call: ``len(x)`` samples). The
    log-densities and samples are timed first, on the models as built, then the training steps."""
    device = x.device
    ops: dict[str, dict[str, Callable[[], object]]] = {"density": {}, "sample": {}, "train": {}}
    models, skipped = {}, []
    for name, build in builders.items():
        try:
            torch.manual_seed(0)
            model, log_prob, sample = build()
        except ImportError as err:
            skipped.append(f"{name}: not installed ({err})")
            continue
        models[name] = model.to(device)

        def density(log_prob=log_prob):
            with torch.no_grad():
                log_prob(x)

        def sampling(sample=sample):
            with torch.no_grad():
                sample(x.shape[0])

        ops["density"][name], ops["sample"][name] = density, sampling
        ops["train"][name] = train_step_fn(model, log_prob, x, steps)
    # sampling may use kept buffers (a MAF's incremental solver): drawn afresh every round
    setups = {"sample": {name: fresh_buffers(models[name], op) for name, op in ops["sample"].items()}}
    times = {m: interleaved(o, rounds, device, min_seconds=min_seconds, setup=setups.get(m))
             for m, o in ops.items()}
    times = {m: times[m] for m in ("train", "density", "sample")}
    return speed_table(title, times, {"train": steps, "density": x.shape[0], "sample": x.shape[0]},
                       {"train": "train steps/s", "density": "log-densities/s", "sample": "samples/s"},
                       ref, {k: n_params(m) for k, m in models.items()},
                       notes=[(f"Training: {steps} Adam steps (lr 1e-4) per call on one fixed batch, timed after "
                               "the log-densities and samples."), *skipped])


def _fmt_rate(v: float) -> str:
    return f"{v:,.1f}" if v < 1000 else f"{v:,.0f}"


def print_tables(tables: Sequence[Table]) -> None:
    for t in tables:
        print()
        print(t.text(), end="", flush=True)


# ---------------------------------------------------------------------------------------------
# the old helpers, kept for scripts that still call them


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after one warm-up (GPU synchronised).

    Times one operation on its own: not for comparing libraries on a shared machine (use
    :func:`interleaved`)."""
    fn()  # warm-up
    return statistics.median(_seconds(fn, 1, device) for _ in range(repeats))


def train_step_fn(model: torch.nn.Module, log_prob, x: torch.Tensor, steps: int, lr: float = 1e-4):
    """A function that makes ``steps`` Adam steps on the NLL of ``x`` (its own optimiser)."""
    opt = torch.optim.Adam([q for q in model.parameters() if q.requires_grad], lr=lr)

    def train_steps():
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = -log_prob(x).mean()
            loss.backward()
            opt.step()

    return train_steps


def throughput(model, log_prob, sample, x: torch.Tensor, steps: int, repeats: int) -> tuple[float, float, float]:
    """Training steps per second (Adam, NLL of ``x``), log-densities per second and samples per second.

    One library on its own (see :func:`timed`); the benchmarks compare libraries with
    :func:`interleaved`."""
    device = x.device
    train_steps = train_step_fn(model, log_prob, x, steps)

    def density():
        with torch.no_grad():
            log_prob(x)

    def sampling():
        with torch.no_grad():
            sample(x.shape[0])

    t_train = timed(train_steps, device, repeats) / steps
    t_density = timed(density, device, repeats)
    t_sample = timed(sampling, device, repeats)
    return 1 / t_train, x.shape[0] / t_density, x.shape[0] / t_sample


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
