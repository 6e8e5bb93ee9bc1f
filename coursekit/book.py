"""Numbers computed by a notebook cell and quoted in the book's text.

A chapter's prose quotes what its cells compute ("the test NLL is 2.13 nats") through myst-nb's
*glue*: the cell calls :func:`glue`, the text writes ``{glue:text}`name:.2f```, and the book
shows the value of the run it was built from, in fast or full mode alike. In Colab the text
names the variable instead (``coursekit sync``), and myst-nb is not installed there, so
:func:`glue` then does nothing.

Example::

    >>> glue("nll", 2.125)   # outside a notebook kernel: nothing to paste into, nothing happens
"""

from __future__ import annotations

import numbers

__all__ = ["glue"]


def _plain(value):
    """A Python number for a tensor or NumPy scalar, so that ``:.2f`` formats its text."""
    if type(value) in (bool, int, float, str):
        return value
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", 0) == 0:
        value = item()
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return value


def glue(name: str, value) -> None:
    """Record ``value`` under ``name`` for the book's ``{glue:text}`name``` (not displayed).

    Tensors and NumPy scalars are stored as Python numbers: myst-nb formats the stored text
    with the role's format spec, which ``np.float64(0.5)`` would not survive.
    """
    try:
        from IPython import get_ipython
        from myst_nb import glue as _myst_glue
    except ImportError:  # Colab, or a plain Python session: the text names the variable
        return
    if get_ipython() is None:
        return
    _myst_glue(name, _plain(value), display=False)
