"""Plausible wrong answers to the exercises of chapter 4's section on residual flows (notebook
``ex04b_residual``, exercises 4.4 and 4.5), each filed under the mistake tag its check must report (a key
of the exercise's ``mistakes``, or a generic tag: ``in-place``, ``delegation``, ``contract``;
``tag#variant`` files several under one tag). ``tests/course/test_exercises.py`` reads ``WRONG`` here as
well as in ``ch04.py``: both modules hold chapter 4's exercises."""

import numpy as np
import torch
from torch.autograd.functional import jacobian, vjp

from coursekit.flows import ResidualBlock
from coursekit.flows._iterative import solve

# ------------------------------------------------------------------ 4.4 logdet_series(g, z, v, n_terms)


def _terms(g, z, v, n_terms, create_graph=True):
    """[v^T J^k v for k = 1..n_terms] by vector-Jacobian products."""
    out, w = [], v
    for _ in range(n_terms):
        w = vjp(g, z, w, create_graph=create_graph)[1]
        out.append((w * v).sum(1))
    return out


def _ser(g, z, v, n_terms, sign=lambda k: (-1) ** (k + 1), weight=lambda k: 1 / k):
    return sum(sign(k) * weight(k) * t for k, t in enumerate(_terms(g, z, v, n_terms), start=1))


def _ser_powers(g, z, v, n_terms):
    first = (vjp(g, z, v, create_graph=True)[1] * v).sum(1)
    return sum((-1) ** (k + 1) / k * first**k for k in range(1, n_terms + 1))


def _ser_from_zero(g, z, v, n_terms):
    total, w = 0.0, v
    for k in range(n_terms):  # one term short: the loop starts at 0 but skips the division by 0
        if k:
            total = total + (-1) ** (k + 1) / k * (w * v).sum(1)
        w = vjp(g, z, w, create_graph=True)[1]
    return total


def _ser_exact_traces(g, z, v, n_terms):
    J = jacobian(lambda t: g(t).sum(0), z, create_graph=True, vectorize=True).permute(1, 0, 2)
    total, P = 0.0, None
    for k in range(1, n_terms + 1):
        P = J if P is None else P @ J
        total = total + (-1) ** (k + 1) / k * P.diagonal(dim1=1, dim2=2).sum(-1)
    return total


def _ser_in_place(g, z, v, n_terms):
    total, w = 0.0, v
    for k in range(1, n_terms + 1):
        w.copy_(vjp(g, z, w.clone(), create_graph=False)[1])  # overwrites the caller's probes
        total = total + (-1) ** (k + 1) / k * (w * w).sum(1)
    return total


def _ser_z_requires_grad(g, z, v, n_terms):
    z.requires_grad_(True)  # "so that autograd can differentiate": flips the caller's flag
    return _ser(g, z, v, n_terms)


def _ser_detached(g, z, v, n_terms):
    total, w = 0.0, v
    for k in range(1, n_terms + 1):
        w = vjp(g, z, w)[1]  # create_graph=False: the estimate cannot be trained
        total = total + (-1) ** (k + 1) / k * (w * v).sum(1)
    return total


def _ser_numpy(g, z, v, n_terms):
    return torch.from_numpy(np.asarray(_ser(g, z, v, n_terms).detach().cpu().numpy()))


def _ser_delegates(g, z, v, n_terms):
    block = ResidualBlock(z.shape[1], logdet="series", n_terms=n_terms).to(z.dtype)
    block.g = g  # the block's own Hutchinson estimator, with its own probes
    return block(z)[1]


def _ser_delegates_private(g, z, v, n_terms):
    block = ResidualBlock(z.shape[1], logdet="series", n_terms=n_terms).to(z.dtype)
    zt = z.detach().requires_grad_()
    return block._log_det(g(zt), zt, create_graph=True)[0]


WRONG_44 = {
    "no-alternation": lambda g, z, v, n: _ser(g, z, v, n, sign=lambda k: 1),
    "no-1/k": lambda g, z, v, n: _ser(g, z, v, n, weight=lambda k: 1),
    "sign": lambda g, z, v, n: _ser(g, z, v, n, sign=lambda k: (-1) ** k),
    "powers-the-estimate": _ser_powers,
    "off-by-one": _ser_from_zero,
    "off-by-one#one-more": lambda g, z, v, n: _ser(g, z, v, n + 1),
    "ignores-probe": _ser_exact_traces,
    "in-place": _ser_in_place,
    "in-place#requires-grad": _ser_z_requires_grad,
    "contract#detached": _ser_detached,
    "contract#float64": lambda g, z, v, n: _ser(g, z, v, n).double(),
    "contract#numpy": _ser_numpy,
    "contract#per-coordinate": lambda g, z, v, n: vjp(g, z, v, create_graph=True)[1] * v,
    "contract#cpu": lambda g, z, v, n: _ser(g, z, v, n).cpu(),
    "delegation": _ser_delegates,
    "delegation#private": _ser_delegates_private,
}


# ------------------------------------------------------------------ 4.5 fixed_point(g, x, lip, n_iter)


def _fp(g, x, lip, n_iter, start=None, sign=-1.0, steps=None, keep_old=False, bound=None):
    z_old, z = x, (x if start is None else start)
    for _ in range(n_iter if steps is None else steps(n_iter)):
        z_old, z = z, x + sign * g(z)
    step = (z - z_old).norm(dim=1)
    b = lip / (1 - lip) * step if bound is None else bound(step, lip)
    return (z_old if keep_old else z), b


def _fp_overwrites_input(g, x, lip, n_iter):
    z_old, z = x.clone(), x
    for _ in range(n_iter):
        z_old = z.clone()
        z[:] = x - g(z_old)  # the first pass writes into the caller's x (z is x)
    return z, lip / (1 - lip) * (z - z_old).norm(dim=1)


def _fp_detached(g, x, lip, n_iter):
    with torch.no_grad():
        return _fp(g, x, lip, n_iter)


def _fp_scalar_bound(g, x, lip, n_iter):
    z, _ = _fp(g, x, lip, n_iter)
    z_prev, _ = _fp(g, x, lip, n_iter - 1)
    return z, lip / (1 - lip) * (z - z_prev).norm()  # one number for the batch


def _fp_numpy(g, x, lip, n_iter):
    z, b = _fp(g, x, lip, n_iter)
    return torch.from_numpy(z.detach().cpu().numpy()), b


def _fp_delegates(g, x, lip, n_iter):
    block = ResidualBlock(x.shape[1]).to(x.dtype).eval()
    block.g = g
    z = block.inverse(x)[0]
    return z, x.new_zeros(x.shape[0])


def _fp_delegates_solver(g, x, lip, n_iter):
    z = solve(lambda t: x - g(t), x.detach(), x, 1e-12, 10_000, lip / (1 - lip), "fixed point", "")
    return z, x.new_zeros(x.shape[0])


WRONG_45 = {
    "sign": lambda g, x, lip, n: _fp(g, x, lip, n, sign=1.0),
    "start": lambda g, x, lip, n: _fp(g, x, lip, n, start=torch.zeros_like(x)),
    "off-by-one": lambda g, x, lip, n: _fp(g, x, lip, n, steps=lambda k: k - 1),
    "off-by-one#one-more": lambda g, x, lip, n: _fp(g, x, lip, n, steps=lambda k: k + 1),
    "old-iterate": lambda g, x, lip, n: _fp(g, x, lip, n, keep_old=True),
    "no-factor": lambda g, x, lip, n: _fp(g, x, lip, n, bound=lambda s, L: s),
    "factor": lambda g, x, lip, n: _fp(g, x, lip, n, bound=lambda s, L: s / (1 - L)),
    "squared": lambda g, x, lip, n: _fp(g, x, lip, n, bound=lambda s, L: L / (1 - L) * s**2),
    "in-place": _fp_overwrites_input,
    "contract#detached": _fp_detached,
    "contract#float64": lambda g, x, lip, n: tuple(t.double() for t in _fp(g, x, lip, n)),
    "contract#scalar-bound": _fp_scalar_bound,
    "contract#numpy": _fp_numpy,
    "contract#cpu": lambda g, x, lip, n: tuple(t.cpu() for t in _fp(g, x, lip, n)),
    "delegation": _fp_delegates,
    "delegation#solver": _fp_delegates_solver,
}

WRONG = {"4.4": WRONG_44, "4.5": WRONG_45}


# Answers the checks must ACCEPT (right, written differently from the solution).
def _ser_autograd_grad(g, z, v, n_terms):
    zt = z if z.requires_grad else z.detach().requires_grad_()
    gz = g(zt)
    total, w = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device), v
    for k in range(1, n_terms + 1):
        w = torch.autograd.grad(gz, zt, w, create_graph=True)[0]
        total = total + (-1) ** (k + 1) / k * torch.einsum("ni,ni->n", w, v)
    return total


def _fp_list(g, x, lip, n_iter):
    zs = [x]
    for _ in range(n_iter):
        zs.append(x - g(zs[-1]))
    return zs[-1], lip / (1 - lip) * torch.linalg.vector_norm(zs[-1] - zs[-2], dim=-1)


RIGHT = {
    "4.4": {"torch.autograd.grad on one evaluation of g": _ser_autograd_grad},
    "4.5": {"a list of iterates": _fp_list},
}
