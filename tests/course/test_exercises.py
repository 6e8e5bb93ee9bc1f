"""Every graded exercise of the course, proven against its solution, blanks, wrong answers and mutants.

For each registered exercise:

* the solution notebook's own function (the reference, one source) passes, on several draws;
* a blank (``...`` or code that raises ``NotImplementedError``) fails;
* every wrong answer of ``wrong_answers/chNN.py`` fails with the mistake tag it is filed under,
  every named mistake the check declares is triggered by at least one of them, and each exercise
  has wrong answers that change an input in place, break the contract, and (where the exercise
  forbids a coursekit function) delegate to it;
* the check rejects the mutants of the solution's code (``coursekit.course.mutants``): every
  survivor is listed in ``survivors.py`` with the reason it is harmless (equivalent to the
  solution); a survivor that is not listed, or a listed one that no longer survives, fails; at
  least ``MIN_RAW_SCORE`` of all mutants per exercise and ``MIN_TOTAL_SCORE`` over the course
  are rejected;
* no failure message contains a decimal number (messages say what is wrong, never what to type).

Grading whole notebooks (solutions earn everything, generated exercises nothing) is tested in
test_grader.py.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import sys
import warnings
from pathlib import Path

import pytest

from coursekit.course.checks._common import SEED_ENV
from coursekit.course.mutants import run_mutants, solution_function
from coursekit.course.registry import registry

sys.path.insert(0, str(Path(__file__).parent))
from survivors import SURVIVORS  # noqa: E402

MIN_SCORE = 0.95  # share of the non-equivalent mutants of a solution that its check must reject
MIN_RAW_SCORE = 0.85  # share of all mutants, equivalent ones included, per exercise
MIN_TOTAL_SCORE = 0.95  # share of all mutants of all exercises
GENERIC_TAGS = {"in-place", "delegation", "contract", "crash", "blank", "not-callable"}
DECIMAL = re.compile(r"\d\.\d{2,}|\d{4,}")  # a computed number leaked into a message

EXERCISES = [ex for ex in registry().values() if ex.fn.__module__.startswith("coursekit.course.checks.")]
IDS = [ex.id for ex in EXERCISES]
ROOT = Path(__file__).resolve().parents[2]


def _wrong(ex):
    """The wrong answers filed for ``ex`` in ``wrong_answers/chNN.py`` and in the chapter's section modules
    ``chNN<letter>.py`` (e.g. ``ch04b.py``, the exercises of a notebook placed after ``ch04``'s in chapter 4)."""
    chapter = f"ch{int(ex.id.split('.')[0]):02d}"
    names = [chapter] + sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent / "wrong_answers")])
                               if re.fullmatch(rf"{chapter}[a-z]", m.name))
    found = {}
    for name in names:
        found.update(importlib.import_module(f"wrong_answers.{name}").WRONG.get(ex.id, {}))
    return found


def _run(ex, answer):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ex.run(answer)


def test_every_chapter_with_exercises_is_registered():
    assert EXERCISES, "no exercise is registered in coursekit.course.checks"


@pytest.mark.parametrize("ex", EXERCISES, ids=IDS)
def test_registration_is_complete(ex):
    assert ex.answer, f"exercise {ex.id} does not name the student's function (answer=...)"
    assert ex.mistakes, f"exercise {ex.id} names no mistake its check recognises"
    for tag, description in ex.mistakes.items():
        assert isinstance(tag, str) and isinstance(description, str) and description, (ex.id, tag)
    from coursekit.course.checks._common import _resolve

    for target in ex.forbidden:
        owner, attr = _resolve(target)
        assert hasattr(owner, attr), f"exercise {ex.id} forbids {target}, which does not exist"


@pytest.mark.parametrize("ex", EXERCISES, ids=IDS)
@pytest.mark.parametrize("seed", ["1", "2", "3"])
def test_solution_passes(ex, seed, monkeypatch):
    monkeypatch.setenv(SEED_ENV, seed)
    answer = solution_function(ex, ROOT).build()
    verdict = _run(ex, answer)
    assert verdict.passed, f"exercise {ex.id}: the solution notebook's answer fails: {verdict.message}"


@pytest.mark.parametrize("ex", EXERCISES, ids=IDS)
def test_blank_fails(ex):
    verdict = _run(ex, ...)
    assert not verdict.passed and "not answered" in verdict.message

    def blank(*args, **kwargs):
        raise NotImplementedError("Exercise: replace this line with your code")

    verdict = _run(ex, blank)
    assert not verdict.passed and verdict.mistake == "blank", verdict


@pytest.mark.parametrize("ex", EXERCISES, ids=IDS)
def test_wrong_answers_fail_with_their_named_mistake(ex, monkeypatch):
    monkeypatch.setenv(SEED_ENV, "4")
    wrong = _wrong(ex)
    for tag, answer in wrong.items():
        expected = tag.split("#")[0]  # "contract#detached", "contract#float64": several per tag
        verdict = _run(ex, answer)
        assert not verdict.passed, f"exercise {ex.id} accepts the wrong answer '{tag}'"
        assert verdict.mistake == expected, (
            f"exercise {ex.id}, wrong answer '{tag}': recognised as {verdict.mistake!r}: {verdict.message}")
        assert not DECIMAL.search(verdict.message), f"exercise {ex.id}, '{tag}': a number leaks: {verdict.message}"
    tags = {t.split("#")[0] for t in wrong}
    assert set(ex.mistakes) <= tags, f"exercise {ex.id}: no wrong answer triggers {sorted(set(ex.mistakes) - tags)}"
    assert {"in-place", "contract"} <= tags, f"exercise {ex.id} needs in-place and contract wrong answers"
    if ex.forbidden:
        assert "delegation" in tags, f"exercise {ex.id} forbids {list(ex.forbidden)} but no wrong answer delegates"


@pytest.mark.parametrize("ex", EXERCISES, ids=IDS)
def test_mutants_of_the_solution_are_rejected(ex):
    result = run_mutants(ex, ROOT)
    listed = SURVIVORS.get(ex.id, {})
    unexplained = [d for d in result.survived if d not in listed]
    stale = [d for d in listed if d not in result.survived]
    assert not unexplained, (
        f"exercise {ex.id}: the check accepts {len(unexplained)} mutant(s) of the solution: {unexplained}. "
        "Strengthen the check, or list a harmless (equivalent) one in tests/course/survivors.py with the reason")
    assert not stale, f"exercise {ex.id}: listed survivors no longer survive (remove them): {stale}"
    assert all(isinstance(why, str) and len(why) > 10 for why in listed.values()), "give each survivor a reason"
    assert result.total >= 10, f"exercise {ex.id}: only {result.total} mutants; is the solution region marked?"
    killable = result.total - len(listed)
    assert len(result.killed) / killable >= MIN_SCORE, (
        f"exercise {ex.id}: the check rejects {len(result.killed)} of {killable} non-equivalent mutants")
    assert result.score >= MIN_RAW_SCORE, (
        f"exercise {ex.id}: {result.score:.0%} of all mutants rejected, below {MIN_RAW_SCORE:.0%}: "
        "so many equivalent mutants suggest the solution region is written in a redundant way")
    _SCORES[ex.id] = (len(result.killed), result.total)
    leaks = [(d, m) for d, m in result.killed if DECIMAL.search(m)]
    assert not leaks, f"exercise {ex.id}: failure messages leak numbers: {leaks[:3]}"


_SCORES: dict[str, tuple[int, int]] = {}


def test_mutation_score_over_all_exercises():
    """Runs after the per-exercise tests (same module, defined later): the course-wide share."""
    missing = [ex for ex in EXERCISES if ex.id not in _SCORES]
    for ex in missing:  # run alone (-k): compute what the per-exercise test did not
        r = run_mutants(ex, ROOT)
        _SCORES[ex.id] = (len(r.killed), r.total)
    killed = sum(k for k, _ in _SCORES.values())
    total = sum(t for _, t in _SCORES.values())
    print(f"mutation score over {len(_SCORES)} exercises: {killed}/{total} = {killed / total:.1%}")
    assert killed / total >= MIN_TOTAL_SCORE, f"the checks reject {killed}/{total} mutants in all"


NOTEBOOKS = sorted({ex.notebook for ex in EXERCISES})


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_solution_notebook_calls_every_check(name):
    source = (ROOT / "solutions" / f"{name}.md").read_text(encoding="utf-8")
    called = set(re.findall(r"""check\(\s*["']([0-9.]+)["']""", source))
    expected = {ex.id for ex in EXERCISES if ex.notebook == name}
    assert expected <= called, f"solutions/{name}.md never checks exercise(s) {sorted(expected - called)}"
