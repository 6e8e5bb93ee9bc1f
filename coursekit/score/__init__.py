"""Score matching: fitting the score s_theta(x) = -grad_x U_theta(x) without Z(theta) or MCMC.

The Fisher divergence F(mu*, mu_theta) = 1/2 E_{mu*} |grad log p* - s_theta|^2 cannot be computed
(grad log p* is unknown), but each objective here equals it, or the Fisher divergence to a noised
data law, up to a constant independent of theta:

* :mod:`~coursekit.score.objectives`: exact (Hyvarinen, 2005), sliced (Song et al., 2019),
  denoising (Vincent, 2011) and noise-conditional (Song & Ermon, 2019) score matching;
* :mod:`~coursekit.score.networks`: free-form score networks, unconditional and noise-conditional;
* :mod:`~coursekit.score.mixture`: Gaussian mixtures, whose score and noised laws are closed form;
* :mod:`~coursekit.score.sampling`: annealed Langevin dynamics over a ladder of noise levels (on
  top of :func:`coursekit.ebm.ula`) and the Metropolis-adjusted Langevin algorithm (MALA);
* :mod:`~coursekit.score.train`: one training loop for every objective.

Chapter 7 of the course uses all of them.
"""

from . import mixture, networks, objectives, sampling, train
from .mixture import *  # noqa: F401,F403
from .networks import *  # noqa: F401,F403
from .objectives import *  # noqa: F401,F403
from .sampling import *  # noqa: F401,F403
from .train import *  # noqa: F401,F403

__all__ = [*objectives.__all__, *networks.__all__, *mixture.__all__, *sampling.__all__, *train.__all__]
