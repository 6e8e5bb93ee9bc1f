"""Checks of the chapter 3 exercises (notebook ``ex03_change_of_variables``): the expectation of a
push-forward, the change-of-variables density, the density of a composition, the planar log-determinant.

Each check draws several independent problems: the dimension, the maps (planar and radial, with
random parameters; compositions of two to four of them), the base distribution (a standard normal,
a diagonal Gaussian, a Laplace), the test function and the sample size, in float32 and float64. The
expected values are computed by the check in float64 before the answer runs; the answer runs
through :func:`call` (inputs unchanged; coursekit's own implementation of the formula is trapped)
and each result is validated with :func:`expect` (shape, dtype and device follow the input, the
result stays on the autograd graph, since these are the quantities a flow is trained with).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor
from torch.distributions import Independent, Laplace, Normal

from torch import nn

from ...flows import Bijection, Compose, Planar, Radial
from ..registry import exercise
from ._common import close, draws, expect, fail, randint, randomised, require_callable, uniforms
from .ch02 import CASES, F64, _tol, attached, on_device, probe_devices, run_answer

__all__ = ["expectation_of_pushforward", "change_of_variables", "density_of_composition", "planar_log_det"]

NOTEBOOK = "ex03_change_of_variables"


# ------------------------------------------------------------------ problems


class _Counted(Independent):
    """An ``Independent`` distribution that counts the points drawn from it."""

    def __init__(self, base_dist, ndims):
        super().__init__(base_dist, ndims, validate_args=False)
        self.drawn = 0
        self.calls = []  # (method name, sample shape) of every draw

    def _count(self, out: Tensor, method: str, sample_shape) -> Tensor:
        self.drawn += math.prod(out.shape[: out.dim() - len(self.event_shape)])
        self.calls.append((method, tuple(sample_shape)))
        return out

    def sample(self, sample_shape=torch.Size()):
        return self._count(super().sample(sample_shape), "sample", sample_shape)

    def rsample(self, sample_shape=torch.Size()):
        return self._count(super().rsample(sample_shape), "rsample", sample_shape)


def _base(kind: str, p: int, g: torch.Generator, dtype=F64, device="cpu") -> Independent:
    """A base distribution on R^p: ``"normal"`` (standard), ``"diag"`` (shifted, scaled), ``"laplace"``."""
    loc = torch.zeros(p, dtype=F64) if kind == "normal" else 0.5 * torch.randn(p, generator=g, dtype=F64)
    scale = torch.ones(p, dtype=F64) if kind == "normal" else uniforms(g, 0.6, 1.6, (p,))
    loc, scale = loc.to(dtype=dtype, device=device), scale.to(dtype=dtype, device=device)
    dist = Laplace(loc, scale, validate_args=False) if kind == "laplace" else Normal(loc, scale, validate_args=False)
    return _Counted(dist, 1)


class _Affine(Bijection):
    """x = a * z + c, coordinate-wise: the cheapest map, for the meta-device probes (every operation
    on meta tensors goes through Python)."""

    def __init__(self, dim: int):
        super().__init__(dim)
        self.a = nn.Parameter(torch.linspace(0.5, 1.5, dim))
        self.c = nn.Parameter(torch.linspace(-1.0, 1.0, dim))

    def _forward(self, z):
        return z * self.a + self.c, self.a.abs().log().sum().expand(z.shape[0])

    def _inverse(self, x):
        return (x - self.c) / self.a, -self.a.abs().log().sum().expand(x.shape[0])


def _map(kind: str, p: int, g: torch.Generator, dtype=F64):
    """A planar or radial map with random parameters (invertible by construction)."""
    if kind == "planar":
        T = randomised(Planar(p), g, scale=0.9, dtype=dtype)
    else:
        T = randomised(Radial(p), g, scale=0.7, dtype=dtype)
    return T


def _maps(M: int, p: int, g: torch.Generator, dtype=F64) -> list:
    kinds = ["planar", "radial"] * M
    start = randint(g, 0, 1)
    return [_map(kinds[start + i], p, g, dtype) for i in range(M)]


def _f64(T):
    """A float64 copy of a map (or list of maps), for the check's own computations."""
    return copy.deepcopy(T).to(F64) if not isinstance(T, list) else [copy.deepcopy(t).to(F64) for t in T]


def _same_base64(base: Independent) -> Independent:
    d = base.base_dist
    return Independent(type(d)(d.loc.detach().to(F64), d.scale.detach().to(F64), validate_args=False), 1,
                       validate_args=False)


def _std_normal(p: int) -> Independent:
    return Independent(Normal(torch.zeros(p, dtype=F64), torch.ones(p, dtype=F64)), 1)


def _points(g: torch.Generator, n: int, p: int, T, base64) -> Tensor:
    """Half pushed-forward base samples (where the density lives), half wide random points."""
    with torch.no_grad():
        z = base64.base_dist.loc + base64.base_dist.scale * torch.randn(n - n // 2, p, generator=g, dtype=F64)
        maps = T if isinstance(T, list) else [T]
        for m in maps:
            z = m(z)[0]
    return torch.cat([z, 2.0 * torch.randn(n // 2, p, generator=g, dtype=F64)])


def _log_density_output(out, n: int, x: Tensor, name: str) -> Tensor:
    if isinstance(out, Tensor) and out.dim() == 2 and out.shape[0] == n and out.shape[1] == x.shape[1]:
        fail(f"`{name}` has one value per coordinate, shape (n, p): sum the base log-density over the "
             "coordinates (base.log_prob(z) does it for you), one value per row of x", mistake="contract")
    return expect(out, name, shape=(n,), like=x, hint="one value per row of x")


# ------------------------------------------------------------------ 3.1: E_theta[f(X)] through the base


def _f_square(x):
    return (x[:, 0] - 1.0) ** 2 + x[:, -1]


def _f_wave(x):
    return torch.sin(2.0 * x).sum(-1) + x[:, 0] * x[:, -1]


def _f_bump(x):
    return 3.0 * torch.exp(-0.5 * (x**2).sum(-1)) + x[:, -1]


TEST_FUNCTIONS = (_f_square, _f_wave, _f_bump)


@exercise("3.1", notebook=NOTEBOOK, answer="expectation", title="Expectation under a push-forward (Monte Carlo)",
          points=2,
          mistakes={
              "no-map": "averaged f over the base samples, without pushing them through T",
              "inverse-map": "pushed the base samples through the inverse map",
              "jacobian": "weighted f by a Jacobian determinant",
              "sum-not-mean": "summed f over the samples instead of averaging",
              "ignores-base": "drew its own noise instead of sampling from `base`",
              "ignores-n": "used a number of samples other than n",
          },
          forbidden={"coursekit.flows.base.Flow.rsample_and_log_prob": "samples of the flow T_# base "
                                                                       "(Flow.rsample)",
                     "coursekit.flows.base.Flow.sample": "samples of the flow T_# base (Flow.sample)"})
def expectation_of_pushforward(answer):
    """``answer(f, T, base, n)`` estimates ``E[f(X)]``, ``X = T(Z)``, ``Z ~ base``, with n samples."""
    require_callable(answer, "expectation")
    kinds = ["normal", "diag", "laplace"]
    for i, (g, (dtype, _)) in enumerate(zip(draws(len(CASES)), CASES)):
        p = randint(g, 2, 4)
        n = 100 * randint(g, 5, 20)
        T = Compose(*_maps(randint(g, 2, 3), p, g, dtype))
        base = _base(kinds[i], p, g, dtype)
        f = TEST_FUNCTIONS[randint(g, 0, len(TEST_FUNCTIONS) - 1)]
        seed = int(torch.randint(2**62, (1,), generator=g))
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            est = run_answer(answer, f, T, base, n, what="expectation(f, T, base, n)")
            drawn, calls = base.drawn, list(base.calls)
            torch.default_generator.manual_seed(seed)
            # the same draw as the answer's, when it drew all its points at once
            method, shape = calls[0] if len(calls) == 1 else ("sample", (n,))
            with torch.no_grad():
                z = getattr(base, method)(shape).reshape(n, p) if drawn == n else None
        if drawn == 0:
            fail("your function never samples from `base`: draw the z_i with base.sample((n,)) (the base is "
                 "not always a standard normal)", mistake="ignores-base")
        if drawn != n:
            fail("use exactly n samples of the base: your function drew a different number of points "
                 "(base.sample((n,)) draws n of them)", mistake="ignores-n")
        if isinstance(est, Tensor) and tuple(est.shape) == (n,):
            fail("you returned f at every sample: the estimate is their average, one number",
                 mistake="contract")
        got = float(expect(est, "expectation(f, T, base, n)", shape=(), like=z,
                           hint="a 0-d tensor: the average, not a Python float"))
        # the same base points (same seed): a correct answer reproduces this up to rounding
        base64, T64, z64 = _same_base64(base), _f64(T), z.to(F64)
        with torch.no_grad():
            x64, ld64 = T64(z64)
            fx = f(x64)
            replay = float(fx.mean())
        tol = _tol(dtype) * 10
        if abs(got - replay) <= tol * (1 + abs(replay)):
            attached(est, "expectation(f, T, base, n)")
            continue
        with torch.no_grad():
            alternatives = [
                ("no-map", [f(z64).mean()],
                 "you averaged f(Z) over the base samples: push them through the map first, X = T(Z)"),
                ("inverse-map", [f(T64.inverse(z64)[0]).mean()],
                 "you applied the inverse map to the base samples; sampling uses the forward map X = T(Z) "
                 "(the first output of T(z))"),
                ("jacobian", [(fx * ld64.exp()).mean(), (fx * (-ld64).exp()).mean()],
                 "you weighted f by |det J_T|: with Z ~ nu_0 the expectation is a plain average of f(T(Z)); "
                 "no Jacobian appears (it appears when integrating in x against p_theta)"),
                ("sum-not-mean", [fx.sum()],
                 "you summed f(T(z_i)) over the samples: the estimate is their average (divide by n)"),
            ]
        dtol = max(tol, 1e-5)
        for tag, values, message in alternatives:
            if any(abs(got - float(v)) <= dtol * (1 + abs(float(v))) for v in values):
                fail(message, mistake=tag)
        if len(calls) == 1:  # same points as the replay, which it does not match
            fail("the estimate is wrong: it should be the average of f(T(z_i)) over the n samples z_i of "
                 "the base (with these very samples, yours differs)")
        # the base points were drawn in several calls: judge by the Monte Carlo error against an
        # independent large sample
        with torch.no_grad():
            fb = f(T64(_big_sample(base64, seed))[0])
            exact = float(fb.mean())
            se = float(fb.std()) * math.sqrt(1 / n + 1 / len(fb))
        if abs(got - exact) <= 5 * se:
            attached(est, "expectation(f, T, base, n)")
            continue
        side = "too large" if got > exact else "too small"
        fail(f"your estimate is {side}: it is further from E[f(X)] than the Monte Carlo error explains. "
             "Average f(T(z_i)) over n samples z_i of the base")

    def make(device):
        g = torch.Generator().manual_seed(0)
        T = Compose(_Affine(2), _Affine(2)).to(device)
        return _f_square, T, _base("diag", 2, g, torch.float32, device), 10

    def validate(result, args):
        on_device(result, "expectation(f, T, base, n)", args[2].base_dist.loc)

    probe_devices(answer, make, validate)


def _big_sample(base64: Independent, seed: int, size: int = 40_000) -> Tensor:
    """Independent base points for the Monte Carlo reference (from their own generator)."""
    g = torch.Generator().manual_seed(seed ^ 0x5DEECE66D)
    d = base64.base_dist
    if isinstance(d, Laplace):
        u = torch.rand(size, d.loc.shape[0], generator=g, dtype=F64) - 0.5
        return d.loc - d.scale * u.sign() * torch.log1p(-2 * u.abs())
    return d.loc + d.scale * torch.randn(size, d.loc.shape[0], generator=g, dtype=F64)


# ------------------------------------------------------------------ 3.2: p_theta(x) by change of variables


def _change_of_variables_problem(i: int, g: torch.Generator, dtype):
    p = randint(g, 2, 4)
    while True:
        n = randint(g, 8, 16)
        if n != p:
            break
    kind = ("planar", "radial", "planar")[i % 3]
    T = _map(kind, p, g, dtype)
    base = _base(("laplace", "diag", "normal")[i % 3], p, g, dtype)
    base64, T64 = _same_base64(base), _f64(T)
    x64 = _points(g, n, p, T64, base64)
    return T, base, T64, base64, x64


@exercise("3.2", notebook=NOTEBOOK, answer="log_density", title="Density of a push-forward (change of variables)",
          points=2,
          mistakes={
              "sign": "subtracted the inverse map's log-determinant instead of adding it",
              "no-base": "left out the base log-density log q_0(T^{-1}(x))",
              "no-log-det": "left out the log-determinant",
              "forward-map": "pushed x through the forward map T instead of the inverse",
              "base-at-x": "evaluated the base log-density at x instead of at z = T^{-1}(x)",
              "ignores-base": "used a standard normal log-density instead of `base`",
              "not-log": "returned the density p_theta(x) instead of its logarithm",
          },
          forbidden={"coursekit.flows.base.Flow.log_prob": "the flow's own change-of-variables log-density"})
def change_of_variables(answer):
    """``answer(x, T, base)`` returns ``log p_theta(x)`` for ``p_theta = (T)_# base``, one value per row."""
    require_callable(answer, "log_density")
    for i, (g, (dtype, grad)) in enumerate(zip(draws(len(CASES)), CASES)):
        T, base, T64, base64, x64 = _change_of_variables_problem(i, g, dtype)
        x = x64.to(dtype).requires_grad_(grad)
        n, p = x.shape
        with torch.no_grad():
            z, ld = T64.inverse(x64)
            blp = base64.log_prob(z)
            ref = blp + ld
        out = run_answer(answer, x, T, base, what="log_density(x, T, base)")
        got = _log_density_output(out, n, x, "log_density(x, T, base)")
        tol = _tol(dtype) * 10
        if close(got, ref, tol):
            attached(out, "log_density(x, T, base)")
            continue
        with torch.no_grad():
            xf, ldf = T64(x64)
            std = _std_normal(p)
            candidates = [
                ("sign", [blp - ld],
                 "sign error in the log-determinant: p_theta(x) = q_0(T^{-1}(x)) |det J_{T^{-1}}(x)|, so ADD the "
                 "inverse map's log-determinant (the second output of T.inverse), or subtract the forward one "
                 "at z = T^{-1}(x)"),
                ("not-log", [ref.exp()], "you returned the density p_theta(x); the function returns its logarithm"),
                ("no-base", [ld, -ld], "the base log-density log q_0(T^{-1}(x)) is missing"),
                ("no-log-det", [blp],
                 "the log-determinant is missing: the map changes volumes, add log|det J_{T^{-1}}(x)|"),
                ("forward-map", [base64.log_prob(xf) + ldf, base64.log_prob(xf) - ldf],
                 "you pushed x through the forward map T; the density needs the inverse, z = T^{-1}(x)"),
                ("base-at-x", [base64.log_prob(x64) + ld, base64.log_prob(x64) - ld],
                 "you evaluated the base at x; it must be evaluated at the latent code z = T^{-1}(x)"),
                ("ignores-base", [std.log_prob(z) + ld, std.log_prob(z) - ld],
                 "you used the standard normal log-density; use the base you are given, base.log_prob(z) "
                 "(here it is not a standard normal)"),
            ]
        for tag, values, message in candidates:
            if any(close(got, v, max(tol, 1e-5)) for v in values):
                fail(message, mistake=tag)
        fail("log p_theta(x) is wrong: it is log q_0(T^{-1}(x)) + log|det J_{T^{-1}}(x)|")

    def make(device):
        g = torch.Generator().manual_seed(0)
        T = _Affine(3).to(device)
        return torch.randn(5, 3, device=device), T, _base("diag", 3, g, torch.float32, device)

    def validate(result, args):
        on_device(result, "log_density(x, T, base)", args[0])

    probe_devices(answer, make, validate)


# ------------------------------------------------------------------ 3.3: the density of a composition


def _composition_log_density(x, maps, base, order="right"):
    """The check's own z_0 and log-determinants along the inverse pass (float64, no grad)."""
    lds = []
    for T in (reversed(maps) if order == "right" else maps):
        x, ld = T.inverse(x)
        lds.append(ld)
    return x, lds


@exercise("3.3", notebook=NOTEBOOK, answer="log_density_composition", title="Density of a composition of M maps",
          points=2,
          mistakes={
              "order": "inverted the maps in the wrong order (T^1 first instead of T^M first)",
              "forward-maps": "applied the forward maps to x instead of their inverses",
              "one-log-det": "counted only one of the M log-determinants",
              "no-base": "left out the base log-density log q_0(z_0)",
              "sign": "subtracted the inverse maps' log-determinants instead of adding them",
              "ignores-base": "used a standard normal log-density instead of `base`",
          },
          forbidden={
              "coursekit.flows.base.Compose._inverse": "the inverse of the composition, with its summed "
                                                      "log-determinant",
              "coursekit.flows.base.Compose._forward": "the composition's forward map",
              "coursekit.flows.base.Flow.log_prob": "the flow's own change-of-variables log-density",
          })
def density_of_composition(answer):
    """``answer(x, maps, base)`` with ``maps = [T^1, ..., T^M]`` (sampling applies T^1 first)."""
    require_callable(answer, "log_density_composition")
    for i, (g, (dtype, grad)) in enumerate(zip(draws(len(CASES)), CASES)):
        p = randint(g, 2, 4)
        while True:
            n = randint(g, 8, 16)
            if n != p:
                break
        M = 2 + (i + randint(g, 0, 2)) % 3  # 2, 3 or 4 maps, not the same count in every problem
        maps = _maps(M, p, g, dtype)
        base = _base(("diag", "laplace", "normal")[i % 3], p, g, dtype)
        maps64, base64 = _f64(maps), _same_base64(base)
        x64 = _points(g, n, p, maps64, base64)
        x = x64.to(dtype).requires_grad_(grad)
        with torch.no_grad():
            z0, lds = _composition_log_density(x64, maps64, base64)
            blp = base64.log_prob(z0)
            ref = blp + sum(lds)
        given = list(maps)
        out = run_answer(answer, x, given, base, what="log_density_composition(x, maps, base)")
        got = _log_density_output(out, n, x, "log_density_composition(x, maps, base)")
        tol = _tol(dtype) * 10
        if close(got, ref, tol):
            attached(out, "log_density_composition(x, maps, base)")
            continue
        with torch.no_grad():
            zw, ldw = _composition_log_density(x64, maps64, base64, order="left")
            xf, ldf = x64, []
            for T in maps64:
                xf, ld = T(xf)
                ldf.append(ld)
            std = _std_normal(p)
            candidates = [
                ("order", [base64.log_prob(zw) + sum(ldw)],
                 "the maps are inverted in the wrong order: T = T^M o ... o T^1, so "
                 "T^{-1} = (T^1)^{-1} o ... o (T^M)^{-1} applies (T^M)^{-1} FIRST (the last map of the list)"),
                ("forward-maps", [base64.log_prob(xf) + sum(ldf), base64.log_prob(xf) - sum(ldf)],
                 "you applied the forward maps to x; the density needs the inverses, "
                 "z_{m-1} = (T^m)^{-1}(z_m) with T.inverse"),
                ("one-log-det", [blp + lds[-1], blp + lds[0]],
                 "only one log-determinant is counted: add up the log-determinants of all M inverse maps"),
                ("no-base", [sum(lds)], "the base log-density log q_0(z_0) is missing"),
                ("sign", [blp - sum(lds)], "sign error: ADD the inverse maps' log-determinants (or subtract the "
                                           "forward ones)"),
                ("ignores-base", [std.log_prob(z0) + sum(lds)],
                 "you used the standard normal log-density; use the base you are given, base.log_prob(z_0) "
                 "(here it is not a standard normal)"),
            ]
        for tag, values, message in candidates:
            if any(close(got, v, max(tol, 1e-5)) for v in values):
                fail(message, mistake=tag)
        fail("log p_theta(x) is wrong: with z_M = x and z_{m-1} = (T^m)^{-1}(z_m), it is "
             "log q_0(z_0) + sum_m log|det J_{(T^m)^{-1}}(z_m)|")

    def make(device):
        g = torch.Generator().manual_seed(0)
        maps = [_Affine(3).to(device), _Affine(3).to(device)]
        return torch.randn(5, 3, device=device), maps, _base("diag", 3, g, torch.float32, device)

    def validate(result, args):
        on_device(result, "log_density_composition(x, maps, base)", args[0])

    probe_devices(answer, make, validate)


# ------------------------------------------------------------------ 3.4: the planar log-determinant


def _planar_problem(i: int, g: torch.Generator):
    """(z, w, u, b) in float64; problem 0 has u^T w < -1, where the determinant is negative near
    the hyperplane w^T z + b = 0 (a few rows are put there)."""
    while True:
        p, n = randint(g, 2, 5), randint(g, 8, 16)
        if n != p:
            break
    w = torch.randn(p, generator=g, dtype=F64) * uniforms(g, 0.5, 1.5)
    u = torch.randn(p, generator=g, dtype=F64)
    target = float(uniforms(g, -3.0, -1.8)) if i == 0 else float(uniforms(g, -0.7, 2.5))
    u = u + (target - u @ w) * w / (w @ w)  # now u^T w = target
    b = uniforms(g, 0.2, 0.8) * torch.sign(torch.randn((), generator=g, dtype=F64))
    z = 1.5 * torch.randn(n, p, generator=g, dtype=F64)
    a = torch.cat([uniforms(g, -0.3, 0.3, (3,)), z[3:] @ w + b])  # three rows close to the hyperplane
    z = z + ((a - (z @ w + b)) / (w @ w))[:, None] * w
    return z, w, u, b


def _jacobian_slogdet(z, w, u, b):
    """log|det| of the Jacobian I + h'(a) u w^T, built entry by entry (no determinant lemma)."""
    hp = 1 - torch.tanh(z @ w + b) ** 2
    J = torch.eye(len(w), dtype=F64) + hp[:, None, None] * u[None, :, None] * w[None, None, :]
    sign, logabs = torch.linalg.slogdet(J)
    return sign, logabs


@exercise("3.4", notebook=NOTEBOOK, answer="planar_log_det", title="Log-determinant of a planar map", points=2,
          mistakes={
              "no-abs": "took the log of the determinant without its absolute value (it can be negative)",
              "h-not-hprime": "used h = tanh where its derivative h' = 1 - tanh^2 belongs",
              "no-identity": "left out the identity: log|h'(a) u^T w| instead of log|1 + h'(a) u^T w|",
              "diagonal": "multiplied the diagonal entries of the Jacobian, as if it were diagonal",
              "not-log": "returned |det J| instead of its logarithm",
          },
          forbidden={
              "coursekit.flows.planar.Planar._forward": "the planar layer's own log-determinant",
              "coursekit.flows.planar.Planar._inverse": "the planar layer's own inverse and log-determinant",
          })
def planar_log_det(answer):
    """``answer(z, w, u, b)``: ``log|det J_T(z)|`` for ``T(z) = z + u tanh(w^T z + b)``, one per row."""
    require_callable(answer, "planar_log_det")
    for i, (g, (dtype, grad)) in enumerate(zip(draws(len(CASES)), CASES)):
        z64, w64, u64, b64 = _planar_problem(i, g)
        n, p = z64.shape
        z, w, u, b = (t.to(dtype) for t in (z64, w64, u64, b64))
        for t in (w, u, b):
            t.requires_grad_(grad)
        sign, ref = _jacobian_slogdet(z64, w64, u64, b64)
        out = run_answer(answer, z, w, u, b, what="planar_log_det(z, w, u, b)")
        if isinstance(out, Tensor) and tuple(out.shape) == (n,) and out.is_floating_point():
            nan = torch.isnan(out.detach().cpu())
            if bool(nan.any()) and bool((sign[nan] < 0).all()):
                fail("NaN: you took the log of a negative number. The determinant 1 + h'(a) u^T w can be "
                     "negative (here u^T w < -1); take the log of its absolute value", mistake="no-abs")
        got = expect(out, "planar_log_det(z, w, u, b)", shape=(n,), like=z, hint="one value per row of z")
        tol = _tol(dtype) * 10
        if close(got, ref, tol):
            attached(out, "planar_log_det(z, w, u, b)", grad)
            continue
        a = z64 @ w64 + b64
        t = torch.tanh(a)
        uw = u64 @ w64
        candidates = [
            ("not-log", [ref.exp()], "you returned |det J_T(z)|; the function returns its logarithm"),
            ("h-not-hprime", [torch.log(torch.abs(1 + t * uw))],
             "you used h = tanh where its derivative belongs: h'(a) = 1 - tanh(a)^2"),
            ("no-identity", [torch.log(torch.abs((1 - t**2) * uw))],
             "the identity part is missing: by the matrix determinant lemma det(I + u psi^T) = 1 + psi^T u"),
            ("diagonal", [torch.log(torch.abs(1 + (1 - t**2)[:, None] * u64 * w64)).sum(-1)],
             "you used only the diagonal of the Jacobian: I + h'(a) u w^T is a full matrix, not diagonal; use "
             "the matrix determinant lemma"),
        ]
        for tag, values, message in candidates:
            if any(close(got, v, max(tol, 1e-5)) for v in values):
                fail(message, mistake=tag)
        fail("the log-determinant is wrong: it is log|1 + h'(w^T z + b) u^T w| with h' = 1 - tanh^2")

    def make(device):
        return (torch.randn(5, 3, device=device), torch.randn(3, device=device), torch.randn(3, device=device),
                torch.tensor(0.3, device=device))

    def validate(result, args):
        on_device(result, "planar_log_det(z, w, u, b)", args[0])

    probe_devices(answer, make, validate)
