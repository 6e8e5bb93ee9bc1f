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
   and in which direction, never the number to type; once the values are right,
   :func:`same_gradients` tells a result partly cut off from the autograd graph;
5. run the answer once more on other devices with :func:`probes` (``meta`` always, which catches
   ``.cpu()``, ``.numpy()`` and ``.item()`` without a GPU; CUDA when there is one).

A network handed to the answer can be wrapped in a :class:`Network`, which counts the passes
through it, records what it was fed, and explains a call on the wrong input.
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

__all__ = ["fail", "require_callable", "draws", "call", "expect", "expect_pair", "close", "randomised", "stays_on_meta",
           "SEED_ENV", "F64", "CASES", "tol", "randint", "batch_size", "random_input", "per_row", "same_gradients",
           "on_meta", "devices", "probes", "Network", "layer_delegation"]

SEED_ENV = "COURSEKIT_CHECK_SEED"
F64 = torch.float64

# The problems a check draws, as (dtype, inputs and parameters require grad): float64 for precision,
# float64 with autograd (the results must carry the right gradients), float32 (the dtype follows the
# input). The first has no autograd at all, so that an in-place change of an input is reported as such
# (with grad on, torch refuses it with an error about leaf variables first).
CASES = ((F64, False), (F64, True), (torch.float32, True))


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


def tol(dtype) -> float:
    """The tolerance of a comparison of results computed in ``dtype``."""
    return 1e-9 if dtype == F64 else 1e-4


def randint(g: torch.Generator, lo: int, hi: int) -> int:
    """An integer drawn uniformly in ``[lo, hi]``."""
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


def uniforms(g: torch.Generator, lo: float, hi: float, shape=()) -> torch.Tensor:
    """A float64 tensor of ``shape`` drawn uniformly in ``[lo, hi)``."""
    return lo + (hi - lo) * torch.rand(shape, generator=g, dtype=F64)


def uniform(g: torch.Generator, lo: float, hi: float) -> float:
    """A float drawn uniformly in ``[lo, hi)`` (in float64): one draw of :func:`uniforms`."""
    return float(uniforms(g, lo, hi))


def batch_size(g: torch.Generator, avoid) -> int:
    """A batch size in 5..11 equal to none of ``avoid`` (so that a sum over the wrong axis, or a
    shape built from the wrong size, cannot have the right shape)."""
    choices = [n for n in range(5, 12) if n not in set(avoid)]
    return choices[randint(g, 0, len(choices) - 1)]


def random_input(g: torch.Generator, shape, dtype, grad: bool, scale: float = 1.0) -> torch.Tensor:
    """A tensor of independent N(0, scale^2) entries, drawn in float64 and then cast to ``dtype``,
    requiring grad when ``grad``."""
    return (scale * torch.randn(tuple(shape), generator=g, dtype=F64)).to(dtype).requires_grad_(grad)


# ------------------------------------------------------------------ calling the answer


def layer_delegation(module: str, *layers: str) -> dict[str, str]:
    """``forbidden=`` for an exercise that asks for the map or the inverse of coursekit layers: the
    public ``forward`` and ``inverse`` of every coursekit layer (:class:`~coursekit.flows.base.Bijection`),
    and each named layer's own ``_forward`` and ``_inverse`` (``module``: where the layers live)."""
    rule = {
        "coursekit.flows.base.Bijection.inverse": "the inverse of any coursekit layer",
        "coursekit.flows.base.Bijection.forward": "the map of any coursekit layer",
    }
    for layer in layers:
        rule[f"{module}.{layer}._inverse"] = f"the {layer} layer's own inverse"
        rule[f"{module}.{layer}._forward"] = f"the {layer} layer's own map"
    return rule


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


def _state(value):
    """(dtype, device, requires_grad) of a tensor or of every tensor of a module (None for anything else)."""
    if isinstance(value, torch.Tensor):
        return [(value.dtype, value.device, value.requires_grad)]
    if isinstance(value, nn.Module):
        return [(k, t.dtype, t.device, t.requires_grad) for k, t in value.state_dict(keep_vars=True).items()]
    return None


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
    values = list(args) + list(kwargs.values())
    snaps = [_snapshot(v) for v in values]
    states = [_state(v) for v in values]
    ex = current()
    with _forbidden(ex.forbidden if ex is not None else {}):
        result = answer(*args, **kwargs)
    for name, value, snap, state in zip(_arg_names(answer, len(args), kwargs), values, snaps, states):
        if state is not None and _state(value) != state:
            fail(f"{what} changed its input `{name}` in place: its dtype, device or requires_grad flag (with "
                 "`.double()` or `.to(...)` on a network, `.requires_grad_()` on a tensor, applied to the caller's "
                 "object). Work on new tensors (`y = x.double()`) and leave the inputs as they came",
                 mistake="in-place")
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


def per_row(value, name: str, n: int, like: torch.Tensor, grad: bool | None) -> torch.Tensor:
    """:func:`expect` for a result with one value per row of a batch (shape ``(n,)``), with a hint that
    says which way a wrong shape is wrong."""
    hint = ""
    if isinstance(value, torch.Tensor):
        shape = tuple(value.shape)
        if shape == ():
            hint = f"one value for the whole batch; give one per row of x, e.g. with .expand({n}) or x.new_zeros(n)"
        elif len(shape) == 2 and shape[0] == n:
            hint = "one value per coordinate; sum over the coordinates with .sum(-1)"
        elif len(shape) == 1 and shape[0] != n:
            hint = "one value per coordinate or per network output, not per row of x (the batch)"
    return expect(value, name, shape=(n,), like=like, grad=grad, hint=hint)


# ------------------------------------------------------------------ gradients


def _grads(out: torch.Tensor, wrt: list[torch.Tensor], weight: torch.Tensor) -> list[torch.Tensor]:
    if out.grad_fn is None and not out.requires_grad:
        return [torch.zeros_like(t, dtype=F64) for t in wrt]
    got = torch.autograd.grad((out * weight).sum(), wrt, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(t, dtype=F64) if g is None else g.detach().to(F64) for g, t in zip(got, wrt)]


def same_gradients(got: torch.Tensor, want: torch.Tensor, wrt: list[torch.Tensor], name: str,
                   g: torch.Generator, dtype) -> None:
    """Fail (contract) unless ``got`` (the answer's raw result) has the gradients of ``want`` (the
    check's own result, from the same graph inputs) with respect to every tensor of ``wrt``.

    Run it once the values are known to be right: it tells a result that is partly cut off from the
    autograd graph (``.detach()`` on the way, a value rebuilt with ``torch.tensor``) from a right one."""
    weight = torch.rand(tuple(want.shape), generator=g, dtype=F64).to(dtype) + 0.5
    a, b = _grads(got, wrt, weight), _grads(want, wrt, weight)
    if not all(close(u, v, 100 * tol(dtype)) for u, v in zip(a, b)):
        fail(f"`{name}` has the right values but the wrong gradients: part of it is cut off from the autograd "
             "graph (.detach(), .data, torch.no_grad(), a value rebuilt with torch.tensor(...) or .item()), so "
             "training through it would not update the networks correctly. Compute it with torch operations "
             "on the inputs, all the way", mistake="contract")


# ------------------------------------------------------------------ other devices

# what torch says when a computation on the meta device reads values or reaches for the CPU
_OFF_DEVICE = ("Cannot copy out of meta", "meta device type tensor to numpy", "cannot be called on meta tensors")
_MIXED = ("is not on the expected device", "Expected all tensors to be on the same device")


def on_meta(answer, *args, what: str):
    """Run ``answer(*args)`` on ``meta`` tensors and return its result, or None when an operation
    has no meta kernel (the probe then proves nothing and is skipped).

    Fails (contract) when the answer reads values or copies a tensor to the CPU (``.cpu()``,
    ``.numpy()``, ``.item()``, ``float(t)``), or mixes in a tensor it created on the CPU: all of these
    break on a GPU too. Input checks of coursekit and of ``torch.distributions`` (which read values)
    are off during the probe.
    """
    from ...flows.base import set_validation, validation_enabled

    was, was_dist = validation_enabled(), torch.distributions.Distribution._validate_args
    set_validation(False)
    torch.distributions.Distribution.set_default_validate_args(False)
    try:
        return answer(*args)
    except ExerciseFailure:
        raise
    except Exception as err:  # noqa: BLE001 - classified below; anything else: no meta kernel
        message = str(err)
        if any(s in message for s in _OFF_DEVICE):
            fail(f"{what} copies a tensor off its device or reads its value (.cpu(), .numpy(), .item(), "
                 "float(...) or .tolist()): on a GPU that is a slow copy at best, and the result must stay on "
                 "the input's device. Compute with torch operations on the inputs", mistake="contract")
        if any(s in message for s in _MIXED):
            fail(f"{what} mixes devices: it creates a tensor on the CPU (torch.tensor(...), torch.zeros(n) "
                 "without device=, ...) and combines it with the inputs, which fails on a GPU. Create new "
                 "tensors on the input's device: x.new_zeros(n), torch.zeros_like(x), device=x.device",
                 mistake="contract")
        return None
    finally:
        set_validation(was)
        torch.distributions.Distribution.set_default_validate_args(was_dist)


def stays_on_meta(answer, *args, what: str) -> None:
    """:func:`on_meta`, then every tensor the answer returns (one, or a tuple or list of them) must
    still be on ``meta``: a result rebuilt on the CPU (``torch.tensor(...)``, ``.cpu()``) would be on
    the wrong device on a GPU."""
    result = on_meta(answer, *args, what=what)
    for r in result if isinstance(result, (tuple, list)) else [result]:
        if isinstance(r, torch.Tensor) and r.device.type != "meta":
            fail(f"{what} must return its result on the input's device, but it moved it to {r.device.type} "
                 "(no .cpu(), .cuda(), .numpy() or torch.tensor(...)): compute from the inputs", mistake="contract")


def cuda_devices() -> list[str]:
    """``["cuda"]`` when there is a GPU, else nothing: the devices of the checks that need values."""
    return ["cuda"] if torch.cuda.is_available() else []


def devices() -> list[str]:
    """The devices of the last probes: ``meta`` always, CUDA when there is one."""
    return ["meta"] + cuda_devices()


def probes(answer, make: Callable[[str], tuple], what: str) -> Iterator[tuple[str, tuple, Any]]:
    """``(device, args, result)`` for the answer run on the problem ``args = make(device)`` of each of
    :func:`devices`: through :func:`on_meta` on ``meta`` (skipped when an operation has no meta
    kernel), through :func:`call` elsewhere. The caller validates each result: on ``meta`` its shape,
    dtype and device only (meta tensors hold no values), elsewhere its values too."""
    for device in devices():
        args = make(device)
        if device == "meta":
            result = on_meta(answer, *args, what=what)
            if result is None:
                continue
        else:
            result = call(answer, *args, what=what)
        yield device, args, result


# ------------------------------------------------------------------ networks handed to the answer


class Network(nn.Module):
    """A network as the answer receives it, watched.

    It counts the passes through the network (:attr:`passes`, whichever way the answer reaches it),
    records what the network was fed (:meth:`saw`), and fails the answer (tag ``mistake``) when it is
    called on anything but a batch of shape ``(n, width)``; ``reads`` says in words what it reads,
    e.g. "the conditioning block x_{1:r}: the first r columns of x, `x[:, :r]`".
    """

    def __init__(self, net: nn.Module, name: str, width: int, reads: str, mistake: str | None = None):
        super().__init__()
        self.net, self.name, self.width, self.reads, self.mistake = net, name, width, reads, mistake
        self.fed: list[torch.Tensor] = []
        self.passes = 0
        net.register_forward_pre_hook(self._record)

    def _record(self, module, args) -> None:
        self.passes += 1
        if args and isinstance(args[0], torch.Tensor):
            self.fed.append(args[0].detach())

    def forward(self, u: torch.Tensor):
        if not isinstance(u, torch.Tensor) or u.dim() != 2 or u.shape[1] != self.width:
            got = f"a tensor of shape {tuple(u.shape)}" if isinstance(u, torch.Tensor) else type(u).__name__
            fail(f"`{self.name}` was called on {got}, but it reads {self.reads}", mistake=self.mistake)
        return self.net(u)

    def saw(self, value: torch.Tensor) -> bool:
        """Whether the network was ever fed ``value`` (compared on the CPU in float64)."""
        value = value.detach().to("cpu", F64)
        return any(u.device.type != "meta" and close(u.to("cpu", F64), value, 1e-12) for u in self.fed)

    def extra_repr(self) -> str:
        return f"width={self.width}"
