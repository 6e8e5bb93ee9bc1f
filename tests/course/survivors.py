"""Mutants of the solutions that the checks accept, each with the reason it is harmless.

A mutant is listed only when it is equivalent to the solution for every valid input (so no check
could reject it) or differs only where the exercise's contract allows. Keys are exercise ids;
each maps the mutant's description, as ``python -m coursekit.course.mutants N.k`` prints it, to
the reason. tests/course/test_exercises.py fails on a survivor missing here and on a stale entry.
"""

SURVIVORS: dict[str, dict[str, str]] = {
}
