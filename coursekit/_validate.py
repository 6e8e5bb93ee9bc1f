"""Argument checks shared by every public function, so that all messages read the same way.

Each check returns the value (converted: ``int`` for integers, ``float`` for reals) or raises
a ``TypeError`` (wrong kind of value) or ``ValueError`` (right kind, wrong value) whose message
names the argument, shows the value and states what is accepted, e.g.
``steps must be a positive integer, got 2.5 (float)``.

Integers are Python ``int`` (or anything with ``__index__``, e.g. a NumPy integer), never
``bool`` and never a float, even an integral one: ``dim=2.5`` used to be truncated to 2.
Reals are ``int`` or ``float`` (or a 0-d tensor / NumPy scalar), never ``bool`` or ``str``.

>>> positive_int("steps", 3)
3
>>> positive_int("steps", 2.5)
Traceback (most recent call last):
...
TypeError: steps must be a positive integer, got 2.5 (float)
>>> in_range("alpha", 0.7, 0.0, 0.5, high_open=True)
Traceback (most recent call last):
...
ValueError: alpha must be a number in [0, 0.5), got 0.7
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "INT_MAX",
    "SEED_MAX",
    "integer",
    "positive_int",
    "nonneg_int",
    "seed",
    "real",
    "positive_float",
    "nonneg_float",
    "in_range",
    "optional",
    "boolean",
    "choice",
    "function",
    "int_sequence",
    "tensor",
    "describe",
]

INT_MAX = 2**63 - 1  # what torch can hold in an int64: a larger count or size is never meant
SEED_MAX = 2**63 - 1  # torch and NumPy both accept seeds in [0, 2^63)


def describe(value) -> str:
    """``value!r (type)`` for the messages, short for tensors and long strings."""
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}, dtype {value.dtype}"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    if isinstance(value, (bool, str, float)) or value is None:
        return f"{text} ({type(value).__name__})" if not isinstance(value, float) else f"{text} (float)"
    if isinstance(value, int):
        return text
    return f"{text} ({type(value).__name__})"


def _bounds(low, high, low_open=False, high_open=False) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return "finite"


def integer(name: str, value, low: int | None = None, high: int | None = INT_MAX) -> int:
    """``value`` as an ``int`` in ``[low, high]``; ``TypeError`` for a non-integer (bools and floats included)."""
    if low is not None and high is not None and high != INT_MAX:
        what = f"an integer in [{low}, {high}]"
    elif low == 1:
        what = "a positive integer"
    elif low == 0:
        what = "a non-negative integer"
    elif low is not None:
        what = f"an integer >= {low}"
    else:
        what = "an integer"
    if isinstance(value, (bool, float)) or (
        isinstance(value, Tensor) and (value.dim() != 0 or value.is_floating_point() or value.dtype == torch.bool)
    ):
        raise TypeError(f"{name} must be {what}, got {describe(value)}")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be {what}, got {describe(value)}") from None
    if high is not None and v > high:
        raise ValueError(f"{name} must be {what}, got {v}, beyond the largest accepted value {high}")
    if low is not None and v < low:
        raise ValueError(f"{name} must be {what}, got {v}")
    return v


def positive_int(name: str, value, high: int | None = INT_MAX) -> int:
    """An integer ``>= 1`` (a size, a number of steps)."""
    return integer(name, value, 1, high)


def nonneg_int(name: str, value, high: int | None = INT_MAX) -> int:
    """An integer ``>= 0``."""
    return integer(name, value, 0, high)


def seed(name: str, value) -> int:
    """A seed: an integer in ``[0, 2^63 - 1]``."""
    return integer(name, value, 0, SEED_MAX)


def real(name: str, value, low: float | None = None, high: float | None = None, *, low_open: bool = False,
         high_open: bool = False, allow_inf: bool = False) -> float:
    """``value`` as a ``float`` in the interval given (finite unless ``allow_inf``)."""
    fin = "" if allow_inf else "finite "
    if low == 0 and high is None:
        what = f"a {'positive' if low_open else 'non-negative'} {fin}number"
    elif low is not None or high is not None:
        what = f"a number {_bounds(low, high, low_open, high_open)}"
    else:
        what = f"a {fin}number"
    if isinstance(value, (bool, str, bytes)) or value is None or (
        isinstance(value, Tensor) and (value.numel() != 1 or value.dtype == torch.bool)
    ):
        raise TypeError(f"{name} must be {what}, got {describe(value)}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be {what}, got {describe(value)}") from None
    if math.isnan(v) or (math.isinf(v) and not allow_inf):
        raise ValueError(f"{name} must be {what}, got {v!r}")
    if (low is not None and (v < low or (low_open and v == low))) or (
        high is not None and (v > high or (high_open and v == high))
    ):
        raise ValueError(f"{name} must be {what}, got {v:g}")
    return v


def positive_float(name: str, value, allow_inf: bool = False) -> float:
    """A number ``> 0`` (finite unless ``allow_inf``): a learning rate, a step size, a scale."""
    return real(name, value, 0.0, None, low_open=True, allow_inf=allow_inf)


def nonneg_float(name: str, value, allow_inf: bool = False) -> float:
    """A number ``>= 0``."""
    return real(name, value, 0.0, None, allow_inf=allow_inf)


def in_range(name: str, value, low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> float:
    """A number in ``[low, high]`` (``low_open`` / ``high_open`` exclude the ends)."""
    return real(name, value, low, high, low_open=low_open, high_open=high_open)


def optional(check, name: str, value, *args, **kwargs):
    """``None`` or ``check(name, value, ...)``."""
    return None if value is None else check(name, value, *args, **kwargs)


def boolean(name: str, value) -> bool:
    """A ``bool`` (not ``0``/``1``, not a string such as ``"False"``, which is true)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {describe(value)}")
    return value


def choice(name: str, value, options: Sequence):
    """One of ``options``."""
    if not isinstance(value, (str, int, float)) or isinstance(value, bool) or value not in options:
        raise ValueError(f"{name}={value!r} is not an option; choose one of {', '.join(map(repr, options))}")
    return value


def function(name: str, value, what: str = "a function"):
    """A callable."""
    if not callable(value):
        raise TypeError(f"{name} must be {what}, got {describe(value)}")
    return value


def int_sequence(name: str, value, low: int = 1, min_len: int = 0) -> tuple[int, ...]:
    """A sequence of integers ``>= low`` (layer widths, an image shape), as a tuple."""
    what = f"a sequence of integers >= {low}" + (f" with at least {min_len} entries" if min_len else "")
    if isinstance(value, (str, bytes, Tensor)) or not isinstance(value, Sequence):
        if isinstance(value, Tensor) and value.dim() == 1 and not value.is_floating_point():
            value = value.tolist()
        else:
            raise TypeError(f"{name} must be {what}, got {describe(value)}")
    out = []
    for i, v in enumerate(value):
        try:
            out.append(integer(f"{name}[{i}]", v, low))
        except (TypeError, ValueError) as err:
            raise type(err)(f"{name} must be {what}; {err}") from None
    if len(out) < min_len:
        raise ValueError(f"{name} must be {what}, got {tuple(value)!r}")
    return tuple(out)


def tensor(name: str, value, *, dim: int | None = None, min_dim: int | None = None, floating: bool = True,
           finite: bool = True, like: Tensor | None = None, device: torch.device | None = None,
           dtype: torch.dtype | None = None, shape_hint: str = "") -> Tensor:
    """Check a tensor argument: its type, number of dimensions, dtype and device, finiteness.

    ``like`` (or ``dtype`` / ``device``) is the reference the value must match, usually a
    parameter of the module it enters; the message then says what to call::

        x is float64 on cpu, expected float32 on cpu (the dtype and device of the module); call x.to(torch.float32)
    """
    expected = f" of shape {shape_hint}" if shape_hint else ""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor{expected}, got {describe(value)}")
    if dim is not None and value.dim() != dim:
        hint = " (add a batch dimension with .unsqueeze(0))" if value.dim() == dim - 1 else ""
        raise ValueError(f"{name} must have {dim} dimensions{expected}, got shape {tuple(value.shape)}{hint}")
    if min_dim is not None and value.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dimensions{expected}, got shape {tuple(value.shape)}")
    if like is not None:
        dtype, device = like.dtype, like.device
    check_dtype_device(name, value, dtype, device, floating=floating)
    if finite and value.is_floating_point() and value.device.type != "meta" and not torch.isfinite(value).all():
        n_bad = int((~torch.isfinite(value)).sum())
        raise ValueError(f"{name} contains {n_bad} NaN or infinite value(s); it must be finite")
    return value


def check_dtype_device(name: str, value: Tensor, dtype: torch.dtype | None, device: torch.device | None,
                       floating: bool = True) -> None:
    """Raise a ``TypeError`` / ``ValueError`` that says what to call when ``value``'s dtype or device is not the one
    expected (host-side metadata only: no synchronisation with the GPU)."""
    bad_dtype = (dtype is not None and value.dtype != dtype) or (floating and not value.is_floating_point())
    bad_device = device is not None and not _same_device(value.device, device)
    if not (bad_dtype or bad_device):
        return
    want_dtype = dtype if dtype is not None else (value.dtype if value.is_floating_point() else torch.get_default_dtype())
    want_device = device if device is not None else value.device
    fix = []
    if bad_dtype:
        fix.append(str(want_dtype))
    if bad_device:
        fix.append(f"'{want_device}'")
    msg = (f"{name} is {_dt(value.dtype)} on {value.device}, expected {_dt(want_dtype)} on {want_device} "
           f"(the dtype and device of the model it goes into); call {name.split()[-1]}.to({', '.join(fix)})")
    raise (TypeError if bad_dtype and not bad_device else ValueError)(msg)


def _dt(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _same_device(a: torch.device, b: torch.device) -> bool:
    a, b = torch.device(a), torch.device(b)
    if a.type != b.type:
        return False
    # "cuda" and "cuda:0" name the same device when the current device is 0
    ia = a.index if a.index is not None else (torch.cuda.current_device() if a.type == "cuda" else 0)
    ib = b.index if b.index is not None else (torch.cuda.current_device() if b.type == "cuda" else 0)
    return ia == ib


def reference(module: torch.nn.Module) -> Tensor | None:
    """The first parameter (or else buffer) of ``module``: the dtype and device its inputs must have."""
    for t in module.parameters():
        return t
    for t in module.buffers():
        if t.is_floating_point():
            return t
    return None
