"""The course's tooling, kept apart from the models: the exercise registry and its checks, the
grader, the notebook generator (``coursekit sync``) and the ``coursekit`` command.

Students need one name from here, :func:`check`, which their exercise notebooks import; the
models they study live in the rest of the package, which never imports this subpackage.
"""

from .registry import ExerciseFailure, check

__all__ = ["check", "ExerciseFailure"]
