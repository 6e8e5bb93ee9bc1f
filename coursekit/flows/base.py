"""Invertible maps and flow models, with the slides' direction convention X = T(Z).

Convention (used everywhere in coursekit):

* ``forward(z)`` maps noise to data (the sampling direction) and returns
  ``(x, log|det J_T(z)|)``;
* ``inverse(x)`` maps data to noise (the density direction) and returns
  ``(z, log|det J_{T^{-1}}(x)|)``.

Log-determinants are one number per sample, shape ``(batch,)``. By the inverse function
theorem the two log-determinants at matching points sum to zero.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterable

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal, Uniform

from .. import _validate as V

__all__ = [
    "Bijection",
    "Compose",
    "Inverted",
    "Flow",
    "set_validation",
    "validation_enabled",
    "check_input",
    "values_checked",
]

_VALIDATE = True
_SCAN_VALUES = True


def set_validation(enabled: bool) -> None:
    """Turn input checks (shape, NaN/inf) on or off globally, like ``torch.distributions``.

    Checks are on by default. The shape, dtype and device checks read metadata only; the
    NaN/inf check reads every value and, on a GPU, waits for it (a host synchronisation).
    Training loops skip that one scan with :func:`values_checked` instead of turning all
    checks off.
    """
    global _VALIDATE
    _VALIDATE = bool(enabled)


def validation_enabled() -> bool:
    return _VALIDATE


@contextlib.contextmanager
def values_checked():
    """Inside this block, inputs are checked for shape, dtype and device but not scanned for
    NaN/inf: the caller vouches for the values (``fit_mle`` checks its data once before the
    loop and watches the losses on the device; see :class:`coursekit.train.TrainingGuard`).
    The scan would otherwise read every input again at every step and, on a GPU, stall the
    pipeline with a host synchronisation each time."""
    global _SCAN_VALUES
    before, _SCAN_VALUES = _SCAN_VALUES, False
    try:
        yield
    finally:
        _SCAN_VALUES = before


def check_input(t: Tensor, event_shape: tuple[int, ...], what: str, finite: bool = True,
                like: Tensor | None = None) -> None:
    """Raise a clear error unless ``t`` is a batch of events of shape ``event_shape``.

    With ``like`` (a parameter of the module the input goes into), ``t`` must also have its
    dtype and device; the message says what to call (``x.to(torch.float32)``). The dtype and
    device are metadata: that part of the check never synchronises with the GPU.
    """
    if not _VALIDATE:
        return
    if not isinstance(t, Tensor):
        raise TypeError(f"{what} must be a torch.Tensor of shape (batch, {', '.join(map(str, event_shape))}), got {type(t).__name__}")
    expected = "(batch, " + ", ".join(map(str, event_shape)) + ")"
    if t.dim() != len(event_shape) + 1 or tuple(t.shape[1:]) != tuple(event_shape):
        hint = ""
        if t.dim() == len(event_shape) and tuple(t.shape) == tuple(event_shape):
            hint = " A single point needs a batch dimension: use x.unsqueeze(0)."
        raise ValueError(f"{what} has shape {tuple(t.shape)}, expected {expected}.{hint}")
    if like is not None:
        V.check_dtype_device(what, t, like.dtype, like.device)
    elif not (t.is_floating_point() or t.is_complex()):
        raise TypeError(f"{what} has dtype {t.dtype}; it must be floating point: call x.float()")
    if finite and _SCAN_VALUES and t.device.type != "meta" and not torch.isfinite(t).all():  # (meta: no values)
        n_bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{what} contains {n_bad} NaN or infinite value(s); flows need finite inputs.")


class Bijection(nn.Module):
    """A differentiable invertible map T with tractable log-determinants.

    Subclasses implement ``_forward(z)`` and ``_inverse(x)`` on inputs of shape
    ``(batch, *event_shape)``, each returning the image and the per-sample log|det J|.
    The public ``forward`` / ``inverse`` check the input first (see :func:`set_validation`).
    """

    def __init__(self, dim: int | None = None, event_shape: Iterable[int] | None = None):
        super().__init__()
        if event_shape is None:
            if dim is None:
                raise ValueError("give the data dimension `dim` (or an `event_shape`)")
            self.event_shape = (V.positive_int("dim", dim),)
        else:
            self.event_shape = V.int_sequence("event_shape", event_shape, low=1, min_len=1)
        self.dim = math.prod(self.event_shape)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Sampling direction: ``x = T(z)`` and ``log|det J_T(z)|``."""
        if _VALIDATE:
            check_input(z, self.event_shape, f"{type(self).__name__}.forward input z", like=V.reference(self))
        return self._forward(z)

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Density direction: ``z = T^{-1}(x)`` and ``log|det J_{T^{-1}}(x)|``."""
        if _VALIDATE:
            check_input(x, self.event_shape, f"{type(self).__name__}.inverse input x", like=V.reference(self))
        return self._inverse(x)

    def push(self, z: Tensor) -> Tensor:
        """``x = T(z)`` alone, without the log-determinant: what sampling needs. The same input
        check as :meth:`forward`; maps whose log-determinant costs work of its own (a MAF's, read
        off the parameters of every coordinate) skip it here."""
        if _VALIDATE:
            shape = getattr(self, "latent_shape", self.event_shape)  # the noise side (Squeeze's differs)
            check_input(z, shape, f"{type(self).__name__}.push input z", like=V.reference(self))
        return self._push(z)

    def _push(self, z: Tensor) -> Tensor:
        return self._forward(z)[0]

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"event_shape={self.event_shape}"


class Inverted(Bijection):
    """The inverse ``T^{-1}`` of a map ``T``, as a map: ``T``'s two directions swapped.

    ``Inverted(T).forward`` is ``T.inverse`` and ``Inverted(T).inverse`` is ``T.forward`` (same
    parameters; each returns the log-determinant of its own direction, as always). Use it to choose
    which direction of a layer is the explicit, one-pass one: a MintNet layer or a residual block is
    explicit in its ``forward`` and iterative in its ``inverse``; wrapped, it is explicit in the
    density direction (one pass per layer for maximum likelihood) and iterative when sampling, as
    the papers train them.

    >>> from coursekit.flows import AffineCoupling
    >>> T = AffineCoupling(2)
    >>> z = torch.randn(3, 2)
    >>> x, ld = Inverted(T)(z)
    >>> bool(torch.allclose(x, T.inverse(z)[0])), bool(torch.allclose(ld, T.inverse(z)[1]))
    (True, True)
    """

    def __init__(self, transform: Bijection):
        if not isinstance(transform, Bijection):
            raise TypeError(f"Inverted needs a coursekit map (a Bijection), got {type(transform).__name__}")
        latent = getattr(transform, "latent_shape", transform.event_shape)
        if tuple(latent) != tuple(transform.event_shape):
            raise ValueError(f"Inverted needs a map whose two sides have the same shape; {type(transform).__name__} "
                             f"maps {tuple(latent)} to {tuple(transform.event_shape)}")
        super().__init__(event_shape=transform.event_shape)
        self.transform = transform

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return self.transform._inverse(z)

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.transform._forward(x)


class Compose(Bijection):
    """T = T_M o ... o T_1: ``forward`` applies the maps in the given order, ``inverse`` in reverse.

    Log-determinants add up (chain rule): log|det J_T(z)| = sum_m log|det J_{T_m}(z_{m-1})|.
    """

    def __init__(self, *maps: Bijection):
        if len(maps) == 1 and not isinstance(maps[0], Bijection):
            maps = tuple(maps[0])
        if not maps:
            raise ValueError("Compose needs at least one map")
        shapes = {m.event_shape for m in maps}
        if len(shapes) != 1:
            raise ValueError(f"all maps must act on the same event shape, got {sorted(shapes)}")
        super().__init__(event_shape=maps[0].event_shape)
        self.maps = nn.ModuleList(maps)

    def _forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        total = z.new_zeros(z.shape[0])
        for m in self.maps:
            z, ld = m._forward(z)
            total = total + ld
        return z, total

    def _push(self, z: Tensor) -> Tensor:
        for m in self.maps:
            z = m._push(z)
        return z

    def _inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        total = x.new_zeros(x.shape[0])
        for m in reversed(self.maps):
            x, ld = m._inverse(x)
            total = total + ld
        return x, total

    def __len__(self) -> int:
        return len(self.maps)

    def __getitem__(self, i):
        return self.maps[i]


class Flow(nn.Module):
    """A normalizing flow mu_theta = (T_theta)_# nu_0 with base density q_0.

    ``base`` is ``"normal"`` (standard Gaussian), ``"uniform"`` (uniform on ``[-1, 1]^p``
    unless ``low``/``high`` are given) or any ``torch.distributions.Distribution`` whose
    event shape is the map's. Named bases follow the module across devices and dtypes.
    """

    def __init__(self, transform: Bijection, base: str | Distribution = "normal", low: float = -1.0, high: float = 1.0):
        super().__init__()
        if not isinstance(transform, Bijection):
            raise TypeError(f"transform must be a coursekit Bijection, got {type(transform).__name__}")
        self.transform = transform
        self.event_shape = transform.event_shape
        self.dim = transform.dim
        if isinstance(base, str):
            if base not in ("normal", "uniform"):
                raise ValueError(f"base={base!r}: expected 'normal', 'uniform' or a torch Distribution")
            low, high = V.real("low", low), V.real("high", high)
            if base == "uniform" and not low < high:
                raise ValueError(f"uniform base needs low < high, got low={low}, high={high}")
            self.base_name = base
            a, b = (0.0, 1.0) if base == "normal" else (low, high)
            self.register_buffer("_base_a", torch.full(self.event_shape, float(a)))
            self.register_buffer("_base_b", torch.full(self.event_shape, float(b)))
            self._base = None
        elif isinstance(base, Distribution):
            if tuple(base.event_shape) != self.event_shape:
                raise ValueError(f"base event shape {tuple(base.event_shape)} != map event shape {self.event_shape}")
            self.base_name = type(base).__name__
            self._base = base
        else:
            raise TypeError(f"base must be 'normal', 'uniform' or a torch Distribution, got {type(base).__name__}")

    @property
    def base(self) -> Distribution:
        """The base distribution nu_0 (on the module's device and dtype)."""
        if self._base is not None:
            return self._base
        cls = Normal if self.base_name == "normal" else Uniform
        return Independent(cls(self._base_a, self._base_b, validate_args=False), len(self.event_shape))

    def log_prob(self, x: Tensor) -> Tensor:
        """log p_theta(x) = log q_0(T^{-1}(x)) + log|det J_{T^{-1}}(x)|, one value per row."""
        z, ld = self.transform.inverse(x)
        return self.base.log_prob(z) + ld

    def inverse(self, x: Tensor) -> Tensor:
        """Latent codes z = T^{-1}(x) of data points."""
        return self.transform.inverse(x)[0]

    def sample(self, n: int) -> Tensor:
        """n samples X = T(Z), Z ~ nu_0 (no gradient; neither the base log-density nor the
        log-determinant is evaluated: :meth:`Bijection.push`). Contiguous, whatever layout the
        layers pass between them (a MAF's sequential solver works coordinate-major)."""
        V.positive_int("n (the number of samples)", n)
        with torch.no_grad():
            return self.transform.push(self.base.sample((n,))).contiguous()

    def rsample(self, n: int) -> Tensor:
        """n reparametrised samples (gradients flow to the parameters)."""
        return self.rsample_and_log_prob(n)[0]

    def rsample_and_log_prob(self, n: int) -> tuple[Tensor, Tensor]:
        """Samples and their log-density in one forward pass:
        log p_theta(T(z)) = log q_0(z) - log|det J_T(z)|."""
        V.positive_int("n (the number of samples)", n)
        z = self.base.sample((n,))
        x, ld = self.transform.forward(z)
        return x.contiguous(), self.base.log_prob(z) - ld

    def sample_and_log_prob(self, n: int) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            return self.rsample_and_log_prob(n)

    def extra_repr(self) -> str:
        return f"base={self.base_name}, event_shape={self.event_shape}"
