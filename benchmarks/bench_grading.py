"""Grading throughput: submissions per minute for a class of mixed demo submissions.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_grading.py [--n 30] [--jobs 2]

Builds ``n`` submissions of the demo assignment (tests/course/fixtures: solutions, blanks, wrong
answers and corrupt files, in the proportions of tests/course/test_grader.py), grades them with
``coursekit grade`` (sandboxed when bubblewrap is available) and prints submissions per minute.
Each submission costs a fresh kernel, the torch import of the grader's set-up cell and the
sandbox: the demo checks themselves take milliseconds, so this measures the grader's overhead.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "course" / "fixtures"
sys.path.insert(0, str(FIXTURES))


def build(folder: Path, n: int) -> None:
    import jupytext
    import nbformat

    from coursekit.course.notebooks import blank_notebook

    shutil.copy(FIXTURES / "demo_checks.py", folder)
    for k in range(n - 1):
        nb = jupytext.read(FIXTURES / "demo_exercises.md")
        kind = ("solution", "blank", "sign", "corrupt")[k % 4]
        if kind == "corrupt":
            (folder / f"demo_exercises ({k}).ipynb").write_text('{"cells": [')
            continue
        if kind == "blank":
            nb = blank_notebook(nb)
        for cell in nb.cells:
            if kind == "sign":
                cell.source = cell.source.replace("y = x * x", "y = -x * x")
        nbformat.write(nb, str(folder / f"demo_exercises ({k}).ipynb"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30, help="files in the class folder (default 30)")
    parser.add_argument("--jobs", type=int, default=2, help="submissions graded at once (default 2)")
    args = parser.parse_args()

    import demo_checks  # noqa: F401  (registers the demo exercises)

    from coursekit.course.gradebook import grade_class, summary
    from coursekit.course.sandbox import Limits, bwrap_available

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "submissions"
        folder.mkdir()
        build(folder, args.n)
        t0 = time.perf_counter()
        reports = grade_class([folder], jobs=args.jobs, progress=None, exercises_dir=FIXTURES,
                              limits=Limits(timeout=120, cell_timeout=60))
        elapsed = time.perf_counter() - t0
    print(summary(reports))
    print(f"\n{len(reports)} submissions in {elapsed:.1f} s with {args.jobs} workers "
          f"(sandbox: {'bubblewrap' if bwrap_available() else 'none'}): "
          f"{60 * len(reports) / elapsed:.1f} submissions per minute")


if __name__ == "__main__":
    main()
