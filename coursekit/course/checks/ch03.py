"""Checks of the chapter 3 exercises (notebook ``ex03_change_of_variables``): the expectation of a
push-forward, the change-of-variables density, the density of a composition, the planar log-determinant.

Answers are functions; each check runs them on coursekit maps with fixed random parameters and
compares with an independent computation (quadrature, ``Flow.log_prob``, autograd Jacobians).
"""

from __future__ import annotations

import math

import torch
from torch.autograd.functional import jacobian
from torch.distributions import Independent, Normal

from ...flows import Compose, Flow, Planar, Radial
from ..registry import ExerciseFailure, exercise
from ._common import close, require_callable

__all__ = [
    "expectation_of_pushforward",
    "change_of_variables",
    "density_of_composition",
    "planar_log_det",
    "reference_expectation",
    "reference_log_density",
    "reference_log_density_composition",
    "reference_planar_log_det",
]

NOTEBOOK = "ex03_change_of_variables"


def _base(p: int = 2):
    zero = torch.zeros(p, dtype=torch.float64)
    return Independent(Normal(zero, torch.ones_like(zero)), 1)


def _planar(seed: int, w, u, b) -> Planar:
    torch.manual_seed(seed)
    m = Planar(len(w)).double()
    with torch.no_grad():
        m.w.copy_(torch.tensor(w, dtype=torch.float64))
        m.u.copy_(torch.tensor(u, dtype=torch.float64))
        m.b.fill_(b)
    return m


def _maps():
    """Three non-commuting planar maps and a radial one, T^1, ..., T^4 (fixed parameters)."""
    return [
        _planar(0, [2.0, 0.5], [1.5, -1.0], 0.3),
        _planar(1, [-0.5, 2.5], [0.8, 1.2], -0.4),
        _planar(2, [1.5, 1.5], [-1.0, 2.0], 0.1),
        _radial(),
    ]


def _radial() -> Radial:
    torch.manual_seed(3)
    m = Radial(2).double()
    with torch.no_grad():
        m.z0.copy_(torch.tensor([0.5, -0.3], dtype=torch.float64))
        m.alpha_raw.fill_(0.2)
        m.beta_raw.fill_(1.0)
    return m


def _tensor(value, what: str, shape: tuple[int, ...]) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise ExerciseFailure(f"{what} must return a torch tensor, got {type(value).__name__}")
    value = value.detach().to(torch.float64)
    if value.numel() == math.prod(shape) and tuple(value.shape) != shape and value.squeeze().shape == torch.Size(shape):
        value = value.reshape(shape)
    if tuple(value.shape) != shape:
        raise ExerciseFailure(f"{what} returned shape {tuple(value.shape)}, expected {shape} (one value per row of x)")
    return value


def _close(a, b, tol=1e-6):
    return close(a, b, tol)


# ------------------------------------------------------------------ 3.1: E_theta[f(X)] through the base


def reference_expectation(f, T, base, n):
    z = base.sample((n,))
    x, _ = T(z)
    return f(x).mean()


def _f31(x):
    return (x[:, 0] - 1.0) ** 2 + x[:, 1]


def _quadrature_31(T, weight=None):
    """E_nu0[g(Z)] on a 2-D grid for g = f o T (or f o T^{-1}, f o T * |det J|), float64."""
    n, lim = 600, 8.0
    h = 2 * lim / n
    t = -lim + h * (torch.arange(n, dtype=torch.float64) + 0.5)
    z = torch.cartesian_prod(t, t)
    q0 = _base().log_prob(z).exp()
    with torch.no_grad():
        values = weight(z) if weight is not None else _f31(T(z)[0])
    return float((values * q0).sum() * h * h)


@exercise("3.1", notebook=NOTEBOOK, title="Expectation under a push-forward (Monte Carlo)", points=2)
def expectation_of_pushforward(answer):
    """``answer(f, T, base, n)`` estimates ``E[f(X)]``, ``X = T(Z)``, ``Z ~ base``, with n samples."""
    require_callable(answer, "expectation(f, T, base, n)")
    T = Compose(*_maps()[:3])
    n = 200_000
    torch.manual_seed(31)
    est = answer(_f31, T, _base(), n)
    if isinstance(est, torch.Tensor):
        if est.numel() != 1:
            raise ExerciseFailure(f"return one number (the average), got a tensor of shape {tuple(est.shape)}")
        est = float(est.detach())
    est = float(est)
    exact = _quadrature_31(T)
    # the Monte Carlo standard error of the estimate, from the spread of f(X)
    with torch.no_grad():
        torch.manual_seed(1)
        fx = _f31(T(_base().sample((n,)))[0])
    se = float(fx.std()) / math.sqrt(n)
    if abs(est - exact) <= 6 * se:
        return
    wrong = {
        "no_map": _quadrature_31(T, lambda z: _f31(z)),
        "inverse": _quadrature_31(T, lambda z: _f31(T.inverse(z)[0])),
        "jacobian": _quadrature_31(T, lambda z: _f31(T(z)[0]) * T(z)[1].exp()),
    }
    if abs(est - wrong["no_map"]) <= 6 * se:
        raise ExerciseFailure("you averaged f(Z) over the base samples: push them through the map first, X = T(Z)")
    if abs(est - wrong["inverse"]) <= 6 * se:
        raise ExerciseFailure("you applied the inverse map to the base samples; sampling uses the forward map X = T(Z)")
    if abs(est - wrong["jacobian"]) <= 6 * se:
        raise ExerciseFailure(
            "you multiplied by |det J_T|: with Z ~ nu_0 the expectation is a plain average of f(T(Z)); "
            "no Jacobian appears (it appears when integrating in x against p_theta)"
        )
    raise ExerciseFailure(
        f"your estimate {est:.4f} is more than 6 standard errors ({se:.1e}) from E[f(X)] = {exact:.4f}: "
        "average f(T(z_i)) over n samples z_i of the base"
    )


def _no_map(f, T, base, n):
    return f(base.sample((n,))).mean()


def _inverse_map(f, T, base, n):
    return f(T.inverse(base.sample((n,)))[0]).mean()


def _with_jacobian(f, T, base, n):
    x, ld = T(base.sample((n,)))
    return (f(x) * ld.exp()).mean()


expectation_of_pushforward.reference = lambda: reference_expectation
expectation_of_pushforward.mistakes = {
    "average of f over the base samples": (lambda: _no_map, "push them through the map"),
    "inverse instead of forward": (lambda: _inverse_map, "forward map"),
    "spurious Jacobian factor": (lambda: _with_jacobian, "no Jacobian"),
}


# ------------------------------------------------------------------ 3.2: p_theta(x) by change of variables


def reference_log_density(x, T, base):
    z, log_det_inv = T.inverse(x)
    return base.log_prob(z) + log_det_inv


def _points(seed: int, n: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 2.0 * torch.randn(n, 2, generator=g, dtype=torch.float64)


@exercise("3.2", notebook=NOTEBOOK, title="Density of a push-forward (change of variables)", points=2)
def change_of_variables(answer):
    """``answer(x, T, base)`` returns ``log p_theta(x)`` for ``p_theta = (T)_# base``, one value per row."""
    require_callable(answer, "log_density(x, T, base)")
    for T in (_maps()[0], _maps()[3]):
        x = _points(32)
        got = _tensor(answer(x.clone(), T, _base()), "log_density(x, T, base)", (len(x),))
        ref = Flow(T, base=_base()).log_prob(x).detach()
        if _close(got, ref):
            continue
        z, ld_inv = (t.detach() for t in T.inverse(x))
        base_lp = _base().log_prob(z)
        if _close(got, base_lp - ld_inv):
            raise ExerciseFailure(
                "sign error in the log-determinant: p_theta(x) = q_0(T^{-1}(x)) |det J_{T^{-1}}(x)|, so ADD "
                "the inverse map's log-determinant (or subtract the forward one at z = T^{-1}(x))"
            )
        if _close(got, ld_inv) or _close(got, -ld_inv):
            raise ExerciseFailure("the base log-density log q_0(T^{-1}(x)) is missing")
        if _close(got, base_lp):
            raise ExerciseFailure("the log-determinant is missing: the map changes volumes, add log|det J_{T^{-1}}(x)|")
        xf, ld_f = (t.detach() for t in T(x))
        if _close(got, _base().log_prob(xf) + ld_f) or _close(got, _base().log_prob(xf) - ld_f):
            raise ExerciseFailure("you pushed x through the forward map T; the density needs the inverse z = T^{-1}(x)")
        if _close(got, _base().log_prob(x) + ld_inv):
            raise ExerciseFailure("you evaluated the base at x; it must be evaluated at the latent code z = T^{-1}(x)")
        raise ExerciseFailure("log p_theta(x) is wrong: it is log q_0(T^{-1}(x)) + log|det J_{T^{-1}}(x)|")


change_of_variables.reference = lambda: reference_log_density
change_of_variables.mistakes = {
    "sign of the log-determinant": (
        lambda: (lambda x, T, base: base.log_prob(T.inverse(x)[0]) - T.inverse(x)[1]),
        "sign error",
    ),
    "base density missing": (lambda: (lambda x, T, base: T.inverse(x)[1]), "base log-density"),
    "forward map instead of inverse": (
        lambda: (lambda x, T, base: base.log_prob(T(x)[0]) + T(x)[1]),
        "forward map",
    ),
}


# ------------------------------------------------------------------ 3.3: the density of a composition


def reference_log_density_composition(x, maps, base):
    total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for T in reversed(maps):  # x = z_M -> z_{M-1} -> ... -> z_0
        x, ld = T.inverse(x)
        total = total + ld
    return base.log_prob(x) + total


@exercise("3.3", notebook=NOTEBOOK, title="Density of a composition of M maps", points=2)
def density_of_composition(answer):
    """``answer(x, maps, base)`` with ``maps = [T^1, ..., T^M]`` (sampling applies T^1 first)."""
    require_callable(answer, "log_density_composition(x, maps, base)")
    maps = _maps()
    x = _points(33)
    got = _tensor(answer(x.clone(), list(maps), _base()), "log_density_composition(x, maps, base)", (len(x),))
    ref = Flow(Compose(*maps), base=_base()).log_prob(x).detach()
    if _close(got, ref):
        return
    # diagnose: the latent codes and log-dets along the correct path
    with torch.no_grad():
        zs, lds = [x], []
        for T in reversed(maps):
            z, ld = T.inverse(zs[-1])
            zs.append(z)
            lds.append(ld)
        wrong_order = reference_log_density_composition(x, list(reversed(maps)), _base())
    if _close(got, wrong_order):
        raise ExerciseFailure(
            "the maps are inverted in the wrong order: T = T^M o ... o T^1, so T^{-1} = (T^1)^{-1} o ... o (T^M)^{-1} "
            "applies (T^M)^{-1} FIRST"
        )
    if _close(got, _base().log_prob(zs[-1]) + lds[-1]) or _close(got, _base().log_prob(zs[-1]) + lds[0]):
        raise ExerciseFailure("only one log-determinant is counted: sum the log-determinants of all M inverse maps")
    if _close(got, sum(lds)):
        raise ExerciseFailure("the base log-density log q_0(z_0) is missing")
    if _close(got, _base().log_prob(zs[-1]) - sum(lds)):
        raise ExerciseFailure("sign error: add the inverse maps' log-determinants")
    raise ExerciseFailure(
        "log p_theta(x) is wrong: with z_M = x and z_{m-1} = (T^m)^{-1}(z_m), it is "
        "log q_0(z_0) + sum_m log|det J_{(T^m)^{-1}}(z_m)|"
    )


def _last_only(x, maps, base):
    ld = None
    for T in reversed(maps):
        x, ld = T.inverse(x)
    return base.log_prob(x) + ld


density_of_composition.reference = lambda: reference_log_density_composition
density_of_composition.mistakes = {
    "wrong order of the inverses": (
        lambda: (lambda x, maps, base: reference_log_density_composition(x, list(reversed(maps)), base)),
        "wrong order",
    ),
    "only the last log-determinant": (lambda: _last_only, "sum the log-determinants"),
    "no base log-density": (
        lambda: (lambda x, maps, base: reference_log_density_composition(x, maps, base) - base.log_prob(
            Compose(*maps).inverse(x)[0])),
        "base log-density",
    ),
}


# ------------------------------------------------------------------ 3.4: the planar log-determinant


def reference_planar_log_det(z, w, u, b):
    a = z @ w + b
    return torch.log(torch.abs(1 + (1 - torch.tanh(a) ** 2) * (u @ w)))


def _planar_map(z, w, u, b):
    return z + torch.tanh(z @ w + b).unsqueeze(-1) * u


@exercise("3.4", notebook=NOTEBOOK, title="Log-determinant of a planar map", points=2)
def planar_log_det(answer):
    """``answer(z, w, u, b)``: ``log|det J_T(z)|`` for ``T(z) = z + u tanh(w^T z + b)``, one per row."""
    require_callable(answer, "planar_log_det(z, w, u, b)")
    g = torch.Generator().manual_seed(34)
    cases = [
        (torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.7, 0.3, -1.0]), 0.2),
        (torch.tensor([2.0, 1.0, 0.0]), torch.tensor([-1.2, 0.4, 2.0]), -0.5),  # u^T w < -1: det < 0 somewhere
    ]
    for w, u, b in cases:
        w, u = w.double(), u.double()
        z = torch.randn(16, 3, generator=g, dtype=torch.float64)
        got = _tensor(answer(z.clone(), w.clone(), u.clone(), torch.tensor(b, dtype=torch.float64)),
                      "planar_log_det(z, w, u, b)", (len(z),))
        J = torch.stack([jacobian(lambda v: _planar_map(v, w, u, b), zi) for zi in z])
        sign, ref = torch.linalg.slogdet(J)
        if _close(got, ref, 1e-8):
            continue
        a = z @ w + b
        t = torch.tanh(a)
        if torch.isnan(got).any():
            raise ExerciseFailure(
                "NaN: you took the log of a negative number. The determinant 1 + h'(a) u^T w can be negative "
                "(here u^T w < -1); take its absolute value"
            )
        if _close(got, torch.log(torch.abs(1 + t * (u @ w))), 1e-8):
            raise ExerciseFailure("you used h = tanh where its derivative belongs: h'(a) = 1 - tanh(a)^2")
        if _close(got, torch.log(torch.abs((1 - t**2) * (u @ w))), 1e-8):
            raise ExerciseFailure(
                "the identity part is missing: by the matrix determinant lemma det(I + u psi^T) = 1 + psi^T u"
            )
        diag = torch.log(torch.abs(1 + (1 - t**2).unsqueeze(-1) * u * w)).sum(-1)
        if _close(got, diag, 1e-8):
            raise ExerciseFailure(
                "you used only the diagonal of the Jacobian: I + h'(a) u w^T is a full matrix, not diagonal; "
                "use the matrix determinant lemma"
            )
        raise ExerciseFailure("the log-determinant is wrong: it is log|1 + h'(w^T z + b) u^T w| with h' = 1 - tanh^2")


planar_log_det.reference = lambda: reference_planar_log_det
planar_log_det.mistakes = {
    "h instead of h'": (lambda: (lambda z, w, u, b: torch.log(torch.abs(1 + torch.tanh(z @ w + b) * (u @ w)))),
                        "derivative"),
    "missing the identity": (
        lambda: (lambda z, w, u, b: torch.log(torch.abs((1 - torch.tanh(z @ w + b) ** 2) * (u @ w)))),
        "determinant lemma",
    ),
    "no absolute value": (lambda: (lambda z, w, u, b: torch.log(1 + (1 - torch.tanh(z @ w + b) ** 2) * (u @ w))),
                          "absolute value"),
    "diagonal only": (
        lambda: (lambda z, w, u, b: torch.log(torch.abs(
            1 + (1 - torch.tanh(z @ w + b) ** 2).unsqueeze(-1) * u * w)).sum(-1)),
        "diagonal",
    ),
}
