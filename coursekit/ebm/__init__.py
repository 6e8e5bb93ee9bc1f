"""Energy-based models: energies U_theta, the Unadjusted Langevin Algorithm, Algorithm 1 of the
slides (training with short-run chains and a replay buffer), maximum entropy models learned
from one example, and products of experts.

p_theta(x) = exp(-U_theta(x)) / Z(theta), with Z(theta) never computed (except by quadrature in
the 1-D checks of the chapter).
"""

from . import energy, langevin, maxent, train
from .energy import *  # noqa: F401,F403
from .langevin import *  # noqa: F401,F403
from .maxent import *  # noqa: F401,F403
from .train import *  # noqa: F401,F403

__all__ = [*energy.__all__, *langevin.__all__, *train.__all__, *maxent.__all__]
