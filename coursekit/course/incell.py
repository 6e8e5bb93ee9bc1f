"""The grader's own code that runs inside the student's kernel: a guard cell and one verdict cell per exercise.

Nothing here is imported by the kernel: :mod:`coursekit.course.grader` copies the *source* of these
functions into the cells it inserts, so that a student who patches ``coursekit`` (or deletes it
from ``sys.modules``) cannot change what these cells do. Each function is self-contained (no
module-level names) for that reason.

* :func:`ck_guard` runs first, before any student code: it imports what the verdict cells need and
  records the identity of everything a cheater would patch (see :func:`ck_snapshot`).
* :func:`ck_verdict` runs at the place of each of the assignment's check cells: it compares the
  world with that record, loads the check code freshly from the installed files (the modules in
  ``sys.modules`` may have been patched), runs ``Exercise.run`` on the student's answer with the
  student's output silenced, and prints one line signed with HMAC-SHA256 under a key written only
  into that cell. The grader, outside the kernel, accepts nothing else.
"""

from __future__ import annotations

__all__ = ["PREFIX", "ck_snapshot", "ck_compare", "ck_guard", "ck_verdict"]

PREFIX = "COURSEKIT-VERDICT"


def ck_snapshot(ip, torch_too=True):
    """``{what: object}`` for everything whose replacement would let code fake a verdict.

    Values are compared by identity (see :func:`ck_compare`); lists of hooks are recorded entry by entry.
    """
    import builtins
    import sys

    out = {}

    def ns(prefix, d):
        for k, v in list(d.items()):
            if callable(v) or type(v) is type(sys):
                out[prefix + k] = v

    def seq(prefix, items):
        items = list(items)
        out[f"len({prefix})={len(items)}"] = True
        for i, v in enumerate(items):
            out[f"{prefix}[{i}]"] = v

    ns("builtins.", {k: v for k, v in vars(builtins).items() if k != "input"})  # ipykernel swaps input per cell
    for name in ("stdout", "stderr", "stdin", "displayhook", "excepthook", "breakpointhook", "unraisablehook",
                 "modules", "meta_path", "path_hooks", "audit", "addaudithook", "settrace", "setprofile",
                 "gettrace", "getprofile", "_getframe", "exit"):
        out["sys." + name] = getattr(sys, name, None)
    out["sys.gettrace()"] = sys.gettrace()
    out["sys.getprofile()"] = sys.getprofile()
    seq("sys.meta_path", sys.meta_path)
    seq("sys.path_hooks", sys.path_hooks)
    # (sys.stdout's own attributes change with every cell: IPython wraps its write method to record
    # the output in the history. The verdict line is written through the class's method instead.)
    out["type(sys.stdout)"] = type(sys.stdout)
    parts = [sys.stdout]
    for attr in ("session", "pub_thread", "topic"):
        out[f"sys.stdout.{attr}"] = getattr(sys.stdout, attr, None)
        parts.append(getattr(sys.stdout, attr, None))
    out["sys.stdout.pub_thread.socket"] = getattr(getattr(sys.stdout, "pub_thread", None), "socket", None)
    parts.append(out["sys.stdout.pub_thread.socket"])
    for obj in parts:
        if obj is not None and not isinstance(obj, (str, bytes)):
            for cls in type(obj).__mro__[:-1]:
                ns(f"{cls.__module__}.{cls.__qualname__}.", vars(cls))
    names = ["sys", "builtins", "hmac", "hashlib", "_hashlib", "json", "json.encoder", "base64", "binascii", "math",
             "operator", "functools", "importlib", "importlib._bootstrap", "importlib._bootstrap_external",
             "importlib.util", "importlib.machinery", "contextlib", "contextvars", "io", "inspect", "traceback",
             "os", "posixpath", "types", "secrets", "random", "threading", "dataclasses", "typing", "numpy"]
    if torch_too:
        names += ["torch", "torch.nn", "torch.nn.functional", "torch.nn.init", "torch.linalg", "torch.autograd",
                  "torch.autograd.functional", "torch.func", "torch.testing", "torch.distributions",
                  "torch.special", "torch.fft", "torch.random"]
    for name in names:
        mod = sys.modules.get(name)
        out[f"sys.modules[{name!r}]"] = mod
        if mod is not None and name not in ("sys", "builtins"):
            ns(name + ".", vars(mod))
    torch = sys.modules.get("torch") if torch_too else None
    if torch is not None:
        classes = [torch.Tensor, getattr(torch._C, "TensorBase", None), torch.nn.Module, torch.nn.Parameter,
                   torch.Generator, torch.autograd.Function]
        dist = sys.modules.get("torch.distributions")
        if dist is not None:
            classes += [dist.Distribution, dist.Normal, dist.MultivariateNormal, dist.Independent,
                        dist.TransformedDistribution, dist.Uniform]
        for cls in classes:
            if cls is not None:
                ns(f"{cls.__module__}.{cls.__qualname__}.", vars(cls))
    if ip is not None:
        out["ip"] = ip
        for attr in ("events", "compile", "input_transformer_manager", "displayhook", "display_pub", "user_ns"):
            out["ip." + attr] = getattr(ip, attr, None)
        ns("ip.", vars(ip))
        for obj in (ip, ip.events, ip.compile, ip.displayhook, ip.input_transformer_manager):
            for cls in type(obj).__mro__[:-1]:
                ns(f"{cls.__module__}.{cls.__qualname__}.", vars(cls))
        for event, callbacks in ip.events.callbacks.items():
            seq(f"ip.events[{event!r}]", callbacks)
        seq("ip.input_transformers_cleanup", ip.input_transformers_cleanup)
        seq("ip.input_transformers_post", ip.input_transformers_post)
        seq("ip.ast_transformers", ip.ast_transformers)
        itm = ip.input_transformer_manager
        for attr in ("cleanup_transforms", "line_transforms", "token_transformers"):
            seq(f"ip.input_transformer_manager.{attr}", getattr(itm, attr, []))
    return out


def ck_compare(base, now):
    """What changed from ``base`` to ``now``: a list of short descriptions (empty when nothing did).

    A replaced entry counts when its new value comes from outside the installed libraries (the
    notebook's own code: a function of ``__main__``, of a file beside it, of a module it made); a
    library swapping one of its own functions (``torch.set_default_dtype`` rebinds
    ``torch.Storage``) does not. New entries count only in the lists of hooks (IPython's event
    callbacks, input and AST transformers, import finders), and only when they are the notebook's.
    """
    import sys
    import sysconfig

    paths = sysconfig.get_paths()
    libs = tuple({paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths})

    def foreign(obj, depth=0):
        while depth < 5 and (hasattr(obj, "__func__") or (hasattr(obj, "func") and type(obj).__name__ == "partial")):
            obj = getattr(obj, "__func__", None) or obj.func
            depth += 1
        name = getattr(obj, "__module__", None)
        if not isinstance(name, str):
            name = type(obj).__module__
        if name == "__main__":
            return True
        if name in sys.builtin_module_names:
            return False
        mod = sys.modules.get(name)
        file = getattr(mod, "__file__", None)
        if not isinstance(file, str):
            return True
        return not file.startswith(libs)

    changed = []
    for key, value in base.items():
        if value is None and key.startswith("sys.modules["):
            continue  # not installed here
        if key.startswith("len("):
            continue  # lists of hooks: their entries are compared one by one, new ones below
        if key not in now:
            if key.endswith("]") and not key.startswith("sys.modules["):
                continue  # an entry removed from a list of hooks: nothing runs because of it
            changed.append(f"{key} was removed")
        elif now[key] is not value:
            if type(value) is type(now[key]) and type(value).__name__ == "method" and now[key] == value:
                continue  # the same bound method, fetched again
            if key.startswith("sys.modules[") or foreign(now[key]):
                changed.append(f"{key} was replaced")
    hooks = ("ip.events[", "ip.input_transformer", "ip.ast_transformers", "sys.meta_path[", "sys.path_hooks[")
    for key in now:
        if key not in base and key.startswith(hooks) and foreign(now[key]):
            obj = now[key]
            changed.append(f"{key.split('[')[0]} has a new entry ({getattr(obj, '__qualname__', type(obj).__name__)})")
    seen, unique = set(), []
    for c in changed:
        head = c.split(" ")[0].split("[")[0]
        if head not in seen:
            seen.add(head)
            unique.append(c)
    return unique


def ck_guard(guard_name, start_dir):
    """The first cell: import what the verdict cells use, record the world, then enter the student's folder."""
    import base64  # noqa: F401  (imported before any student code can shadow it)
    import builtins
    import contextlib  # noqa: F401
    import hashlib  # noqa: F401
    import hmac  # noqa: F401
    import importlib
    import importlib.machinery  # noqa: F401
    import importlib.util  # noqa: F401
    import inspect  # noqa: F401
    import io  # noqa: F401
    import json  # noqa: F401
    import os
    import sys
    import traceback  # noqa: F401
    import types

    for name in ("secrets", "random", "threading", "dataclasses", "typing", "operator", "functools", "binascii",
                 "json.encoder", "contextvars", "numpy", "torch", "torch.nn.functional", "torch.linalg", "torch.autograd.functional", "torch.func",
                 "torch.testing", "torch.distributions"):
        try:
            importlib.import_module(name)
        except Exception:  # a course without torch or numpy still grades
            pass
    ip = builtins.get_ipython() if hasattr(builtins, "get_ipython") else None
    guard = types.ModuleType(guard_name)
    guard.ip = ip
    guard.path = [p for p in sys.path if p and os.path.abspath(p) != os.getcwd()]
    stream = sys.stdout
    guard.write = lambda text, _w=type(stream).write, _s=stream: _w(_s, text)
    guard.flush = lambda _f=type(stream).flush, _s=stream: _f(_s)
    guard.base = ck_snapshot(ip)
    guard.blocked = []
    guard.mods = {"hmac": hmac, "hashlib": hashlib, "json": json, "base64": base64}  # signing needs these intact

    def audit(event, args, _blocked=guard.blocked):
        # A student's audit hook would see the source of every later cell (the "compile" event),
        # verdict cells included: refuse to add one, and remember the attempt.
        if event == "sys.addaudithook":
            _blocked.append(event)
            raise RuntimeError("coursekit grader: audit hooks are not allowed while grading")

    sys.addaudithook(audit)
    sys.modules[guard_name] = guard
    os.chdir(start_dir)
    if "" not in sys.path:
        sys.path.insert(0, "")


def ck_verdict(key_hex, seq, exercise_id, answer, guard_name, pkg_root, check_module, check_dir, prefix):
    """Check one exercise and print its signed verdict line (see the module docstring)."""
    import base64
    import contextlib
    import hashlib
    import hmac
    import importlib
    import inspect
    import io
    import json
    import sys

    key = bytes.fromhex(key_hex)
    guard = sys.modules.get(guard_name)
    verdict = {"v": 1, "seq": seq, "id": exercise_id, "passed": False, "message": "", "mistake": None}
    tampering = []
    if guard is None or not hasattr(guard, "base"):
        tampering.append("the grader's first cell did not run or was removed from sys.modules")
        write = sys.stdout.write
    else:
        write = guard.write
        tampering += ck_compare(guard.base, ck_snapshot(guard.ip))
        if guard.blocked:
            tampering.append("the notebook tried to install an audit hook")
        if type(guard.ip.user_ns) is not dict:
            tampering.append("the user namespace was replaced")
    fresh_names = lambda: [k for k in sys.modules if k == "coursekit" or k.startswith("coursekit.") or k == check_module]  # noqa: E731
    if not tampering:
        ns = guard.ip.user_ns
        missing = object()
        if answer.isidentifier():
            obj = ns.get(answer, missing)
        else:
            try:
                obj = eval(answer, dict(ns))
            except Exception:
                obj = missing
        if obj is missing:
            verdict.update(message=f"`{answer}` is not defined: the cell that defines it is missing, did not run or "
                                   "raised an error", mistake="missing")
        else:
            saved = {k: sys.modules.pop(k) for k in fresh_names()}
            old_path, old_cache = sys.path[:], sys.path_importer_cache
            patched = []
            sink = io.StringIO()
            try:
                sys.path[:] = [pkg_root] + ([check_dir] if check_dir else []) + guard.path
                sys.path_importer_cache = {}
                registry = importlib.import_module("coursekit.course.registry")
                importlib.import_module(check_module)
                sys.path[:], sys.path_importer_cache = old_path, old_cache
                ex = registry._REGISTRY.get(exercise_id)
                if ex is None:
                    raise LookupError(f"the check module {check_module} registers no exercise {exercise_id}")
                fresh = {}
                for name in fresh_names():
                    for k, v in list(vars(sys.modules[name]).items()):
                        if callable(v):
                            fresh[f"{name}.{k}"] = v
                            if isinstance(v, type) and v.__module__ == name:
                                fresh.update({f"{name}.{k}.{a}": b for a, b in vars(v).items() if callable(b)})
                # A forbidden coursekit callable must also be refused when the answer reaches it through
                # the modules the notebook imported (not only through the fresh ones the check uses).
                for target, why in ex.forbidden.items():
                    parts = target.split(".")
                    for cut in range(len(parts) - 1, 0, -1):
                        owner = saved.get(".".join(parts[:cut]))
                        if owner is None:
                            continue
                        for part in parts[cut:-1]:
                            owner = getattr(owner, part)
                        original = inspect.getattr_static(owner, parts[-1])

                        def trap(*args, _target=target, _why=why, **kwargs):
                            raise registry.Delegation(_target.removeprefix("coursekit."), _why)

                        setattr(owner, parts[-1], staticmethod(trap) if isinstance(original, staticmethod) else trap)
                        patched.append((owner, parts[-1], original))
                        break
                with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                    result = ex.run(obj)
                verdict.update(passed=bool(result[0]), message=str(result[1]),
                               mistake=None if result[2] is None else str(result[2]))
                now = {}
                for name in fresh_names():
                    mod = sys.modules.get(name)
                    for k, v in list(vars(mod).items()) if mod is not None else []:
                        if callable(v):
                            now[f"{name}.{k}"] = v
                            if isinstance(v, type) and v.__module__ == name:
                                now.update({f"{name}.{k}.{a}": b for a, b in vars(v).items() if callable(b)})
                during = [c for c in ck_compare(fresh, now) if "new entry" not in c]
                during += ck_compare(guard.base, ck_snapshot(guard.ip))
                if during:
                    tampering += [f"while the check ran, {c}" for c in during]
            except (KeyboardInterrupt, SystemExit, GeneratorExit) as err:
                if isinstance(err, KeyboardInterrupt):
                    raise  # the cell's time limit: the grader reports it
                verdict.update(message=f"your answer raised {type(err).__name__}", mistake="crash")
            except Exception as err:
                verdict.update(message=f"grader error: {type(err).__name__}: {err}", mistake="grader-error")
            finally:
                for owner, attr, original in reversed(patched):
                    setattr(owner, attr, original)
                for name in fresh_names():
                    sys.modules.pop(name, None)
                sys.modules.update(saved)
                sys.path[:], sys.path_importer_cache = old_path, old_cache
    if tampering:
        verdict.update(passed=False, message="tampering detected: " + "; ".join(tampering[:4]), mistake="tampering")
    mods = getattr(guard, "mods", None) or {}
    base64, json = mods.get("base64", base64), mods.get("json", json)
    hmac, hashlib = mods.get("hmac", hmac), mods.get("hashlib", hashlib)
    body = base64.b64encode(json.dumps(verdict, sort_keys=True).encode()).decode()
    mac = hmac.new(key, body.encode(), hashlib.sha256).hexdigest()
    write(f"\n{prefix} {body} {mac}\n")
    if guard is not None:
        guard.flush()
