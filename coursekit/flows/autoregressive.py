"""Autoregressive flows: MAF, IAF, the sigmoid-gated autoregressive layer, and order reversal.

Direction convention (as everywhere in coursekit): ``forward`` is the sampling direction
``x = T(z)``, ``inverse`` the density direction ``z = T^{-1}(x)``.

All the maps here are elementwise in ``z_i`` given parameters computed by a MADE network
(:class:`coursekit.made.MADE`) from the *predecessors* of ``i`` in an order. What the network
reads decides which direction costs one pass and which costs ``p``:

=============  ==================  ==========================  ==========================
map            network reads       forward  z -> x (sample)    inverse  x -> z (density)
=============  ==================  ==========================  ==========================
:class:`MAF`   the output ``x``    ``p`` steps (sequential)    1 pass (parallel)
:class:`IAF`   the input ``z``     1 pass (parallel)           ``p`` steps (sequential)
=============  ==================  ==========================  ==========================

The sequential directions take ``p`` steps, but not ``p`` passes of arithmetic: they run
:meth:`coursekit.made.MADE.solve`, which computes at step ``i`` only the hidden units that
``u_{1:i}`` has just made final and the outputs of coordinate ``i + 1``, so that the ``p`` steps
together cost one pass of multiply-adds. ``naive=True`` (an argument of every layer, and an
attribute one can set later) keeps the textbook solver, ``p`` full passes, as the reference.
``count_passes`` counts sequential rounds through the network (``p`` for both solvers).

Scale parametrisation (stable): the network's raw output ``a_i`` is softly clamped,
``alpha_i = B tanh(a_i / B)`` with ``B = bound`` (default 5), so every scale ``exp(alpha_i)``
lies in ``(e^{-B}, e^{B})``: a step of the optimiser can never make a scale overflow or vanish,
and near zero the clamp is the identity.

Shift parametrisation: the network's other output is the shift ``b_i`` added *after* the scaling
in the parallel density direction of a MAF, ``z_i = exp(-alpha_i) x_i + b_i`` (``shift="after"``,
default), i.e. ``m_i = -b_i exp(alpha_i)`` in the slides' ``x_i = exp(alpha_i) z_i + m_i``; or the
slides' ``m_i`` itself (``shift="before"``). The same maps, trained differently: see
:class:`AffineConditioner`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _validate as V
from ..made import MADE
from .base import Bijection, Compose, Flow, check_input
from .coupling import _affine, _clamp

__all__ = [
    "IAF",
    "MAF",
    "AffineConditioner",
    "AutoregressiveFlow",
    "GaussianAR",
    "Reverse",
    "SigmoidAR",
    "count_passes",
    "iaf_flow",
    "invert",
    "maf_flow",
]


def _default_hidden(dim: int) -> tuple[int, int]:
    # MADE needs at least dim - 1 units per layer; 64 is the usual width for small dim.
    return (max(64, 2 * dim), max(64, 2 * dim))


class AffineConditioner(nn.Module):
    """``(m, alpha)`` of every coordinate from one MADE pass, with ``alpha = B tanh(a / B)``.

    The MADE outputs a raw log-scale ``a`` and a shift per coordinate. ``shift="after"``
    (default): the shift ``b`` is added after the scaling in the MAF's density direction,
    ``z = exp(-alpha) x + b``, so ``m = -b exp(alpha)``; ``shift="before"``: the output is the
    slides' ``m``. Either way :meth:`params` and :meth:`forward` give the slides' ``(m, alpha)``
    and :meth:`affine` applies the map without forming ``m``. The density direction, which
    maximum likelihood trains, is linear in ``(b, exp(-alpha))`` in the "after" form; that form
    trained the MAF to a lower test NLL on the 8x8 digits over seeds
    (``benchmarks/ablation_nll.py``, ``benchmarks/RESULTS.md``).

    ``zero_init`` (default) starts the MADE's last layer at zero, so that ``m = alpha = 0`` and
    the layer starts as the identity map: a stack of them starts at the base distribution and
    each layer learns a correction (with random orders per layer, see :func:`maf_flow`, this
    made the MAF better on the 8x8 digits: ``benchmarks/ablation_nll.py`` and
    ``benchmarks/RESULTS.md``).
    ``passes`` counts the network evaluations (used to show O(1) against O(p) passes).
    """

    SHIFTS = ("after", "before")

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] | None = None,
        order="natural",
        bound: float = 5.0,
        activation: type[nn.Module] = nn.ReLU,
        seed: int | None = None,
        zero_init: bool = True,
        shift: str = "after",
    ):
        super().__init__()
        if not bound > 0:
            raise ValueError(f"bound must be positive (the largest |alpha_i|), got {bound!r}")
        self.made = MADE(dim, hidden or _default_hidden(dim), n_params=2, order=order, activation=activation, seed=seed)
        if zero_init:
            last = self.made._linears()[-1]
            with torch.no_grad():
                last.weight.zero_()
                last.bias.zero_()
        self.bound = float(bound)
        self.shift = V.choice("shift", shift, self.SHIFTS)
        self.passes = 0

    @property
    def order(self) -> Tensor:
        return self.made.order

    def params(self, raw: Tensor) -> tuple[Tensor, Tensor]:
        """``(m, alpha)`` from raw MADE outputs stacked on the first axis (elementwise)."""
        shift, a = raw
        alpha = self._alpha(a)
        return (-shift * torch.exp(alpha) if self.shift == "after" else shift), alpha

    def _alpha(self, a: Tensor) -> Tensor:
        return _clamp(a, self.bound)

    def forward(self, u: Tensor) -> tuple[Tensor, Tensor]:
        self.passes += 1
        return self.params(self.made(u).movedim(-2, 0))

    def affine(self, u: Tensor, t: Tensor, inverse: bool = False) -> tuple[Tensor, Tensor]:
        """One pass on ``u``, then ``exp(alpha) t + m`` (``inverse=True``: ``(t - m) exp(-alpha)``)
        with the parameters it gives, and the log-determinant of that map of ``t`` (``+-sum alpha``)."""
        self.passes += 1
        shift, a = self.made(u).movedim(-2, 0)
        alpha = self._alpha(a)
        return _affine(shift, alpha, t, inverse, self.shift), (-alpha if inverse else alpha).sum(-1)

    def step(self, inverse: bool) -> _AffineStep:
        """The update ``u_i = exp(alpha_i) t_i + m_i`` (or its inverse) from raw MADE outputs."""
        return _AffineStep(self.bound, inverse, self.shift)

    def extra_repr(self) -> str:
        return f"alpha = {self.bound:g} tanh(a / {self.bound:g}), shift={self.shift}"


_LOG2E = 1.0 / math.log(2.0)


class _AffineStep:
    """The elementwise update of an affine autoregressive layer, from raw MADE outputs ``(shift, a)``
    with ``alpha = B tanh(a / B)``: ``u = exp(alpha) t + m`` (``inverse=False``: MAF sampling) or
    ``u = (t - m) exp(-alpha)`` (``inverse=True``: IAF inversion), ``m`` from the shift as in
    :class:`AffineConditioner`. Called out of place by the naive and autograd solvers;
    :meth:`inplace` gives the same values in four elementwise kernel calls with no allocation, which
    :meth:`MADE.solve` uses in its in-place steps (``scale`` asks it to fold a factor into each
    of the network's two outputs).

    Each update either scales then shifts, ``exp(s alpha) t + shift`` (the "before" form sampling,
    the "after" form inverting), or shifts then scales, ``(t - shift) exp(s alpha)``, with the sign
    ``s = -1`` when inverting. The in-place form writes ``exp(s B tanh(y))`` as ``e^{-sB} exp(2sB
    sigmoid(2y))`` (from ``tanh(y) = 2 sigmoid(2y) - 1``), with ``2y = 2a / B`` folded into the last
    layer: a sigmoid costs a fraction of a tanh on a CPU (``_clamp`` computes the same way), and
    this step runs ``dim`` times per layer; the exponential is taken as ``exp2`` of ``log2(e)``
    times its argument, the factor folded into the one multiplication there is anyway (``exp2``
    costs about a third less than ``exp`` on a CPU). The constant ``e^{-sB}`` goes into the final
    multiply-add (scale first) or, with the shift's factor ``-e^{-sB}`` folded into the last layer
    and ``e^{-sB} t`` into its matrix product (``fold``), into the shift's output row (shift first;
    that update is then computed in place in the solution's row): either way four elementwise
    kernels a step. Equal to the tanh form up to rounding (tested in float64 against the naive
    solver)."""

    def __init__(self, bound: float, inverse: bool, form: str = "before"):
        self.bound, self.inverse, self.form = bound, inverse, form
        self.sign = -1.0 if inverse else 1.0
        self.scale_first = (form == "before") != inverse
        c = math.exp(-self.sign * bound)
        self.shrink = c
        self.scale = (1.0 if self.scale_first else -c, 2.0 / bound)
        self.fold = None if self.scale_first else c  # MADE.solve adds c t to the shift's row

    def __call__(self, raw: Tensor, t: Tensor) -> Tensor:
        shift, a = raw
        return _affine(shift, _clamp(a, self.bound), t, self.inverse, self.form)

    def inplace(self, scratch: Tensor):
        # the factor as a 0-d (CPU) tensor: multiplying by one is cheaper than by a Python float;
        # exp(v) as exp2(v log2(e)), within a few float32 ulps of it
        factor = torch.tensor(2.0 * self.sign * self.bound * _LOG2E, dtype=scratch.dtype)
        addcmul, sigmoid, shrink = torch.addcmul, torch.sigmoid, self.shrink
        if self.scale_first:

            def scale_then_shift(rows, t, out):  # rows = (shift, 2a / B)
                addcmul(rows[0], t, sigmoid(rows[1], out=scratch).mul_(factor).exp2_(), value=shrink, out=out)

            return scale_then_shift

        def shift_then_scale(rows, t, out):  # rows = (e^{-sB} (t - shift), 2a / B): t folded in
            sigmoid(rows[1], out=out).mul_(factor).exp2_().mul_(rows[0])  # all in out: no scratch

        return shift_then_scale


class _InvertedAffine(nn.Module):
    """The parameters of the inverse affine map: if ``v = exp(alpha) u + m`` then
    ``u = exp(-alpha) v - m exp(-alpha)``, i.e. ``(m, alpha) -> (-m exp(-alpha), -alpha)``."""

    def __init__(self, conditioner: nn.Module):
        super().__init__()
        self.inner = conditioner

    @property
    def order(self) -> Tensor:
        return self.inner.order

    @property
    def made(self) -> MADE:
        return self.inner.made

    @staticmethod
    def _flip(m: Tensor, alpha: Tensor) -> tuple[Tensor, Tensor]:
        return -m * torch.exp(-alpha), -alpha

    def params(self, raw: Tensor) -> tuple[Tensor, Tensor]:
        return self._flip(*self.inner.params(raw))

    def forward(self, u: Tensor) -> tuple[Tensor, Tensor]:
        return self._flip(*self.inner(u))

    def affine(self, u: Tensor, t: Tensor, inverse: bool = False) -> tuple[Tensor, Tensor]:
        # the flipped parameters' map is the inner inverse map (and the other way round)
        return self.inner.affine(u, t, not inverse)

    def step(self, inverse: bool) -> _AffineStep:
        # exp(alpha') t + m' with the flipped parameters is (t - m) exp(-alpha): the inner inverse
        return self.inner.step(not inverse)


def _inverted(conditioner: nn.Module) -> nn.Module:
    # Inverting twice gives back the original network (no wrapper chains).
    return conditioner.inner if isinstance(conditioner, _InvertedAffine) else _InvertedAffine(conditioner)


def _counter(conditioner: nn.Module) -> nn.Module:
    # the module that counts the passes of a (possibly inverted) conditioner
    while isinstance(conditioner, _InvertedAffine):
        conditioner = conditioner.inner
    return conditioner


class _Autoregressive(Bijection):
    """Shared plumbing: a conditioner, its order, and the sequential solver.

    ``shift`` (``"after"`` or ``"before"``, see :class:`AffineConditioner`) defaults to the form in
    which the layer's one-pass direction scales first and shifts last: ``"after"`` for a MAF
    (density ``z = exp(-alpha) x + b``), ``"before"`` for an IAF (sampling ``x = exp(alpha) z + m``)."""

    SHIFT = "before"

    def __init__(
        self,
        dim: int,
        hidden=None,
        order="natural",
        bound: float = 5.0,
        activation: type[nn.Module] = nn.ReLU,
        seed: int | None = None,
        conditioner: nn.Module | None = None,
        naive: bool = False,
        shift: str | None = None,
    ):
        super().__init__(dim)
        if conditioner is not None and shift is not None:
            raise ValueError("give either a conditioner or its shift form, not both (the conditioner has its own)")
        self.conditioner = (
            conditioner if conditioner is not None
            else AffineConditioner(dim, hidden, order, bound, activation, seed, shift=shift or self.SHIFT)
        )
        self.naive = bool(naive)

    def _affine(self, u: Tensor, t: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        """The one-pass direction: parameters from ``u``, the affine map (or its inverse) of ``t``,
        and its log-determinant."""
        cond = self.conditioner
        if getattr(cond, "affine", None) is not None:
            return cond.affine(u, t, inverse)
        m, alpha = cond(u)  # any module giving the slides' (m, alpha)
        return _affine(m, alpha, t, inverse, "before"), (-alpha if inverse else alpha).sum(-1)

    @property
    def order(self) -> Tensor:
        return self.conditioner.order

    def _solve(self, target: Tensor, update, inverse: bool | None = None,
               params: bool = True) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """``u`` with ``u_i = update(m_i(u_{<i}), alpha_i(u_{<i}), target_i)`` for every ``i``, and the
        parameters ``(m, alpha)`` at the solution. Sequential by nature: ``dim`` steps. By default the
        incremental solver of :meth:`MADE.solve` (one pass of arithmetic in all); with ``naive=True``,
        or a conditioner without a MADE, ``dim`` full passes (after pass ``k`` the first ``k``
        coordinates in the order are exact, their parameters reading only exact coordinates).
        ``inverse`` says that ``update`` is the affine map ``exp(alpha) t + m`` (False) or its inverse
        (True); the conditioner then supplies the same update in an allocation-free form.
        ``params=False`` returns ``(u, None, None)``: sampling needs no log-determinant, and
        reading ``alpha`` off the outputs of every coordinate would cost as much as the steps' own
        elementwise work."""
        cond = self.conditioner
        if not self.naive and hasattr(cond, "params") and isinstance(getattr(cond, "made", None), MADE):
            counter = _counter(cond)
            counter.passes += self.dim  # p sequential rounds, each through a slice of the network
            if inverse is not None and getattr(cond, "step", None) is not None:
                step = cond.step(inverse)
            else:
                step = lambda r, t: update(*cond.params(r), t)  # noqa: E731
            u, raw = cond.made.solve(step, target, outputs=params)
            return (u, *cond.params(raw.movedim(-2, 0))) if params else (u, None, None)
        u = torch.zeros_like(target)
        for _ in range(self.dim):
            m, alpha = cond(u)
            u = update(m, alpha, target)
        return (u, m, alpha) if params else (u, None, None)

    def extra_repr(self) -> str:
        order = self.order.tolist()
        shown = order if len(order) <= 10 else order[:5] + ["..."] + order[-2:]
        return f"dim={self.dim}, order={shown}" + (", naive=True" if self.naive else "")


class MAF(_Autoregressive):
    """One layer of the masked autoregressive flow (Papamakarios, Pavlakou and Murray, NeurIPS 2017).

    Parameters read the *output* (data) ``x``:

    * forward (sampling, ``p`` passes): ``x_i = exp(alpha_i(x_{<i})) z_i + m_i(x_{<i})``;
    * inverse (density, 1 pass): ``z_i = exp(-alpha_i(x_{<i})) (x_i - m_i(x_{<i}))``;
    * ``log|det J_T(z)| = sum_i alpha_i(x_{<i})``, ``log|det J_{T^{-1}}(x)| = -sum_i alpha_i(x_{<i})``.

    ``x_{<i}`` means the coordinates before ``i`` in ``order``. ``alpha`` is softly clamped (module
    docstring). By default (``shift="after"``) the network outputs ``b = -m exp(-alpha)``, so that
    the density direction reads ``z_i = exp(-alpha_i) x_i + b_i`` (:class:`AffineConditioner`).
    :meth:`from_iaf` builds the MAF whose map is the inverse of a given IAF, sharing its network.

    >>> import torch
    >>> maf = MAF(3)
    >>> x = torch.randn(4, 3)
    >>> z, ld = maf.inverse(x)
    >>> torch.allclose(maf(z)[0], x, atol=1e-5)
    True
    """

    SHIFT = "after"

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        x, _, alpha = self._solve(z, self._update, inverse=False)
        return x, alpha.sum(-1)

    def _push(self, z: Tensor) -> Tensor:
        return self._solve(z, self._update, inverse=False, params=False)[0]

    @staticmethod
    def _update(m: Tensor, alpha: Tensor, z_i: Tensor) -> Tensor:
        return torch.exp(alpha) * z_i + m

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._affine(x, x, inverse=True)

    @classmethod
    def from_iaf(cls, iaf: IAF) -> MAF:
        """The MAF ``S = T^{-1}`` of an IAF ``T``, sharing its parameters: S's fast inverse is T's
        fast forward (the slides' "IAF is the inverse of MAF", read the other way round)."""
        if not isinstance(iaf, IAF):
            raise TypeError(f"expected an IAF, got {type(iaf).__name__}")
        return cls(iaf.dim, conditioner=_inverted(iaf.conditioner), naive=iaf.naive)


class IAF(_Autoregressive):
    """One layer of the inverse autoregressive flow (Kingma et al., NeurIPS 2016), affine form.

    Parameters read the *input* (noise) ``z``:

    * forward (sampling, 1 pass): ``x_i = exp(alpha_i(z_{<i})) z_i + m_i(z_{<i})``;
    * inverse (density of an outside point, ``p`` passes): ``z_i = exp(-alpha_i(z_{<i})) (x_i - m_i(z_{<i}))``;
    * ``log|det J_T(z)| = sum_i alpha_i(z_{<i})``.

    The density of the IAF's *own* samples needs no inverse: from the ``z`` that produced ``x``,
    ``log p(x) = log q_0(z) - sum_i alpha_i(z_{<i})`` in one pass
    (:meth:`AutoregressiveFlow.forward_and_log_prob`). The network outputs ``m`` itself
    (``shift="before"``, the default here: the one-pass direction scales, then shifts).
    :meth:`from_maf` builds the IAF whose map is the inverse of a given MAF, sharing its network.

    >>> import torch
    >>> iaf = IAF(3)
    >>> z = torch.randn(4, 3)
    >>> x, ld = iaf(z)
    >>> torch.allclose(iaf.inverse(x)[0], z, atol=1e-5)
    True
    """

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return self._affine(z, z, inverse=False)

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z, _, alpha = self._solve(x, lambda m, alpha, x_i: (x_i - m) * torch.exp(-alpha), inverse=True)
        return z, -alpha.sum(-1)

    @classmethod
    def from_maf(cls, maf: MAF) -> IAF:
        """The IAF ``S = T^{-1}`` of a MAF ``T``, sharing its parameters.

        MAF's inverse ``z = exp(-alpha(x)) (x - m(x))`` is an affine autoregressive map of ``x``
        whose parameters read its input: an IAF with ``(m', alpha') = (-m exp(-alpha), -alpha)``.
        So ``S.forward == T.inverse`` (one pass) and ``S.inverse == T.forward`` (``p`` passes).
        """
        if not isinstance(maf, MAF):
            raise TypeError(f"expected a MAF, got {type(maf).__name__}")
        return cls(maf.dim, conditioner=_inverted(maf.conditioner), naive=maf.naive)


class SigmoidAR(_Autoregressive):
    """The sigmoid-gated autoregressive layer (Kingma et al., NeurIPS 2016, eq. 14).

    With ``sigma_i = sigmoid(a_i + gate_bias)`` and ``(m_i, a_i)`` from a MADE pass,

    * forward: ``T(z)_i = sigma_i z_i + (1 - sigma_i) m_i``;
    * reverse: ``z_i = (x_i - (1 - sigma_i) m_i) / sigma_i``;
    * ``log|det J_T(z)| = sum_i log sigma_i`` (computed as ``logsigmoid``, stable).

    ``condition_on="x"`` (default, as in the slides): ``m_i, sigma_i`` read ``x_{<i} = T(z)_{<i}``,
    so the reverse is one pass and the forward ``p`` passes (a MAF-type layer).
    ``condition_on="z"`` (as in Kingma et al.): they read ``z_{<i}``, the forward is one pass and the
    reverse ``p`` passes (an IAF-type layer). ``sigma_i`` is a convex weight, like an LSTM's forget
    gate; ``gate_bias > 0`` starts the layer close to the identity, as the paper advises.

    >>> import torch
    >>> layer = SigmoidAR(3)
    >>> x = torch.randn(2, 3)
    >>> torch.allclose(layer(layer.inverse(x)[0])[0], x, atol=1e-5)
    True
    """

    def __init__(
        self,
        dim: int,
        hidden=None,
        order="natural",
        condition_on: str = "x",
        gate_bias: float = 1.0,
        activation: type[nn.Module] = nn.ReLU,
        seed: int | None = None,
        naive: bool = False,
    ):
        if condition_on not in ("x", "z"):
            raise ValueError(
                f"condition_on={condition_on!r}: expected 'x' (the slides, MAF-like) or 'z' (Kingma et al., IAF-like)"
            )
        super().__init__(
            dim,
            hidden,
            order,
            activation=activation,
            seed=seed,
            conditioner=_GateConditioner(dim, hidden, order, activation, seed),
            naive=naive,
        )
        self.condition_on = condition_on
        self.gate_bias = float(gate_bias)

    def _gate(self, u: Tensor) -> tuple[Tensor, Tensor]:
        m, a = self.conditioner(u)
        return m, F.logsigmoid(a + self.gate_bias)

    def _mix(self, m: Tensor, a: Tensor, z: Tensor) -> Tensor:
        s = torch.sigmoid(a + self.gate_bias)
        return s * z + (1 - s) * m

    def _unmix(self, m: Tensor, a: Tensor, x: Tensor) -> Tensor:
        return (x - m) * torch.exp(-F.logsigmoid(a + self.gate_bias)) + m

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        if self.condition_on == "z":
            m, a = self.conditioner(z)
            x = self._mix(m, a, z)
        else:  # p sequential steps
            x, m, a = self._solve(z, self._mix)
        return x, F.logsigmoid(a + self.gate_bias).sum(-1)

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.condition_on == "x":
            m, a = self.conditioner(x)
            z = self._unmix(m, a, x)
        else:  # p sequential steps
            z, m, a = self._solve(x, self._unmix)
        return z, -F.logsigmoid(a + self.gate_bias).sum(-1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, condition_on={self.condition_on!r}, gate_bias={self.gate_bias:g}"


class _GateConditioner(AffineConditioner):
    """MADE outputs ``(m, a)`` with no clamp: the sigmoid already bounds the gate."""

    def __init__(self, dim, hidden, order, activation, seed):
        super().__init__(dim, hidden, order, 1.0, activation, seed, zero_init=False, shift="before")

    affine = None  # the gate is not an affine map of (m, alpha)

    step = None  # no affine update: SigmoidAR solves with its own (out-of-place) update

    def params(self, raw: Tensor) -> tuple[Tensor, Tensor]:
        m, a = raw
        return m, a

    def extra_repr(self) -> str:
        return "sigma = sigmoid(a + gate_bias)"


class Reverse(Bijection):
    """Reverses the order of the coordinates, ``T(z)_i = z_{p+1-i}``; volume preserving (log-det 0).

    Put between autoregressive layers so that the variable that sees nothing in one layer sees
    everything in the next. (The builders :func:`maf_flow` / :func:`iaf_flow` instead give each
    layer its own MADE order, which changes the order without moving data.)

    >>> import torch
    >>> Reverse(3)(torch.tensor([[1.0, 2.0, 3.0]]))[0]
    tensor([[3., 2., 1.]])
    """

    def __init__(self, dim: int):
        super().__init__(dim)

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return z.flip(-1), z.new_zeros(z.shape[0])

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x.flip(-1), x.new_zeros(x.shape[0])


class AutoregressiveFlow(Flow):
    """A :class:`~coursekit.flows.base.Flow` with the IAF's shortcut for its own samples."""

    def forward_and_log_prob(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``x = T(z)`` and ``log p(x) = log q_0(z) - log|det J_T(z)|`` from the latent ``z`` that
        produced ``x``: one pass for an IAF, no inverse needed (the slides' line 624)."""
        x, ld = self.transform.forward(z)
        return x, self.base.log_prob(z) - ld


def _layers(cls, dim, n_layers, hidden, bound, seed, **kw):
    if not isinstance(n_layers, int) or n_layers < 1:
        raise ValueError(f"n_layers must be a positive integer, got {n_layers!r}")
    if dim <= 2:
        # two variables have two orders: alternate them (what one layer sees last, the next sees first)
        orders = [("natural" if k % 2 == 0 else "reversed", seed) for k in range(n_layers)]
    else:
        # a random order per layer, each from its own seed (with seed=None, from torch's generator)
        first = int(torch.randint(2**31, ())) if seed is None else seed
        orders = [("random", first + k) for k in range(n_layers)]
    return Compose(*[cls(dim, hidden, order, bound, seed=s, **kw) for order, s in orders])


def maf_flow(
    dim: int, n_layers: int = 5, hidden=None, bound: float = 5.0, base="normal", seed: int | None = None
) -> AutoregressiveFlow:
    """A MAF density model: ``n_layers`` MAF layers on a Gaussian base.

    Each layer has its own random MADE order (``seed``, ``seed + 1``, ... make them
    reproducible; with ``seed=None`` they come from torch's global generator); with two variables,
    the natural and the reversed order alternate. Random orders did better than alternating the
    natural and reversed orders on the 8x8 digits (``benchmarks/ablation_nll.py``)."""
    return AutoregressiveFlow(_layers(MAF, dim, n_layers, hidden, bound, seed), base=base)


def iaf_flow(
    dim: int, n_layers: int = 5, hidden=None, bound: float = 5.0, base="normal", seed: int | None = None
) -> AutoregressiveFlow:
    """An IAF sampler: ``n_layers`` IAF layers on a Gaussian base, with orders as in :func:`maf_flow`."""
    return AutoregressiveFlow(_layers(IAF, dim, n_layers, hidden, bound, seed), base=base)


def invert(transform: Bijection) -> Bijection:
    """The inverse map ``T^{-1}`` with the fast and slow directions swapped, sharing parameters:
    MAF <-> IAF layer by layer, :class:`Reverse` stays, a :class:`Compose` is inverted in reverse order."""
    if isinstance(transform, MAF):
        return IAF.from_maf(transform)
    if isinstance(transform, IAF):
        return MAF.from_iaf(transform)
    if isinstance(transform, Reverse):
        return Reverse(transform.dim)
    if isinstance(transform, Compose):
        return Compose(*[invert(t) for t in reversed(transform.maps)])
    raise TypeError(f"invert knows MAF, IAF, Reverse and Compose of these; got {type(transform).__name__}")


def count_passes(module: nn.Module) -> int:
    """Total number of conditioner (network) evaluations made so far inside ``module``."""
    return sum(m.passes for m in module.modules() if isinstance(m, AffineConditioner))


class GaussianAR(Flow):
    """The Gaussian autoregressive model ``p(x) = prod_i N(x_i; m_i(x_{<i}), exp(alpha_i(x_{<i}))^2)``.

    ``m_1, alpha_1`` are constants (the MADE output with nothing before it), the others networks.
    :meth:`log_prob` evaluates the product of conditionals in one pass; :meth:`sample` is the
    slides' sequential sampler, one coordinate per pass in ``order``. The model *is* a one-layer
    MAF flow (``self.transform``): the test suite checks that both views give the same density.

    >>> import torch
    >>> model = GaussianAR(4)
    >>> model.sample(3).shape
    torch.Size([3, 4])
    """

    def __init__(self, dim: int, hidden=None, order="natural", bound: float = 5.0, seed: int | None = None):
        super().__init__(MAF(dim, hidden, order, bound, seed=seed), base="normal")

    @property
    def order(self) -> Tensor:
        return self.transform.order

    def conditionals(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(m, alpha)``, each ``(batch, dim)``: the conditional means and log standard deviations."""
        check_input(x, self.event_shape, "GaussianAR input x")
        return self.transform.conditioner(x)

    def log_prob(self, x: Tensor) -> Tensor:
        m, alpha = self.conditionals(x)
        return torch.distributions.Normal(m, torch.exp(alpha)).log_prob(x).sum(-1)

    def sample(self, n: int, z: Tensor | None = None, naive: bool = False) -> Tensor:
        """``x_i = exp(alpha_i(x_{<i})) z_i + m_i(x_{<i})``, coordinate by coordinate in ``order``.

        ``naive=True`` is the slides' loop, one full network pass per coordinate; the default
        computes at each step only what the new coordinate makes computable (:meth:`MADE.solve`),
        one pass of arithmetic in all. Both give the same samples for the same noise ``z``."""
        if z is None:
            if not isinstance(n, int) or n < 1:
                raise ValueError(f"number of samples must be a positive integer, got {n!r}")
            z = self.base.sample((n,))
        check_input(z, self.event_shape, "GaussianAR noise z")
        with torch.no_grad():
            if not naive:
                return self.transform._push(z).contiguous()
            x = torch.zeros_like(z)
            for i in self.order.tolist():  # sequential by nature
                m, alpha = self.transform.conditioner(x)
                x[:, i] = torch.exp(alpha[:, i]) * z[:, i] + m[:, i]
        return x
