"""Run configuration: fast or full mode, the device, and seeding.

There are two modes:

* ``fast``  small sizes and short training, every notebook well under a minute on a 2-core CPU;
* ``full``  the sizes and training lengths that give good results (meant for a GPU, e.g. Colab);
* ``auto``  (default) ``full`` when CUDA is available, ``fast`` otherwise.

The mode is chosen, in this order of precedence, by

1. the environment variable ``COURSEKIT_MODE`` when it is set (the book build, the tests and the
   grader set it);
2. the Colab form field ``MODE = "auto"  #@param ["auto", "fast", "full"]`` of the set-up cell that
   ``coursekit sync`` puts at the top of every ``.ipynb`` (a variable ``MODE`` of the notebook's
   namespace, ``__main__``);
3. ``auto``.

Notebooks never edit cells to change mode: they ask :func:`pick` for each size.

>>> settings = Settings(mode="fast", device=torch.device("cpu"), seed=0)
>>> settings.pick(fast=100, full=10_000)
100
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["MODE_ENV", "DEVICE_ENV", "FORM_VARIABLE", "mode", "mode_source", "is_fast", "pick", "device", "seed_everything", "setup", "Settings"]

MODE_ENV = "COURSEKIT_MODE"
DEVICE_ENV = "COURSEKIT_DEVICE"
_MODES = ("fast", "full", "auto")


FORM_VARIABLE = "MODE"


def _form_mode():
    """The notebook's ``MODE`` (the Colab form field of the set-up cell), or ``None``."""
    import sys

    main = sys.modules.get("__main__")
    value = getattr(main, FORM_VARIABLE, None)
    return value if isinstance(value, str) else None


def mode_source() -> str:
    """Where the mode comes from: ``COURSEKIT_MODE``, the ``MODE`` form field, or the default."""
    if os.environ.get(MODE_ENV, "").strip():
        return MODE_ENV
    if _form_mode() is not None and _form_mode().strip():
        return f"{FORM_VARIABLE} in the set-up cell"
    return "default"


def mode() -> str:
    """Return ``"fast"`` or ``"full"``: ``COURSEKIT_MODE``, else the notebook's ``MODE``, else ``auto``."""
    env = os.environ.get(MODE_ENV, "").strip()
    form = _form_mode()
    value = (env or (form or "").strip() or "auto").lower()
    if value not in _MODES:
        where = f"{MODE_ENV}={value!r}" if env else f"{FORM_VARIABLE} = {form!r} (the set-up cell's form field)"
        raise ValueError(
            f"{where} is not a mode; expected one of {', '.join(_MODES)}. "
            f"Use \"auto\" to let coursekit choose (full on GPU, fast on CPU)."
        )
    if value == "auto":
        return "full" if torch.cuda.is_available() else "fast"
    return value


def is_fast() -> bool:
    """True in fast mode."""
    return mode() == "fast"


def pick(fast, full):
    """Return ``fast`` in fast mode and ``full`` in full mode (sizes, step counts, ...)."""
    return fast if is_fast() else full


def device() -> torch.device:
    """The device to compute on: ``COURSEKIT_DEVICE`` if set, else CUDA when present, else CPU."""
    requested = os.environ.get(DEVICE_ENV, "").strip()
    if requested:
        dev = torch.device(requested)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"{DEVICE_ENV}={requested!r} asks for CUDA but no GPU is available; unset it.")
        return dev
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so that figures are reproducible."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        # NumPy's legacy global seed takes 32 bits
        raise (TypeError if not isinstance(seed, int) or isinstance(seed, bool) else ValueError)(
            f"seed must be a non-negative integer below 2^32, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


@dataclass(frozen=True)
class Settings:
    """What :func:`setup` chose."""

    mode: str
    device: torch.device
    seed: int

    def pick(self, fast, full):
        return fast if self.mode == "fast" else full


def setup(seed: int = 0, verbose: bool = True) -> Settings:
    """Seed everything, choose mode and device, and (optionally) print them.

    The mode is :func:`mode`'s: ``COURSEKIT_MODE`` when set, else the notebook's ``MODE`` form field
    (Colab), else ``auto``.

    Call it once at the top of every notebook::

        cfg = coursekit.setup(seed=0)
        n_steps = cfg.pick(fast=200, full=20_000)
    """
    seed_everything(seed)
    settings = Settings(mode=mode(), device=device(), seed=seed)
    if verbose:
        from . import __version__

        # two short lines: the book shows code output in a column of about 88 characters
        print(f"coursekit {__version__}: mode: {settings.mode} (from {mode_source()}), "
              f"device: {settings.device}, seed: {seed}")
        print(f"(choose the mode with MODE in the set-up cell, or {MODE_ENV}=fast|full|auto)")
    return settings
