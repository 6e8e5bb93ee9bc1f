"""Plausible wrong answers to the chapter 5 exercises (notebook ``ex05_autoregressive``), each filed under
the mistake tag its check must report (a key of the exercise's ``mistakes``, or a generic tag: ``in-place``,
``delegation``, ``contract``; ``tag#variant`` files several under one tag)."""

import math

import numpy as np
import torch
from torch import nn

from coursekit.flows import IAF, MAF, SigmoidAR
from coursekit.flows.autoregressive import AutoregressiveFlow

LOG_2PI = math.log(2 * math.pi)

# ------------------------------------------------------------------ 5.1 maf_inverse(x, conditioner)


def _maf(x, conditioner):
    m, alpha = conditioner(x)
    return (x - m) * torch.exp(-alpha), -alpha.sum(-1)


def _maf_swapped(x, conditioner):
    alpha, m = conditioner(x)  # the pair is (m, alpha)
    return (x - m) * torch.exp(-alpha), -alpha.sum(-1)


def _maf_prefix(x, conditioner):
    # m_i(x_{1:i-1}) read literally: feed the network the coordinates before i
    z = torch.empty_like(x)
    log_det = x.new_zeros(x.shape[0])
    for i in range(x.shape[1]):
        m, alpha = conditioner(x[:, :i])
        z[:, i] = (x[:, i] - m[:, i]) * torch.exp(-alpha[:, i])
        log_det = log_det - alpha[:, i]
    return z, log_det


def _maf_two_passes(x, conditioner):
    m = conditioner(x)[0]
    alpha = conditioner(x)[1]
    return (x - m) * torch.exp(-alpha), -alpha.sum(-1)


def _maf_loop(x, conditioner):
    # one coordinate at a time, as the sampler does: p passes where one suffices
    z = torch.empty_like(x)
    for i in range(x.shape[1]):
        m, alpha = conditioner(x)
        z[:, i] = (x[:, i] - m[:, i]) * torch.exp(-alpha[:, i])
    return z, -conditioner(x)[1].sum(-1)


def _maf_in_place(x, conditioner):
    m, alpha = conditioner(x)
    x -= m  # the caller's x
    x *= torch.exp(-alpha)
    return x, -alpha.sum(-1)


def _maf_requires_grad(x, conditioner):
    x.requires_grad_(True)  # "to train the flow": flips the caller's flag
    return _maf(x, conditioner)


def _maf_float64(x, conditioner):
    z, ld = _maf(x, conditioner)
    return z.double(), ld.double()


def _maf_detached(x, conditioner):
    with torch.no_grad():
        m, alpha = conditioner(x)  # "the parameters are constants here"
    return (x - m) * torch.exp(-alpha), -alpha.sum(-1)


def _maf_numpy(x, conditioner):
    m, alpha = (t.detach().numpy() for t in conditioner(x))
    a = x.detach().numpy()
    return torch.from_numpy((a - m) * np.exp(-alpha)), torch.from_numpy(-alpha.sum(-1))


def _maf_delegates(x, conditioner):
    return MAF(x.shape[1], conditioner=conditioner).inverse(x)


def _maf_delegates_private(x, conditioner):
    return MAF(x.shape[1], conditioner=conditioner)._inverse(x)


def _maf_delegates_iaf(x, conditioner):
    return IAF.from_maf(MAF(x.shape[1], conditioner=conditioner))(x)


WRONG_51 = {
    "scales-up": lambda x, c: (lambda m, a: ((x - m) * torch.exp(a), -a.sum(-1)))(*c(x)),
    "scale-before-shift": lambda x, c: (lambda m, a: (x * torch.exp(-a) - m, -a.sum(-1)))(*c(x)),
    "forgets-shift": lambda x, c: (lambda m, a: (x * torch.exp(-a), -a.sum(-1)))(*c(x)),
    "forward-map": lambda x, c: (lambda m, a: (torch.exp(a) * x + m, -a.sum(-1)))(*c(x)),
    "swaps-outputs": _maf_swapped,
    "prefix": _maf_prefix,
    "logdet-sign": lambda x, c: (lambda m, a: ((x - m) * torch.exp(-a), a.sum(-1)))(*c(x)),
    "logdet-not-log": lambda x, c: (lambda m, a: ((x - m) * torch.exp(-a), torch.exp(-a).prod(-1)))(*c(x)),
    "passes": _maf_two_passes,
    "passes#loop": _maf_loop,
    "in-place": _maf_in_place,
    "in-place#requires-grad": _maf_requires_grad,
    "contract#float64": _maf_float64,
    "contract#detached": _maf_detached,
    "contract#numpy": _maf_numpy,
    "contract#keepdim": lambda x, c: (lambda m, a: ((x - m) * torch.exp(-a), -a.sum(-1, keepdim=True)))(*c(x)),
    "contract#cpu": lambda x, c: tuple(t.cpu() for t in _maf(x, c)),
    "delegation": _maf_delegates,
    "delegation#private": _maf_delegates_private,
    "delegation#iaf": _maf_delegates_iaf,
}


# ------------------------------------------------------------------ 5.2 sigmoid_ar_reverse(x, gate)


def _sig(x, gate):
    m, sigma = gate(x)
    return (x - (1 - sigma) * m) / sigma, torch.log(sigma).sum(-1)


def _sig_prefix(x, gate):
    z = torch.empty_like(x)
    log_det = x.new_zeros(x.shape[0])
    for i in range(x.shape[1]):
        m, sigma = gate(x[:, :i])
        z[:, i] = (x[:, i] - (1 - sigma[:, i]) * m[:, i]) / sigma[:, i]
        log_det = log_det + torch.log(sigma[:, i])
    return z, log_det


def _sig_in_place(x, gate):
    m, sigma = gate(x)
    x -= (1 - sigma) * m
    x /= sigma
    return x, torch.log(sigma).sum(-1)


def _sig_float64(x, gate):
    m, sigma = gate(x)
    m, sigma = m.double(), sigma.double()  # "dividing by a small sigma needs precision"
    return (x.double() - (1 - sigma) * m) / sigma, torch.log(sigma).sum(-1)


def _sig_detached(x, gate):
    m, sigma = gate(x)
    return (x - (1 - sigma) * m) / sigma, torch.log(sigma.detach()).sum(-1)


def _sig_numpy(x, gate):
    m, sigma = (t.detach().numpy() for t in gate(x))
    a = x.detach().numpy()
    return torch.from_numpy((a - (1 - sigma) * m) / sigma), torch.from_numpy(np.log(sigma).sum(-1))


def _sig_unmix(x, gate):
    m, sigma = gate(x)
    layer = SigmoidAR(x.shape[1], gate_bias=0.0)
    return layer._unmix(m, torch.logit(sigma), x), torch.log(sigma).sum(-1)


class _Logits(nn.Module):
    """The gate as SigmoidAR's conditioner wants it: (m, a) with sigma = sigmoid(a)."""

    def __init__(self, gate):
        super().__init__()
        self.gate = gate

    def forward(self, u):
        m, sigma = self.gate(u)
        return m, torch.logit(sigma)


def _sig_layer(x, gate):
    layer = SigmoidAR(x.shape[1], gate_bias=0.0)
    layer.conditioner = _Logits(gate)
    z, ld = layer.inverse(x)
    return z, -ld


WRONG_52 = {
    "shift-not-gated": lambda x, g: (lambda m, s: ((x - m) / s, torch.log(s).sum(-1)))(*g(x)),
    "multiplies": lambda x, g: (lambda m, s: ((x - (1 - s) * m) * s, torch.log(s).sum(-1)))(*g(x)),
    "scale-before-shift": lambda x, g: (lambda m, s: (x / s - (1 - s) * m, torch.log(s).sum(-1)))(*g(x)),
    "forward-map": lambda x, g: (lambda m, s: (s * x + (1 - s) * m, torch.log(s).sum(-1)))(*g(x)),
    "prefix": _sig_prefix,
    "logdet-sign": lambda x, g: (lambda m, s: ((x - (1 - s) * m) / s, -torch.log(s).sum(-1)))(*g(x)),
    "log-one-minus": lambda x, g: (lambda m, s: ((x - (1 - s) * m) / s, torch.log(1 - s).sum(-1)))(*g(x)),
    "logdet-not-log": lambda x, g: (lambda m, s: ((x - (1 - s) * m) / s, s.prod(-1)))(*g(x)),
    "in-place": _sig_in_place,
    "contract#float64": _sig_float64,
    "contract#detached": _sig_detached,
    "contract#numpy": _sig_numpy,
    "contract#per-coordinate": lambda x, g: (lambda m, s: ((x - (1 - s) * m) / s, torch.log(s)))(*g(x)),
    "contract#cpu": lambda x, g: tuple(t.cpu() for t in _sig(x, g)),
    "delegation": _sig_unmix,
    "delegation#layer": _sig_layer,
}


# ------------------------------------------------------------------ 5.3 iaf_log_density(z, conditioner)


def _log_q0(z):
    return torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)


def _iaf(z, conditioner):
    m, alpha = conditioner(z)
    return _log_q0(z) - alpha.sum(-1)


def _iaf_base_at_x(z, conditioner):
    m, alpha = conditioner(z)
    x = torch.exp(alpha) * z + m
    return _log_q0(x) - alpha.sum(-1)


def _iaf_reads_x(z, conditioner):
    m, alpha = conditioner(z)
    x = torch.exp(alpha) * z + m
    _, alpha_x = conditioner(x)  # "the density is at x"
    return _log_q0(z) - alpha_x.sum(-1)


def _iaf_prefix(z, conditioner):
    total = _log_q0(z)
    for i in range(z.shape[1]):
        _, alpha = conditioner(z[:, :i])
        total = total - alpha[:, i]
    return total


def _iaf_by_inverse(z, conditioner):
    # sample x, then recover z from x with the sequential inverse: p passes where one suffices
    m, alpha = conditioner(z)
    x = torch.exp(alpha) * z + m
    u = torch.zeros_like(x)
    for _ in range(x.shape[1]):
        m_u, a_u = conditioner(u)
        u = (x - m_u) * torch.exp(-a_u)
    return _log_q0(u) - a_u.sum(-1)


def _iaf_in_place(z, conditioner):
    m, alpha = conditioner(z)
    z.mul_(z)  # squares the caller's noise
    return -0.5 * z.sum(-1) - 0.5 * z.shape[1] * LOG_2PI - alpha.sum(-1)


def _iaf_float64(z, conditioner):
    m, alpha = conditioner(z)
    return _log_q0(z.double()) - alpha.sum(-1)  # "log-densities in double precision"


def _iaf_detached(z, conditioner):
    with torch.no_grad():
        m, alpha = conditioner(z)
    return _log_q0(z) - alpha.sum(-1)


def _iaf_numpy(z, conditioner):
    m, alpha = conditioner(z)
    a = z.detach().numpy()
    return torch.from_numpy(-0.5 * (a**2).sum(-1) - 0.5 * a.shape[1] * LOG_2PI - alpha.detach().numpy().sum(-1))


def _iaf_delegates(z, conditioner):
    x, log_det = IAF(z.shape[1], conditioner=conditioner)(z)
    return _log_q0(z) - log_det


def _iaf_delegates_flow(z, conditioner):
    flow = AutoregressiveFlow(IAF(z.shape[1], conditioner=conditioner))
    return flow.forward_and_log_prob(z)[1]


WRONG_53 = {
    "logdet-sign": lambda z, c: _log_q0(z) + c(z)[1].sum(-1),
    "no-base": lambda z, c: -c(z)[1].sum(-1),
    "no-logdet": lambda z, c: (lambda m, a: _log_q0(z))(*c(z)),
    "base-at-x": _iaf_base_at_x,
    "reads-x": _iaf_reads_x,
    "normalising-constant": lambda z, c: -0.5 * (z**2).sum(-1) - c(z)[1].sum(-1),
    "normalising-constant#once": lambda z, c: -0.5 * (z**2).sum(-1) - 0.5 * LOG_2PI - c(z)[1].sum(-1),
    "prefix": _iaf_prefix,
    "passes": _iaf_by_inverse,
    "passes#twice": lambda z, c: _log_q0(z) - c(z)[1].sum(-1) + 0 * c(z)[0].sum(-1),
    "in-place": _iaf_in_place,
    "contract#float64": _iaf_float64,
    "contract#detached": _iaf_detached,
    "contract#numpy": _iaf_numpy,
    "contract#total": lambda z, c: _iaf(z, c).sum(),
    "contract#per-coordinate": lambda z, c: torch.distributions.Normal(0.0, 1.0).log_prob(z) - c(z)[1],
    "contract#cpu": lambda z, c: _iaf(z, c).cpu(),
    "delegation": _iaf_delegates,
    "delegation#flow": _iaf_delegates_flow,
}

WRONG = {"5.1": WRONG_51, "5.2": WRONG_52, "5.3": WRONG_53}

# Answers the checks must ACCEPT (right, written differently from the solution).
RIGHT = {
    "5.1": {"divide by exp(alpha)": lambda x, c: (lambda m, a: ((x - m) / torch.exp(a), -a.sum(1)))(*c(x))},
    "5.2": {"(x - m) / sigma + m": lambda x, g: (lambda m, s: ((x - m) / s + m, torch.log(s).sum(-1)))(*g(x))},
    "5.3": {"the Gaussian written out": lambda z, c: (
        -0.5 * (z**2).sum(-1) - 0.5 * z.shape[1] * LOG_2PI - c(z)[1].sum(-1))},
}
