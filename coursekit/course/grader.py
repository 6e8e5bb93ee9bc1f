"""Grade a student's exercise notebook: run it in a fresh kernel and tabulate the checks.

Every cell runs, whatever happens in the cells before it (``allow_errors``), so one failing or
crashing exercise does not hide the others. Each ``check(...)`` appends its verdict to a
report file (see :mod:`coursekit.grading`); exercises whose check never reported are marked
"not run", with the error of their check cell when there was one. A notebook that runs past
the time limit is stopped, and the exercises it did not reach are marked so.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .registry import REPORT_ENV, registry

__all__ = ["GradingError", "ExerciseResult", "GradeReport", "grade", "format_report"]

_CHECK_CALL = re.compile(r"""check\(\s*["']([0-9]+(?:\.[0-9]+)*)["']""")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class GradingError(RuntimeError):
    """The notebook cannot be graded (missing, unreadable, not a notebook)."""


@dataclass
class ExerciseResult:
    id: str
    title: str
    points: float
    earned: float
    status: str  # "passed", "failed", "not run"
    reason: str


@dataclass
class GradeReport:
    notebook: str
    results: list[ExerciseResult] = field(default_factory=list)
    elapsed: float = 0.0
    timed_out: bool = False

    @property
    def total(self) -> float:
        return sum(r.points for r in self.results)

    @property
    def earned(self) -> float:
        return sum(r.earned for r in self.results)

    def to_json(self) -> str:
        data = asdict(self)
        data.update(total=self.total, earned=self.earned)
        return json.dumps(data, indent=2)


def _read(path: Path):
    import nbformat

    if not path.exists():
        raise GradingError(f"{path}: no such file. Give the path of the student's .ipynb (or .md) notebook.")
    if path.suffix not in (".ipynb", ".md"):
        raise GradingError(f"{path}: expected a .ipynb notebook (or a jupytext .md), got '{path.suffix}'.")
    try:
        if path.suffix == ".md":
            import jupytext

            return jupytext.read(path)
        nb = nbformat.read(str(path), as_version=4)
        nbformat.validate(nb)
        return nb
    except Exception as err:  # corrupt JSON, wrong schema, binary junk...
        raise GradingError(
            f"{path} is not a readable notebook ({type(err).__name__}: {str(err).splitlines()[0][:200]}). "
            "Ask the student to download it again (File > Download > .ipynb)."
        ) from None


def _expected_exercises(nb, path: Path) -> list[str]:
    reg = registry()
    ids = []
    name = (nb.metadata.get("coursekit") or {}).get("notebook") or re.sub(r"[ (].*$", "", path.stem)
    ids += [i for i, ex in reg.items() if ex.notebook == name]
    for cell in nb.cells:
        if cell.cell_type == "code":
            ids += [i for i in _CHECK_CALL.findall(cell.source) if i in reg]
    if not ids:
        raise GradingError(
            f"{path}: no graded exercise found (no check(\"N.k\", ...) call, and '{name}' is not an exercise notebook). "
            f"Known notebooks: {', '.join(sorted({ex.notebook for ex in reg.values()}))}."
        )
    return list(dict.fromkeys(ids))


def _cell_error(cell) -> str | None:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return f"{out.get('ename')}: {_ANSI.sub('', out.get('evalue', ''))}"
    return None


def grade(path: str | Path, timeout: float = 600.0, cell_timeout: float | None = None, mode: str = "fast") -> GradeReport:
    """Execute the notebook at ``path`` and grade every exercise in it.

    ``timeout``: seconds for the whole notebook; ``cell_timeout``: seconds for one cell
    (default: the whole budget). ``mode``: the ``COURSEKIT_MODE`` of the run.
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    path = Path(path)
    nb = _read(path)
    expected = _expected_exercises(nb, path)
    reg = registry()
    nb.cells = [c for c in nb.cells if "colab-setup" not in c.get("metadata", {}).get("tags", [])]

    fd, report_file = tempfile.mkstemp(prefix="coursekit-grade-", suffix=".jsonl")
    os.close(fd)
    saved = {k: os.environ.get(k) for k in (REPORT_ENV, "COURSEKIT_MODE", "COURSEKIT_QUIET")}
    os.environ.update({REPORT_ENV: report_file, "COURSEKIT_MODE": mode, "COURSEKIT_QUIET": "1"})
    report = GradeReport(notebook=str(path))
    start = time.monotonic()
    stopped_at: int | None = None
    crash = ""
    try:
        client = NotebookClient(nb, timeout=cell_timeout or timeout, allow_errors=True, kernel_name="python3",
                                resources={"metadata": {"path": str(path.resolve().parent)}})
        with client.setup_kernel():
            for index, cell in enumerate(nb.cells):
                remaining = timeout - (time.monotonic() - start)
                if remaining <= 0:
                    stopped_at, report.timed_out = index, True
                    break
                client.timeout = int(max(1, min(cell_timeout or remaining, remaining)))
                try:
                    client.execute_cell(cell, index)
                except CellTimeoutError:
                    stopped_at, report.timed_out = index, True
                    break
                except DeadKernelError:
                    stopped_at, crash = index, "the kernel died (out of memory, or the code killed it)"
                    break
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    report.elapsed = time.monotonic() - start

    verdicts: dict[str, dict] = {}
    with open(report_file, encoding="utf-8") as fh:
        for line in fh:
            entry = json.loads(line)
            verdicts[entry["id"]] = entry  # a re-run check: the last verdict counts
    os.unlink(report_file)

    check_cells = {}
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            for i in _CHECK_CALL.findall(cell.source):
                check_cells.setdefault(i, (index, cell))

    for i in expected:
        ex = reg[i]
        if i in verdicts:
            v = verdicts[i]
            status = "passed" if v["passed"] else "failed"
            report.results.append(ExerciseResult(i, ex.title, ex.points, ex.points if v["passed"] else 0.0, status, v["message"]))
            continue
        if i not in check_cells:
            reason = "its check cell was deleted: no check(\"%s\", ...) call in the notebook" % i
        else:
            index, cell = check_cells[i]
            if stopped_at is not None and index >= stopped_at:
                reason = (f"not reached: the notebook was stopped after {timeout:g} s" if report.timed_out
                          else f"not reached: {crash}")
            else:
                err = _cell_error(cell)
                reason = f"its check cell raised {err}" if err else "its check cell did not run the check"
        report.results.append(ExerciseResult(i, ex.title, ex.points, 0.0, "not run", reason))
    return report


def format_report(report: GradeReport, width: int = 100) -> str:
    """A plain-text table, one row per exercise, and the total."""
    rows = [("exercise", "title", "result", "points", "reason")]
    for r in report.results:
        reason = r.reason if r.status != "passed" else ""
        rows.append((r.id, r.title, r.status, f"{r.earned:g}/{r.points:g}", reason))
    w = [max(len(row[k]) for row in rows) for k in range(4)]
    w[1] = min(w[1], 40)
    lines = [f"Grading {report.notebook}"]
    for n, (a, b, c, d, e) in enumerate(rows):
        b = b if len(b) <= w[1] else b[: w[1] - 1] + "…"
        line = f"{a:<{w[0]}}  {b:<{w[1]}}  {c:<{w[2]}}  {d:>{w[3]}}  {e}"
        lines.append(line)
        if n == 0:
            lines.append("-" * min(len(line) + 20, width))
    lines.append("-" * min(width, 60))
    lines.append(f"total: {report.earned:g}/{report.total:g} points ({report.elapsed:.1f} s)")
    if report.timed_out:
        lines.append("note: the notebook was stopped at the time limit; exercises after that point were not graded.")
    return "\n".join(lines)
