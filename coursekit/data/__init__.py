"""Data sets of the course: generated 2-D toy sets, unnormalised 2-D target energies, and
scikit-learn's handwritten digits. Nothing is downloaded: everything is generated or ships
with an installed package."""

from . import digits, targets, toy2d
from .digits import *  # noqa: F401,F403
from .targets import *  # noqa: F401,F403
from .toy2d import *  # noqa: F401,F403

__all__ = [*toy2d.__all__, *targets.__all__, *digits.__all__]
