"""Plausible wrong answers to the chapter 4 exercises (notebook ``ex04_coupling``), each filed under the
mistake tag its check must report (a key of the exercise's ``mistakes``, or a generic tag: ``in-place``,
``delegation``, ``contract``; ``tag#variant`` files several under one tag)."""

import numpy as np
import torch

from coursekit.flows import AdditiveCoupling, AffineCoupling, Rescale

# ------------------------------------------------------------------ 4.1 additive_inverse(x, m, r)


def _add(x, m, r):
    x1, x2 = x[:, :r], x[:, r:]
    return torch.cat([x1, x2 - m(x1)], dim=1), x.new_zeros(x.shape[0])


def _add_adds(x, m, r):
    x1, x2 = x[:, :r], x[:, r:]
    return torch.cat([x1, x2 + m(x1)], dim=1), x.new_zeros(x.shape[0])


def _add_forgets(x, m, r):
    x1, x2 = x[:, :r], x[:, r:]
    shift = m(x1)  # computed, then never used  # noqa: F841
    return torch.cat([x1, x2], dim=1), x.new_zeros(x.shape[0])


def _add_drops_copy(x, m, r):
    return x[:, r:] - m(x[:, :r]), x.new_zeros(x.shape[0])


def _add_blocks_swapped(x, m, r):
    x1, x2 = x[:, :r], x[:, r:]
    return torch.cat([x2 - m(x1), x1], dim=1), x.new_zeros(x.shape[0])


def _add_half(x, m, r):
    h = x.shape[1] // 2  # the usual split, not the r given
    x1, x2 = x[:, :h], x[:, h:]
    return torch.cat([x1, x2 - m(x1)], dim=1), x.new_zeros(x.shape[0])


def _add_wrong_block(x, m, r):
    x1, x2 = x[:, :r], x[:, r:]
    return torch.cat([x1, x2 - m(x2)], dim=1), x.new_zeros(x.shape[0])


def _add_logdet(x, m, r):
    x1, x2 = x[:, :r], x[:, r:]
    shift = m(x1)
    return torch.cat([x1, x2 - shift], dim=1), -shift.sum(-1)  # as if m were a log-scale


def _add_in_place(x, m, r):
    x[:, r:] -= m(x[:, :r])  # overwrites the caller's x
    return x, x.new_zeros(x.shape[0])


def _add_requires_grad(x, m, r):
    x.requires_grad_(True)  # "so that z can be trained": flips the caller's flag
    return _add(x, m, r)


def _add_float64(x, m, r):
    z, ld = _add(x.double(), m.double(), r)  # converts the caller's network too: in place as well
    return z, ld


def _add_float64_result(x, m, r):
    z, ld = _add(x, m, r)
    return z.double(), ld.double()


def _add_zeros(x, m, r):
    x1, x2 = x[:, :r], x[:, r:]
    return torch.cat([x1, x2 - m(x1)], dim=1), torch.zeros(x.shape[0])  # default dtype, not x's


def _add_detached(x, m, r):
    x1, x2 = x[:, :r], x[:, r:]
    with torch.no_grad():
        shift = m(x1)
    return torch.cat([x1, x2 - shift], dim=1), x.new_zeros(x.shape[0])


def _add_numpy(x, m, r):
    x1 = x[:, :r]
    a = x.detach().cpu().numpy()
    shift = m(x1).detach().cpu().numpy()
    z = np.concatenate([a[:, :r], a[:, r:] - shift], axis=1)
    return torch.from_numpy(z), torch.from_numpy(np.zeros(len(a), dtype=a.dtype))


def _add_scalar_logdet(x, m, r):
    z, _ = _add(x, m, r)
    return z, x.new_zeros(())


def _add_cpu(x, m, r):
    z, ld = _add(x, m, r)
    return z.cpu(), ld.cpu()


def _add_delegates(x, m, r):
    p = x.shape[1]
    layer = AdditiveCoupling(p, mask=torch.arange(p) < r).to(x.dtype)
    layer.net = m
    return layer.inverse(x)


def _add_delegates_private(x, m, r):
    p = x.shape[1]
    layer = AdditiveCoupling(p, mask=torch.arange(p) < r).to(x.dtype)
    layer.net = m
    return layer._inverse(x)


WRONG_41 = {
    "adds-shift": _add_adds,
    "forgets-shift": _add_forgets,
    "drops-copy": _add_drops_copy,
    "copy-block": _add_blocks_swapped,
    "split": _add_half,
    "split#transformed-block": _add_wrong_block,
    "logdet-nonzero": _add_logdet,
    "in-place": _add_in_place,
    "in-place#requires-grad": _add_requires_grad,
    "in-place#network-to-float64": _add_float64,
    "contract#float64": _add_float64_result,
    "contract#zeros-default-dtype": _add_zeros,
    "contract#detached": _add_detached,
    "contract#numpy": _add_numpy,
    "contract#scalar-logdet": _add_scalar_logdet,
    "contract#cpu": _add_cpu,
    "delegation": _add_delegates,
    "delegation#private": _add_delegates_private,
}


# ------------------------------------------------------------------ 4.2 rescale_inverse(x, s)


def _res(x, s):
    return x / s, -torch.log(s).sum().expand(x.shape[0])


def _res_in_place(x, s):
    x /= s  # divides the caller's x
    return x, -torch.log(s).sum().expand(x.shape[0])


def _res_log_in_place(x, s):
    log_s = s.log_()  # "saves a copy": turns the caller's scales into their logs
    return x * torch.exp(-log_s), -log_s.sum().expand(x.shape[0])


def _res_numpy(x, s):
    a, b = x.detach().numpy(), s.detach().numpy()
    return torch.from_numpy(a / b), torch.from_numpy(np.full(len(a), -np.log(b).sum()))


def _res_delegates(x, s):
    layer = Rescale(x.shape[1]).to(x.dtype)
    with torch.no_grad():
        layer.log_s.copy_(torch.log(s))
    return layer.inverse(x)


WRONG_42 = {
    "multiplies": lambda x, s: (x * s, -torch.log(s).sum().expand(x.shape[0])),
    "logdet-sign": lambda x, s: (x / s, torch.log(s).sum().expand(x.shape[0])),
    "logdet-no-log": lambda x, s: (x / s, (1 / s).prod().expand(x.shape[0])),
    "logdet-no-log#sum": lambda x, s: (x / s, -s.sum().expand(x.shape[0])),
    "in-place": _res_in_place,
    "in-place#log-of-s": _res_log_in_place,
    "contract#float64": lambda x, s: _res(x.double(), s.double()),
    "contract#detached-logdet": lambda x, s: (x / s, -torch.log(s).sum().detach().expand(x.shape[0])),
    "contract#scalar-logdet": lambda x, s: (x / s, -torch.log(s).sum()),
    "contract#per-coordinate": lambda x, s: (x / s, -torch.log(s).expand(x.shape[0], -1)),
    "contract#numpy": _res_numpy,
    "contract#cpu": lambda x, s: tuple(t.cpu() for t in _res(x, s)),
    "delegation": _res_delegates,
}


# ------------------------------------------------------------------ 4.3 affine_inverse(x, m, alpha, r)


def _aff(x, m, alpha, r, order="shift-first", swap=False, sign=-1.0, with_shift=True, logdet=None):
    x1, x2 = x[:, :r], x[:, r:]
    shift, a = (alpha(x1), m(x1)) if swap else (m(x1), alpha(x1))
    if not with_shift:
        shift = 0 * shift
    z2 = (x2 - shift) * torch.exp(sign * a) if order == "shift-first" else x2 * torch.exp(sign * a) - shift
    ld = -a.sum(-1) if logdet is None else logdet(a, x)
    return torch.cat([x1, z2], dim=1), ld


def _aff_in_place(x, m, alpha, r):
    x1 = x[:, :r]
    a = alpha(x1)
    x[:, r:] = (x[:, r:] - m(x1)) * torch.exp(-a)  # writes into the caller's x
    return x, -a.sum(-1)


def _aff_detached(x, m, alpha, r):
    x1, x2 = x[:, :r], x[:, r:]
    a = alpha(x1).detach()  # "the log-scale is a constant"
    return torch.cat([x1, (x2 - m(x1)) * torch.exp(-a)], dim=1), -a.sum(-1)


def _aff_item_logdet(x, m, alpha, r):
    z, ld = _aff(x, m, alpha, r)
    return z, torch.tensor(ld.tolist(), dtype=x.dtype)


def _aff_delegates(x, m, alpha, r):
    p = x.shape[1]
    layer = AffineCoupling(p, mask=torch.arange(p) < r, clamp=None).to(x.dtype)
    layer._params = lambda u: (alpha(u), m(u))
    return layer.inverse(x)


WRONG_43 = {
    "scales-up": lambda x, m, alpha, r: _aff(x, m, alpha, r, sign=1.0),
    "scale-before-shift": lambda x, m, alpha, r: _aff(x, m, alpha, r, order="scale-first"),
    "swaps-nets": lambda x, m, alpha, r: _aff(x, m, alpha, r, swap=True),
    "forgets-shift": lambda x, m, alpha, r: _aff(x, m, alpha, r, with_shift=False),
    "drops-copy": lambda x, m, alpha, r: (_aff(x, m, alpha, r)[0][:, r:], -alpha(x[:, :r]).sum(-1)),
    "copy-block": lambda x, m, alpha, r: (lambda z, ld: (torch.cat([z[:, r:], z[:, :r]], 1), ld))(
        *_aff(x, m, alpha, r)),
    "split": lambda x, m, alpha, r: _aff(x, m, alpha, x.shape[1] // 2),
    "logdet-sign": lambda x, m, alpha, r: _aff(x, m, alpha, r, logdet=lambda a, x: a.sum(-1)),
    "logdet-zero": lambda x, m, alpha, r: _aff(x, m, alpha, r, logdet=lambda a, x: x.new_zeros(x.shape[0])),
    "in-place": _aff_in_place,
    "contract#float64": lambda x, m, alpha, r: tuple(t.double() for t in _aff(x, m, alpha, r)),
    "contract#detached": _aff_detached,
    "contract#item": _aff_item_logdet,
    "contract#per-coordinate": lambda x, m, alpha, r: _aff(x, m, alpha, r, logdet=lambda a, x: -a),
    "contract#cpu": lambda x, m, alpha, r: tuple(t.cpu() for t in _aff(x, m, alpha, r)),
    "delegation": _aff_delegates,
}

WRONG = {"4.1": WRONG_41, "4.2": WRONG_42, "4.3": WRONG_43}


# Answers the checks must ACCEPT (right, written differently from the solution).
def _add_sub_then_cat(x, m, r):
    z = x.clone()
    z[:, r:] = x[:, r:] - m(x[:, :r])
    return z, torch.zeros_like(x[:, 0])


RIGHT = {
    "4.1": {"clone and assign the second block": _add_sub_then_cat},
    "4.2": {"multiply by exp(-log s)": lambda x, s: (x * torch.exp(-torch.log(s)),
                                                     (-torch.log(s)).sum() * torch.ones_like(x[:, 0]))},
    "4.3": {"divide by exp(alpha)": lambda x, m, alpha, r: (
        torch.cat([x[:, :r], (x[:, r:] - m(x[:, :r])) / torch.exp(alpha(x[:, :r]))], 1), -alpha(x[:, :r]).sum(1))},
}
