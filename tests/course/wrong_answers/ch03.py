"""Plausible wrong answers to the chapter 3 exercises, each filed under the mistake tag its check must
report (a key of the exercise's ``mistakes``, or a generic tag: ``in-place``, ``delegation``, ``contract``;
``tag#variant`` files several under one tag)."""

import math

import torch

from coursekit.flows import Compose, Flow, Planar

# ------------------------------------------------------------------ 3.1


def _e_no_map(f, T, base, n):
    return f(base.sample((n,))).mean()


def _e_inverse(f, T, base, n):
    return f(T.inverse(base.sample((n,)))[0]).mean()


def _e_jacobian(f, T, base, n):
    x, ld = T(base.sample((n,)))
    return (f(x) * ld.exp()).mean()


def _e_sum(f, T, base, n):
    x, _ = T(base.sample((n,)))
    return f(x).sum()


def _e_randn(f, T, base, n):
    z = torch.randn(n, T.dim, dtype=base.mean.dtype)
    return f(T(z)[0]).mean()


def _e_fixed_n(f, T, base, n):
    x, _ = T(base.sample((1000,)))
    return f(x).mean()


def _e_in_place(f, T, base, n):
    T.double()  # "for precision": converts the caller's map
    x, _ = T(base.sample((n,)).double())
    return f(x).mean()


def _e_float(f, T, base, n):
    x, _ = T(base.sample((n,)))
    return f(x).mean().item()


def _e_detached(f, T, base, n):
    with torch.no_grad():
        x, _ = T(base.sample((n,)))
        return f(x).mean()


def _e_float64(f, T, base, n):
    x, _ = T(base.sample((n,)))
    return f(x).double().mean()


def _e_keepdim(f, T, base, n):
    x, _ = T(base.sample((n,)))
    return f(x).mean().reshape(1)


def _e_delegates(f, T, base, n):
    return f(Flow(T, base).rsample(n)).mean()


def _e_one_at_a_time(f, T, base, n):
    # correct, drawn in n calls: must pass (through the Monte Carlo comparison)
    z = torch.stack([base.sample() for _ in range(n)])
    return f(T(z)[0]).mean()


WRONG_31 = {
    "no-map": _e_no_map,
    "inverse-map": _e_inverse,
    "jacobian": _e_jacobian,
    "sum-not-mean": _e_sum,
    "ignores-base": _e_randn,
    "ignores-n": _e_fixed_n,
    "in-place": _e_in_place,
    "contract#float": _e_float,
    "contract#detached": _e_detached,
    "contract#float64": _e_float64,
    "contract#shape": _e_keepdim,
    "contract#per-sample": lambda f, T, base, n: f(T(base.sample((n,)))[0]),
    "delegation": _e_delegates,
    "delegation#sample": lambda f, T, base, n: f(Flow(T, base).sample(n)).mean(),
}


# ------------------------------------------------------------------ 3.2


def _ld_in_place(x, T, base):
    z, ld = T.inverse(x)
    x.copy_(z)  # reuses the caller's buffer
    return base.log_prob(x) + ld


def _ld_std_normal(x, T, base):
    z, ld = T.inverse(x)
    return -0.5 * (z**2).sum(-1) - 0.5 * z.shape[1] * math.log(2 * math.pi) + ld


def _ld_per_coordinate(x, T, base):
    z, ld = T.inverse(x)
    return base.base_dist.log_prob(z) + ld[:, None] / z.shape[1]


WRONG_32 = {
    "sign": lambda x, T, base: base.log_prob(T.inverse(x)[0]) - T.inverse(x)[1],
    "sign#forward-log-det": lambda x, T, base: base.log_prob(T.inverse(x)[0]) + T(T.inverse(x)[0])[1],
    "no-base": lambda x, T, base: T.inverse(x)[1],
    "no-log-det": lambda x, T, base: base.log_prob(T.inverse(x)[0]),
    "forward-map": lambda x, T, base: base.log_prob(T(x)[0]) + T(x)[1],
    "base-at-x": lambda x, T, base: base.log_prob(x) + T.inverse(x)[1],
    "ignores-base": _ld_std_normal,
    "not-log": lambda x, T, base: (base.log_prob(T.inverse(x)[0]) + T.inverse(x)[1]).exp(),
    "in-place": _ld_in_place,
    "contract#float64": lambda x, T, base: (base.log_prob(T.inverse(x)[0]) + T.inverse(x)[1]).double(),
    "contract#detached": lambda x, T, base: (base.log_prob(T.inverse(x)[0]) + T.inverse(x)[1]).detach(),
    "contract#column": lambda x, T, base: (base.log_prob(T.inverse(x)[0]) + T.inverse(x)[1])[:, None],
    "contract#per-coordinate": _ld_per_coordinate,
    "delegation": lambda x, T, base: Flow(T, base).log_prob(x),
}


# ------------------------------------------------------------------ 3.3


def _ldc(x, maps, base, order=reversed, sign=1.0, only=None, with_base=True):
    total = x.new_zeros(x.shape[0])
    lds = []
    for T in order(maps):
        x, ld = T.inverse(x)
        lds.append(ld)
    total = sum(lds) if only is None else lds[only]
    return (base.log_prob(x) if with_base else 0) + sign * total


def _ldc_reverse_in_place(x, maps, base):
    maps.reverse()
    total = x.new_zeros(x.shape[0])
    for T in maps:
        x, ld = T.inverse(x)
        total = total + ld
    return base.log_prob(x) + total


def _ldc_forward(x, maps, base):
    total = x.new_zeros(x.shape[0])
    for T in maps:
        x, ld = T(x)
        total = total + ld
    return base.log_prob(x) + total


def _ldc_std_normal(x, maps, base):
    total = x.new_zeros(x.shape[0])
    for T in reversed(maps):
        x, ld = T.inverse(x)
        total = total + ld
    std = torch.distributions.Normal(torch.zeros_like(x[0]), torch.ones_like(x[0]))
    return std.log_prob(x).sum(-1) + total


def _ldc_zeros_default_dtype(x, maps, base):
    # the old solution: torch.zeros(n) has the default dtype, not x's
    total = torch.zeros(x.shape[0], dtype=torch.float64)
    for T in reversed(maps):
        x, ld = T.inverse(x)
        total = total + ld
    return base.log_prob(x) + total


def _ldc_delegates(x, maps, base):
    z, ld = Compose(*maps).inverse(x)
    return base.log_prob(z) + ld


WRONG_33 = {
    "order": lambda x, maps, base: _ldc(x, maps, base, order=list),
    "forward-maps": _ldc_forward,
    "one-log-det": lambda x, maps, base: _ldc(x, maps, base, only=-1),
    "one-log-det#first": lambda x, maps, base: _ldc(x, maps, base, only=0),
    "no-base": lambda x, maps, base: _ldc(x, maps, base, with_base=False),
    "sign": lambda x, maps, base: _ldc(x, maps, base, sign=-1.0),
    "ignores-base": _ldc_std_normal,
    "in-place": _ldc_reverse_in_place,
    "contract#float64": _ldc_zeros_default_dtype,
    "contract#detached": lambda x, maps, base: _ldc(x, maps, base).detach(),
    "delegation": _ldc_delegates,
    "delegation#flow": lambda x, maps, base: Flow(Compose(*maps), base).log_prob(x),
}


# ------------------------------------------------------------------ 3.4


def _pld(z, w, u, b):
    return torch.log(torch.abs(1 + (1 - torch.tanh(z @ w + b) ** 2) * (u @ w)))


def _pld_in_place(z, w, u, b):
    # enforce invertibility u^T w >= -1 ... on the caller's u
    uw = u @ w
    if uw < -1:
        with torch.no_grad():
            u += (-1 - uw) * w / (w @ w)
    return _pld(z, w, u, b)


def _pld_delegates(z, w, u, b):
    T = Planar(len(w)).to(z.dtype)
    with torch.no_grad():
        T.w.copy_(w)
        T.u.copy_(u)
        T.b.copy_(b)
    return T(z)[1]


def _pld_autograd(z, w, u, b):
    # correct, but O(p^3): autograd Jacobian and slogdet; allowed by the rule
    J = torch.eye(len(w), dtype=z.dtype, device=z.device) + (1 - torch.tanh(z @ w + b) ** 2)[:, None, None] * u[:, None] * w[None, :]
    return torch.linalg.slogdet(J)[1]


WRONG_34 = {
    "no-abs": lambda z, w, u, b: torch.log(1 + (1 - torch.tanh(z @ w + b) ** 2) * (u @ w)),
    "no-abs#log1p": lambda z, w, u, b: torch.log1p((1 - torch.tanh(z @ w + b) ** 2) * (u @ w)),
    "h-not-hprime": lambda z, w, u, b: torch.log(torch.abs(1 + torch.tanh(z @ w + b) * (u @ w))),
    "no-identity": lambda z, w, u, b: torch.log(torch.abs((1 - torch.tanh(z @ w + b) ** 2) * (u @ w))),
    "diagonal": lambda z, w, u, b: torch.log(torch.abs(
        1 + (1 - torch.tanh(z @ w + b) ** 2).unsqueeze(-1) * u * w)).sum(-1),
    "not-log": lambda z, w, u, b: torch.abs(1 + (1 - torch.tanh(z @ w + b) ** 2) * (u @ w)),
    "in-place": _pld_in_place,
    "contract#float64": lambda z, w, u, b: _pld(z.double(), w.double(), u.double(), b.double()),
    "contract#detached": lambda z, w, u, b: _pld(z, w, u, b).detach(),
    "contract#column": lambda z, w, u, b: _pld(z, w, u, b)[:, None],
    "delegation": _pld_delegates,
}

WRONG = {"3.1": WRONG_31, "3.2": WRONG_32, "3.3": WRONG_33, "3.4": WRONG_34}

# Answers the checks must ACCEPT (correct, written differently from the solution).
RIGHT = {
    "3.1": {"one sample at a time": _e_one_at_a_time},
    "3.4": {"autograd Jacobian": _pld_autograd},
}
