"""The grader (coursekit.course.grader, sandbox, worker, gradebook).

* honest notebooks: full marks for a solution, nothing for a blank, the reason for each failure,
  and robustness to crashes, hangs, dead kernels, memory hogs, missing and corrupt files;
* cheat notebooks (fixtures/cheats.py): each gets 0 points, and none stops the others;
* the stages on their own: which assignment, which cells are dropped, where the checks go;
* a class: 30 mixed submissions give a CSV gradebook and a summary per exercise;
* the real course: every solution notebook of solutions/ gets full marks.

The demo exercises (fixtures/demo_checks.py, fixtures/demo_exercises.md) stand in for a chapter.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import jupytext
import nbformat
import pytest

from coursekit.course.cli import main
from coursekit.course.gradebook import collect_submissions, grade_class, summary, write_csv
from coursekit.course.grader import (GradingError, assignment_name, format_report, grade, prepare,
                                     read_notebook)
from coursekit.course.notebooks import blank_notebook
from coursekit.course.sandbox import TEMP_PREFIX, Limits, bwrap_available

FIXTURES = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
import cheats  # noqa: E402
import demo_checks  # noqa: E402,F401  (registers exercises 0.1 and 0.2 in this process too)

ROOT = Path(__file__).resolve().parents[2]
needs_bwrap = pytest.mark.skipif(not bwrap_available(), reason="bubblewrap (bwrap) is missing or cannot create "
                                 "namespaces here: the sandbox-specific guarantees cannot be tested "
                                 "(apt-get install bubblewrap)")
LIMITS = dict(timeout=120, cell_timeout=30)


def demo():
    return jupytext.read(FIXTURES / "demo_exercises.md")


@pytest.fixture
def workdir(tmp_path):
    shutil.copy(FIXTURES / "demo_checks.py", tmp_path)
    return tmp_path


def write(nb, path):
    nbformat.write(nb, str(path))
    return path


def run(path, **kw):
    limits = Limits(**{**LIMITS, **kw.pop("limits", {})})
    return grade(path, exercises_dir=FIXTURES, limits=limits, **kw)


def results(report):
    return {r.id: r for r in report.results}


def temp_entries():
    return {p for p in os.listdir(tempfile.gettempdir()) if p.startswith(TEMP_PREFIX)}


# ------------------------------------------------------------------ honest notebooks


def test_solution_gets_full_marks_and_leaves_nothing_behind(workdir, capfd):
    before = temp_entries()
    report = run(write(demo(), workdir / "demo_exercises.ipynb"))
    assert [r.status for r in report.results] == ["passed", "passed"]
    assert (report.earned, report.total) == (3, 3)
    assert "total: 3/3" in format_report(report)
    assert temp_entries() == before  # the throwaway copy is gone
    out, err = capfd.readouterr()
    for noise in ("zmq", "ZMQ", "Traceback", "Kernel is running over TCP", "WARNING"):
        assert noise not in out + err


def test_blank_gets_nothing_and_says_why(workdir):
    report = run(write(blank_notebook(demo()), workdir / "demo_exercises.ipynb"))
    r = results(report)
    assert report.earned == 0
    assert r["0.1"].status == "failed" and "NotImplementedError" in r["0.1"].reason and r["0.1"].mistake == "blank"
    assert r["0.2"].status == "failed" and "not answered" in r["0.2"].reason


def test_wrong_answer_is_explained_and_a_crash_does_not_hide_the_others(workdir):
    nb = demo()
    for cell in nb.cells:
        cell.source = cell.source.replace("y = x * x", "y = -x * x")
    nb.cells.insert(2, cheats.code("1 / 0"))
    report = run(write(nb, workdir / "student copy (2) demo_exercises.ipynb"))
    r = results(report)
    assert r["0.1"].status == "failed" and "sign is wrong" in r["0.1"].reason and r["0.1"].mistake == "sign"
    assert r["0.2"].status == "passed"
    assert report.earned == 1


def test_answer_cell_that_crashes_is_reported_as_not_run(workdir):
    nb = demo()
    for cell in nb.cells:
        cell.source = cell.source.replace("pi = 3.14159  # SOLUTION", "pi = undefined_name")
    r = results(run(write(nb, workdir / "demo_exercises.ipynb")))
    assert r["0.2"].status == "not run" and "`pi` is not defined" in r["0.2"].reason and "NameError" in r["0.2"].reason
    assert r["0.1"].status == "passed"


def test_a_hang_costs_only_its_cell_and_reports_its_real_duration(workdir):
    nb = demo()
    nb.cells.insert(len(nb.cells) - 2, cheats.code("import time\ntime.sleep(600)"))  # between 0.1 and 0.2
    t0 = time.monotonic()
    report = run(write(nb, workdir / "demo_exercises.ipynb"), limits=dict(cell_timeout=4))
    assert time.monotonic() - t0 < 60
    r = results(report)
    assert r["0.1"].status == "passed" and r["0.2"].status == "passed"
    assert not report.timed_out

    nb = demo()  # an answer that hangs: its own exercise fails, with the time it really ran
    for cell in nb.cells:
        cell.source = cell.source.replace("    y = x * x", "    import time\n    time.sleep(600)\n    y = x * x")
    r = results(run(write(nb, workdir / "demo_exercises.ipynb"), limits=dict(cell_timeout=3)))
    assert r["0.1"].status == "failed" and r["0.1"].mistake == "timeout"
    seconds = float(r["0.1"].reason.split("stopped after ")[1].split(" s")[0])
    assert 3 <= seconds < 10
    assert r["0.2"].status == "passed"


def test_a_kernel_that_ignores_interrupts_or_dies_is_restarted_and_replayed(workdir):
    nb = demo()
    nb.cells.insert(len(nb.cells) - 2, cheats.code(
        "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    time.sleep(0.1)"))
    nb.cells.insert(len(nb.cells) - 2, cheats.code("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"))
    report = run(write(nb, workdir / "demo_exercises.ipynb"), limits=dict(cell_timeout=3))
    assert [r.status for r in report.results] == ["passed", "passed"]  # 0.2 graded in a restarted kernel

    nb = demo()  # an answer that kills the kernel fails; the next exercise is still graded
    for cell in nb.cells:
        cell.source = cell.source.replace("    y = x * x", "    import os\n    os._exit(1)")
    r = results(run(write(nb, workdir / "demo_exercises.ipynb")))
    assert r["0.1"].status == "failed" and "crashed the Python kernel" in r["0.1"].reason
    assert r["0.2"].status == "passed"


def test_total_time_limit_stops_the_notebook_and_says_so(workdir):
    nb = demo()
    nb.cells.insert(len(nb.cells) - 2, cheats.code("import time\ntime.sleep(600)"))
    report = run(write(nb, workdir / "demo_exercises.ipynb"), limits=dict(timeout=12, cell_timeout=600))
    r = results(report)
    assert report.timed_out and report.elapsed < 60
    assert r["0.1"].status == "passed"
    assert r["0.2"].status == "not run" and "total time limit of 12 s" in r["0.2"].reason


def test_memory_limit(workdir):
    nb = demo()
    nb.cells.insert(len(nb.cells) - 2, cheats.code("hog = bytearray(16 << 30)"))
    report = run(write(nb, workdir / "demo_exercises.ipynb"), limits=dict(memory=3 << 30))
    assert [r.status for r in report.results] == ["passed", "passed"]


def test_missing_corrupt_and_unknown_files_get_clear_errors(tmp_path, capsys):
    with pytest.raises(GradingError, match="no such file"):
        grade(tmp_path / "nope.ipynb", exercises_dir=FIXTURES)
    bad = tmp_path / "demo_exercises.ipynb"
    bad.write_text("{ this is not json")
    with pytest.raises(GradingError, match="not a readable notebook"):
        grade(bad, exercises_dir=FIXTURES)
    txt = tmp_path / "answers.txt"
    txt.write_text("42")
    with pytest.raises(GradingError, match="expected a .ipynb"):
        grade(txt, exercises_dir=FIXTURES)
    other = write(demo(), tmp_path / "homework.ipynb")
    with pytest.raises(GradingError, match="cannot tell which assignment"):
        grade(other, exercises_dir=FIXTURES)
    assert main(["grade", "--exercises", str(FIXTURES), str(bad)]) == 2
    assert "not a readable notebook" in capsys.readouterr().err


def test_cli_prints_json(workdir, capsys):
    path = write(demo(), workdir / "demo_exercises.ipynb")
    assert main(["grade", "--json", "--exercises", str(FIXTURES), "--checks", str(FIXTURES / "demo_checks.py"),
                 str(path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["earned"] == data["total"] == 3 and data["assignment"] == "demo_exercises"


def test_without_the_sandbox_grading_still_works_and_says_so(workdir):
    report = run(write(demo(), workdir / "demo_exercises.ipynb"), sandbox=False)
    assert report.earned == 3 and not report.sandboxed
    assert any("not sandboxed" in w for w in report.warnings)


# ------------------------------------------------------------------ the stages on their own


def test_assignment_comes_from_the_file_name_not_the_metadata():
    names = ["ex04_coupling", "ex05_autoregressive", "demo_exercises"]
    assert assignment_name(Path("ex04_coupling (2).ipynb"), names) == "ex04_coupling"
    assert assignment_name(Path("alice_ex05_autoregressive-final.ipynb"), names) == "ex05_autoregressive"
    assert assignment_name(Path("alice/ex04_coupling.ipynb"), names) == "ex04_coupling"
    assert assignment_name(Path("submissions/bob/notebook.ipynb"), names) is None


def test_prepare_drops_the_students_checks_and_restores_the_assignments():
    assignment = demo()
    nb = copy.deepcopy(assignment)
    nb.cells = [c for c in nb.cells if 'check("0.2"' not in c.source]  # 0.2's check cell deleted
    for c in nb.cells:
        c.source = c.source.replace('check("0.1", square)', 'x = 1\ncheck("0.1", lambda x: x * x)')
    plan = prepare(nb, assignment, {i: demo_checks.square if i == "0.1" else demo_checks.pi_digits
                                    for i in ("0.1", "0.2")})
    roles = [(c["role"], c.get("exercise")) for c in plan.cells]
    assert roles[0] == ("guard", None)
    sources = [c["source"] for c in plan.cells if c["role"] == "student"]
    assert not any("check(" in s for s in sources) and "x = 1" in sources  # the rest of an edited cell stays
    ids = [c["exercise"] for c in plan.cells if c["role"] == "verdict"]
    assert ids == ["0.1", "0.2"]
    order = [c["source"].split("\n")[0][:14] if c["role"] == "student" else c.get("exercise") for c in plan.cells]
    i_def = next(k for k, c in enumerate(plan.cells) if "def square" in c["source"] and c["role"] == "student")
    i_pi = next(k for k, c in enumerate(plan.cells) if c["source"].startswith("pi = "))
    assert plan.cells[i_def + 1]["role"] == "student" and "x = 1" in plan.cells[i_def + 1]["source"]
    assert plan.cells[i_def + 2].get("exercise") == "0.1"  # at the place of the student's own check cell
    assert plan.cells[i_pi + 1].get("exercise") == "0.2", order  # right after the cell defining pi
    keys = {c["key"] for c in plan.cells if c["role"] == "verdict"}
    assert len(keys) == 2 and all(k.hex() in plan.cells[j]["source"] for j, k in
                                  [(n, c["key"]) for n, c in enumerate(plan.cells) if c["role"] == "verdict"])


def test_read_notebook_accepts_jupytext_and_refuses_plain_markdown(tmp_path):
    assert len(read_notebook(FIXTURES / "demo_exercises.md").cells) > 3
    md = tmp_path / "notes.md"
    md.write_text("# just notes\n")
    with pytest.raises(GradingError, match="not a readable notebook"):
        read_notebook(md)


# ------------------------------------------------------------------ cheats: each gets 0 points


@pytest.fixture(scope="module")
def cheat_reports(tmp_path_factory):
    """Every cheat notebook, graded together as one class (so that none may stop the others)."""
    folder = tmp_path_factory.mktemp("cheats")
    shutil.copy(FIXTURES / "demo_checks.py", folder)
    (folder / "precious.txt").write_text("the instructor's file")
    tag = f"coursekit-cheat-{os.getpid()}-{time.time_ns()}"
    for name, cheat in cheats.CHEATS.items():
        if name == "delete_files" and not bwrap_available():
            continue  # without the sandbox nothing stops it deleting the class's files: documented, not tested
        nb = cheats.wrong(demo())
        cheat(nb, {"tag": tag, "folder": str(folder)})
        write(nb, folder / f"demo_exercises-{name}.ipynb")
    honest = write(demo(), folder / "demo_exercises-honest.ipynb")
    reports = grade_class([folder], jobs=2, progress=False, exercises_dir=FIXTURES,
                          limits=Limits(timeout=120, cell_timeout=30))
    by_name = {Path(r.notebook).stem.split("-", 1)[1]: r for r in reports if r.notebook.endswith(".ipynb")}
    return {"reports": by_name, "folder": folder, "tag": tag, "honest": honest}


@pytest.mark.parametrize("name", list(cheats.CHEATS))
def test_cheat_gets_no_points(cheat_reports, name):
    if name not in cheat_reports["reports"]:
        pytest.skip("bubblewrap (bwrap) is missing: a notebook that deletes files can reach the class's folder")
    report = cheat_reports["reports"][name]
    assert not report.error, report.error
    assert report.total == 3, "the expected exercises come from the registry, not the notebook"
    assert report.earned == 0, format_report(report)
    assert {r.id for r in report.results} == {"0.1", "0.2"}


def test_the_honest_submission_beside_the_cheats_gets_full_marks(cheat_reports):
    assert cheat_reports["reports"]["honest"].earned == 3


def test_tampering_is_named(cheat_reports):
    reports = cheat_reports["reports"]
    for name in ("pre_run_cell_hook", "print_patch", "input_transformer", "fake_modules"):
        assert any(r.mistake == "tampering" for r in reports[name].results), format_report(reports[name])
    assert "ip.events" in results(reports["pre_run_cell_hook"])["0.1"].reason
    assert "sys.modules['hmac'] was replaced" in results(reports["fake_modules"])["0.1"].reason
    # a patched checker changes nothing: the grader's check runs on fresh code, and says what is wrong
    r = results(reports["patch_checker"])
    assert r["0.1"].mistake == "sign" and "sign is wrong" in r["0.1"].reason
    assert results(reports["delete_checks_and_metadata"])["0.2"].status == "not run"


def test_no_process_outlives_its_grading(cheat_reports):
    tag = cheat_reports["tag"]
    alive = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if tag.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                alive.append(pid)
        except OSError:
            pass
    assert not alive


@needs_bwrap
def test_the_sandbox_keeps_the_submissions_folder_and_host_intact(cheat_reports):
    folder = cheat_reports["folder"]
    assert (folder / "precious.txt").read_text() == "the instructor's file"
    assert (folder / "demo_checks.py").exists() and cheat_reports["honest"].exists()
    assert not Path("/tmp", cheat_reports["tag"]).exists()
    assert not Path("/tmp/coursekit-report.jsonl").exists()
    assert all(r.sandboxed for r in cheat_reports["reports"].values())


@needs_bwrap
def test_the_sandbox_has_no_network(workdir):
    nb = demo()
    nb.cells.insert(len(nb.cells) - 2, cheats.code(
        "import socket\ntry:\n    socket.create_connection(('1.1.1.1', 53), timeout=3)\n    pi = 0\n"
        "except OSError:\n    pass"))
    for cell in nb.cells:
        cell.source = cell.source.replace("pi = 3.14159  # SOLUTION", "pi = 3.14159")
    assert run(write(nb, workdir / "demo_exercises.ipynb")).earned == 3


# ------------------------------------------------------------------ a class


def _class_folder(folder: Path) -> Path:
    folder.mkdir()
    shutil.copy(FIXTURES / "demo_checks.py", folder / "demo_checks.py")  # a support file, graded as a non-notebook
    kinds = {"solution": 10, "blank": 8, "sign": 6, "rounded": 3}
    n = 0
    for kind, count in kinds.items():
        for _ in range(count):
            nb = demo() if kind != "blank" else blank_notebook(demo())
            for cell in nb.cells:
                if kind == "sign":
                    cell.source = cell.source.replace("y = x * x", "y = -x * x")
                if kind == "rounded":
                    cell.source = cell.source.replace("pi = 3.14159  # SOLUTION", "pi = 3.1")
            n += 1
            write(nb, folder / f"demo_exercises ({n}).ipynb")
    (folder / "demo_exercises (corrupt).ipynb").write_text('{"cells": [')
    (folder / "demo_exercises (binary).ipynb").write_bytes(os.urandom(300))
    return folder  # 27 notebooks + 2 corrupt + demo_checks.py (not a notebook) = 30 files


def test_grading_a_class_gives_a_gradebook_and_a_summary(tmp_path, capsys):
    folder = _class_folder(tmp_path / "submissions")
    assert len(collect_submissions([folder])) == 30
    out = tmp_path / "grades.csv"
    assert main(["grade", str(folder), "--out", str(out), "--exercises", str(FIXTURES), "--jobs", "2",
                 "--timeout", "120"]) == 0
    printed = capsys.readouterr().out
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 30
    assert set(rows[0]) >= {"file", "assignment", "earned", "total", "0.1", "0.2", "lost points", "error"}
    by_file = {Path(r["file"]).name: r for r in rows}
    assert by_file["demo_exercises (1).ipynb"]["earned"] == "3"
    assert "not a readable notebook" in by_file["demo_exercises (corrupt).ipynb"]["error"]
    assert "not a readable notebook" in by_file["demo_exercises (binary).ipynb"]["error"]
    assert "expected a .ipynb" in by_file["demo_checks.py"]["error"]
    sign = by_file["demo_exercises (19).ipynb"]
    assert sign["0.1"] == "0" and sign["0.2"] == "1" and "0.1 (-2): square(-2.0) returned -4.0" in sign["lost points"]
    assert sum(float(r["earned"] or 0) for r in rows) == 10 * 3 + 6 * 1 + 3 * 2
    # the summary: pass rates and the named mistakes, out of the 29 submissions of this assignment
    assert "0.1 Square a number: 13 of 29 passed (45%)" in printed
    assert "0.1: 6 of 29 returned -x² instead of x²" in printed
    assert "0.1: 8 of 29 left it blank" in printed
    assert "0.2: 3 of 29 gave pi to fewer than 3 decimals" in printed
    assert "0.1: 2 of 29 sent a file that could not be graded" in printed
    assert "3 could not be graded" in printed


def test_summary_and_csv_from_reports(tmp_path, workdir):
    reports = grade_class([write(cheats.wrong(demo()), workdir / "demo_exercises.ipynb"), tmp_path / "gone.ipynb"],
                          jobs=1, progress=False, exercises_dir=FIXTURES, limits=Limits(**LIMITS))
    text = summary(reports)
    assert "0.1: 1 of 1 returned -x² instead of x²" in text and "gone.ipynb: " in text
    rows = list(csv.reader(write_csv(reports, tmp_path / "g.csv").open()))
    assert len(rows) == 3 and "no such file" in rows[2][rows[0].index("error")]


# ------------------------------------------------------------------ the course itself


@pytest.mark.notebooks
@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "solutions").glob("ex*.md")))
def test_solution_notebooks_of_the_course_get_full_marks(tmp_path, name):
    """Needs the chapter checks (coursekit/course/checks/) to pass on the solutions."""
    path = shutil.copy(ROOT / "solutions" / f"{name}.md", tmp_path / f"{name}.md")
    report = grade(path, exercises_dir=ROOT / "exercises", limits=Limits(timeout=600, cell_timeout=300))
    assert report.earned == report.total > 0, format_report(report)


@pytest.mark.notebooks
@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "exercises").glob("ex*.md")))
def test_exercise_notebooks_of_the_course_get_nothing(tmp_path, name):
    path = shutil.copy(ROOT / "exercises" / f"{name}.md", tmp_path / f"{name}.md")
    report = grade(path, exercises_dir=ROOT / "exercises", limits=Limits(timeout=600, cell_timeout=300))
    assert report.earned == 0 and all(r.status != "passed" for r in report.results), format_report(report)
