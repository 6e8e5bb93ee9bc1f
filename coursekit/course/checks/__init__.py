"""The checks of the graded exercises, one module per chapter (``ch02.py``, ``ch03.py``, ...).

Importing this package imports every chapter module, which registers its exercises.
"""

import importlib
import pkgutil

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name.startswith("ch"):
        importlib.import_module(f"{__name__}.{_mod.name}")
