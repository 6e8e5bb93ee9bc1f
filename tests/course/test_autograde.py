"""The grader: full marks on a solution, nothing on a blank, the reason for each failure,
and robustness to crashes, hangs, missing and corrupt files."""

import json
import shutil
import sys

import jupytext
import pytest

from coursekit.course.grader import GradingError, format_report, grade
from coursekit.course.cli import main
from coursekit.course.notebooks import blank_notebook

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent / "fixtures"))
import demo_checks  # noqa: E402,F401  (registers exercises 0.1 and 0.2 in this process too)


@pytest.fixture
def workdir(tmp_path, fixtures):
    shutil.copy(fixtures / "demo_checks.py", tmp_path)
    return tmp_path


def write(nb, path):
    jupytext.write(nb, path, fmt="ipynb")
    return path


def results(report):
    return {r.id: r for r in report.results}


def test_solution_gets_full_marks(workdir, fixtures):
    nb = jupytext.read(fixtures / "demo_exercises.md")
    report = grade(write(nb, workdir / "demo_exercises.ipynb"), timeout=120)
    assert [r.status for r in report.results] == ["passed", "passed"]
    assert (report.earned, report.total) == (3, 3)
    assert "total: 3/3" in format_report(report)


def test_blank_gets_nothing_and_says_why(workdir, fixtures):
    ex = blank_notebook(jupytext.read(fixtures / "demo_exercises.md"))
    report = grade(write(ex, workdir / "demo_exercises.ipynb"), timeout=120)
    r = results(report)
    assert report.earned == 0
    assert r["0.1"].status == "failed" and "NotImplementedError" in r["0.1"].reason
    assert r["0.2"].status == "failed" and "not answered" in r["0.2"].reason


def test_wrong_answer_is_explained_and_does_not_hide_the_others(workdir, fixtures):
    nb = jupytext.read(fixtures / "demo_exercises.md")
    for cell in nb.cells:
        cell.source = cell.source.replace("y = x * x", "y = -x * x")
    nb.cells.insert(2, jupytext.reads("```{code-cell}\n1 / 0\n```", fmt="md:myst").cells[0])  # a crashing cell
    report = grade(write(nb, workdir / "student copy (2).ipynb"), timeout=120)
    r = results(report)
    assert r["0.1"].status == "failed" and "sign is wrong" in r["0.1"].reason
    assert r["0.2"].status == "passed"
    assert report.earned == 1


def test_check_cell_that_crashes_is_reported(workdir, fixtures):
    nb = jupytext.read(fixtures / "demo_exercises.md")
    for cell in nb.cells:
        cell.source = cell.source.replace("pi = 3.14159  # SOLUTION", "pass")
    report = grade(write(nb, workdir / "demo_exercises.ipynb"), timeout=120)
    r = results(report)
    assert r["0.2"].status == "not run" and "NameError" in r["0.2"].reason
    assert r["0.1"].status == "passed"


def test_hanging_notebook_is_stopped(workdir, fixtures):
    nb = jupytext.read(fixtures / "demo_exercises.md")
    hang = jupytext.reads("```{code-cell}\nimport time\ntime.sleep(600)\n```", fmt="md:myst").cells[0]
    nb.cells.insert(len(nb.cells) - 2, hang)  # after exercise 0.1, before 0.2
    report = grade(write(nb, workdir / "demo_exercises.ipynb"), timeout=15)
    r = results(report)
    assert report.timed_out and report.elapsed < 60
    assert r["0.1"].status == "passed"
    assert r["0.2"].status == "not run" and "stopped after 15 s" in r["0.2"].reason


def test_missing_and_corrupt_files_get_clear_errors(tmp_path, capsys):
    with pytest.raises(GradingError, match="no such file"):
        grade(tmp_path / "nope.ipynb")
    bad = tmp_path / "bad.ipynb"
    bad.write_text("{ this is not json")
    with pytest.raises(GradingError, match="not a readable notebook"):
        grade(bad)
    txt = tmp_path / "answers.txt"
    txt.write_text("42")
    with pytest.raises(GradingError, match="expected a .ipynb"):
        grade(txt)
    assert main(["grade", str(bad)]) == 2
    assert "not a readable notebook" in capsys.readouterr().err


def test_cli_prints_json(workdir, fixtures, capsys):
    nb = jupytext.read(fixtures / "demo_exercises.md")
    path = write(nb, workdir / "demo_exercises.ipynb")
    assert main(["grade", "--json", str(path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["earned"] == data["total"] == 3
