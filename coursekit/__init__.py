"""coursekit: the companion package of the course "An introduction to generative models".

It implements every model the course teaches (normalizing flows, autoregressive flows,
energy-based models) and the fast/full run modes of the notebooks. The course's tooling (exercise
checks, grader, notebook generation, the ``coursekit`` command) lives apart, in :mod:`coursekit.course`.
"""

__version__ = "0.1.0"

from .config import device, is_fast, mode, pick, seed_everything, setup  # noqa: E402

__all__ = ["__version__", "setup", "mode", "is_fast", "pick", "device", "seed_everything"]
