"""Plausible wrong answers to the chapter 2 exercises, each filed under the mistake tag its check must
report (a key of the exercise's ``mistakes``, or a generic tag: ``in-place``, ``delegation``, ``contract``;
``tag#variant`` files several under one tag)."""

import torch

import coursekit
from coursekit.gaussian import gaussian_grad_log_density, gaussian_mle


# ------------------------------------------------------------------ 2.1


def _mle(x):
    mean = x.mean(0)
    r = x - mean
    return mean, r.T @ r / x.shape[0]


def _mle_in_place(x):
    mean = x.mean(0)
    x -= mean  # centres the caller's data
    return mean, x.T @ x / x.shape[0]


def _mle_requires_grad(x):
    x.requires_grad_(True)  # flips the caller's flag
    return _mle(x)


def _mle_float64(x):
    return _mle(x.double())


def _mle_detached(x):
    mean, cov = _mle(x)
    return mean.detach(), cov.detach()


def _mle_numpy(x):
    import numpy as np

    a = x.detach().numpy()
    return torch.from_numpy(a.mean(0)), torch.from_numpy(np.cov(a.T, bias=True))


def _mle_cpu(x):
    mean, cov = _mle(x)
    return mean.cpu(), cov.cpu()


def _mle_list(x):
    mean, cov = _mle(x)
    return [mean.tolist(), cov.tolist()]


def _mle_one_tensor(x):
    mean, cov = _mle(x)
    return torch.cat([mean[None], cov])


def _mle_reshaped(x):
    mean, cov = _mle(x)
    return mean[None, :], cov


def _mle_delegates(x):
    return gaussian_mle(x)


def _mle_delegates_module(x):
    return coursekit.gaussian.gaussian_mle(x)


def _mle_delegates_fit(x):
    fitted = coursekit.gaussian.fit_gaussian(x, jitter=0.0)
    return fitted.mean, fitted.covariance_matrix


def _mle_ignores_data(x):
    p = x.shape[1]
    return x.new_zeros(p), torch.eye(p, dtype=x.dtype)


WRONG_21 = {
    "unbiased": lambda x: (x.mean(0), torch.cov(x.T, correction=1)),
    "unbiased#by-hand": lambda x: (x.mean(0), (x - x.mean(0)).T @ (x - x.mean(0)) / (x.shape[0] - 1)),
    "uncentred": lambda x: (x.mean(0), x.T @ x / x.shape[0]),
    "diagonal": lambda x: (x.mean(0), torch.diag(x.var(0, correction=0))),
    "no-division": lambda x: (x.mean(0), (x - x.mean(0)).T @ (x - x.mean(0))),
    "mean-axis": lambda x: (x.mean(1), (x - x.mean(0)).T @ (x - x.mean(0)) / x.shape[0]),
    "gram": lambda x: (x.mean(0), (x - x.mean(0)) @ (x - x.mean(0)).T / x.shape[0]),
    "in-place": _mle_in_place,
    "in-place#requires-grad": _mle_requires_grad,
    "contract#float64": _mle_float64,
    "contract#detached": _mle_detached,
    "contract#numpy": _mle_numpy,
    "contract#cpu": _mle_cpu,
    "contract#list": _mle_list,
    "contract#one-tensor": _mle_one_tensor,
    "contract#reshaped": _mle_reshaped,
    "delegation": _mle_delegates,
    "delegation#module": _mle_delegates_module,
    "delegation#fit": _mle_delegates_fit,
    "delegation#itself": gaussian_mle,
}


# ------------------------------------------------------------------ 2.2


def _step(m, s, batch, gamma, sign=1.0, scale=1.0):
    inv_var = torch.exp(-2.0 * s)
    r = batch - m
    return m + sign * gamma * scale * (r * inv_var).sum(0), s + sign * gamma * scale * (r**2 * inv_var - 1.0).sum(0)


def _no_minus_one(m, s, batch, gamma):
    inv_var = torch.exp(-2.0 * s)
    r = batch - m
    return m + gamma * (r * inv_var).sum(0), s + gamma * (r**2 * inv_var).sum(0)


def _grad_in_sigma(m, s, batch, gamma):
    sigma = torch.exp(s)
    r = batch - m
    return m + gamma * (r / sigma**2).sum(0), s + gamma * (r**2 / sigma**3 - 1.0 / sigma).sum(0)


def _sigma_not_variance(m, s, batch, gamma):
    sigma = torch.exp(s)
    r = batch - m
    return m + gamma * (r / sigma).sum(0), s + gamma * (r**2 / sigma - 1.0).sum(0)


def _updated_m_first(m, s, batch, gamma):
    inv_var = torch.exp(-2.0 * s)
    m = m + gamma * ((batch - m) * inv_var).sum(0)
    r = batch - m
    return m, s + gamma * (r**2 * inv_var - 1.0).sum(0)


def _step_in_place(m, s, batch, gamma):
    inv_var = torch.exp(-2.0 * s)
    r = batch - m
    m += gamma * (r * inv_var).sum(0)
    s += gamma * (r**2 * inv_var - 1.0).sum(0)
    return m, s


def _step_float64(m, s, batch, gamma):
    return _step(m.double(), s.double(), batch.double(), gamma)


def _step_detached(m, s, batch, gamma):
    with torch.no_grad():
        return _step(m, s, batch, gamma)


def _step_fixed_gamma(m, s, batch, gamma):
    return _step(m, s, batch, 0.01)


def _step_delegates(m, s, batch, gamma):
    gm, gs = gaussian_grad_log_density(batch, m, s)
    return m + gamma * gm.sum(0), s + gamma * gs.sum(0)


def _step_autograd_of_coursekit(m, s, batch, gamma):
    m_, s_ = m.detach().requires_grad_(), s.detach().requires_grad_()
    lp = coursekit.gaussian.gaussian_log_density(batch, m_, s_).sum()
    gm, gs = torch.autograd.grad(lp, (m_, s_))
    return m + gamma * gm, s + gamma * gs


WRONG_22 = {
    "descent": lambda m, s, batch, gamma: _step(m, s, batch, gamma, sign=-1.0),
    "mean-not-sum": lambda m, s, batch, gamma: _step(m, s, batch, gamma, scale=1.0 / len(batch)),
    "no-minus-one": _no_minus_one,
    "grad-in-sigma": _grad_in_sigma,
    "sigma-not-variance": _sigma_not_variance,
    "updated-m-first": _updated_m_first,
    "in-place": _step_in_place,
    "contract#float64": _step_float64,
    "contract#detached": _step_detached,
    "contract#single-tensor": lambda m, s, batch, gamma: torch.stack(_step(m, s, batch, gamma)),
    "delegation": _step_delegates,
    "delegation#autograd": _step_autograd_of_coursekit,
}


# ------------------------------------------------------------------ 2.3


def _d(samples, train):
    return (samples[:, None, :] - train[None, :, :]).pow(2).sum(-1).sqrt()


def _nn_in_place(samples, train):
    # distances do not change under a common shift, so centre both sets... in the caller's tensors
    centre = train.mean(0)
    samples -= centre
    return _d(samples, train - centre).min(1).values


def _nn_float64(samples, train):
    return _d(samples.double(), train.double()).min(1).values


def _nn_detached(samples, train):
    return _d(samples, train).min(1).values.detach()


def _nn_list(samples, train):
    return _d(samples, train).min(1).values.tolist()


def _nn_ignores_train(samples, train):
    return samples.norm(dim=1)


WRONG_23 = {
    "squared": lambda s, t: _d(s, t).min(1).values ** 2,
    "squared#cdist": lambda s, t: (torch.cdist(s, t) ** 2).min(1).values,
    "wrong-axis": lambda s, t: torch.cdist(s, t).min(0).values,
    "indices": lambda s, t: torch.cdist(s, t).min(1).indices,
    "indices#argmin": lambda s, t: torch.cdist(s, t).argmin(1),
    "no-min": lambda s, t: torch.cdist(s, t),
    "mean-not-min": lambda s, t: torch.cdist(s, t).mean(1),
    "max-not-min": lambda s, t: torch.cdist(s, t).max(1).values,
    "l1": lambda s, t: torch.cdist(s, t, p=1).min(1).values,
    "in-place": _nn_in_place,
    "contract#float64": _nn_float64,
    "contract#detached": _nn_detached,
    "contract#list": _nn_list,
    "contract#min-tuple": lambda s, t: torch.cdist(s, t).min(1),
    "contract#column": lambda s, t: torch.cdist(s, t).min(1, keepdim=True).values,
    "delegation": lambda s, t: coursekit.gaussian.nearest_neighbour_distance(s, t),
}

WRONG = {"2.1": WRONG_21, "2.2": WRONG_22, "2.3": WRONG_23}

# Wrong answers that no named mistake describes; the check must still reject them (untagged).
UNTAGGED = {
    "2.1": {"ignores the data": _mle_ignores_data},
    "2.2": {"ignores gamma": _step_fixed_gamma},
    "2.3": {"ignores train": _nn_ignores_train},
}
