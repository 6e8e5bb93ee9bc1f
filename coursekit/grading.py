"""Graded exercises: a registry of checks, the ``check`` call used in notebooks, and reports.

An exercise is registered once, in ``coursekit/checks/chNN.py``::

    @exercise("2.1", notebook="ex02_mle", title="Closed-form Gaussian MLE", points=2)
    def gaussian_mle(answer):
        ...                                  # raise ExerciseFailure("what is wrong") on a wrong answer

    gaussian_mle.reference = lambda: my_correct_answer            # what the solution submits
    gaussian_mle.mistakes = {                                     # plausible wrong answers
        "unbiased variance": (lambda: wrong_answer, "divide by N"),  # (answer factory, text the message must contain)
    }

and checked in the notebook with ``check("2.1", answer)``. The test suite proves, for every
registered exercise, that the check passes on ``reference()``, fails on a blank (``...`` or
code that raises ``NotImplementedError``) and fails on every mistake with a message that
contains the stated text.

When the environment variable ``COURSEKIT_GRADING_REPORT`` names a file, every check appends
one JSON line to it; ``coursekit grade`` uses this to build its table.
"""

from __future__ import annotations

import json
import os
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["ExerciseFailure", "Exercise", "exercise", "check", "registry", "get", "REPORT_ENV"]

REPORT_ENV = "COURSEKIT_GRADING_REPORT"


class ExerciseFailure(AssertionError):
    """Raised by a check when an answer is wrong; its message says what is wrong."""


@dataclass
class Exercise:
    id: str
    notebook: str
    title: str
    points: float
    fn: Callable[[Any], None]
    reference: Callable[[], Any] | None = None
    mistakes: dict[str, tuple[Callable[[], Any], str]] = field(default_factory=dict)

    def run(self, answer: Any) -> tuple[bool, str]:
        """Run the check; return (passed, message). Never raises for a wrong answer."""
        if answer is Ellipsis or answer is None:
            return False, "not answered yet: replace the `...` with your answer."
        try:
            self.fn(answer)
        except NotImplementedError:
            return False, "not answered yet: your code still raises NotImplementedError."
        except ExerciseFailure as err:
            return False, str(err)
        except Exception as err:  # the student's code crashed inside the check
            tb = traceback.extract_tb(err.__traceback__)
            where = f" (line {tb[-1].lineno} of {os.path.basename(tb[-1].filename)})" if tb else ""
            return False, f"your answer raised {type(err).__name__}: {err}{where}"
        return True, "passed"

    def __call__(self, answer: Any) -> None:
        self.fn(answer)


_REGISTRY: dict[str, Exercise] = {}


def exercise(id: str, *, notebook: str, title: str, points: float = 1.0):
    """Register a check function under an exercise id (decorator); returns the Exercise."""

    def deco(fn: Callable[[Any], None]) -> Exercise:
        if id in _REGISTRY and _REGISTRY[id].fn.__qualname__ != fn.__qualname__:
            raise ValueError(f"exercise id {id!r} registered twice")
        ex = Exercise(id=id, notebook=notebook, title=title, points=float(points), fn=fn)
        _REGISTRY[id] = ex
        return ex

    return deco


def registry() -> dict[str, Exercise]:
    """All registered exercises, by id (imports every ``coursekit.checks`` module)."""
    from . import checks  # noqa: F401  (registers on import)

    return dict(sorted(_REGISTRY.items(), key=lambda kv: [int(p) if p.isdigit() else p for p in kv[0].split(".")]))


def get(id: str) -> Exercise:
    reg = registry()
    if id not in reg:
        raise KeyError(f"no exercise {id!r}; known exercises: {', '.join(reg)}")
    return reg[id]


def _report(ex: Exercise, passed: bool, message: str) -> None:
    path = os.environ.get(REPORT_ENV)
    if not path:
        return
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"id": ex.id, "passed": passed, "message": message, "points": ex.points}) + "\n")


def check(id: str, answer: Any) -> None:
    """Grade ``answer`` for exercise ``id``: print a line when it passes, raise
    :class:`ExerciseFailure` with an explanation when it does not."""
    ex = get(id)
    passed, message = ex.run(answer)
    _report(ex, passed, message)
    if not passed:
        raise ExerciseFailure(f"Exercise {ex.id} ({ex.title}): {message}")
    print(f"Exercise {ex.id} ({ex.title}): passed, {ex.points:g}/{ex.points:g} points.")
