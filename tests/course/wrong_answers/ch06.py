"""Plausible wrong answers to the chapter 6 exercises (notebook ``ex06_ebm``), written as a student
would, each keyed by the mistake tag its check must report.

A key is ``tag`` or ``tag#variant`` (several wrong answers filed under one tag); the tag is a key of
the exercise's ``mistakes`` or a generic tag ("in-place", "delegation", "contract", "crash").
"""

import math

import torch

import coursekit.ebm


def _cov(g):
    c = g - g.mean(0)
    return c.T @ c / g.shape[0]


# ------------------------------------------------------------------ 6.1 grad_log_Z(grad_U)


def _grad_in_place(grad_U):
    grad_U *= -1
    return grad_U.mean(0)


def _grad_numpy(grad_U):
    return torch.from_numpy(-grad_U.detach().numpy().mean(0))


def _grad_fixed_n(grad_U):
    return -grad_U.sum(0) / 20_000  # the sample size of the old check


G61 = {
    "sign": lambda grad_U: grad_U.mean(0),
    "sum": lambda grad_U: -grad_U.sum(0),
    "axis": lambda grad_U: -grad_U.mean(1),
    "scale": _grad_fixed_n,
    "scale#bessel": lambda grad_U: -grad_U.sum(0) / (grad_U.shape[0] - 1),
    "in-place": _grad_in_place,
    "contract#float64": lambda grad_U: -grad_U.double().mean(0),
    "contract#detached": lambda grad_U: -grad_U.detach().mean(0),
    "contract#numpy": _grad_numpy,
    "contract#cpu": lambda grad_U: -grad_U.mean(0).cpu(),
    "contract#keepdim": lambda grad_U: -grad_U.mean(0, keepdim=True),
}


# ------------------------------------------------------------------ 6.2 hess_log_Z(grad_U, hess_U)


def _hess_in_place(grad_U, hess_U):
    grad_U -= grad_U.mean(0)
    return -hess_U.mean(0) + grad_U.T @ grad_U / grad_U.shape[0]


def _hess_bessel(grad_U, hess_U):
    return -hess_U.mean(0) + torch.cov(grad_U.T).reshape(hess_U.shape[1:])


def _hess_cpu(grad_U, hess_U):
    return (-hess_U.mean(0) + _cov(grad_U)).to("cpu")


G62 = {
    "missing-covariance": lambda grad_U, hess_U: -hess_U.mean(0),
    "uncentred": lambda grad_U, hess_U: -hess_U.mean(0) + grad_U.T @ grad_U / grad_U.shape[0],
    "sign": lambda grad_U, hess_U: hess_U.mean(0) + _cov(grad_U),
    "sign#covariance": lambda grad_U, hess_U: -hess_U.mean(0) - _cov(grad_U),
    "bessel": _hess_bessel,
    "sum": lambda grad_U, hess_U: -hess_U.sum(0) + (grad_U - grad_U.mean(0)).T @ (grad_U - grad_U.mean(0)),
    "in-place": _hess_in_place,
    "contract#float64": lambda grad_U, hess_U: (-hess_U.mean(0) + _cov(grad_U)).double(),
    "contract#detached": lambda grad_U, hess_U: (-hess_U.mean(0) + _cov(grad_U)).detach(),
    "contract#cpu": _hess_cpu,
}


# ------------------------------------------------------------------ 6.3 ula_step(x, grad_U, gamma, z)


def _ula_in_place(x, grad_U, gamma, z):
    x -= gamma * grad_U
    return x + math.sqrt(2 * gamma) * z


def _ula_delegates(x, grad_U, gamma, z):
    # an energy whose gradient at x is grad_U, handed to coursekit's sampler
    return coursekit.ebm.ula(lambda y: (y * grad_U).flatten(1).sum(-1), x, gamma, 1)


def _ula_delegates_decoupled(x, grad_U, gamma, z):
    return coursekit.ebm.langevin.decoupled_langevin(lambda y: (y * grad_U).flatten(1).sum(-1), x, gamma,
                                                     math.sqrt(2 * gamma), 1)


def _ula_own_noise(x, grad_U, gamma, z):
    return x - gamma * grad_U + math.sqrt(2 * gamma) * torch.randn_like(x)


G63 = {
    "plus-sign": lambda x, grad_U, gamma, z: x + gamma * grad_U + math.sqrt(2 * gamma) * z,
    "drift-scale": lambda x, grad_U, gamma, z: x - grad_U + math.sqrt(2 * gamma) * z,
    "no-noise": lambda x, grad_U, gamma, z: x - gamma * grad_U,
    "noise-sqrt-gamma": lambda x, grad_U, gamma, z: x - gamma * grad_U + math.sqrt(gamma) * z,
    "noise-scale": lambda x, grad_U, gamma, z: x - gamma * grad_U + 2 * gamma * z,
    "noise-scale#unscaled": lambda x, grad_U, gamma, z: x - gamma * grad_U + z,
    "noise-sign": lambda x, grad_U, gamma, z: x - gamma * grad_U - math.sqrt(2 * gamma) * z,
    "in-place": _ula_in_place,
    "delegation": _ula_delegates,
    "delegation#decoupled": _ula_delegates_decoupled,
    "contract#float64": lambda x, grad_U, gamma, z: x.double() - gamma * grad_U.double() + math.sqrt(2 * gamma) * z.double(),
    "contract#detached": lambda x, grad_U, gamma, z: (x - gamma * grad_U + math.sqrt(2 * gamma) * z).detach(),
    "contract#cpu": lambda x, grad_U, gamma, z: (x - gamma * grad_U + math.sqrt(2 * gamma) * z).cpu(),
    "contract#flat": lambda x, grad_U, gamma, z: (x - gamma * grad_U + math.sqrt(2 * gamma) * z).reshape(x.shape[0], -1),
}


# ------------------------------------------------------------------ 6.4 ula_variance(s2, gamma)


def _var_in_place(s2, gamma):
    gamma /= 2 * s2  # harmless for floats, changes the caller's tensor
    return s2 / (1 - gamma)


def _var_second_order(s2, gamma):
    # the expansion in gamma, one term further than the first order
    return s2 + gamma / 2 + gamma**2 / (4 * s2)


def _var_no_grad(s2, gamma):
    with torch.no_grad():
        return s2 / (1 - gamma / (2 * s2))


def _var_float64(s2, gamma):
    s2, gamma = torch.as_tensor(s2, dtype=torch.float64), torch.as_tensor(gamma, dtype=torch.float64)
    return s2 / (1 - gamma / (2 * s2))


G64 = {
    "unbiased": lambda s2, gamma: s2,
    "first-order": lambda s2, gamma: s2 + gamma / 2,
    "sign": lambda s2, gamma: s2 / (1 + gamma / (2 * s2)),
    "noise-variance": lambda s2, gamma: gamma / (1 - (1 - gamma / s2) ** 2),
    "ar-not-squared": lambda s2, gamma: 2 * gamma / (1 - (1 - gamma / s2)),
    "std": lambda s2, gamma: (s2 / (1 - gamma / (2 * s2))) ** 0.5,
    "approximate": _var_second_order,
    "in-place": _var_in_place,
    "delegation": lambda s2, gamma: coursekit.ebm.ula_stationary_variance(s2, gamma),
    "contract#float64": _var_float64,
    "contract#no-grad": _var_no_grad,
}


# ------------------------------------------------------------------ 6.5 algorithm1_loss(U, x_pos, x_neg, reg)


def _penalty(e_pos, e_neg):
    return e_pos.pow(2).mean() + e_neg.pow(2).mean()


def _loss_sign(U, x_pos, x_neg, reg):
    e_pos, e_neg = U(x_pos), U(x_neg.detach())
    return e_neg.mean() - e_pos.mean() + reg * _penalty(e_pos, e_neg)


def _loss_not_detached(U, x_pos, x_neg, reg):
    e_pos, e_neg = U(x_pos), U(x_neg)
    return e_pos.mean() - e_neg.mean() + reg * _penalty(e_pos, e_neg)


def _loss_energy_detached(U, x_pos, x_neg, reg):
    e_pos, e_neg = U(x_pos), U(x_neg).detach()
    return e_pos.mean() - e_neg.mean() + reg * _penalty(e_pos, e_neg)


def _loss_no_penalty(U, x_pos, x_neg, reg):
    return U(x_pos).mean() - U(x_neg.detach()).mean()


def _loss_penalty_difference(U, x_pos, x_neg, reg):
    e_pos, e_neg = U(x_pos), U(x_neg.detach())
    return e_pos.mean() - e_neg.mean() + reg * (e_pos.mean() - e_neg.mean()) ** 2


def _loss_square_of_mean(U, x_pos, x_neg, reg):
    e_pos, e_neg = U(x_pos), U(x_neg.detach())
    return e_pos.mean() - e_neg.mean() + reg * (e_pos.mean() ** 2 + e_neg.mean() ** 2)


def _loss_one_batch(U, x_pos, x_neg, reg):
    e_pos, e_neg = U(x_pos), U(x_neg.detach())
    return e_pos.mean() - e_neg.mean() + reg * e_pos.pow(2).mean()


def _loss_sum(U, x_pos, x_neg, reg):
    e_pos, e_neg = U(x_pos), U(x_neg.detach())
    return e_pos.sum() - e_neg.sum() + reg * (e_pos.pow(2).sum() + e_neg.pow(2).sum())


def _loss_detach_in_place(U, x_pos, x_neg, reg):
    x_neg.detach_()
    e_pos, e_neg = U(x_pos), U(x_neg)
    return e_pos.mean() - e_neg.mean() + reg * _penalty(e_pos, e_neg)


def _loss_delegates(U, x_pos, x_neg, reg):
    loss, _ = coursekit.ebm.contrastive_loss(U, x_pos, x_neg, reg)
    return loss


def _loss_detached(U, x_pos, x_neg, reg):
    e_pos, e_neg = U(x_pos), U(x_neg.detach())
    return (e_pos.mean() - e_neg.mean() + reg * _penalty(e_pos, e_neg)).detach()


def _loss_item(U, x_pos, x_neg, reg):
    e_pos, e_neg = U(x_pos), U(x_neg.detach())
    return (e_pos.mean() - e_neg.mean() + reg * _penalty(e_pos, e_neg)).item()


def _loss_backward(U, x_pos, x_neg, reg):
    e_pos, e_neg = U(x_pos), U(x_neg.detach())
    loss = e_pos.mean() - e_neg.mean() + reg * _penalty(e_pos, e_neg)
    loss.backward(retain_graph=True)
    return loss


def _loss_float64(U, x_pos, x_neg, reg):
    e_pos, e_neg = U(x_pos).double(), U(x_neg.detach()).double()
    return e_pos.mean() - e_neg.mean() + reg * _penalty(e_pos, e_neg)


def _loss_paired(U, x_pos, x_neg, reg):
    # pairs data and negatives row by row: crashes when the batch sizes differ
    e_pos, e_neg = U(x_pos), U(x_neg.detach())
    return (e_pos - e_neg).mean() + reg * (e_pos**2 + e_neg**2).mean()


def _loss_penalty_sign(U, x_pos, x_neg, reg):
    e_pos, e_neg = U(x_pos), U(x_neg.detach())
    return e_pos.mean() - e_neg.mean() - reg * _penalty(e_pos, e_neg)


G65 = {
    "sign": _loss_sign,
    "not-detached": _loss_not_detached,
    "energy-detached": _loss_energy_detached,
    "no-penalty": _loss_no_penalty,
    "penalty-difference": _loss_penalty_difference,
    "square-of-mean": _loss_square_of_mean,
    "penalty-one-batch": _loss_one_batch,
    "sum": _loss_sum,
    "in-place": _loss_detach_in_place,
    "delegation": _loss_delegates,
    "contract#detached": _loss_detached,
    "contract#item": _loss_item,
    "contract#backward": _loss_backward,
    "contract#float64": _loss_float64,
    "crash#paired": _loss_paired,
}


WRONG = {"6.1": G61, "6.2": G62, "6.3": G63, "6.4": G64, "6.5": G65}
