"""Planar and radial flows (Rezende and Mohamed, 2015), with exact inverses.

Both maps are rank-one or radial perturbations of the identity. Their log-determinants are
closed-form; their inverses have no closed form in general but reduce to a ONE-dimensional
equation, solved here to a stated tolerance, so that a flow of planar maps can evaluate the
density of data points and be trained by maximum likelihood.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _validate as V
from .base import Bijection

__all__ = ["Planar", "Radial"]  # solve_monotone is public but not a map, so not exported with the maps


def _tolerance(dtype: torch.dtype) -> float:
    # a few ulps: float32 residuals below ~1e-6 (relative) are noise, float64 can go to ~1e-13
    return 64 * torch.finfo(dtype).eps


class NotConverged(ArithmeticError):
    """An iterative inverse stopped without meeting its tolerance (see :func:`solve_monotone`)."""


def solve_monotone(
    g, target: Tensor, lo: Tensor, hi: Tensor, tol: float | None = None, max_iter: int = 200, check_every: int | None = None
) -> Tensor:
    """Solve ``g(a) = target`` elementwise for an increasing ``g`` with the root in ``[lo, hi]``.

    Safeguarded Newton (as ``rtsafe`` in Numerical Recipes): each step takes the Newton iterate
    when it stays inside the current bracket and the previous step at least halved the residual,
    and the bisection midpoint otherwise; the bracket shrinks at every step, so the method
    converges for every increasing ``g`` (quadratically near the root). All batch
    elements are solved at once; it stops when every residual satisfies
    ``|g(a) - target| <= tol * (1 + |target|)`` (default ``tol`` = 64 machine epsilons of the
    dtype) or the bracket has collapsed to adjacent floating-point numbers.

    ``g(a)`` must return the pair ``(value, derivative)``. Runs without autograd; see
    :class:`Planar` for how gradients are recovered (one differentiable Newton step).

    It never returns a wrong root silently: a ``ValueError`` when the bracket does not contain
    the root (``g(lo) <= target <= g(hi)`` fails: a root outside it, or a decreasing ``g``), and
    :class:`NotConverged` when ``max_iter`` iterations do not reach the tolerance. Midpoints are
    computed as ``lo/2 + hi/2``, which cannot overflow near the largest float.

    Whether to stop is read back from the device every ``check_every`` iterations (default: 1
    on the CPU, where reading costs nothing, and 8 elsewhere, where each read is a host
    synchronisation that stalls the GPU). Elements that have converged are frozen, so the
    iterations run between two reads never move them: the result is the same for every
    ``check_every``, up to the elements that a later read lets refine further.

    >>> a = solve_monotone(lambda a: (a + a.tanh(), 2 - a.tanh() ** 2), torch.tensor([0.5, -3.0]),
    ...                    torch.tensor([-0.5, -4.0]), torch.tensor([1.5, -2.0]))
    >>> bool(torch.allclose(a + a.tanh(), torch.tensor([0.5, -3.0])))
    True
    """
    if not callable(g):
        raise TypeError(f"g must be a function a -> (g(a), g'(a)), got {type(g).__name__}")
    for name, t in (("target", target), ("lo", lo), ("hi", hi)):
        if not isinstance(t, Tensor) or not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got "
                            f"{type(t).__name__ if not isinstance(t, Tensor) else t.dtype}")
        if t.shape != target.shape or t.dtype != target.dtype or t.device != target.device:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, {t.dtype} on {t.device}; expected the target's "
                             f"shape {tuple(target.shape)}, {target.dtype} on {target.device}")
    max_iter = V.positive_int("max_iter", max_iter)
    tol = _tolerance(target.dtype) if tol is None else V.positive_float("tol", tol)
    if check_every is None:
        check_every = 1 if target.device.type == "cpu" else 8
    check_every = V.positive_int("check_every", check_every)
    with torch.no_grad():
        # the three input checks read back together: one host synchronisation, not three
        finite = torch.isfinite(lo).all() & torch.isfinite(hi).all() & torch.isfinite(target).all()
        scale = 1 + target.abs()
        r_lo, r_hi = g(lo)[0] - target, g(hi)[0] - target
        slack = tol * scale
        outside = ~((r_lo <= slack) & (r_hi >= -slack))
        finite, empty, unbracketed = torch.stack([finite, (lo > hi).any(), outside.any()]).tolist()
        if not finite:
            raise ValueError("solve_monotone needs finite target, lo and hi (an input overflowed the dtype?)")
        if empty:
            raise ValueError("the bracket is empty: lo > hi for some elements")
        if unbracketed:
            i = int(outside.reshape(-1).nonzero()[0])
            raise ValueError(
                f"the root is not bracketed for {int(outside.sum())} element(s): g(lo) - target = "
                f"{float(r_lo.reshape(-1)[i]):.3g} and g(hi) - target = {float(r_hi.reshape(-1)[i]):.3g} at element {i} "
                f"(need g(lo) <= target <= g(hi) with g increasing); widen [lo, hi] or check that g increases")
        lo, hi = lo.clone(), hi.clone()
        a = 0.5 * lo + 0.5 * hi
        prev = torch.full_like(a, float("inf"))
        converged = False
        for k in range(max_iter):
            val, der = g(a)
            res = val - target
            done = res.abs() <= tol * scale
            check = (k + 1) % check_every == 0 or k + 1 == max_iter
            if check and bool(done.all()):
                converged = True
                break
            # the root is left of a when g(a) > target (g increasing); a stays inside [lo, hi]
            hi = torch.where(res > 0, a, hi)
            lo = torch.where(res > 0, lo, a)
            newton = a - res / der
            # Newton only when it stays in the bracket and the last step at least halved the
            # residual; otherwise bisect (Newton can cycle between the two flat arms of tanh)
            use_newton = (newton >= lo) & (newton <= hi) & (res.abs() <= 0.5 * prev)
            a_new = torch.where(done, a, torch.where(use_newton, newton, 0.5 * lo + 0.5 * hi))
            prev = res.abs()
            if check and bool((a_new == a).all()):  # bracket collapsed to adjacent floats: as good as the dtype allows
                converged = True
                break
            a = a_new
        if not converged:
            val = g(a)[0]
            if not bool(((val - target).abs() <= tol * scale).all()):
                worst = float(((val - target).abs() / scale).max())
                raise NotConverged(
                    f"solve_monotone did not converge in max_iter={max_iter} iterations (largest relative "
                    f"residual {worst:.3g}, tolerance {tol:.3g}); raise max_iter or loosen tol")
    return a


class Planar(Bijection):
    r"""Planar map :math:`T(z) = z + \hat u \, \tanh(w^\top z + b)` on :math:`\mathbb{R}^p`.

    * Invertibility: T is invertible iff :math:`w^\top \hat u \ge -1` (for h = tanh). It is
      enforced for every parameter value by the reparametrisation of Rezende and Mohamed (2015,
      appendix A): from a free vector u,
      :math:`\hat u = u + (m(w^\top u) - w^\top u)\, w / \|w\|^2` with
      :math:`m(s) = -1 + \delta + \log(1 + e^s)`, so that :math:`w^\top \hat u = m(w^\top u) > -1`.
      The paper has :math:`\delta = 0`; in floating point the softplus underflows for very negative
      :math:`w^\top u` and the map would fold, so a margin :math:`\delta = 10^{-4}` keeps
      :math:`1 + h'(a) w^\top\hat u \ge \delta` (log-determinants stay above :math:`\log \delta`).
    * Log-determinant (matrix determinant lemma,
      :math:`\det(I + \hat u\, \psi^\top) = 1 + \psi^\top \hat u` with :math:`\psi = h'(a) w`):
      :math:`\log|\det J_T(z)| = \log(1 + h'(a)\, w^\top \hat u)`, :math:`a = w^\top z + b`.
    * Inverse: given x, the scalar :math:`a = w^\top z + b` solves
      :math:`a + (w^\top\hat u) \tanh(a) = w^\top x + b`, an increasing function of a whose root
      lies within :math:`|w^\top \hat u|` of :math:`w^\top x + b`. It is found by
      :func:`solve_monotone` (to 64 machine epsilons, relative), then
      :math:`z = x - \hat u \tanh(a)`. A last Newton step is taken WITH autograd from the
      detached root: at a root it leaves the value unchanged and its derivative is exactly the
      implicit-function derivative :math:`\partial a / \partial(x, \theta)`, so gradients flow
      through the inverse and the flow trains by maximum likelihood.

    >>> _ = torch.manual_seed(0); T = Planar(2)
    >>> z = torch.randn(5, 2); x, ld = T(z); z2, ld2 = T.inverse(x)
    >>> bool(torch.allclose(z, z2, atol=1e-5)), bool(torch.allclose(ld + ld2, torch.zeros(5), atol=1e-5))
    (True, True)
    """

    margin = 1e-4  # delta in the docstring

    def __init__(self, dim: int, init_scale: float | None = None):
        super().__init__(dim)
        s = 1.0 / math.sqrt(dim) if init_scale is None else V.nonneg_float("init_scale", init_scale)
        self.w = nn.Parameter(torch.empty(dim).uniform_(-s, s))
        self.u = nn.Parameter(torch.empty(dim).uniform_(-s, s))
        self.b = nn.Parameter(torch.zeros(()))

    def u_hat(self) -> Tensor:
        """The constrained vector :math:`\\hat u` with :math:`w^\\top \\hat u > -1`."""
        wu = self.w @ self.u
        m = -1 + self.margin + F.softplus(wu)
        # the tiny floor only matters for w = 0, where any u is admissible anyway
        return self.u + (m - wu) * self.w / (self.w @ self.w).clamp_min(torch.finfo(self.w.dtype).tiny)

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        u = self.u_hat()
        a = z @ self.w + self.b
        t = torch.tanh(a)
        x = z + t.unsqueeze(-1) * u
        ld = torch.log1p((1 - t * t) * (self.w @ u))
        return x, ld

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        u = self.u_hat()
        s = self.w @ u  # > -1
        c = x @ self.w + self.b
        if not bool(torch.isfinite(c.detach()).all()):
            raise ValueError(
                f"Planar.inverse: w^T x + b overflows {x.dtype} for inputs this large (|x| up to {float(x.abs().max()):.3g}); "
                "use float64 (flow.double()) or standardise the data")

        def g(a):
            t = torch.tanh(a)
            return a + s * t, 1 + s * (1 - t * t)

        sd = s.detach()
        radius = sd.abs() * (1 + 1e-6) + 1e-12
        cd = c.detach()
        a0 = solve_monotone(lambda a: (a + sd * a.tanh(), 1 + sd * (1 - a.tanh() ** 2)), cd, cd - radius, cd + radius)
        # one differentiable Newton step = implicit differentiation at the root
        val, der = g(a0)
        a = a0 - (val - c) / der
        t = torch.tanh(a)
        z = x - t.unsqueeze(-1) * u
        ld = -torch.log1p((1 - t * t) * s)
        return z, ld

    def extra_repr(self) -> str:
        return f"dim={self.dim}, h=tanh"


class Radial(Bijection):
    r"""Radial map :math:`T(z) = z + \beta\, h(\alpha, r)\,(z - z_0)`, :math:`r = \|z - z_0\|`,
    :math:`h(\alpha, r) = 1/(\alpha + r)` (Rezende and Mohamed, 2015).

    * Constraints, for every parameter value: :math:`\alpha = \mathrm{softplus}(\tilde\alpha) > 0`
      and :math:`\beta = -\alpha + \mathrm{softplus}(\tilde\beta) > -\alpha`, which makes T
      invertible (the radius :math:`r \mapsto r(1 + \beta/(\alpha + r))` is increasing).
    * Log-determinant:
      :math:`\log|\det J_T(z)| = (p-1)\log(1 + \beta h) + \log(1 + \beta h + \beta h'(r)\, r)`
      with :math:`h' = -1/(\alpha+r)^2`, i.e. the last factor is :math:`1 + \alpha\beta/(\alpha+r)^2`.
    * Inverse: T moves points along rays from :math:`z_0`, so the 1-D unknown is the radius r.
      Given x, with :math:`R = \|x - z_0\|`, r solves :math:`r + \beta r/(\alpha + r) = R`, i.e.
      the quadratic :math:`r^2 + (\alpha + \beta - R) r - \alpha R = 0` whose non-negative root is
      taken in closed form (written without cancellation), then
      :math:`z = z_0 + (x - z_0)/(1 + \beta/(\alpha + r))`. The inverse is therefore exact and
      differentiable; no iterative root find is needed.

    >>> _ = torch.manual_seed(0); T = Radial(3)
    >>> z = torch.randn(4, 3); x, ld = T(z); z2, ld2 = T.inverse(x)
    >>> bool(torch.allclose(z, z2, atol=1e-5)), bool(torch.allclose(ld + ld2, torch.zeros(4), atol=1e-5))
    (True, True)
    """

    def __init__(self, dim: int):
        super().__init__(dim)
        self.z0 = nn.Parameter(torch.randn(dim) / math.sqrt(dim))
        self.alpha_raw = nn.Parameter(torch.empty(()).uniform_(-0.5, 0.5))
        self.beta_raw = nn.Parameter(torch.empty(()).uniform_(-0.5, 0.5))

    def alpha_beta(self) -> tuple[Tensor, Tensor]:
        alpha = F.softplus(self.alpha_raw)
        beta = -alpha + F.softplus(self.beta_raw)
        return alpha, beta

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        alpha, beta = self.alpha_beta()
        d = z - self.z0
        r = d.norm(dim=-1)
        bh = beta / (alpha + r)
        x = z + bh.unsqueeze(-1) * d
        ld = (self.dim - 1) * torch.log1p(bh) + torch.log1p(alpha * beta / (alpha + r) ** 2)
        return x, ld

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        alpha, beta = self.alpha_beta()
        d = x - self.z0
        R = d.norm(dim=-1)
        p = alpha + beta - R
        disc = torch.sqrt(p * p + 4 * alpha * R)
        # the non-negative root of r^2 + p r - alpha R = 0, in its cancellation-free form
        r = torch.where(p > 0, 2 * alpha * R / (p.clamp_min(0) + disc), (disc - p.clamp_max(0)) / 2)
        bh = beta / (alpha + r)
        z = self.z0 + d / (1 + bh).unsqueeze(-1)
        ld = -((self.dim - 1) * torch.log1p(bh) + torch.log1p(alpha * beta / (alpha + r) ** 2))
        return z, ld

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
