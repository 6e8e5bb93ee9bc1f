"""The check() call used in notebooks: the student's own feedback (it decides nothing; see test_grader.py)."""

import sys
from pathlib import Path

import pytest

from coursekit.course.registry import ExerciseFailure, check, get

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import demo_checks  # noqa: E402,F401


def test_pass_prints_and_a_failure_raises_with_its_mistake(capsys):
    check("0.1", lambda x: x * x)
    assert "passed, 2/2 points" in capsys.readouterr().out
    with pytest.raises(ExerciseFailure, match="sign is wrong") as err:
        check("0.1", lambda x: -x * x)
    assert err.value.mistake == "sign"


def test_crash_in_student_code_is_reported_not_raised_raw():
    def answer(x):
        return undefined_name  # noqa: F821

    passed, message, mistake = get("0.1").run(answer)
    assert not passed and "NameError" in message and "line" in message and mistake == "crash"


def test_unknown_exercise_lists_known_ones():
    with pytest.raises(KeyError, match="known exercises"):
        check("99.9", 1)
