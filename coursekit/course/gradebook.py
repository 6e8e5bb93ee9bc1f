"""Grade a class: many submissions in parallel, a CSV gradebook, and a summary per exercise.

:func:`grade_class` grades every submission with :func:`coursekit.course.grader.grade` (each in
its own sandboxed worker process, ``jobs`` at a time), and never stops at a bad file: a corrupt,
missing or non-notebook file gets a report whose ``error`` says why. :func:`write_csv` writes one
row per submission and one column per exercise, with the reason for every lost point;
:func:`summary` gives each exercise's pass rate and how often each of its named mistakes
occurred ("4.1: 7 of 30 added m instead of subtracting it").
"""

from __future__ import annotations

import csv
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from .grader import ExerciseResult, GradeReport, GradingError, find_assignment, find_exercises_dir, grade
from .registry import registry

__all__ = ["collect_submissions", "grade_class", "write_csv", "summary", "default_jobs"]

# Descriptions of the tags the grader itself gives (the checks' own tags are in Exercise.mistakes).
GENERIC = {
    "blank": "left it blank",
    "crash": "wrote code that crashed",
    "delegation": "called coursekit's own implementation",
    "in-place": "changed an input in place",
    "contract": "returned the wrong type, shape or dtype",
    "not-callable": "submitted a value instead of the function",
    "missing": "deleted or never defined the answer",
    "timeout": "ran past the time limit",
    "tampering": "tampered with the grader",
    "not run": "were not graded (the notebook stopped before the check)",
    "grader-error": "hit an error of the grader",
}


def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def collect_submissions(paths: list[str | Path]) -> list[Path]:
    """The submissions named by ``paths``: files as given; in a folder, every file at its top level
    (a non-notebook there gets a row saying so) and the notebooks in its sub-folders (one per
    student; other files there are the student's support files)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            out.append(p)
            continue
        for child in sorted(p.iterdir()):
            if child.name.startswith(".") or child.name == "__pycache__":
                continue
            if child.is_file():
                out.append(child)
            elif child.is_dir():
                for root, dirs, files in os.walk(child):
                    dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
                    for name in sorted(files):
                        f = Path(root) / name
                        if f.suffix == ".ipynb" or (f.suffix == ".md" and _is_jupytext(f)):
                            out.append(f)
    return list(dict.fromkeys(out))


def _is_jupytext(path: Path) -> bool:
    try:
        head = path.read_text(encoding="utf-8", errors="replace")[:2000]
    except OSError:
        return False
    return head.lstrip().startswith("---") and "jupytext" in head


def _one(path: Path, exclude: set[Path], **kwargs) -> GradeReport:
    t0 = time.monotonic()
    try:
        return grade(path, exclude=exclude - {path.resolve()}, **kwargs)
    except GradingError as err:
        report = GradeReport(notebook=str(path), error=str(err), elapsed=time.monotonic() - t0)
    except Exception as err:  # a bug of the grader must not stop the class
        report = GradeReport(notebook=str(path), error=f"grader error: {type(err).__name__}: {err}",
                             elapsed=time.monotonic() - t0)
    try:  # still say which assignment it was, when the name tells
        ex_dir = kwargs.get("exercises_dir") or find_exercises_dir()
        report.assignment = find_assignment(path, kwargs.get("assignment"), ex_dir)[0]
    except Exception:
        pass
    if report.assignment:
        reg = registry()
        report.results = [ExerciseResult(i, ex.title, ex.points, 0.0, "not run", "the file could not be graded",
                                         "unreadable") for i, ex in reg.items() if ex.notebook == report.assignment]
    return report


def grade_class(paths: list[str | Path], *, jobs: int | None = None, progress: bool | None = None,
                **kwargs) -> list[GradeReport]:
    """Grade every submission under ``paths`` (see :func:`collect_submissions`), ``jobs`` at a time
    (default: one per core). ``kwargs`` go to :func:`~coursekit.course.grader.grade`. Reports come
    back in the order of the files."""
    files = collect_submissions(paths)
    # the other notebooks submitted are not copied with a student's folder (support files are)
    exclude = {f.resolve() for f in files if f.suffix in (".ipynb", ".md")}
    jobs = jobs or default_jobs()
    reports: dict[Path, GradeReport] = {}
    bar = None
    if progress is not False:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(files), unit="notebook", desc="grading", disable=None if progress is None else False)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(_one, f, exclude, **kwargs): f for f in files}
        for fut in as_completed(futures):
            reports[futures[fut]] = fut.result()
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return [reports[f] for f in files]


def _exercise_ids(reports: list[GradeReport]) -> list[str]:
    from .registry import _sort_key

    ids = {r.id for rep in reports for r in rep.results}
    return sorted(ids, key=_sort_key)


def write_csv(reports: list[GradeReport], path: str | Path) -> Path:
    """One row per submission: file, assignment, points per exercise, total, and why points were lost."""
    ids = _exercise_ids(reports)
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "assignment", "earned", "total", *ids, "lost points", "error", "seconds", "sandboxed"])
        for rep in reports:
            by_id = {r.id: r for r in rep.results}
            lost = "; ".join(f"{r.id} (-{r.points - r.earned:g}): {r.reason}" for r in rep.results
                             if r.earned < r.points)
            w.writerow([rep.notebook, rep.assignment, f"{rep.earned:g}" if not rep.error else "",
                        f"{rep.total:g}" if rep.results else "",
                        *[f"{by_id[i].earned:g}" if i in by_id and not rep.error else "" for i in ids],
                        lost if not rep.error else "", rep.error, f"{rep.elapsed:.1f}",
                        "yes" if rep.sandboxed else "no"])
    return path


def summary(reports: list[GradeReport]) -> str:
    """Pass rate per exercise and the count of each named mistake, and the files that could not be graded."""
    reg = registry()
    lines = []
    graded = [r for r in reports if not r.error]
    bad = [r for r in reports if r.error]
    lines.append(f"{len(reports)} submissions: {len(graded)} graded, {len(bad)} could not be graded")
    for r in bad:
        lines.append(f"  {Path(r.notebook).name}: {r.error}")
    for xid in _exercise_ids(reports):
        rows = [rep for rep in reports if any(r.id == xid for r in rep.results)]
        results = [r for rep in rows for r in rep.results if r.id == xid]
        n = len(results)
        passed = sum(r.status == "passed" for r in results)
        ex = reg.get(xid)
        title = ex.title if ex else results[0].title
        lines.append(f"{xid} {title}: {passed} of {n} passed ({100 * passed / n:.0f}%)")
        counts = Counter(r.mistake for r in results if r.status != "passed")
        for tag, k in counts.most_common():
            if tag is None:
                what = "gave a wrong answer the check does not name"
            elif tag == "unreadable":
                what = "sent a file that could not be graded"
            else:
                what = (ex.mistakes.get(tag) if ex and tag in ex.mistakes else None) or GENERIC.get(tag, tag)
            lines.append(f"  {xid}: {k} of {n} {what}")
    return "\n".join(lines)

