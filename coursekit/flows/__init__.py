"""Normalizing flows: invertible maps X = T(Z) with tractable log-determinants.

Every map class is exported here and in ``__all__``; each can be built from the data
dimension alone (``Map(dim)``), which is how the generic test suite covers them all, except the
image-only maps of :mod:`.multiscale` (:class:`Squeeze`, :class:`Flattened`, :class:`MultiScale`),
which the suite builds from image shapes, and :class:`Inverted`, which wraps another map.
"""

from . import base
from .base import *  # noqa: F401,F403
from . import autoregressive, coupling, glow, images, mintnet, multiscale, pixelmaf, planar, residual
from .planar import *  # noqa: F401,F403
from .coupling import *  # noqa: F401,F403
from .autoregressive import *  # noqa: F401,F403
from .glow import *  # noqa: F401,F403
from .images import *  # noqa: F401,F403
from .residual import *  # noqa: F401,F403
from .mintnet import *  # noqa: F401,F403
from .pixelmaf import *  # noqa: F401,F403
from .multiscale import *  # noqa: F401,F403

__all__ = [
    *base.__all__,
    *planar.__all__,
    *coupling.__all__,
    *autoregressive.__all__,
    *glow.__all__,
    *images.__all__,
    *residual.__all__,
    *mintnet.__all__,
    *pixelmaf.__all__,
    *multiscale.__all__,
]
