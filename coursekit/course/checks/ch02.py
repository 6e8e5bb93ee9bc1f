"""Checks of the chapter 2 exercises (notebook ``ex02_mle``): the closed-form Gaussian MLE, one SGD
step on the Gaussian log-likelihood, and the nearest training-neighbour distance that exposes copies.

Each check draws several independent problems (dimension, sample size, location and scale of the
data, step size, float32 and float64, inputs that require grad), computes the expected values in
float64 BEFORE the call, runs the answer through :func:`call` (inputs must stay unchanged, the
coursekit implementation of the same formula is off limits) and validates each result with
:func:`expect` (type, shape, dtype and device follow the input, gradients flow). A last probe runs
the answer on the ``meta`` device (and on CUDA when there is one) to catch results moved to the CPU.
"""

from __future__ import annotations

import contextlib
import functools

import torch
from torch import Tensor, nn

from ..registry import Delegation, current, exercise
from ._common import (
    _resolve,
    call,
    close,
    devices,
    draws,
    expect,
    expect_pair,
    fail,
    randint,
    require_callable,
    uniforms,
)

__all__ = ["closed_form_mle", "sgd_step", "nn_distance"]

NOTEBOOK = "ex02_mle"
F64 = torch.float64


# ------------------------------------------------------------------ helpers (generic; candidates for _common)


@contextlib.contextmanager
def _trap_names(answer):
    """Trap the forbidden callables where ``call`` cannot: the names bound to them in the answer's own
    globals and closure (a notebook's ``from coursekit.gaussian import gaussian_mle`` keeps the original
    function however the module attribute is patched), and the answer being one of them."""
    ex = current()
    targets = {}
    for target, why in (ex.forbidden if ex is not None else {}).items():
        owner, attr = _resolve(target)
        targets[id(getattr(owner, attr))] = (target.removeprefix("coursekit."), why)
    fn = answer.func if isinstance(answer, functools.partial) else answer
    if id(fn) in targets:
        raise Delegation(*targets[id(fn)])

    def trap(target, why):
        def trapped(*args, **kwargs):
            raise Delegation(target, why)
        return trapped

    patched = []
    globs = getattr(fn, "__globals__", None)
    if isinstance(globs, dict):
        for name, value in list(globs.items()):
            if id(value) in targets:
                patched.append((globs, name, value))
                globs[name] = trap(*targets[id(value)])
    cells = []
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:
            continue
        if id(value) in targets:
            cells.append((cell, value))
            cell.cell_contents = trap(*targets[id(value)])
    try:
        yield
    finally:
        for globs, name, value in reversed(patched):
            globs[name] = value
        for cell, value in cells:
            cell.cell_contents = value


def _meta(value):
    """(dtype, device, requires_grad) of every tensor in ``value`` (a tensor, a module, a list)."""
    if isinstance(value, Tensor):
        return [(value.dtype, value.device, value.requires_grad)]
    if isinstance(value, nn.Module):
        return [(k, t.dtype, t.device, t.requires_grad) for k, t in value.state_dict(keep_vars=True).items()]
    if isinstance(value, (list, tuple)):
        return [_meta(v) for v in value]
    return None


def run_answer(answer, *args, what: str):
    """:func:`call`, and also: a dtype, device or requires_grad flag of an input changed in place
    (``x.requires_grad_()``, ``T.double()``) fails, and forbidden callables are trapped in the
    answer's own namespace too."""
    before = [_meta(a) for a in args]
    with _trap_names(answer):
        result = call(answer, *args, what=what)
    for a, b in zip(args, before):
        if _meta(a) != b:
            fail(f"{what} changed an input in place (its dtype, device or requires_grad flag, e.g. with "
                 "`.double()`, `.to(...)` or `.requires_grad_()` on the caller's object): work on new "
                 "tensors (`y = x.double()`) and leave the inputs as they came", mistake="in-place")
    return result


# what torch says when a computation on the meta device reaches for data on the CPU
_OFF_DEVICE = ("Cannot copy out of meta tensor", "can't convert meta device type tensor to numpy",
               "is not on the expected device")


def probe_devices(answer, make, validate):
    """Run the answer on a problem built on the ``meta`` device, and on CUDA when available.

    ``make(device)`` returns the argument tuple; ``validate(result, args)`` checks the outputs (it
    must check that they are on the arguments' device). On meta, an operation without a meta kernel
    makes the answer raise: the probe is then skipped silently, since it proves nothing.
    """
    from ...flows.base import set_validation, validation_enabled

    for device in devices():
        args = make(device)
        if device == "meta":
            was = validation_enabled()
            set_validation(False)  # coursekit's input checks read values, which meta tensors lack
            try:
                with _trap_names(answer):
                    result = answer(*args)
            except Exception as err:  # noqa: BLE001
                if any(sign in str(err) for sign in _OFF_DEVICE):
                    fail("your function moves a tensor off the input's device (`.cpu()`, `.numpy()`, "
                         "`.tolist()`, or a new tensor made without `device=`; it breaks on a GPU): keep every "
                         "tensor on the input's device (x.new_zeros(...), torch.zeros(..., device=x.device))",
                         mistake="contract")
                continue  # an op without a meta kernel: the probe proves nothing
            finally:
                set_validation(was)
        else:
            result = run_answer(answer, *args, what="your function")
        validate(result, args)


def on_device(value, name: str, like: Tensor) -> None:
    """Fail (contract) unless the returned ``value`` is a tensor on ``like``'s device."""
    if isinstance(value, Tensor) and value.device.type != like.device.type:
        fail(f"`{name}` is on the device {value.device.type}, but the inputs were on {like.device.type}: "
             "keep results on the input's device (no .cpu() or .numpy(); create new tensors with "
             "x.new_zeros(...) or device=x.device)", mistake="contract")


def attached(value, name: str, grad: bool = True) -> None:
    """Fail (contract) when ``value``, already found right in value, is cut off from the autograd graph.
    Checked after the values, so that a wrong value gets the message about the value."""
    if grad:
        expect(value, name, grad=True)


def _sizes(g: torch.Generator, n_range, p_range) -> tuple[int, int]:
    """(n, p) with n != p, so that a result over the wrong axis cannot have the right shape."""
    while True:
        n, p = randint(g, *n_range), randint(g, *p_range)
        if n != p:
            return n, p


# The three problems each check draws: float64 inputs, float32 inputs, float64 inputs that require grad.
CASES = ((F64, False), (torch.float32, False), (F64, True))


def _tol(dtype) -> float:
    return 1e-9 if dtype == F64 else 2e-5


# ------------------------------------------------------------------ 2.1: closed-form Gaussian MLE


def _mle_data(g: torch.Generator, n: int, p: int) -> Tensor:
    """Correlated Gaussian data far from the origin (so that forgetting to centre shows)."""
    mix = uniforms(g, 0.3, 1.5, (p,)).diag() + 0.5 * torch.randn(p, p, generator=g, dtype=F64)
    loc = torch.randn(p, generator=g, dtype=F64) * 2.0 + 3.0 * torch.sign(torch.randn(p, generator=g, dtype=F64))
    return loc + torch.randn(n, p, generator=g, dtype=F64) @ mix


@exercise("2.1", notebook=NOTEBOOK, answer="mle", title="Closed-form Gaussian MLE", points=2,
          mistakes={
              "unbiased": "divided by N - 1 (the unbiased estimator) instead of N",
              "uncentred": "used the raw second moment x^T x / N, without centring",
              "diagonal": "kept only the variances (a diagonal covariance)",
              "no-division": "summed the outer products without dividing by N",
              "mean-axis": "averaged over the features (axis 1) instead of over the data points",
              "gram": "formed the N x N matrix (x - m)(x - m)^T instead of the p x p covariance",
          },
          forbidden={
              "coursekit.gaussian.gaussian_mle": "the closed-form MLE itself",
              "coursekit.gaussian.fit_gaussian": "a Gaussian fitted by maximum likelihood",
          })
def closed_form_mle(answer):
    """``answer(x (N, p)) -> (mean (p,), cov (p, p))``, the maximiser of the Gaussian likelihood."""
    require_callable(answer, "mle")
    for g, (dtype, grad) in zip(draws(len(CASES)), CASES):
        n, p = _sizes(g, (12, 40), (2, 5))
        x = _mle_data(g, n, p).to(dtype).requires_grad_(grad)
        x64 = x.detach().to(F64)
        ref_mean = x64.mean(0)
        r = x64 - ref_mean
        ref_cov = r.T @ r / n
        mean, cov = expect_pair(run_answer(answer, x, what="mle(x)"), "mle(x)", ("the mean", "the covariance"))
        if isinstance(mean, Tensor) and tuple(mean.shape) == (n,):
            fail("the mean has one value per data point: you averaged over the features (axis 1). The MLE "
                 "of m averages the rows of x, over axis 0, giving a (p,) vector", mistake="mean-axis")
        if isinstance(cov, Tensor) and tuple(cov.shape) == (n, n):
            fail("the covariance is N x N, one entry per pair of data points: that is (x - m)(x - m)^T. "
                 "The p x p covariance is (x - m)^T (x - m) / N, a sum over the data points",
                 mistake="gram")
        m = expect(mean, "mean", shape=(p,), like=x)
        c = expect(cov, "cov", shape=(p, p), like=x)
        tol = _tol(dtype)
        if not close(m, ref_mean, tol):
            fail("the mean is wrong: the MLE of m is the empirical mean (1/N) sum_i x_i of the rows of x")
        if close(c, ref_cov, tol):
            attached(mean, "mean", grad)
            attached(cov, "cov", grad)
            continue
        if close(c, ref_cov * n / (n - 1), tol):
            fail("you divided by N - 1 (the unbiased estimator); the maximiser of the likelihood divides by N",
                 mistake="unbiased")
        if close(c, x64.T @ x64 / n, tol):
            fail("you forgot to centre the data: use (x_i - m_N), not x_i, in the covariance", mistake="uncentred")
        if close(c, ref_cov * n, tol):
            fail("the covariance is N times too large: divide the sum of outer products by N",
                 mistake="no-division")
        if close(c, torch.diag(torch.diagonal(ref_cov)), tol):
            fail("the covariance is diagonal: the full-covariance MLE keeps the off-diagonal terms "
                 "(x_i - m)_j (x_i - m)_k", mistake="diagonal")
        if not close(c, c.T, tol):
            fail("the covariance is not symmetric: it is a sum of outer products (x_i - m)(x_i - m)^T")
        fail("the covariance is wrong: it should be (1/N) sum_i (x_i - m_N)(x_i - m_N)^T")

    def make(device):
        return (torch.randn(7, 3, device=device),)

    def validate(result, args):
        mean, cov = expect_pair(result, "mle(x)", ("the mean", "the covariance"))
        on_device(mean, "mean", args[0])
        on_device(cov, "cov", args[0])

    probe_devices(answer, make, validate)


# ------------------------------------------------------------------ 2.2: one SGD step (the slides' update)


@exercise("2.2", notebook=NOTEBOOK, answer="sgd_step", title="One SGD step on the Gaussian log-likelihood",
          points=2,
          mistakes={
              "descent": "subtracted the gradient of the log-likelihood (descent) instead of adding it",
              "mean-not-sum": "averaged the gradients over the batch instead of summing them",
              "no-minus-one": "left out the -1 per data point in the gradient in s (from the -s term)",
              "grad-in-sigma": "differentiated in sigma instead of in s = log sigma",
              "sigma-not-variance": "divided by sigma instead of sigma^2",
              "updated-m-first": "used the already updated m in the update of s",
          },
          forbidden={
              "coursekit.gaussian.gaussian_grad_log_density": "the gradients asked for",
              "coursekit.gaussian.gaussian_log_density": "the log-density, to differentiate instead of "
                                                         "deriving the gradients",
              "coursekit.gaussian.sgd_mle": "the whole SGD loop",
          })
def sgd_step(answer):
    """``answer(m (p,), s (p,), batch (B, p), gamma) -> (m_new, s_new)`` for ``N(m, diag(exp(s))^2)``."""
    require_callable(answer, "sgd_step")
    for g, (dtype, grad) in zip(draws(len(CASES)), CASES):
        B, p = _sizes(g, (4, 12), (2, 5))
        m0 = torch.randn(p, generator=g, dtype=F64)
        s0 = uniforms(g, -0.6, 0.6, (p,))
        batch0 = m0 + uniforms(g, 0.5, 2.0, (p,)) * torch.randn(B, p, generator=g, dtype=F64) + 0.5
        gamma = float(uniforms(g, 0.2, 0.6)) / B
        m, s, batch = (t.to(dtype) for t in (m0, s0, batch0))
        m.requires_grad_(grad)
        s.requires_grad_(grad)
        m64, s64, b64 = (t.detach().to(F64) for t in (m, s, batch))
        sigma = s64.exp()
        r = b64 - m64
        gm, gs = (r / sigma**2).sum(0), (r**2 / sigma**2 - 1).sum(0)
        ref_m, ref_s = m64 + gamma * gm, s64 + gamma * gs
        result = run_answer(answer, m, s, batch, gamma, what="sgd_step(m, s, batch, gamma)")
        new_m, new_s = expect_pair(result, "sgd_step(m, s, batch, gamma)", ("the new m", "the new s"))
        got_m = expect(new_m, "m_new", shape=(p,), like=m)
        got_s = expect(new_s, "s_new", shape=(p,), like=s)
        tol = _tol(dtype)
        ok_m, ok_s = close(got_m, ref_m, tol), close(got_s, ref_s, tol)
        if ok_m and ok_s:
            attached(new_m, "m_new", grad)
            attached(new_s, "s_new", grad)
            continue
        if close(got_m, m64 - gamma * gm, tol) or close(got_s, s64 - gamma * gs, tol):
            fail("wrong sign: the slides' update is an ascent on the log-likelihood, theta + gamma * grad log p "
                 "(equivalently a descent on the negative log-likelihood)", mistake="descent")
        if close(got_m, m64 + gamma * gm / B, tol) or close(got_s, s64 + gamma * gs / B, tol):
            fail("the step is B times too small: you averaged the gradients; the slides' update sums them "
                 "over the batch B_{k+1}", mistake="mean-not-sum")
        if not ok_m:
            if close(got_m, m64 + gamma * (r / sigma).sum(0), tol):
                fail("the update of m divides by sigma; d/dm log p(x) = (x - m) / sigma^2, with "
                     "sigma^2 = exp(2 s)", mistake="sigma-not-variance")
            fail("the update of m is wrong: m + gamma * sum over the batch of (x - m) / sigma^2, "
                 "with sigma = exp(s)")
        if close(got_s, s64 + gamma * (r**2 / sigma**2).sum(0), tol):
            fail("the update of s misses the -1 per data point: it comes from the -log sigma = -s term of "
                 "log p", mistake="no-minus-one")
        if close(got_s, s64 + gamma * (r**2 / sigma**3 - 1 / sigma).sum(0), tol):
            fail("you differentiated in sigma, but the parameter is s = log sigma: "
                 "d/ds log p(x) = (x - m)^2 / sigma^2 - 1", mistake="grad-in-sigma")
        if close(got_s, s64 + gamma * (r**2 / sigma - 1).sum(0), tol):
            fail("the update of s divides by sigma; the squared residual is divided by sigma^2 = exp(2 s)",
                 mistake="sigma-not-variance")
        r_new = b64 - ref_m
        if close(got_s, s64 + gamma * (r_new**2 / sigma**2 - 1).sum(0), tol):
            fail("the update of s uses the new m: both gradients are evaluated at the current (m, s), "
                 "before either is updated", mistake="updated-m-first")
        fail("the update of s is wrong: s + gamma * sum over the batch of ((x - m)^2 / sigma^2 - 1), "
             "with s = log sigma")

    def make(device):
        return (torch.zeros(3, device=device), torch.zeros(3, device=device), torch.ones(5, 3, device=device), 0.1)

    def validate(result, args):
        new_m, new_s = expect_pair(result, "sgd_step(m, s, batch, gamma)", ("the new m", "the new s"))
        on_device(new_m, "m_new", args[0])
        on_device(new_s, "s_new", args[0])

    probe_devices(answer, make, validate)


# ------------------------------------------------------------------ 2.3: nearest training-neighbour distance


def _nn_problem(g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Training rows and samples that mix exact copies, near copies and new points, shuffled.
    The sizes differ pairwise, so that a minimum over the wrong axis has the wrong shape."""
    while True:
        n, N, p = randint(g, 6, 14), randint(g, 16, 30), randint(g, 2, 5)
        if len({n, N, p}) == 3:
            break
    train = torch.randn(N, p, generator=g, dtype=F64) * uniforms(g, 0.5, 2.0, (p,))
    k = randint(g, 2, 3)
    copies = train[torch.randint(N, (k,), generator=g)]
    near = train[torch.randint(N, (2,), generator=g)] + 0.1 * torch.randn(2, p, generator=g, dtype=F64)
    new = 2.5 * torch.randn(n - k - 2, p, generator=g, dtype=F64)
    samples = torch.cat([copies, near, new])[torch.randperm(n, generator=g)]
    return samples, train


@exercise("2.3", notebook=NOTEBOOK, answer="nn_distance", title="Nearest training-neighbour distance", points=1,
          mistakes={
              "squared": "returned squared distances",
              "wrong-axis": "took the minimum over the samples instead of over the training rows",
              "indices": "returned the indices of the nearest rows (argmin, .indices) instead of the distances",
              "no-min": "returned all the sample-to-row distances, without the minimum",
              "mean-not-min": "averaged the distances to the training rows instead of taking the minimum",
              "max-not-min": "took the farthest training row instead of the nearest",
              "l1": "used the L1 distance (sum of absolute differences) instead of the Euclidean one",
          },
          forbidden={"coursekit.gaussian.nearest_neighbour_distance": "the nearest-neighbour distance itself"})
def nn_distance(answer):
    """``answer(samples (n, p), train (N, p)) -> (n,)``: distance of each sample to its nearest training row."""
    require_callable(answer, "nn_distance")
    for g, (dtype, grad) in zip(draws(len(CASES)), CASES):
        samples0, train0 = _nn_problem(g)
        samples = samples0.to(dtype).requires_grad_(grad)
        train = train0.to(dtype)
        n, N = samples.shape[0], train.shape[0]
        s64, t64 = samples.detach().to(F64), train.to(F64)
        diff = s64[:, None, :] - t64[None, :, :]
        d2 = diff.pow(2).sum(-1)  # (n, N)
        ref2 = d2.min(1).values
        out = run_answer(answer, samples, train, what="nn_distance(samples, train)")
        if isinstance(out, tuple) and hasattr(out, "values") and hasattr(out, "indices"):
            fail("you returned the whole result of .min(...), values and indices: return its .values",
                 mistake="contract")
        if isinstance(out, Tensor) and not (out.is_floating_point() or out.is_complex()):
            fail("the result holds integers: these are the indices of the nearest rows (argmin or "
                 ".indices); return the distances themselves (.values, or .min(...) of the distances)",
                 mistake="indices")
        if isinstance(out, Tensor) and tuple(out.shape) == (N,):
            fail("you returned one value per training row: take the minimum over the training rows (the "
                 "axis of length N), one distance per sample", mistake="wrong-axis")
        if isinstance(out, Tensor) and tuple(out.shape) == (n, N):
            fail("you returned the distance of every sample to every training row: keep, for each sample, "
                 "the minimum over the training rows", mistake="no-min")
        got = expect(out, "nn_distance(samples, train)", shape=(n,), like=samples)
        tol = 1e-9 if dtype == F64 else 1e-5
        # compared in squares: torch.cdist's fast mode is exact up to rounding in d^2, not in d near 0
        if bool((got >= 0).all()) and close(got**2, ref2, tol):
            attached(out, "nn_distance(samples, train)", grad)
            continue
        if close(got, ref2, tol):
            fail("these are squared distances: take the square root of the sum of squares", mistake="squared")
        if close(got**2, d2.sqrt().mean(1) ** 2, tol):
            fail("you averaged the distances over the training rows; d(y) is the minimum over them, the "
                 "distance to the NEAREST training row", mistake="mean-not-min")
        if close(got**2, d2.max(1).values, tol):
            fail("you took the distance to the farthest training row (max); d(y) takes the minimum",
                 mistake="max-not-min")
        if close(got, diff.abs().sum(-1).min(1).values, tol):
            fail("this is the L1 distance (sum of absolute differences); use the Euclidean norm, the square "
                 "root of the sum of squared differences", mistake="l1")
        if bool((got < 0).any()):
            fail("some distances are negative: a norm is non-negative")
        copies = ref2 == 0
        if bool(copies.any()) and not bool((got[copies].abs() <= 1e-3).all()):
            fail("a sample equal to a training row must be at distance 0, and yours is not: d(y) is the "
                 "Euclidean distance to the nearest training row")
        fail("wrong distances: d(y) = min_i ||y - x_i||, the Euclidean distance to the nearest training row")

    def make(device):
        return torch.randn(4, 3, device=device), torch.randn(6, 3, device=device)

    def validate(result, args):
        on_device(result, "nn_distance(samples, train)", args[0])

    probe_devices(answer, make, validate)
