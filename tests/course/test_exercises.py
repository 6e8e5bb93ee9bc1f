"""Every graded exercise of the course, proven three ways.

For each registered exercise: its check passes on the reference answer, fails on a blank (both
forms a generated exercise notebook can hold), and fails on each declared plausible mistake with
a message that names what is wrong. Then, end to end, every generated exercise notebook is
graded and earns nothing, and its solution notebook is in the repository with every check.
"""

import re

import pytest

from coursekit.course.grader import grade
from coursekit.course.registry import registry

# Only the course's exercises (other test modules register throw-away demo exercises).
EXERCISES = [ex for ex in registry().values() if ex.fn.__module__.startswith("coursekit.course.checks.")]
IDS = [ex.id for ex in EXERCISES]


def test_every_chapter_with_exercises_is_registered():
    assert EXERCISES, "no exercise is registered in coursekit.checks"


@pytest.mark.parametrize("ex", EXERCISES, ids=IDS)
def test_reference_answer_passes(ex):
    assert ex.reference is not None, f"exercise {ex.id} declares no reference answer"
    passed, message = ex.run(ex.reference())
    assert passed, f"exercise {ex.id}: the reference answer fails: {message}"


@pytest.mark.parametrize("ex", EXERCISES, ids=IDS)
def test_blank_fails(ex):
    passed, message = ex.run(...)
    assert not passed and "not answered" in message

    def blank(*args, **kwargs):
        raise NotImplementedError("Exercise: replace this line with your code")

    passed, message = ex.run(blank)
    assert not passed, f"exercise {ex.id} passes on code that raises NotImplementedError"


@pytest.mark.parametrize("ex", EXERCISES, ids=IDS)
def test_plausible_mistakes_fail_with_an_explanation(ex):
    assert len(ex.mistakes) >= 2, f"exercise {ex.id} declares fewer than two plausible mistakes"
    for name, (factory, fragment) in ex.mistakes.items():
        passed, message = ex.run(factory())
        assert not passed, f"exercise {ex.id} accepts the mistake '{name}'"
        assert fragment.lower() in message.lower(), (
            f"exercise {ex.id}, mistake '{name}': the message should mention '{fragment}', got: {message}"
        )


NOTEBOOKS = sorted({ex.notebook for ex in EXERCISES})


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_solution_notebook_calls_every_check(root, name):
    source = (root / "solutions" / f"{name}.md").read_text(encoding="utf-8")
    called = set(re.findall(r"""check\(\s*["']([0-9.]+)["']""", source))
    expected = {ex.id for ex in EXERCISES if ex.notebook == name}
    assert expected <= called, f"solutions/{name}.md never checks exercise(s) {sorted(expected - called)}"


@pytest.mark.notebooks
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_generated_exercise_notebook_earns_nothing(root, name):
    report = grade(root / "exercises" / f"{name}.ipynb", timeout=300)
    assert report.results and report.earned == 0, [(r.id, r.status, r.reason) for r in report.results]
    assert {r.id for r in report.results} == {ex.id for ex in EXERCISES if ex.notebook == name}
