"""Helpers shared by the chapter checks: calling the answer under a contract, and comparing.

Every check follows the same pattern:

1. draw at least two independent problems with :func:`draws` (fresh random seeds on every run,
   so that no memorised constant can match; ``COURSEKIT_CHECK_SEED`` fixes them for debugging),
   varying whatever the answer could silently ignore (dimension, split point, base distribution,
   step size, dtype);
2. call the student's function through :func:`call`, which fails the answer if it changes any of
   its inputs in place or calls a coursekit function the exercise forbids (delegation);
3. validate each returned tensor with :func:`expect` (exact ``torch.Tensor`` type, shape, dtype and
   device following the input, gradients flowing when the result is meant to be trained), which
   returns a plain float64 copy to compare;
4. compare with :func:`close`, and explain a wrong answer with :func:`fail`: say what is wrong
   and in which direction, never the number to type.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import secrets
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ..registry import Delegation, ExerciseFailure, current

__all__ = ["fail", "require_callable", "draws", "call", "expect", "expect_pair", "close", "randomised",
           "SEED_ENV"]

SEED_ENV = "COURSEKIT_CHECK_SEED"


def fail(message: str, mistake: str | None = None):
    """Raise :class:`ExerciseFailure` (``mistake``: the tag of the named mistake recognised)."""
    raise ExerciseFailure(message, mistake=mistake)


def require_callable(answer, name: str) -> None:
    """Fail unless the student submitted the function itself."""
    if not callable(answer):
        fail(f"submit your function {name} itself (not its result): check(..., {name})", mistake="not-callable")


def draws(k: int = 2) -> Iterator[torch.Generator]:
    """``k`` independent torch generators, freshly seeded on every run (or from ``COURSEKIT_CHECK_SEED``)."""
    fixed = os.environ.get(SEED_ENV)
    base = int(fixed) if fixed not in (None, "") else secrets.randbits(62)
    for i in range(k):
        yield torch.Generator().manual_seed((base + 7919 * i) % (2**62))


# ------------------------------------------------------------------ calling the answer


def _snapshot(value: Any, depth: int = 0):
    """A deep copy of everything in ``value`` that an answer could modify in place."""
    if depth > 4:
        return None
    if isinstance(value, torch.Tensor):
        return ("tensor", value.detach().clone(), value.requires_grad)
    if isinstance(value, nn.Module):
        return ("module", {k: v.detach().clone() for k, v in value.state_dict().items()},
                [p.requires_grad for p in value.parameters()])
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, len(value), [id(v) for v in value], [_snapshot(v, depth + 1) for v in value])
    if isinstance(value, dict):
        return ("dict", dict((k, id(v)) for k, v in value.items()), {k: _snapshot(v, depth + 1) for k, v in value.items()})
    return None


def _tensor_changed(now: torch.Tensor, before: torch.Tensor) -> bool:
    """Shape, dtype or device changed, or (off the meta device, which holds no values) a value."""
    if now.shape != before.shape or now.dtype != before.dtype or now.device != before.device:
        return True
    return now.device.type != "meta" and not torch.equal(now, before)


def _changed(value: Any, snap) -> bool:
    if snap is None:
        return False
    kind = snap[0]
    if kind == "tensor":
        return _tensor_changed(value.detach(), snap[1]) or value.requires_grad != snap[2]
    if kind == "module":
        state = value.state_dict()
        return (set(state) != set(snap[1]) or any(_tensor_changed(state[k].detach(), v) for k, v in snap[1].items())
                or [p.requires_grad for p in value.parameters()] != snap[2])
    if kind in ("list", "tuple"):
        _, n, ids, inner = snap
        return len(value) != n or [id(v) for v in value] != ids or any(_changed(v, s) for v, s in zip(value, inner))
    if kind == "dict":
        _, ids, inner = snap
        return {k: id(v) for k, v in value.items()} != ids or any(_changed(value[k], s) for k, s in inner.items())
    return False


def _arg_names(fn: Callable, n_args: int, kwargs: dict) -> list[str]:
    try:
        params = [p.name for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    names = [params[i] if i < len(params) else f"argument {i + 1}" for i in range(n_args)]
    return names + list(kwargs)


def _resolve(target: str):
    """``"pkg.module.Class.attr"`` -> (owner object, attribute name)."""
    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:-1]:
            owner = getattr(owner, name)
        return owner, parts[-1]
    raise ValueError(f"cannot resolve {target!r}")


def _trap_code(target: str, why: str, like):
    """A code object that raises :class:`Delegation`, with the free variables of ``like`` (so that
    it can replace ``like`` in place, wherever the function is referenced from)."""
    body = (f"    raise __import__('coursekit.course.registry', fromlist=['Delegation']).Delegation("
            f"{target.removeprefix('coursekit.')!r}, {why!r})\n")
    free = like.co_freevars
    src = "def _outer():\n"
    src += "".join(f"    {name} = None\n" for name in free)
    src += "    def _trap(*args, **kwargs):\n"
    src += "".join(f"        {name}\n" for name in free)
    src += "    " + body
    src += "    return _trap\n"
    ns: dict = {}
    exec(compile(src, "<coursekit delegation trap>", "exec"), ns)
    code = ns["_outer"]().__code__
    return code if code.co_freevars == free else None


@contextlib.contextmanager
def _forbidden(targets: dict[str, str]):
    """Make each forbidden callable raise :class:`Delegation` while the answer runs.

    A Python function gets its code swapped, so that every reference to it fails, including a
    name the notebook imported earlier (``from coursekit.ebm import ula``); anything else is
    replaced on its owner.
    """
    patched, swapped = [], []
    try:
        for target, why in targets.items():
            owner, attr = _resolve(target)
            original = inspect.getattr_static(owner, attr)
            func = original.__func__ if isinstance(original, (staticmethod, classmethod)) else original
            code = getattr(func, "__code__", None)
            trap_code = _trap_code(target, why, code) if code is not None else None
            if trap_code is not None:
                func.__code__ = trap_code
                swapped.append((func, code))
                continue

            def trap(*args, _target=target, _why=why, **kwargs):
                raise Delegation(_target.removeprefix("coursekit."), _why)

            replacement = staticmethod(trap) if isinstance(original, staticmethod) else trap
            setattr(owner, attr, replacement)
            patched.append((owner, attr, original))
        yield
    finally:
        for func, code in reversed(swapped):
            func.__code__ = code
        for owner, attr, original in reversed(patched):
            setattr(owner, attr, original)


def call(answer: Callable, *args, what: str | None = None, **kwargs):
    """Call the student's ``answer(*args, **kwargs)`` and return its result.

    Fails (tag ``in-place``) when the call changed any tensor, module parameter, list or dict it
    was given, and (tag ``delegation``) when it called a coursekit callable that the running
    exercise forbids. Exceptions from the answer propagate (the registry reports them).
    """
    what = what or f"{getattr(answer, '__name__', 'your function')}(...)"
    snaps = [_snapshot(a) for a in args] + [_snapshot(v) for v in kwargs.values()]
    ex = current()
    with _forbidden(ex.forbidden if ex is not None else {}):
        result = answer(*args, **kwargs)
    values = list(args) + list(kwargs.values())
    for name, value, snap in zip(_arg_names(answer, len(args), kwargs), values, snaps):
        if _changed(value, snap):
            fail(
                f"{what} changed its input `{name}` in place (an operation like `{name} -= ...`, "
                f"`{name}[...] = ...`, `.add_()` or `.reverse()` on the caller's object). The caller still "
                "needs it unchanged: build a new tensor or list instead (e.g. `y = x - m` rather than `x -= m`)",
                mistake="in-place",
            )
    return result


# ------------------------------------------------------------------ validating results


def expect(value, name: str, *, shape=None, like: torch.Tensor | None = None, grad: bool | None = None,
           hint: str = "") -> torch.Tensor:
    """Validate one returned tensor and return a plain float64 copy (detached) to compare with.

    ``shape``: the exact shape expected. ``like``: the input whose dtype and device the result
    must follow. ``grad=True``: the result must be attached to the autograd graph (it is meant to
    be trained, and some input requires grad).
    """
    if not isinstance(value, torch.Tensor):
        fail(f"`{name}` must be a torch tensor, got {type(value).__name__}"
             + (" (keep torch tensors: no .item(), .tolist() or .numpy())" if isinstance(value, (float, int, list)) or
                type(value).__module__.startswith("numpy") else ""), mistake="contract")
    if type(value) is not torch.Tensor and not isinstance(value, nn.Parameter):
        fail(f"`{name}` must be a plain torch.Tensor, got the subclass {type(value).__name__}", mistake="contract")
    if shape is not None and tuple(value.shape) != tuple(shape):
        fail(f"`{name}` must have shape {tuple(shape)}, got {tuple(value.shape)}" + (f" ({hint})" if hint else ""),
             mistake="contract")
    if like is not None:
        if value.dtype != like.dtype:
            fail(f"`{name}` must have the dtype of the input ({like.dtype}), got {value.dtype}: do not convert "
                 "(no .double(), .float(), torch.tensor(...) or a dtype= argument); compute from the inputs",
                 mistake="contract")
        if value.device != like.device:
            fail(f"`{name}` must be on the input's device ({like.device}), got {value.device}: do not move tensors "
                 "(no .cpu(), .cuda(), .numpy()); create new ones with x.new_zeros(...) or device=x.device",
                 mistake="contract")
    if grad and value.grad_fn is None and not value.requires_grad:
        fail(f"`{name}` is cut off from the autograd graph, but it is meant to be trained: do not use "
             ".detach(), .item(), .numpy(), torch.tensor(...) or torch.no_grad() on the way", mistake="contract")
    if value.is_floating_point() or value.is_complex():
        if value.device.type != "meta" and not bool(torch.isfinite(value.detach()).all()):
            fail(f"`{name}` contains NaN or infinite values", mistake="contract")
    with torch.no_grad():
        return torch.Tensor(value.detach().to(device="cpu", dtype=torch.float64)).clone() \
            if value.device.type != "meta" else value.detach()


def expect_pair(result, what: str, names=("the first result", "the second result")):
    """Check that ``result`` is a pair (tuple or list of length 2) and return it."""
    if not (isinstance(result, (tuple, list)) and len(result) == 2):
        fail(f"{what} must return a pair ({names[0]}, {names[1]}), got {type(result).__name__}"
             + (f" of length {len(result)}" if isinstance(result, (tuple, list)) else ""), mistake="contract")
    return result[0], result[1]


def close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-7) -> bool:
    """``a`` and ``b`` (plain tensors the check made) have one shape and agree within ``tol``
    (absolute and relative)."""
    a = torch.Tensor(a.detach().to(torch.float64))
    b = torch.Tensor(b.detach().to(torch.float64))
    return a.shape == b.shape and bool(((a - b).abs() <= tol * (1 + b.abs())).all())


def randomised(module: nn.Module, generator: torch.Generator | int, scale: float = 0.5,
               dtype: torch.dtype = torch.float64) -> nn.Module:
    """The module in ``dtype`` with every parameter redrawn from N(0, scale^2), so that an
    identity-initialised layer is really exercised."""
    g = generator if isinstance(generator, torch.Generator) else torch.Generator().manual_seed(int(generator))
    module = module.to(dtype)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g, dtype=torch.float64).to(dtype))
    return module


def tensor_pair(result, what: str, shapes=None, names=("the first", "the second"), hint: str = ""):
    """LEGACY (removed once every chapter uses :func:`expect_pair` and :func:`expect`)."""
    a, b = expect_pair(result, what)
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        fail(f"{what} must return two torch tensors, got {type(a).__name__} and {type(b).__name__}")
    if shapes is not None and (tuple(a.shape), tuple(b.shape)) != (tuple(shapes[0]), tuple(shapes[1])):
        fail(f"{what}: expected {names[0]} of shape {tuple(shapes[0])} and {names[1]} of shape {tuple(shapes[1])}, "
             f"got {tuple(a.shape)} and {tuple(b.shape)}" + (f" ({hint})" if hint else ""))
    return a.to(torch.float64), b.to(torch.float64)
