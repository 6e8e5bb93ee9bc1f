"""Graded exercises: the registry of checks and the ``check`` call used in notebooks.

An exercise is registered once, in ``coursekit/course/checks/chNN.py``::

    @exercise("4.1", notebook="ex04_coupling", answer="additive_inverse", points=2,
              title="Inverse and Jacobian of NICE's additive coupling",
              mistakes={"adds-shift": "added m instead of subtracting it", ...},
              forbidden={"coursekit.flows.coupling.AdditiveCoupling.inverse": "the layer's own inverse"})
    def additive_coupling_inverse(answer):
        ...   # raise ExerciseFailure("what is wrong", mistake="adds-shift") on a wrong answer

and checked in the notebook with ``check("4.1", additive_inverse)``.

* ``answer`` is the name the notebook gives the student's function; the grader uses it.
* ``mistakes`` names the plausible wrong answers the check recognises, tag -> description. A
  check that recognises one raises ``ExerciseFailure(message, mistake=tag)``; the class gradebook
  counts the tags ("4.1: 7 of 30 added m instead of subtracting it").
* ``forbidden`` names coursekit callables that implement the very formula asked for; an answer
  that calls one of them (through :func:`coursekit.course.checks._common.call`) earns no points.

Reference answers and wrong answers do not live here: the reference is the solution notebook's
own code, and the test suite (``tests/course/``) holds the wrong answers and the mutation tests.
"""

from __future__ import annotations

import contextvars
import os
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

__all__ = ["ExerciseFailure", "Delegation", "Exercise", "Verdict", "exercise", "check", "registry", "get",
           "current"]


class ExerciseFailure(AssertionError):
    """Raised by a check when an answer is wrong; its message says what is wrong.

    ``mistake`` is the tag of the named mistake recognised, if any (a key of ``Exercise.mistakes``).
    """

    def __init__(self, message: str, mistake: str | None = None):
        super().__init__(message)
        self.mistake = mistake


class Delegation(ExerciseFailure):
    """The answer called a coursekit function that implements the formula the exercise asks for."""

    def __init__(self, target: str, why: str):
        super().__init__(
            f"your answer calls coursekit's {target} ({why}), which computes what this exercise asks you "
            "to write yourself; it earns no points. Write the formula with torch operations (see the "
            "exercise text for what may be used)",
            mistake="delegation",
        )


class Verdict(NamedTuple):
    passed: bool
    message: str
    mistake: str | None = None  # the named mistake's tag, "delegation", "crash", "blank", or None


@dataclass
class Exercise:
    id: str
    notebook: str
    title: str
    points: float
    fn: Callable[[Any], None]
    answer: str = ""
    mistakes: dict[str, str] = field(default_factory=dict)
    forbidden: dict[str, str] = field(default_factory=dict)

    def run(self, answer: Any) -> Verdict:
        """Run the check and return its :class:`Verdict`. Never raises for a wrong answer."""
        if answer is Ellipsis or answer is None:
            return Verdict(False, "not answered yet: replace the `...` with your answer.", "blank")
        module = getattr(answer, "__module__", None) or ""
        if callable(answer) and (module == "coursekit" or module.startswith("coursekit.")):
            return Verdict(False, f"your answer is coursekit's own {module}.{getattr(answer, '__qualname__', '')}: "
                           "it earns no points. Write the function yourself", "delegation")
        token = _CURRENT.set(self)
        try:
            self.fn(answer)
        except NotImplementedError:
            return Verdict(False, "not answered yet: your code still raises NotImplementedError.", "blank")
        except ExerciseFailure as err:
            return Verdict(False, str(err), err.mistake)
        except RecursionError:
            return Verdict(False, "your answer recursed without end (RecursionError)", "crash")
        except Exception as err:  # the student's code crashed inside the check
            return Verdict(False, f"your answer raised {type(err).__name__}: {err}{_where(err)}", "crash")
        finally:
            _CURRENT.reset(token)
        return Verdict(True, "passed")

    def __call__(self, answer: Any) -> None:
        self.fn(answer)


_CURRENT: contextvars.ContextVar[Exercise | None] = contextvars.ContextVar("coursekit_exercise", default=None)


def current() -> Exercise | None:
    """The exercise whose check is running (None outside a check)."""
    return _CURRENT.get()


_LIBRARY_DIRS = tuple(os.path.dirname(os.path.abspath(m.__file__)) + os.sep
                      for m in [__import__("torch"), __import__("coursekit")])


def _where(err: BaseException) -> str:
    """' (line N of your code)' for the innermost frame of the student's own code, if any."""
    frames = traceback.extract_tb(err.__traceback__)
    mine = [f for f in frames if not os.path.abspath(f.filename).startswith(_LIBRARY_DIRS)
            and "site-packages" not in f.filename and "/lib/python" not in f.filename]
    if not mine:
        return ""
    f = mine[-1]
    return f" (line {f.lineno} of your code: {f.line.strip()})" if f.line else f" (line {f.lineno} of your code)"


_REGISTRY: dict[str, Exercise] = {}


def exercise(id: str, *, notebook: str, title: str, points: float = 1.0, answer: str = "",
             mistakes: dict[str, str] | None = None, forbidden: dict[str, str] | None = None):
    """Register a check function under an exercise id (decorator); returns the Exercise."""

    def deco(fn: Callable[[Any], None]) -> Exercise:
        if id in _REGISTRY and _REGISTRY[id].fn.__qualname__ != fn.__qualname__:
            raise ValueError(f"exercise id {id!r} registered twice")
        ex = Exercise(id=id, notebook=notebook, title=title, points=float(points), fn=fn, answer=answer,
                      mistakes=dict(mistakes or {}), forbidden=dict(forbidden or {}))
        _REGISTRY[id] = ex
        return ex

    return deco


def _sort_key(exercise_id: str):
    return [int(p) if p.isdigit() else p for p in exercise_id.split(".")]


def registry() -> dict[str, Exercise]:
    """All registered exercises, by id (imports every ``coursekit.course.checks`` module)."""
    from . import checks  # noqa: F401  (registers on import)

    return dict(sorted(_REGISTRY.items(), key=lambda kv: _sort_key(kv[0])))


def get(id: str) -> Exercise:
    reg = registry()
    if id not in reg:
        raise KeyError(f"no exercise {id!r}; known exercises: {', '.join(reg)}")
    return reg[id]


def check(id: str, answer: Any) -> None:
    """Check ``answer`` for exercise ``id``: print a line when it passes, raise
    :class:`ExerciseFailure` with an explanation when it does not.

    This is the student's own feedback; it decides nothing. ``coursekit grade`` re-runs every
    check itself, from the assignment's check cells, after the student's code.
    """
    ex = get(id)
    verdict = ex.run(answer)
    if not verdict.passed:
        raise ExerciseFailure(f"Exercise {ex.id} ({ex.title}): {verdict.message}", mistake=verdict.mistake)
    print(f"Exercise {ex.id} ({ex.title}): passed, {ex.points:g}/{ex.points:g} points.")
