"""The check() call used in notebooks, and the report it writes for the grader."""

import json
import sys
from pathlib import Path

import pytest

from coursekit.course.registry import REPORT_ENV, ExerciseFailure, check, get

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import demo_checks  # noqa: E402,F401


def test_pass_prints_and_reports(monkeypatch, tmp_path, capsys):
    report = tmp_path / "r.jsonl"
    monkeypatch.setenv(REPORT_ENV, str(report))
    check("0.1", lambda x: x * x)
    assert "passed, 2/2 points" in capsys.readouterr().out
    with pytest.raises(ExerciseFailure, match="sign is wrong"):
        check("0.1", lambda x: -x * x)
    lines = [json.loads(s) for s in report.read_text().splitlines()]
    assert [(e["id"], e["passed"]) for e in lines] == [("0.1", True), ("0.1", False)]


def test_crash_in_student_code_is_reported_not_raised_raw():
    def answer(x):
        return undefined_name  # noqa: F821

    passed, message = get("0.1").run(answer)
    assert not passed and "NameError" in message and "line" in message


def test_unknown_exercise_lists_known_ones():
    with pytest.raises(KeyError, match="known exercises"):
        check("99.9", 1)
