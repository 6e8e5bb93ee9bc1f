"""Checks of the chapter 5 exercises (notebook ``ex05_autoregressive``): the MAF inverse, the sigmoid
autoregressive layer's reverse and log-Jacobian, and the IAF density of its own samples.

Each check builds a coursekit map with random weights (float64) and tests the student's function
against the map's *forward* (sampling) definition from the slides, not against a second copy
of the answer: the inverse must give back ``x`` through the sequential forward, and log-densities
are compared with the change of variables computed by another route.
"""

from __future__ import annotations

import torch

from ...flows.autoregressive import IAF, MAF, SigmoidAR
from ..registry import ExerciseFailure, exercise
from ._common import close, randomised, require_callable, tensor_pair

__all__ = [
    "iaf_own_density",
    "maf_inverse",
    "reference_iaf_log_density",
    "reference_maf_inverse",
    "reference_sigmoid_ar_reverse",
    "sigmoid_ar_reverse",
]

NOTEBOOK = "ex05_autoregressive"
P, BATCH = 4, 6


def _points(seed: int) -> torch.Tensor:
    return torch.randn(BATCH, P, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _close(a, b, tol=1e-7) -> bool:
    return close(a, b, tol)


def _pair(result, what: str):
    return tensor_pair(result, what, shapes=((BATCH, P), (BATCH,)), names=("z", "one log-determinant per row"),
                       hint='sum over the coordinates with .sum(-1)')


class _Counted:
    """Wraps a conditioner to count the network passes the student's code makes."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, u):
        self.calls += 1
        return self.fn(u)


# ------------------------------------------------------------------ 5.1: the MAF inverse (slide line 576)


def reference_maf_inverse(x, conditioner):
    m, alpha = conditioner(x)
    return (x - m) * torch.exp(-alpha), -alpha.sum(-1)


@exercise("5.1", notebook=NOTEBOOK, title="The inverse of a MAF layer", points=2)
def maf_inverse(answer):
    """``answer(x, conditioner) -> (z, log|det J_{T^{-1}}(x)|)`` for the MAF layer
    ``x_i = exp(alpha_i(x_{<i})) z_i + m_i(x_{<i})``; ``conditioner(u) -> (m, alpha)``."""
    require_callable(answer, "maf_inverse")
    for seed in (0, 1):
        maf = randomised(MAF(P, hidden=(12,), order="random", seed=seed), seed)
        x = _points(10 + seed)
        counted = _Counted(maf.conditioner)
        z, ld = _pair(answer(x.clone(), counted), "maf_inverse(x, conditioner)")
        with torch.no_grad():
            m, alpha = maf.conditioner(x)
            x_again = maf(z)[0]  # the slides' sequential forward map
        if not _close(x_again, x):
            if _close(z, (x - m) * torch.exp(alpha)):
                raise ExerciseFailure(
                    "z is wrong: you multiplied by exp(alpha_i); undoing x_i = exp(alpha_i) z_i + m_i divides, i.e. multiplies by exp(-alpha_i)"
                )
            if _close(z, x * torch.exp(-alpha) - m):
                raise ExerciseFailure(
                    "z is wrong: subtract m_i before rescaling, z_i = exp(-alpha_i) (x_i - m_i), not exp(-alpha_i) x_i - m_i"
                )
            raise ExerciseFailure(
                "z is wrong: the forward map T does not send your z back to x. Solve x_i = exp(alpha_i(x_{<i})) z_i + m_i(x_{<i}) for z_i"
            )
        if counted.calls > 1:
            raise ExerciseFailure(
                f"z is right but you called the network {counted.calls} times: every m_i, alpha_i reads x, which is known, so one pass suffices"
            )
        if _close(ld, alpha.sum(-1)):
            raise ExerciseFailure(
                "the sign of the log-determinant is wrong: this is log|det J_{T^{-1}}(x)| = -sum_i alpha_i, minus the forward one"
            )
        if not _close(ld, -alpha.sum(-1)):
            raise ExerciseFailure(
                "the log-determinant is wrong: the Jacobian of x -> z is triangular; sum the logs of its diagonal entries dz_i/dx_i"
            )


maf_inverse.reference = lambda: reference_maf_inverse


def _maf_scale_up(x, conditioner):
    m, alpha = conditioner(x)
    return (x - m) * torch.exp(alpha), -alpha.sum(-1)


def _maf_scale_then_shift(x, conditioner):
    m, alpha = conditioner(x)
    return x * torch.exp(-alpha) - m, -alpha.sum(-1)


def _maf_sign(x, conditioner):
    m, alpha = conditioner(x)
    return (x - m) * torch.exp(-alpha), alpha.sum(-1)


maf_inverse.mistakes = {
    "multiplies by exp(alpha)": (lambda: _maf_scale_up, "exp(-alpha_i)"),
    "rescales before shifting": (lambda: _maf_scale_then_shift, "subtract m_i"),
    "sign of the log-determinant": (lambda: _maf_sign, "sign"),
}


# ------------------------------------------------------------------ 5.2: sigmoid layer, reverse + log-Jacobian (594-595)


def reference_sigmoid_ar_reverse(x, gate):
    m, sigma = gate(x)
    return (x - (1 - sigma) * m) / sigma, torch.log(sigma).sum(-1)


@exercise("5.2", notebook=NOTEBOOK, title="Reverse and log-Jacobian of the sigmoid autoregressive layer", points=2)
def sigmoid_ar_reverse(answer):
    """``answer(x, gate) -> (z, log|det J_T(z)|)`` for ``T(z)_i = sigma_i z_i + (1 - sigma_i) m_i`` with
    ``m_i, sigma_i`` reading ``x_{<i}``; ``gate(u) -> (m, sigma)``."""
    require_callable(answer, "sigmoid_ar_reverse")
    for seed in (0, 1):
        layer = randomised(SigmoidAR(P, hidden=(12,), order="random", seed=seed), seed)

        def gate(u, layer=layer):
            m, log_s = layer._gate(u)
            return m, torch.exp(log_s)

        x = _points(20 + seed)
        z, ld = _pair(answer(x.clone(), gate), "sigmoid_ar_reverse(x, gate)")
        with torch.no_grad():
            m, sigma = gate(x)
            x_again, ld_true = layer(z)  # the slides' forward map (sequential)
        if not _close(x_again, x):
            if _close(z, (x - m) / sigma):
                raise ExerciseFailure(
                    "z is wrong: the shift is (1 - sigma_i) m_i, not m_i; z_i = (x_i - (1 - sigma_i) m_i) / sigma_i"
                )
            if _close(z, (x - (1 - sigma) * m) * sigma):
                raise ExerciseFailure(
                    "z is wrong: after removing the shift, divide by sigma_i (the forward multiplied by it)"
                )
            raise ExerciseFailure(
                "z is wrong: the forward map does not send your z back to x. Solve x_i = sigma_i z_i + (1 - sigma_i) m_i for z_i"
            )
        if _close(ld, -torch.log(sigma).sum(-1)):
            raise ExerciseFailure(
                "the sign of the log-Jacobian is wrong: asked is log|det J_T(z)| of the forward map, sum_i log sigma_i (negative: the layer contracts)"
            )
        if _close(ld, torch.log1p(-sigma).sum(-1)):
            raise ExerciseFailure(
                "the log-Jacobian is wrong: dT_i/dz_i = sigma_i, so sum log sigma_i, not log(1 - sigma_i)"
            )
        if not _close(ld, ld_true):
            raise ExerciseFailure(
                "the log-Jacobian is wrong: the Jacobian is triangular with diagonal dT_i/dz_i; sum the logs of the diagonal"
            )


sigmoid_ar_reverse.reference = lambda: reference_sigmoid_ar_reverse


def _gate_no_one_minus(x, gate):
    m, sigma = gate(x)
    return (x - m) / sigma, torch.log(sigma).sum(-1)


def _gate_sign(x, gate):
    m, sigma = gate(x)
    return (x - (1 - sigma) * m) / sigma, -torch.log(sigma).sum(-1)


def _gate_log_one_minus(x, gate):
    m, sigma = gate(x)
    return (x - (1 - sigma) * m) / sigma, torch.log1p(-sigma).sum(-1)


sigmoid_ar_reverse.mistakes = {
    "forgets the (1 - sigma) on the shift": (lambda: _gate_no_one_minus, "(1 - sigma_i) m_i"),
    "sign of the log-Jacobian": (lambda: _gate_sign, "sign"),
    "log(1 - sigma) in the log-Jacobian": (lambda: _gate_log_one_minus, "not log(1 - sigma_i)"),
}


# ------------------------------------------------------------------ 5.3: IAF density of its own sample (624)


def reference_iaf_log_density(z, conditioner):
    _m, alpha = conditioner(z)
    base = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    return base - alpha.sum(-1)


@exercise("5.3", notebook=NOTEBOOK, title="IAF: the density of its own samples in one pass", points=2)
def iaf_own_density(answer):
    """``answer(z, conditioner) -> log p_theta(T_theta(z))`` (one value per row) for the IAF layer
    ``x_i = exp(alpha_i(z_{<i})) z_i + m_i(z_{<i})`` on a standard Gaussian base."""
    require_callable(answer, "iaf_log_density")
    normal = torch.distributions.Normal(0.0, 1.0)
    for seed in (0, 1):
        iaf = randomised(IAF(P, hidden=(12,), order="random", seed=seed), seed)
        z = _points(30 + seed)
        counted = _Counted(iaf.conditioner)
        log_p = answer(z.clone(), counted)
        if not isinstance(log_p, torch.Tensor) or log_p.shape != (BATCH,):
            raise ExerciseFailure(
                f"iaf_log_density must return one log-density per row, a tensor of shape {(BATCH,)}, "
                f"got {getattr(log_p, 'shape', type(log_p).__name__)}"
            )
        log_p = log_p.to(torch.float64)
        with torch.no_grad():
            x, _ld = iaf(z)
            _m, alpha = iaf.conditioner(z)
            # An independent route: invert x with p sequential passes, then change of variables.
            z_back, ld_inv = iaf.inverse(x)
            truth = normal.log_prob(z_back).sum(-1) + ld_inv
            base_z = normal.log_prob(z).sum(-1)
        if not _close(log_p, truth, tol=1e-6):
            if _close(log_p, base_z + alpha.sum(-1)):
                raise ExerciseFailure(
                    "the sign of the log-determinant is wrong: log p(T(z)) = log q_0(z) - sum_i alpha_i (the map stretches volume by exp(sum alpha_i), so density drops)"
                )
            if _close(log_p, -alpha.sum(-1)):
                raise ExerciseFailure("the base log-density is missing: add log q_0(z) = sum_i log N(z_i; 0, 1)")
            if _close(log_p, normal.log_prob(x).sum(-1) - alpha.sum(-1)):
                raise ExerciseFailure(
                    "evaluate the base density at z, the noise that produced the sample, not at x = T(z)"
                )
            raise ExerciseFailure(
                "log p(T(z)) is wrong: use the change of variables log q_0(z) - log|det J_T(z)| with the triangular Jacobian of the IAF"
            )
        if counted.calls > 1:
            raise ExerciseFailure(
                f"the value is right but you called the network {counted.calls} times: from z, one pass gives every alpha_i(z_{{<i}})"
            )


iaf_own_density.reference = lambda: reference_iaf_log_density


def _iaf_sign(z, conditioner):
    _, alpha = conditioner(z)
    return torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1) + alpha.sum(-1)


def _iaf_no_base(z, conditioner):
    _, alpha = conditioner(z)
    return -alpha.sum(-1)


def _iaf_base_at_x(z, conditioner):
    m, alpha = conditioner(z)
    x = torch.exp(alpha) * z + m
    return torch.distributions.Normal(0.0, 1.0).log_prob(x).sum(-1) - alpha.sum(-1)


iaf_own_density.mistakes = {
    "sign of the log-determinant": (lambda: _iaf_sign, "sign"),
    "missing base log-density": (lambda: _iaf_no_base, "base"),
    "base density at x instead of z": (lambda: _iaf_base_at_x, "base density at z"),
}
