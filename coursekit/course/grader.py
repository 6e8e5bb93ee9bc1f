"""Grade a student's exercise notebook against its assignment, as a chain of small stages.

1. :func:`read_notebook`: the submission (``.ipynb``, or a jupytext ``.md``), or a clear
   :class:`GradingError`.
2. :func:`find_assignment`: the course's exercise notebook it answers, named by ``assignment`` or
   by the submission's file name (``"ex04_coupling (2).ipynb"`` -> ``ex04_coupling``), never by the
   submission's metadata; the exercises expected are the registry's for that assignment.
3. :func:`assignment_checks`: the assignment's check cells (``check("4.1", additive_inverse)``).
4. :func:`prepare`: the notebook to run: outputs cleared, every ``check(`` call of the submission
   dropped, a guard cell first, and the grader's verdict cell (:mod:`coursekit.course.incell`) at
   the place of each of the assignment's check cells (see :func:`place_checks`).
5. :func:`coursekit.course.sandbox.execute`: run it in a throwaway copy of its folder, sandboxed,
   under limits on time per cell, total time, memory and output.
6. :func:`collect`: one result per expected exercise, from the verdict cells' outputs only: a line
   signed with that cell's key, exactly one per cell. Anything else the notebook prints, and any
   ``check()`` it calls itself, decides nothing; a missing exercise is "not run", 0 points.

What this protects against, and what it does not, is described in ``README.md`` ("Grading (for
instructors)"): in short, the cheap routes fail, but code that runs in the kernel as the grading
user can still, with effort, reach the grader's cells; use a container for high-stakes grading.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import hmac
import inspect
import json
import re
import secrets
import sys
import textwrap
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import incell
from .registry import Exercise, registry
from .sandbox import Limits, execute

__all__ = ["GradingError", "ExerciseResult", "GradeReport", "CheckCell", "read_notebook", "assignment_name",
           "find_assignment", "assignment_checks", "place_checks", "prepare", "collect", "grade", "format_report",
           "find_exercises_dir"]

_CHECK_ANY = re.compile(r"\bcheck\s*\(")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
NOTEBOOK_SUFFIXES = (".ipynb", ".md")


class GradingError(RuntimeError):
    """The notebook cannot be graded (missing, unreadable, not a notebook, unknown assignment)."""


@dataclass
class ExerciseResult:
    id: str
    title: str
    points: float
    earned: float
    status: str  # "passed", "failed", "not run"
    reason: str
    mistake: str | None = None  # Verdict.mistake, or "not run", "timeout", "tampering", ...


@dataclass
class GradeReport:
    notebook: str
    assignment: str = ""
    results: list[ExerciseResult] = field(default_factory=list)
    elapsed: float = 0.0
    timed_out: bool = False
    sandboxed: bool = False
    error: str = ""  # why the file could not be graded at all ("" when it was)
    warnings: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(r.points for r in self.results)

    @property
    def earned(self) -> float:
        return sum(r.earned for r in self.results)

    def to_dict(self) -> dict:
        data = asdict(self)
        data.update(total=self.total, earned=self.earned)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


# ------------------------------------------------------------------ 1. reading


def read_notebook(path: str | Path):
    """The notebook at ``path`` (nbformat v4 node), or :class:`GradingError` saying what is wrong with the file."""
    import nbformat

    path = Path(path)
    if not path.exists():
        raise GradingError(f"{path}: no such file. Give the path of the student's .ipynb (or .md) notebook.")
    if path.is_dir():
        raise GradingError(f"{path} is a folder, not a notebook.")
    if path.suffix not in NOTEBOOK_SUFFIXES:
        raise GradingError(f"{path}: expected a .ipynb notebook (or a jupytext .md), got "
                           f"'{path.suffix or 'no extension'}'.")
    try:
        if path.suffix == ".md":
            import jupytext

            text = path.read_text(encoding="utf-8")
            if not text.lstrip().startswith("---") or "jupytext" not in text[:2000]:
                raise ValueError("a Markdown file without a jupytext header")
            nb = jupytext.reads(text, fmt="md:myst")
        else:
            nb = nbformat.reads(path.read_text(encoding="utf-8"), as_version=4)
        if not isinstance(nb.get("cells"), list):
            raise ValueError("no list of cells")
        for cell in nb.cells:
            if cell.get("cell_type") not in ("code", "markdown", "raw") or not isinstance(cell.get("source"), str):
                raise ValueError("a cell without a type or a source")
        return nb
    except Exception as err:  # corrupt JSON, wrong schema, binary junk...
        first = (str(err).splitlines() or [""])[0][:200]
        raise GradingError(
            f"{path} is not a readable notebook ({type(err).__name__}: {first}). "
            "Ask the student to download it again (File > Download > .ipynb)."
        ) from None


# ------------------------------------------------------------------ 2. the assignment


def find_exercises_dir(start: Path | None = None) -> Path | None:
    """The course's ``exercises/`` folder: above the current folder, else beside the installed package."""
    here = Path(start or Path.cwd()).resolve()
    for p in [here, *here.parents]:
        if (p / "exercises").is_dir() and (p / "solutions").is_dir():
            return p / "exercises"
    pkg = Path(__file__).resolve().parents[2] / "exercises"
    return pkg if pkg.is_dir() else None


def _assignments(exercises_dir: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for p in sorted(exercises_dir.glob("*")):
        if p.suffix in NOTEBOOK_SUFFIXES and p.is_file():
            # the jupytext .md is the source; the .ipynb copy is used when there is no .md
            if p.suffix == ".md" or p.stem not in found:
                found[p.stem] = p
    return found


def assignment_name(path: Path, names: list[str]) -> str | None:
    """The assignment a submission answers, from its file name (or its folder's name).

    ``"ex04_coupling (2).ipynb"``, ``"ex04_coupling-alice.ipynb"``, ``"alice_ex04_coupling.ipynb"``
    and ``"alice/ex04_coupling.ipynb"`` all answer ``ex04_coupling``. The longest name contained wins.
    """
    for text in (path.stem.lower(), path.parent.name.lower()):
        hits = [n for n in names if n.lower() in text]
        if hits:
            return max(hits, key=len)
    return None


def find_assignment(path: Path, assignment: str | None, exercises_dir: Path | None):
    """``(name, assignment notebook)`` for a submission, or :class:`GradingError`."""
    if assignment and Path(assignment).suffix in NOTEBOOK_SUFFIXES and Path(assignment).is_file():
        return Path(assignment).stem, read_notebook(assignment)
    if exercises_dir is None or not Path(exercises_dir).is_dir():
        raise GradingError("cannot find the course's exercises/ folder: run from the course repository or give "
                           "--exercises DIR")
    known = _assignments(Path(exercises_dir))
    name = assignment or assignment_name(path, list(known))
    if name is None:
        raise GradingError(f"{path}: cannot tell which assignment this answers from its file name; known "
                           f"assignments: {', '.join(known) or 'none'}. Rename it or give --assignment NAME.")
    if name not in known:
        raise GradingError(f"no assignment {name!r} in {exercises_dir}; known: {', '.join(known) or 'none'}")
    return name, read_notebook(known[name])


# ------------------------------------------------------------------ 3. the assignment's check cells


@dataclass
class CheckCell:
    id: str  # the exercise
    index: int  # position in the assignment
    answer: str  # the name (or expression) of the student's answer
    cell_id: str | None
    before: str | None  # normalised source of the assignment's code cell just before it
    after: str | None


def _norm(source: str) -> str:
    return "\n".join(line.rstrip() for line in source.strip().splitlines())


def _parse(source: str):
    try:
        return ast.parse(source)
    except SyntaxError:
        pass
    try:  # IPython syntax (%magics, !shell)
        from IPython.core.inputtransformer2 import TransformerManager

        return ast.parse(TransformerManager().transform_cell(source))
    except Exception:
        return None


def _check_calls(source: str) -> list[tuple[str, str]]:
    """``[(exercise id, answer expression)]`` of the ``check("id", answer)`` calls in a cell."""
    tree = _parse(source)
    out = []
    if tree is None:
        return out
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or len(node.args) < 2:
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
        first = node.args[0]
        if name == "check" and isinstance(first, ast.Constant) and isinstance(first.value, str):
            out.append((first.value, ast.get_source_segment(source, node.args[1]) or ""))
    return out


def assignment_checks(nb, exercises: dict[str, Exercise]) -> dict[str, CheckCell]:
    """The assignment's check cells for ``exercises``, by exercise id (the first one of each)."""
    code = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    found: dict[str, CheckCell] = {}
    for k, (i, cell) in enumerate(code):
        for xid, expr in _check_calls(cell.source):
            if xid not in exercises or xid in found:
                continue
            ex = exercises[xid]
            found[xid] = CheckCell(
                id=xid, index=i, answer=getattr(ex, "answer", "") or expr.strip(), cell_id=cell.get("id"),
                before=_norm(code[k - 1][1].source) if k > 0 else None,
                after=_norm(code[k + 1][1].source) if k + 1 < len(code) else None)
    return found


# ------------------------------------------------------------------ 4. the notebook to run


def _defines(source: str, name: str) -> bool:
    tree = _parse(source)
    if tree is None:
        return bool(re.search(rf"^\s*(def\s+{re.escape(name)}\b|{re.escape(name)}\s*=[^=])", source, re.M))
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return True
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            if any((a.asname or a.name.split(".")[0]) == name for a in node.names):
                return True
        for t in targets:
            if any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(t)):
                return True
    return False


def _strip_checks(source: str) -> str | None:
    """The cell without its ``check(`` statements (None when nothing else is left)."""
    if not _CHECK_ANY.search(source):
        return source
    tree = _parse(source)
    if tree is None or source.lstrip().startswith(("%", "!")):
        return None
    lines = source.splitlines()
    keep = [True] * len(lines)
    for node in tree.body:
        segment = "\n".join(lines[node.lineno - 1: node.end_lineno])
        if _CHECK_ANY.search(segment):
            for j in range(node.lineno - 1, node.end_lineno):
                keep[j] = False
    rest = "\n".join(line for line, k in zip(lines, keep) if k)
    if _CHECK_ANY.search(rest) or not rest.strip() or _parse(rest) is None:
        return None
    return rest


def place_checks(student: list, dropped: dict[int, str], checks: dict[str, CheckCell]) -> dict[str, int]:
    """Where each verdict cell goes: the index of the student cell it follows (-1: first; len: at the end).

    ``student``: the submission's code cells after stripping (their original index in
    ``cell.orig``); ``dropped``: original index -> source of the cells removed for
    calling ``check(``. In order of preference: the place of a submission cell with the check
    cell's id; the place of the student's own ``check("N.k", ...)`` cell, when the answer is
    defined before it; right after the last cell that defines the answer; after (or before) the
    assignment's neighbouring cell when the submission has it unchanged; at the end.
    """
    n = len(student)
    orig = [c.orig for c in student]

    def slot_of(original_index: int) -> int:  # after what is left of that cell, or the kept cell before it
        k = -1
        for j, o in enumerate(orig):
            if o <= original_index:
                k = j
        return k

    places: dict[str, int] = {}
    for xid, cc in checks.items():
        defs = [j for j, c in enumerate(student) if c.cell_type == "code" and cc.answer.isidentifier()
                and _defines(c.source, cc.answer)]
        where = None
        if cc.cell_id:
            for j, c in enumerate(student):
                if c.id == cc.cell_id:
                    where = j
            for o, src in dropped.items():
                if src[1] == cc.cell_id:
                    where = slot_of(o)
        if where is None:
            own = [o for o, (src, _) in sorted(dropped.items()) if any(i == xid for i, _ in _check_calls(src))]
            if own and defs and slot_of(own[0]) >= defs[0]:
                where = slot_of(own[0])
        if where is None and defs:
            where = defs[-1]
        if where is None:
            for j, c in enumerate(student):
                if c.cell_type == "code" and cc.before is not None and _norm(c.source) == cc.before:
                    where = j
                    break
                if c.cell_type == "code" and cc.after is not None and _norm(c.source) == cc.after:
                    where = j - 1
                    break
        places[xid] = n - 1 if where is None else where
    return places


def _fn_source(fn, indent: str = "    ") -> str:
    return textwrap.indent(textwrap.dedent(inspect.getsource(fn)), indent)


def _guard_source(guard_name: str) -> str:
    return ("# coursekit grader: set-up (inserted by the grader before the student's code)\n"
            "def _coursekit_guard():\n"
            + _fn_source(incell.ck_snapshot) + _fn_source(incell.ck_guard)
            + f"    ck_guard({guard_name!r}, {{START!r}})\n"
            "_coursekit_guard()\ndel _coursekit_guard\n").replace("{START!r}", "'{START}'")


def _check_module(ex: Exercise) -> tuple[str, str, str]:
    """(module name, folder to import it from or "", package root) of an exercise's check."""
    import coursekit

    pkg_root = str(Path(coursekit.__file__).resolve().parents[1])
    name = ex.fn.__module__
    mod = sys.modules.get(name)
    folder = ""
    if not (name == "coursekit" or name.startswith("coursekit.")) and mod is not None and getattr(mod, "__file__", None):
        folder = str(Path(mod.__file__).resolve().parent)
        for _ in name.split(".")[1:]:
            folder = str(Path(folder).parent)
    return name, folder, pkg_root


def _verdict_source(seq: int, ex: Exercise, answer: str, key: bytes, guard_name: str) -> str:
    module, folder, pkg_root = _check_module(ex)
    args = (key.hex(), seq, ex.id, answer, guard_name, pkg_root, module, folder, incell.PREFIX)
    return (f"# coursekit grader: check of exercise {ex.id} (restored from the assignment; the student's own "
            "check cells do not count)\n"
            f"def _coursekit_verdict():\n"
            + _fn_source(incell.ck_snapshot) + _fn_source(incell.ck_compare) + _fn_source(incell.ck_verdict)
            + f"    ck_verdict(*{args!r})\n"
            "_coursekit_verdict()\ndel _coursekit_verdict\n")


@dataclass
class _Cell:
    source: str
    cell_type: str
    id: str | None
    orig: int


@dataclass
class Plan:
    cells: list[dict]  # {"source", "role", "exercise", "seq", "key", "orig"}
    checks: dict[str, CheckCell]
    answer_cells: dict[str, list[int]]  # exercise -> indices (in cells) of the student cells defining the answer


def prepare(nb, assignment_nb, exercises: dict[str, Exercise]) -> Plan:
    """The cells to execute: guard, student cells without ``check(`` calls, verdict cells in place."""
    checks = assignment_checks(assignment_nb, exercises)
    student, dropped = [], {}
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if "colab-setup" in (cell.get("metadata", {}).get("tags") or []):
            continue
        kept = _strip_checks(cell.source)
        if kept != cell.source:
            dropped[i] = (cell.source, cell.get("id"))
        if kept is None:
            continue
        student.append(_Cell(source=kept, cell_type="code", id=cell.get("id"), orig=i))
    places = place_checks(student, dropped, checks)
    guard_name = "_coursekit_guard_" + secrets.token_hex(6)
    cells = [{"source": _guard_source(guard_name), "role": "guard"}]
    after: dict[int, list[str]] = {}
    for xid in sorted(checks, key=lambda x: checks[x].index):
        after.setdefault(places[xid], []).append(xid)
    seq = 0
    answer_cells: dict[str, list[int]] = {}

    def add_verdicts(slot):
        nonlocal seq
        for xid in after.get(slot, []):
            key = secrets.token_bytes(32)
            seq += 1
            cells.append({"source": _verdict_source(seq, exercises[xid], checks[xid].answer, key, guard_name),
                          "role": "verdict", "exercise": xid, "seq": seq, "key": key})

    add_verdicts(-1)
    for j, c in enumerate(student):
        cells.append({"source": c.source, "role": "student", "orig": c.orig})
        for xid, cc in checks.items():
            if cc.answer.isidentifier() and _defines(c.source, cc.answer):
                answer_cells.setdefault(xid, []).append(len(cells) - 1)
        add_verdicts(j)
    return Plan(cells=cells, checks=checks, answer_cells=answer_cells)


# ------------------------------------------------------------------ 6. collecting the verdicts


def _verify(line: str, key: bytes, seq: int, xid: str) -> dict | None:
    parts = line.strip().split(" ")
    if len(parts) != 3 or parts[0] != incell.PREFIX:
        return None
    body, mac = parts[1], parts[2]
    good = hmac.new(key, body.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(good, mac):
        return None
    try:
        data = json.loads(base64.b64decode(body, validate=True))
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("seq") != seq or data.get("id") != xid:
        return None
    if not isinstance(data.get("passed"), bool) or not isinstance(data.get("message"), str):
        return None
    return data


def collect(plan: Plan, run, exercises: dict[str, Exercise], expected: list[str]) -> list[ExerciseResult]:
    """One result per expected exercise, from the verdict cells' records only."""
    by_ex = {c["exercise"]: (i, c) for i, c in enumerate(plan.cells) if c["role"] == "verdict"}
    out = []
    for xid in expected:
        ex = exercises[xid]

        def result(status, reason, mistake=None, passed=False):
            return ExerciseResult(xid, ex.title, ex.points, ex.points if passed else 0.0, status, reason, mistake)

        if xid not in by_ex:
            out.append(result("not run", "the assignment has no check cell for this exercise (a course "
                                         "configuration error: run `coursekit sync`)", "not run"))
            continue
        i, cell = by_ex[xid]
        rec = run.records.get(i)
        if rec is None:
            why = run.killed or run.worker_error or "the notebook stopped before this check"
            out.append(result("not run", f"not reached: {why}", "not run"))
            continue
        status = rec.get("status")
        note = str(rec.get("note") or "")
        if status == "skipped":
            out.append(result("not run", f"not reached: {note}", "not run"))
            continue
        if status == "timeout":
            limit = "its total time limit" if "total time" in note else "the time limit of one cell"
            out.append(result("failed", f"the check of your answer ran past {limit} and was stopped after "
                                        f"{float(rec.get('elapsed', 0)):.1f} s", "timeout"))
            continue
        if status == "died":
            out.append(result("failed", "your answer crashed the Python kernel while it was checked (out of memory, "
                                        "or it killed the process)", "crash"))
            continue
        lines = [ln for ln in str(rec.get("text", "")).splitlines() if ln.strip().startswith(incell.PREFIX)]
        verdicts = [_verify(ln, cell["key"], cell["seq"], xid) for ln in lines]
        if status != "ok" or len(lines) != 1 or verdicts[0] is None:
            what = ("the grader's check cell raised " + str(rec.get("error")) if status == "error" else
                    f"{len(lines)} verdict lines" if len(lines) > 1 else
                    "no verdict line" if not lines else "a verdict line with a wrong signature")
            # with a stolen key there are two signed lines: the grader's own names the tampering it saw
            own = [v for v in verdicts if v and v.get("mistake") == "tampering"]
            reason = own[0]["message"] + f" ({what})" if own else \
                f"tampering detected: the grader's check did not report normally ({what})"
            out.append(result("failed", reason, "tampering"))
            continue
        v = verdicts[0]
        message = v["message"]
        if v.get("mistake") == "missing":
            errs = [run.records.get(j, {}).get("error") for j in plan.answer_cells.get(xid, [])]
            errs = [e for e in errs if e]
            if errs:
                message += f" (its cell raised {_ANSI.sub('', errs[-1])})"
        if v.get("mistake") in ("grader-error", "missing"):  # nothing of the student's was checked
            out.append(result("not run", message, v["mistake"]))
            continue
        out.append(result("passed" if v["passed"] else "failed", message, v.get("mistake"), passed=v["passed"]))
    return out


# ------------------------------------------------------------------ all stages


def _exercises_for(name: str) -> dict[str, Exercise]:
    reg = registry()
    return {i: ex for i, ex in reg.items() if ex.notebook == name}


def grade(path: str | Path, *, assignment: str | None = None, exercises_dir: str | Path | None = None,
          limits: Limits | None = None, timeout: float | None = None, cell_timeout: float | None = None,
          mode: str = "fast", sandbox: bool | None = None, exclude: set[Path] = frozenset()) -> GradeReport:
    """Grade the submission at ``path`` (see the module docstring). Raises :class:`GradingError`
    when the file cannot be graded at all."""
    path = Path(path)
    limits = limits or Limits()
    if timeout is not None:
        limits.timeout = float(timeout)
    if cell_timeout is not None:
        limits.cell_timeout = float(cell_timeout)
    nb = read_notebook(path)
    exercises_dir = Path(exercises_dir) if exercises_dir else find_exercises_dir()
    name, assignment_nb = find_assignment(path, assignment, exercises_dir)
    exercises = _exercises_for(name)
    if not exercises:
        raise GradingError(f"the registry has no exercise for the assignment {name!r}")
    expected = list(exercises)
    plan = prepare(nb, assignment_nb, exercises)
    report = GradeReport(notebook=str(path), assignment=name)
    t0 = time.monotonic()
    try:
        run = execute(plan.cells, path.resolve().parent, limits, mode=mode, exclude=set(exclude), sandbox=sandbox)
    except RuntimeError as err:
        raise GradingError(str(err)) from None
    report.elapsed = time.monotonic() - t0
    report.sandboxed = run.sandboxed
    report.warnings = list(run.warnings)
    report.results = collect(plan, run, exercises, expected)
    report.timed_out = any("total time limit" in str(r.get("note", "")) for r in run.records.values()) or bool(run.killed)
    if run.worker_error and not run.records:
        report.warnings.append(f"the notebook could not be run: {run.worker_error}")
    return report


def format_report(report: GradeReport, width: int = 100) -> str:
    """A plain-text table, one row per exercise, and the total."""
    if report.error:
        return f"Grading {report.notebook}\nnot graded: {report.error}"
    rows = [("exercise", "title", "result", "points", "reason")]
    for r in report.results:
        reason = r.reason if r.status != "passed" else ""
        rows.append((r.id, r.title, r.status, f"{r.earned:g}/{r.points:g}", reason))
    w = [max(len(row[k]) for row in rows) for k in range(4)]
    w[1] = min(w[1], 40)
    lines = [f"Grading {report.notebook}" + (f" (assignment {report.assignment})" if report.assignment else "")]
    for n, (a, b, c, d, e) in enumerate(rows):
        b = b if len(b) <= w[1] else b[: w[1] - 1] + "…"
        line = f"{a:<{w[0]}}  {b:<{w[1]}}  {c:<{w[2]}}  {d:>{w[3]}}  {e}"
        lines.append(line.rstrip())
        if n == 0:
            lines.append("-" * min(len(line) + 20, width))
    lines.append("-" * min(width, 60))
    lines.append(f"total: {report.earned:g}/{report.total:g} points ({report.elapsed:.1f} s)")
    if report.timed_out:
        lines.append("note: the notebook was stopped at its total time limit; exercises after that point were not graded.")
    for w_ in report.warnings:
        lines.append(f"warning: {w_}")
    return "\n".join(lines)

