"""Checks of the chapter 4 exercises (notebook ``ex04_coupling``): the inverse and log-determinant of
NICE's additive coupling (slide lines 460-461), of NICE's rescaling layer (lines 475-477) and of
Real-NVP's affine coupling (lines 507-508).

Each check builds a coursekit layer with random weights (float64), hands the student's function the
layer's networks, and tests the answer against the layer's *forward* map, the slides' definition:
``T(z)`` must give back ``x``, and the log-determinant must equal ``log|det J_{T^{-1}}(x)|``, which
the test suite checks against autograd for these layers.
"""

from __future__ import annotations

import torch

from ...flows.coupling import AdditiveCoupling, AffineCoupling, Rescale
from ..registry import ExerciseFailure, exercise
from ._common import close, randomised, require_callable, tensor_pair

__all__ = [
    "additive_coupling_inverse",
    "affine_coupling_inverse",
    "reference_additive_inverse",
    "reference_affine_inverse",
    "reference_rescale_inverse",
    "rescale_inverse",
]

NOTEBOOK = "ex04_coupling"
P, R, BATCH = 5, 2, 6  # data dimension, size of the conditioning block z_{1:r}, batch


def _points(seed: int) -> torch.Tensor:
    return 2 * torch.randn(BATCH, P, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _close(a, b, tol=1e-8) -> bool:
    return close(a, b, tol)


def _pair(result, what: str):
    return tensor_pair(result, what, shapes=((BATCH, P), (BATCH,)), names=("z", "one log-determinant per row"),
                       hint='keep z_{1:r} in z; use x.new_zeros(n) or .sum(-1)')


# ------------------------------------------------------------------ 4.1: additive coupling (lines 460-461)


def reference_additive_inverse(x, m, r):
    xa, xb = x[:, :r], x[:, r:]
    return torch.cat([xa, xb - m(xa)], dim=1), x.new_zeros(x.shape[0])


@exercise("4.1", notebook=NOTEBOOK, title="Inverse and Jacobian of NICE's additive coupling", points=2)
def additive_coupling_inverse(answer):
    """``answer(x, m, r) -> (z, log|det J_{T^{-1}}(x)|)`` for ``x_{1:r} = z_{1:r}``,
    ``x_{r+1:p} = z_{r+1:p} + m(z_{1:r})``."""
    require_callable(answer, "additive_inverse")
    for seed in (0, 1):
        layer = randomised(AdditiveCoupling(P, hidden=(8,)), seed)
        x = _points(10 + seed)
        z, ld = _pair(answer(x.clone(), layer.net, R), "additive_inverse(x, m, r)")
        with torch.no_grad():
            x_again = layer(z)[0]
            shift = layer.net(x[:, :R])
        if not _close(x_again, x):
            if _close(z[:, R:], x[:, R:] + shift):
                raise ExerciseFailure(
                    "z is wrong: you added m(x_{1:r}); undoing x_{r+1:p} = z_{r+1:p} + m(z_{1:r}) means you subtract it"
                )
            if not _close(z[:, :R], x[:, :R]):
                raise ExerciseFailure(
                    "z_{1:r} is wrong: the layer copies the first r coordinates, so z_{1:r} = x_{1:r}"
                )
            raise ExerciseFailure(
                "z is wrong: T does not send your z back to x. Note that m(z_{1:r}) = m(x_{1:r}), "
                "since z_{1:r} = x_{1:r} is known"
            )
        if not _close(ld, torch.zeros_like(ld)):
            raise ExerciseFailure(
                "the log-determinant is wrong: the Jacobian of the additive coupling is unit "
                "lower-triangular [[I, 0], [dm/dz, I]], so it has determinant 1 (it preserves volume) "
                "and log|det| = 0 at every point, whatever m"
            )


additive_coupling_inverse.reference = lambda: reference_additive_inverse


def _additive_plus(x, m, r):
    return torch.cat([x[:, :r], x[:, r:] + m(x[:, :r])], 1), x.new_zeros(x.shape[0])


def _additive_logdet_of_m(x, m, r):
    shift = m(x[:, :r])
    return torch.cat([x[:, :r], x[:, r:] - shift], 1), -shift.sum(-1)


def _additive_drops_the_copy(x, m, r):
    return x[:, r:] - m(x[:, :r]), x.new_zeros(x.shape[0])


additive_coupling_inverse.mistakes = {
    "adds the shift back": (lambda: _additive_plus, "subtract"),
    "log-determinant from the shift": (lambda: _additive_logdet_of_m, "preserves volume"),
    "returns only z_{r+1:p}": (lambda: _additive_drops_the_copy, "keep z_{1:r}"),
}


# ------------------------------------------------------------------ 4.2: rescaling layer (lines 475-477)


def reference_rescale_inverse(x, s):
    return x / s, -torch.log(s).sum().expand(x.shape[0])


@exercise("4.2", notebook=NOTEBOOK, title="Inverse and Jacobian of NICE's rescaling layer", points=1)
def rescale_inverse(answer):
    """``answer(x, s) -> (z, log|det J_{T^{-1}}(x)|)`` for ``T(z)_i = s_i z_i`` with ``s_i > 0``."""
    require_callable(answer, "rescale_inverse")
    for seed in (0, 1):
        layer = randomised(Rescale(P), seed)
        s = layer.log_s.detach().exp()
        x = _points(20 + seed)
        z, ld = _pair(answer(x.clone(), s.clone()), "rescale_inverse(x, s)")
        with torch.no_grad():
            x_again = layer(z)[0]
        if not _close(x_again, x):
            if _close(z, x * s):
                raise ExerciseFailure("z is wrong: you multiplied by s; undoing x_i = s_i z_i means you divide by s_i")
            raise ExerciseFailure("z is wrong: T(z)_i = s_i z_i does not give back x; solve it for z_i")
        log_s = torch.log(s).sum()
        if _close(ld, log_s.expand(BATCH)):
            raise ExerciseFailure(
                "the sign of the log-determinant is wrong: the inverse map z_i = x_i / s_i has Jacobian "
                "diag(1/s_i), so log|det| = -sum_i log s_i"
            )
        if (
            _close(ld, -s.sum().expand(BATCH))
            or _close(ld, s.prod().expand(BATCH))
            or _close(ld, (1 / s).prod().expand(BATCH))
        ):
            raise ExerciseFailure(
                "the log-determinant is wrong: it is the log of |det diag(1/s_i)|, i.e. -sum_i log s_i; "
                "take the log of each s_i"
            )
        if not _close(ld, -log_s.expand(BATCH)):
            raise ExerciseFailure(
                "the log-determinant is wrong: the Jacobian of x -> x / s is diagonal; sum the logs "
                "of its diagonal entries, one value per row"
            )


rescale_inverse.reference = lambda: reference_rescale_inverse


def _rescale_multiply(x, s):
    return x * s, -torch.log(s).sum().expand(x.shape[0])


def _rescale_sign(x, s):
    return x / s, torch.log(s).sum().expand(x.shape[0])


def _rescale_no_log(x, s):
    return x / s, -s.sum().expand(x.shape[0])


rescale_inverse.mistakes = {
    "multiplies by s": (lambda: _rescale_multiply, "divide"),
    "sign of the log-determinant": (lambda: _rescale_sign, "sign"),
    "forgets the log": (lambda: _rescale_no_log, "take the log"),
}


# ------------------------------------------------------------------ 4.3: affine coupling (lines 507-508)


def reference_affine_inverse(x, m, alpha, r):
    xa, xb = x[:, :r], x[:, r:]
    a = alpha(xa)
    return torch.cat([xa, (xb - m(xa)) * torch.exp(-a)], dim=1), -a.sum(-1)


def _affine_nets(layer: AffineCoupling):
    return (lambda u: layer._params(u)[1]), (lambda u: layer._params(u)[0])


@exercise("4.3", notebook=NOTEBOOK, title="Inverse and Jacobian of Real-NVP's affine coupling", points=2)
def affine_coupling_inverse(answer):
    """``answer(x, m, alpha, r) -> (z, log|det J_{T^{-1}}(x)|)`` for ``x_{1:r} = z_{1:r}``,
    ``x_{r+1:p} = z_{r+1:p} * exp(alpha(z_{1:r})) + m(z_{1:r})``."""
    require_callable(answer, "affine_inverse")
    for seed in (0, 1):
        layer = randomised(AffineCoupling(P, hidden=(8,)), seed)
        m, alpha = _affine_nets(layer)
        x = _points(30 + seed)
        z, ld = _pair(answer(x.clone(), m, alpha, R), "affine_inverse(x, m, alpha, r)")
        with torch.no_grad():
            x_again = layer(z)[0]
            a, shift = alpha(x[:, :R]), m(x[:, :R])
        xb = x[:, R:]
        if not _close(x_again, x):
            if _close(z[:, R:], (xb - shift) * torch.exp(a)):
                raise ExerciseFailure(
                    "z is wrong: you multiplied by exp(alpha); undoing the scaling multiplies by exp(-alpha(x_{1:r}))"
                )
            if _close(z[:, R:], xb * torch.exp(-a) - shift):
                raise ExerciseFailure(
                    "z is wrong: subtract m before undoing the scale, z_{r+1:p} = (x_{r+1:p} - m) * "
                    "exp(-alpha), not x * exp(-alpha) - m"
                )
            if not _close(z[:, :R], x[:, :R]):
                raise ExerciseFailure(
                    "z_{1:r} is wrong: the layer copies the first r coordinates, so z_{1:r} = x_{1:r}"
                )
            raise ExerciseFailure(
                "z is wrong: T does not send your z back to x; solve x_{r+1:p} = z_{r+1:p} exp(alpha) + m "
                "for z_{r+1:p}, with alpha and m evaluated at x_{1:r} = z_{1:r}"
            )
        if _close(ld, a.sum(-1)):
            raise ExerciseFailure(
                "the sign of the log-determinant is wrong: the inverse scales by exp(-alpha), so "
                "log|det J_{T^{-1}}(x)| = -sum_i alpha_i(x_{1:r})"
            )
        if _close(ld, torch.zeros_like(ld)):
            raise ExerciseFailure(
                "the log-determinant is wrong: unlike NICE's coupling this layer changes volume; the "
                "diagonal block of its Jacobian is diag(exp(-alpha_i))"
            )
        if not _close(ld, -a.sum(-1)):
            raise ExerciseFailure(
                "the log-determinant is wrong: the Jacobian is block-triangular with diagonal "
                "[1, ..., 1, exp(-alpha_i)]: sum the logs of the diagonal entries, one value per row"
            )


affine_coupling_inverse.reference = lambda: reference_affine_inverse


def _affine_scale_up(x, m, alpha, r):
    xa, xb = x[:, :r], x[:, r:]
    a = alpha(xa)
    return torch.cat([xa, (xb - m(xa)) * torch.exp(a)], 1), -a.sum(-1)


def _affine_scale_then_shift(x, m, alpha, r):
    xa, xb = x[:, :r], x[:, r:]
    a = alpha(xa)
    return torch.cat([xa, xb * torch.exp(-a) - m(xa)], 1), -a.sum(-1)


def _affine_sign(x, m, alpha, r):
    xa, xb = x[:, :r], x[:, r:]
    a = alpha(xa)
    return torch.cat([xa, (xb - m(xa)) * torch.exp(-a)], 1), a.sum(-1)


def _affine_volume_preserving(x, m, alpha, r):
    xa, xb = x[:, :r], x[:, r:]
    return torch.cat([xa, (xb - m(xa)) * torch.exp(-alpha(xa))], 1), x.new_zeros(x.shape[0])


affine_coupling_inverse.mistakes = {
    "multiplies by exp(alpha)": (lambda: _affine_scale_up, "exp(-alpha"),
    "rescales before shifting": (lambda: _affine_scale_then_shift, "subtract m"),
    "sign of the log-determinant": (lambda: _affine_sign, "sign"),
    "log-determinant of NICE (zero)": (lambda: _affine_volume_preserving, "changes volume"),
}
