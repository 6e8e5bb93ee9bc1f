"""Probability density distillation: a fast sampler (IAF student) learns a fast density (MAF teacher).

Step 1, the teacher ``t_theta`` (a MAF: one-pass density) is fitted by maximum likelihood
(:func:`coursekit.train.fit_mle`).
Step 2, the student ``s_psi`` (an IAF: one-pass sampling, and one-pass density of its own
samples) minimises the reverse Kullback-Leibler divergence to the frozen teacher
(van den Oord et al., "Parallel WaveNet", ICML 2018):

    KL(s_psi || t_theta) = E_{Z ~ q_0}[ log s_psi(T_psi(Z)) - log t_theta(T_psi(Z)) ]
                        ~= N^{-1} sum_i log s_psi(T_psi(Z^i)) / t_theta(T_psi(Z^i)),

with ``log s_psi(T_psi(z)) = log q_0(z) - log|det J_{T_psi}(z)|`` (no inverse of the student) and
``t_theta`` evaluated by the teacher's one-pass inverse. The Monte Carlo average is unbiased for
the KL and, through the reparametrisation ``X = T_psi(Z)``, its gradient is unbiased for the
KL's gradient.

>>> import torch
>>> from coursekit.flows import iaf_flow, maf_flow
>>> teacher, student = maf_flow(2, 2, hidden=(8,)), iaf_flow(2, 2, hidden=(8,))
>>> kl = distill(student, teacher, steps=5, batch_size=64)
>>> len(kl)
5
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import Tensor

from . import _validate as V
from .flows.base import Flow, values_checked
from .train import History, TrainingGuard, progress

__all__ = ["distill", "kl_estimate"]


def _check_pair(student, teacher) -> None:
    for name, f in (("student", student), ("teacher", teacher)):
        if not isinstance(f, Flow):
            raise TypeError(f"the {name} must be a coursekit Flow (e.g. iaf_flow / maf_flow), got {type(f).__name__}")
    if student.event_shape != teacher.event_shape:
        raise ValueError(
            f"student and teacher must model the same space: event shapes {student.event_shape} and {teacher.event_shape}"
        )
    s, t = V.reference(student), V.reference(teacher)
    if s is not None and t is not None and (s.dtype != t.dtype or s.device != t.device):
        raise ValueError(f"the student is {s.dtype} on {s.device} but the teacher is {t.dtype} on {t.device}; "
                         f"move one of them (e.g. teacher.to(dtype={s.dtype}, device='{s.device}'))")


def kl_estimate(student: Flow, teacher: Flow, n: int = 1024) -> Tensor:
    """Monte Carlo estimate of ``KL(student || teacher)`` from ``n`` student samples (differentiable
    in the student's parameters): the slides' objective, line 665."""
    _check_pair(student, teacher)
    V.positive_int("n", n)
    return _kl(student, teacher, n)


def _kl(student: Flow, teacher: Flow, n: int) -> Tensor:
    x, log_s = student.rsample_and_log_prob(n)  # one pass for an IAF: log q_0(z) - log|det J|
    return (log_s - teacher.log_prob(x)).mean()


@contextmanager
def _frozen(teacher: Flow):
    """The teacher's parameters without gradients, their flags restored on any exit (Ctrl-C included)."""
    flags = [p.requires_grad for p in teacher.parameters()]
    try:
        teacher.requires_grad_(False)
        yield
    finally:
        for p, f in zip(teacher.parameters(), flags):
            p.requires_grad_(f)


def distill(
    student: Flow,
    teacher: Flow,
    steps: int = 1000,
    batch_size: int = 256,
    lr: float = 1e-3,
    max_grad_norm: float | None = 10.0,
    desc: str = "distillation",
    cosine: bool = True,
) -> History:
    """Train ``student`` to minimise ``KL(student || teacher)``; return the KL estimate at every step.

    The teacher is frozen during training (its ``requires_grad`` flags are restored afterwards,
    whatever happens). With ``cosine=True`` the learning rate decays from ``lr`` to 0 along a
    cosine: the reverse KL is very sensitive to student samples that stray where the teacher has
    almost no mass, and a constant step size leaves the last iterate noisy, while the decayed
    schedule ends on a settled student. ``max_grad_norm`` clips the student's gradient norm
    (``None``: no clipping).

    Fails safe like :func:`~coursekit.train.fit_mle` (:class:`~coursekit.train.TrainingGuard`):
    a NaN/infinite or diverging estimate stops with :class:`~coursekit.train.TrainingDiverged`;
    after any failure (Ctrl-C included) the student holds its last checked parameters, in eval
    mode, and ``err.history`` has the estimates so far.
    """
    _check_pair(student, teacher)
    V.positive_int("steps", steps)
    V.positive_int("batch_size", batch_size)
    V.positive_float("lr", lr)
    V.optional(V.positive_float, "max_grad_norm", max_grad_norm)
    V.boolean("cosine", cosine)
    if not isinstance(desc, str):
        raise TypeError(f"desc must be a string (the progress bar's label), got {V.describe(desc)}")
    if next(student.parameters(), None) is None:
        raise ValueError("the student has no parameters to train")
    history = History()
    advice = ("Lower the learning rate (lr) or clip gradients (max_grad_norm); check that the teacher's "
              "density is finite where the student samples.")
    with _frozen(teacher), TrainingGuard(student, history, "KL estimate", advice) as run:
        opt = torch.optim.Adam(student.parameters(), lr=lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps) if cosine else None
        student.train()
        for step in (bar := progress(range(steps), desc=desc)):
            run.step = step
            # the teacher's input is the student's own sample: a NaN there means the student
            # diverged, which the guard reports as TrainingDiverged (not as a bad-input error)
            with values_checked():
                kl = _kl(student, teacher, batch_size)
            run.observe(step, kl.detach())  # read back at the guard's checkpoints, not every step
            opt.zero_grad(set_to_none=True)
            kl.backward()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(student.parameters(), max_grad_norm)
            opt.step()
            if schedule is not None:
                schedule.step()
            if step % 25 == 0 and run.last is not None:
                bar.set_postfix(kl=f"{run.last:.3f}")
        run.step = steps
        run.finish()
    student.eval()
    return history
