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

import torch
from torch import Tensor

from .flows.base import Flow
from .train import guard, progress

__all__ = ["distill", "kl_estimate"]


def _check_pair(student, teacher) -> None:
    for name, f in (("student", student), ("teacher", teacher)):
        if not isinstance(f, Flow):
            raise TypeError(f"the {name} must be a coursekit Flow (e.g. iaf_flow / maf_flow), got {type(f).__name__}")
    if student.event_shape != teacher.event_shape:
        raise ValueError(
            f"student and teacher must model the same space: event shapes {student.event_shape} and {teacher.event_shape}"
        )


def _positive_int(value, name: str) -> int:
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def kl_estimate(student: Flow, teacher: Flow, n: int = 1024) -> Tensor:
    """Monte Carlo estimate of ``KL(student || teacher)`` from ``n`` student samples (differentiable
    in the student's parameters): the slides' objective, line 665."""
    _check_pair(student, teacher)
    _positive_int(n, "the number of Monte Carlo samples n")
    x, log_s = student.rsample_and_log_prob(n)  # one pass for an IAF: log q_0(z) - log|det J|
    return (log_s - teacher.log_prob(x)).mean()


def distill(
    student: Flow,
    teacher: Flow,
    steps: int = 1000,
    batch_size: int = 256,
    lr: float = 1e-3,
    max_grad_norm: float | None = 10.0,
    desc: str = "distillation",
    cosine: bool = True,
) -> list[float]:
    """Train ``student`` to minimise ``KL(student || teacher)``; return the KL estimate at every step.

    The teacher is frozen during training (its ``requires_grad`` flags are restored afterwards).
    With ``cosine=True`` the learning rate decays from ``lr`` to 0 along a cosine: the reverse KL
    is very sensitive to student samples that stray where the teacher has almost no mass, and a
    constant step size leaves the last iterate noisy, while the decayed schedule ends on a
    settled student.
    Raises :class:`~coursekit.train.TrainingDiverged` if the estimate becomes NaN or infinite.
    """
    _check_pair(student, teacher)
    _positive_int(steps, "steps")
    _positive_int(batch_size, "batch_size")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    flags = [p.requires_grad for p in teacher.parameters()]
    teacher.requires_grad_(False)
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps) if cosine else None
    history: list[float] = []
    try:
        for step in (bar := progress(range(steps), desc=desc)):
            kl = kl_estimate(student, teacher, batch_size)
            history.append(
                guard(
                    kl,
                    step,
                    "KL estimate",
                    advice="Lower the learning rate or check that the teacher's density is finite where the student samples.",
                )
            )
            opt.zero_grad(set_to_none=True)
            kl.backward()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(student.parameters(), max_grad_norm)
            opt.step()
            if schedule is not None:
                schedule.step()
            if step % 25 == 0:
                bar.set_postfix(kl=f"{history[-1]:.3f}")
    finally:
        for p, f in zip(teacher.parameters(), flags):
            p.requires_grad_(f)
    return history
