"""Plausible wrong answers to the chapter 7 exercises (notebook ``ex07_score_matching``), written as a
student would, each keyed by the mistake tag its check must report (``tag`` or ``tag#variant``)."""

import torch

import coursekit.score
from coursekit.ebm import energy_and_grad

# ------------------------------------------------------------------ 7.1 dsm_target(x, x_noisy, sigma)


def _dsm_in_place(x, x_noisy, sigma):
    x_noisy -= x
    return -x_noisy / sigma**2


def _dsm_numpy(x, x_noisy, sigma):
    return torch.from_numpy((-(x_noisy - x) / sigma**2).detach().cpu().numpy())


G71 = {
    "sign": lambda x, x_noisy, sigma: (x_noisy - x) / sigma**2,
    "sigma-not-squared": lambda x, x_noisy, sigma: -(x_noisy - x) / sigma,
    "noise": lambda x, x_noisy, sigma: (x_noisy - x) / sigma,
    "not-centred": lambda x, x_noisy, sigma: -x_noisy / sigma**2,
    "in-place": _dsm_in_place,
    "contract#numpy": _dsm_numpy,
    "contract#float64": lambda x, x_noisy, sigma: (-(x_noisy - x) / sigma**2).double(),
    "contract#detached": lambda x, x_noisy, sigma: (-(x_noisy - x) / sigma**2).detach(),
    "contract#flat": lambda x, x_noisy, sigma: (-(x_noisy - x) / sigma**2).reshape(-1),
    "delegation": lambda x, x_noisy, sigma: coursekit.score.dsm_target(x, x_noisy, sigma),
}

# ------------------------------------------------------------------ 7.2 hyvarinen_loss(U, x)


def _grad_and_laplacian(U, x, create_graph_laplacian=True):
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(U(x).sum(), x, create_graph=True)
    lap = 0
    for i in range(x.shape[1]):
        (row,) = torch.autograd.grad(g[:, i].sum(), x, create_graph=create_graph_laplacian, retain_graph=True)
        lap = lap + row[:, i]
    return g, lap


def _hyv_not_trace(U, x):
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(U(x).sum(), x, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), x, create_graph=True)  # 1^T H, summed below: not the trace
    return (0.5 * g.pow(2).sum(1) - h.sum(1)).mean()


def _hyv_detached_laplacian(U, x):
    g, lap = _grad_and_laplacian(U, x, create_graph_laplacian=False)
    return (0.5 * g.pow(2).sum(1) - lap).mean()


def _hyv_in_place(U, x):
    x.requires_grad_(True)
    (g,) = torch.autograd.grad(U(x).sum(), x, create_graph=True)
    lap = sum(torch.autograd.grad(g[:, i].sum(), x, create_graph=True)[0][:, i] for i in range(x.shape[1]))
    return (0.5 * g.pow(2).sum(1) - lap).mean()


def _hyv_in_place_values(U, x):
    g, lap = _grad_and_laplacian(U, x)
    x.mul_(1.0).add_(0.0 * x + 1e-3)
    return (0.5 * g.pow(2).sum(1) - lap).mean()


def _hyv_item(U, x):
    g, lap = _grad_and_laplacian(U, x)
    return torch.tensor((0.5 * g.pow(2).sum(1) - lap).mean().item(), dtype=x.dtype)


G72 = {
    "laplacian-sign": lambda U, x: (lambda g, lap: (0.5 * g.pow(2).sum(1) + lap).mean())(*_grad_and_laplacian(U, x)),
    "no-half": lambda U, x: (lambda g, lap: (g.pow(2).sum(1) - lap).mean())(*_grad_and_laplacian(U, x)),
    "not-trace": _hyv_not_trace,
    "sum": lambda U, x: (lambda g, lap: (0.5 * g.pow(2).sum(1) - lap).sum())(*_grad_and_laplacian(U, x)),
    "laplacian-detached": _hyv_detached_laplacian,
    "no-laplacian": lambda U, x: (lambda g, lap: (0.5 * g.pow(2).sum(1)).mean())(*_grad_and_laplacian(U, x)),
    "in-place": _hyv_in_place,
    "in-place#values": _hyv_in_place_values,
    "contract#item": _hyv_item,
    "contract#float64": lambda U, x: (lambda g, lap: (0.5 * g.pow(2).sum(1) - lap).mean().double())(
        *_grad_and_laplacian(U, x)),
    "contract#per-sample": lambda U, x: (lambda g, lap: 0.5 * g.pow(2).sum(1) - lap)(*_grad_and_laplacian(U, x)),
    "delegation": lambda U, x: coursekit.score.exact_score_matching(U, x),
}

# ------------------------------------------------------------------ 7.3 mala_step(U, x, y, gamma, u)


def _mala(U, x, y, gamma, u, *, fwd_div=4, bwd_grad="y", correction=True, energy_sign=1, reverse=False, cap=True,
          rule="log"):
    u_x, g_x = energy_and_grad(U, x)
    u_y, g_y = energy_and_grad(U, y)
    gb = g_y if bwd_grad == "y" else g_x
    log_fwd = -(y - x + gamma * g_x).pow(2).sum(1) / (fwd_div * gamma)
    log_bwd = -(x - y + gamma * gb).pow(2).sum(1) / (fwd_div * gamma)
    r = energy_sign * (u_x - u_y)
    if correction:
        r = r + (log_fwd - log_bwd if reverse else log_bwd - log_fwd)
    log_alpha = torch.clamp(r, max=0.0) if cap else r
    accept = {"log": torch.log(u) < log_alpha, "flipped": torch.log(u) > log_alpha, "raw": u < log_alpha}[rule]
    return torch.where(accept[:, None], y, x), log_alpha


def _mala_in_place(U, x, y, gamma, u):
    x_next, log_alpha = _mala(U, x, y, gamma, u)
    accept = torch.log(u) < log_alpha
    x[accept] = y[accept]
    return x, log_alpha


def _mala_float64(U, x, y, gamma, u):
    x_next, log_alpha = _mala(U, x, y, gamma, u)
    return x_next, log_alpha.double()


G73 = {
    "no-correction": lambda U, x, y, gamma, u: _mala(U, x, y, gamma, u, correction=False),
    "reversed-proposal": lambda U, x, y, gamma, u: _mala(U, x, y, gamma, u, reverse=True),
    "proposal-variance": lambda U, x, y, gamma, u: _mala(U, x, y, gamma, u, fwd_div=2),
    "energy-sign": lambda U, x, y, gamma, u: _mala(U, x, y, gamma, u, energy_sign=-1),
    "same-drift": lambda U, x, y, gamma, u: _mala(U, x, y, gamma, u, bwd_grad="x"),
    "no-min": lambda U, x, y, gamma, u: _mala(U, x, y, gamma, u, cap=False),
    "accept-rule": lambda U, x, y, gamma, u: _mala(U, x, y, gamma, u, rule="flipped"),
    "accept-rule#no-log": lambda U, x, y, gamma, u: _mala(U, x, y, gamma, u, rule="raw"),
    "in-place": _mala_in_place,
    "contract#float64": _mala_float64,
    "contract#single": lambda U, x, y, gamma, u: _mala(U, x, y, gamma, u)[0],
    "delegation": lambda U, x, y, gamma, u: (x, coursekit.score.mala_log_acceptance(
        x, y, *energy_and_grad(U, x)[:1], *energy_and_grad(U, y)[:1], energy_and_grad(U, x)[1],
        energy_and_grad(U, y)[1], gamma)),
}

WRONG = {"7.1": G71, "7.2": G72, "7.3": G73}
