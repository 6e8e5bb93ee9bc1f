"""Mutation testing of the exercise checks: wrong answers generated from the solution's own code.

For an exercise, :func:`solution_function` finds the student's function in the solution notebook
(``solutions/<notebook>.md``: the cell that defines the name passed to ``check("N.k", name)``),
and :func:`mutants` rewrites the code between its ``# BEGIN SOLUTION`` / ``# END SOLUTION``
markers one small edit at a time: an operator swapped (``+``/``-``, ``*``/``/``), a sign
dropped, a constant changed, a call removed (``torch.log(a)`` -> ``a``, ``a.sum(-1)`` -> ``a``),
``sum`` for ``mean``, two arguments swapped, a slice turned around (``x[:, :r]`` -> ``x[:, r:]``),
one variable for another (``x`` for ``z``), a statement deleted, an operation made in place
(``a - b`` -> ``a.sub_(b)``), a result detached, cast to float64, flattened or moved to the CPU (caught on the
``meta`` device or a GPU). A check that is
worth its points rejects nearly all of them; the ones it accepts (survivors) are either
equivalent to the solution, and listed as such with the reason in the test suite, or holes.

Command line (from the repository root)::

    python -m coursekit.course.mutants 4.1 [4.2 ...] [--all] [--show-killed]
"""

from __future__ import annotations

import argparse
import ast
import copy
import os
import re
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from .registry import Exercise, registry

__all__ = ["SolutionFunction", "Mutant", "MutationResult", "solution_function", "mutants", "run_mutants"]

_CHECK = re.compile(r"""check\(\s*["']([0-9.]+)["']\s*,\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)""")
_BEGIN = re.compile(r"^\s*# BEGIN SOLUTION\s*$")
_END = re.compile(r"^\s*# END SOLUTION\s*$")


@dataclass
class SolutionFunction:
    """The student's function as the solution notebook writes it."""

    exercise: Exercise
    name: str
    tree: ast.FunctionDef  # parsed from the defining cell, line numbers relative to the cell
    lines: set[int]  # cell line numbers inside the solution markers (where mutations apply)
    namespace: dict  # the notebook's imports, classes and functions defined before the check

    def build(self, tree: ast.FunctionDef | None = None) -> Callable:
        """Compile ``tree`` (default: the solution) in a fresh copy of the notebook namespace."""
        module = ast.Module(body=[tree or self.tree], type_ignores=[])
        ast.fix_missing_locations(module)
        ns = dict(self.namespace)
        exec(compile(module, f"<solution of exercise {self.exercise.id}>", "exec"), ns)
        return ns[self.name]


def _code_cells(path: Path):
    import jupytext

    nb = jupytext.read(path)
    return [c.source for c in nb.cells if c.cell_type == "code"]


def solution_function(ex: Exercise, root: str | Path) -> SolutionFunction:
    """Find and load the solution's function for ``ex`` from ``root/solutions/<notebook>.md``."""
    path = Path(root) / "solutions" / f"{ex.notebook}.md"
    cells = _code_cells(path)
    at, name = None, None
    for index, source in enumerate(cells):
        for found_id, found_name in _CHECK.findall(source):
            if found_id == ex.id:
                at, name = index, found_name
    if at is None:
        raise LookupError(f"{path}: no check({ex.id!r}, name) cell")
    if ex.answer and ex.answer != name:
        raise LookupError(f"{path}: check({ex.id!r}, {name}) but the exercise registers answer={ex.answer!r}")
    namespace: dict = {"__name__": f"solution_{ex.notebook}"}
    found = None
    for source in cells[:at]:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue  # IPython magics
        keep = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef))]
        if keep:
            exec(compile(ast.Module(body=keep, type_ignores=[]), str(path), "exec"), namespace)
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name == name:
                found = (node, source)
    if found is None:
        raise LookupError(f"{path}: no cell before check({ex.id!r}, {name}) defines `def {name}(...)`")
    node, source = found
    lines, inside = set(), False
    for lineno, line in enumerate(source.split("\n"), start=1):
        if _BEGIN.match(line):
            inside = True
        elif _END.match(line):
            inside = False
        elif inside or line.rstrip().endswith("# SOLUTION"):
            lines.add(lineno)
    if not lines:
        lines = set(range(node.body[0].lineno, (node.end_lineno or node.lineno) + 1))
    return SolutionFunction(ex, name, node, lines, namespace)


# ------------------------------------------------------------------ mutation operators

_SWAP_BINOP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.Pow: ast.Mult,
               ast.MatMult: ast.Mult, ast.FloorDiv: ast.Div}
_INPLACE = {ast.Add: "add_", ast.Sub: "sub_", ast.Mult: "mul_", ast.Div: "div_"}
_SWAP_CMP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
             ast.NotEq: ast.Eq}
_DROP_CALLS = {"log", "exp", "abs", "sqrt", "sum", "mean", "logsumexp", "square", "tanh", "sigmoid", "softplus",
               "log1p", "expm1", "t", "transpose", "squeeze", "unsqueeze", "flip", "cumsum", "prod", "neg",
               "reciprocal", "clone", "contiguous", "reversed", "list", "float", "relu", "log_prob", "norm"}
_SWAP_CALLS = {"sum": "mean", "mean": "sum", "log": "log1p", "exp": "expm1", "min": "max", "max": "min",
               "amin": "amax", "amax": "amin", "argmin": "argmax", "argmax": "argmin", "cat": "stack"}


def _src(node: ast.AST, limit: int = 48) -> str:
    text = ast.unparse(node).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _call_name(node: ast.Call) -> str | None:
    f = node.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None


def _method(obj: ast.expr, name: str, *args: ast.expr) -> ast.Call:
    return ast.Call(func=ast.Attribute(value=obj, attr=name, ctx=ast.Load()), args=list(args), keywords=[])


def _local_names(fn: ast.FunctionDef) -> list[str]:
    names = [a.arg for a in fn.args.args + fn.args.kwonlyargs]
    for node in ast.walk(fn):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and node.id not in names:
            names.append(node.id)
    return names


def _edits(node: ast.AST, parent: ast.AST, field: str, locals_: list[str]) -> Iterator[tuple[str, object]]:
    """(description, replacement) pairs for one node; a replacement of None deletes a statement."""
    if isinstance(node, ast.BinOp):
        op = type(node.op)
        if op in _SWAP_BINOP:
            new = copy.deepcopy(node)
            new.op = _SWAP_BINOP[op]()
            yield "operator", new
        yield "drop right operand", node.left
        yield "drop left operand", node.right
        if op in _INPLACE and isinstance(node.left, (ast.Name, ast.Subscript, ast.Attribute)):
            yield "in place", _method(node.left, _INPLACE[op], node.right)
        if op in (ast.Sub, ast.Div, ast.MatMult):
            yield "swap operands", ast.BinOp(left=node.right, op=node.op, right=node.left)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        yield "drop the minus sign", node.operand
    elif isinstance(node, ast.Constant) and type(node.value) in (int, float) and not isinstance(node.value, bool):
        v = node.value
        yield "constant", ast.Constant(v + 1)
        if v != 0:
            yield "constant", ast.Constant(-v if v != 1 else 0)
    elif isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _SWAP_CMP:
        new = copy.deepcopy(node)
        new.ops = [_SWAP_CMP[type(node.ops[0])]()]
        yield "comparison", new
    elif isinstance(node, ast.Call):
        name = _call_name(node)
        if name in _DROP_CALLS:
            if isinstance(node.func, ast.Attribute) and not (isinstance(node.func.value, ast.Name)
                                                             and node.func.value.id in ("torch", "math", "np", "F")):
                yield f"drop .{name}()", node.func.value
            elif len(node.args) == 1:
                yield f"drop {name}()", node.args[0]
        if name in _SWAP_CALLS:
            new = copy.deepcopy(node)
            if isinstance(new.func, ast.Attribute):
                new.func.attr = _SWAP_CALLS[name]
            else:
                new.func.id = _SWAP_CALLS[name]
            yield f"{name} -> {_SWAP_CALLS[name]}", new
        if len(node.args) >= 2:
            new = copy.deepcopy(node)
            new.args[0], new.args[1] = new.args[1], new.args[0]
            yield "swap arguments", new
        if name == "reversed" and len(node.args) == 1:
            yield "reverse in place", ast.BoolOp(op=ast.Or(), values=[_method(node.args[0], "reverse"), node.args[0]])
        for k, kw in enumerate(node.keywords):
            if isinstance(kw.value, ast.Constant) and type(kw.value.value) is bool:
                new = copy.deepcopy(node)
                new.keywords[k].value = ast.Constant(not kw.value.value)
                yield f"{kw.arg}={not kw.value.value}", new
    elif isinstance(node, ast.Slice):
        if node.lower is None and node.upper is not None:
            yield "slice turned around", ast.Slice(lower=node.upper, upper=None, step=node.step)
        elif node.upper is None and node.lower is not None:
            yield "slice turned around", ast.Slice(lower=None, upper=node.lower, step=node.step)
    elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in locals_:
        others = [n for n in locals_ if n != node.id]
        for other in others[:3]:
            yield f"{node.id} -> {other}", ast.Name(id=other, ctx=ast.Load())
    elif isinstance(node, (ast.Assign, ast.AugAssign, ast.Expr)) and isinstance(getattr(parent, field, None), list):
        if len(getattr(parent, field)) > 1:
            yield "delete statement", None
    elif isinstance(node, ast.AugAssign) and type(node.op) in _SWAP_BINOP:
        new = copy.deepcopy(node)
        new.op = _SWAP_BINOP[type(node.op)]()
        yield "operator", new


def _returned(fn: ast.FunctionDef) -> list[ast.expr]:
    out = []
    for node in ast.walk(fn):
        if isinstance(node, ast.Return) and node.value is not None:
            out.extend(node.value.elts if isinstance(node.value, ast.Tuple) else [node.value])
    return out


@dataclass
class Mutant:
    description: str  # "line 3: `a - b` -> `a + b` (operator)", line relative to the `def`
    tree: ast.FunctionDef


def mutants(sol: SolutionFunction) -> list[Mutant]:
    """Every single-edit mutant of the solution region of ``sol``, without duplicates."""
    base = sol.tree
    base_src = ast.unparse(base)
    locals_ = _local_names(base)
    out: list[Mutant] = []
    seen = {base_src}

    used: dict[str, int] = {}

    def emit(description: str, tree: ast.FunctionDef):
        try:
            src = ast.unparse(tree)
            compile(ast.fix_missing_locations(ast.Module(body=[tree], type_ignores=[])), "<mutant>", "exec")
        except Exception:
            return
        if src not in seen:
            seen.add(src)
            used[description] = used.get(description, 0) + 1
            if used[description] > 1:  # the same edit at another place of the same line
                description = f"{description} #{used[description]}"
            out.append(Mutant(description, tree))

    def positions(tree):
        """(node, parent, field, index) for every node of ``tree`` in walk order."""
        result = []
        for parent in ast.walk(tree):
            for field, value in ast.iter_fields(parent):
                if isinstance(value, list):
                    result.extend((child, parent, field, i) for i, child in enumerate(value) if isinstance(child, ast.AST))
                elif isinstance(value, ast.AST):
                    result.append((value, parent, field, None))
        return result

    count = len(positions(base))
    for k in range(count):
        node, parent, field, index = positions(base)[k]
        lineno = getattr(node, "lineno", None) or getattr(parent, "lineno", None)
        if lineno not in sol.lines:
            continue
        for what, replacement in _edits(node, parent, field, locals_):
            tree = copy.deepcopy(base)
            n2, p2, f2, i2 = positions(tree)[k]
            if replacement is None:
                getattr(p2, f2).pop(i2)
                desc_new = "(deleted)"
            else:
                replacement = copy.deepcopy(replacement)
                if i2 is None:
                    setattr(p2, f2, replacement)
                else:
                    getattr(p2, f2)[i2] = replacement
                desc_new = f"`{_src(replacement)}`" if not isinstance(replacement, ast.Slice) else f"`{_src(p2)}`"
            old = f"`{_src(node)}`" if not isinstance(node, ast.Slice) else f"`{_src(parent)}`"
            emit(f"line {lineno - base.lineno}: {old} -> {desc_new} ({what})", tree)

    # Contract mutants: each returned value detached, cast to float64, flattened.
    for j, ret in enumerate(_returned(base)):
        for what, method, args in (("detached", "detach", []), ("cast to float64", "double", []),
                                   ("flattened", "reshape", [ast.Constant(-1)]), ("moved to the CPU", "cpu", [])):
            tree = copy.deepcopy(base)
            targets = _returned(tree)
            node = targets[j]
            wrapped = _method(copy.deepcopy(node), method, *args)
            # replace the j-th returned expression
            for parent in ast.walk(tree):
                for field, value in ast.iter_fields(parent):
                    if value is node:
                        setattr(parent, field, wrapped)
                    elif isinstance(value, list) and any(v is node for v in value):
                        value[[v is node for v in value].index(True)] = wrapped
            emit(f"returned `{_src(ret)}` {what}", tree)
    return out


# ------------------------------------------------------------------ running them


@dataclass
class MutationResult:
    exercise: str
    killed: list[tuple[str, str]]  # (description, the check's message)
    survived: list[str]
    crashed_to_build: int
    seconds: float

    @property
    def total(self) -> int:
        return len(self.killed) + len(self.survived)

    @property
    def score(self) -> float:
        return len(self.killed) / self.total if self.total else 1.0


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def run_mutants(ex: Exercise, root: str | Path, seed: int = 20240205, timeout: float = 10.0) -> MutationResult:
    """Run ``ex``'s check on every mutant of its solution (with a fixed check seed)."""
    from .checks._common import SEED_ENV

    sol = solution_function(ex, root)
    saved = os.environ.get(SEED_ENV)
    os.environ[SEED_ENV] = str(seed)
    killed, survived, stillborn = [], [], 0
    start = time.monotonic()
    use_alarm = hasattr(signal, "SIGALRM") and __import__("threading").current_thread() is __import__("threading").main_thread()
    try:
        for m in mutants(sol):
            try:
                fn = sol.build(m.tree)
            except Exception:
                stillborn += 1
                continue
            if use_alarm:
                old = signal.signal(signal.SIGALRM, _alarm)
                signal.setitimer(signal.ITIMER_REAL, timeout)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    verdict = ex.run(fn)
                passed, message = verdict.passed, verdict.message
            except _Timeout:
                passed, message = False, f"(the check ran past {timeout:g} s)"
            finally:
                if use_alarm:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                    signal.signal(signal.SIGALRM, old)
            (survived.append(m.description) if passed else killed.append((m.description, message)))
    finally:
        if saved is None:
            os.environ.pop(SEED_ENV, None)
        else:
            os.environ[SEED_ENV] = saved
    return MutationResult(ex.id, killed, survived, stillborn, time.monotonic() - start)


def _find_root(start: Path) -> Path:
    for p in [start, *start.parents]:
        if (p / "solutions").is_dir() and (p / "_config.yml").exists():
            return p
    raise SystemExit(f"error: {start} is not inside the course repository (no solutions/ and _config.yml above it)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coursekit.course.mutants", description=__doc__.split("\n")[0])
    parser.add_argument("ids", nargs="*", help="exercise ids, e.g. 4.1")
    parser.add_argument("--all", action="store_true", help="every registered exercise")
    parser.add_argument("--show-killed", action="store_true", help="also list the killed mutants and their messages")
    parser.add_argument("--root", help="repository root (default: found from the current folder)")
    args = parser.parse_args(argv)
    reg = registry()
    ids = list(reg) if args.all else args.ids
    if not ids:
        parser.error("give exercise ids or --all")
    unknown = [i for i in ids if i not in reg]
    if unknown:
        parser.error(f"unknown exercise(s) {', '.join(unknown)}; known: {', '.join(reg)}")
    root = Path(args.root).resolve() if args.root else _find_root(Path.cwd())
    status = 0
    for i in ids:
        r = run_mutants(reg[i], root)
        print(f"exercise {i}: {len(r.killed)}/{r.total} mutants killed ({100 * r.score:.0f}%), "
              f"{len(r.survived)} survived, {r.seconds:.1f} s")
        for d in r.survived:
            print(f"  SURVIVED  {d}")
        if args.show_killed:
            for d, msg in r.killed:
                print(f"  killed    {d}\n            -> {msg[:150]}")
        status |= bool(r.survived)
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
