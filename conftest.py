"""Collect the MyST (jupytext) notebooks of lectures/ and solutions/ for nbval.

nbval only collects ``.ipynb`` files; here each ``.md`` notebook is read with jupytext and handed
to nbval's own collector, so its cells run in the notebook's folder, exactly as in the book.
Usage: ``pytest --nbval-lax --nbval-current-env lectures solutions``. Exercise notebooks are
not collected here: their blanks fail by design (tests/test_exercises.py checks that instead).
"""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK_DIRS = ("lectures", "solutions")


def _is_text_notebook(path: Path) -> bool:
    if path.suffix != ".md" or path.parent.name not in NOTEBOOK_DIRS:
        return False
    with open(path, encoding="utf-8") as fh:
        head = fh.read(400)
    return head.startswith("---") and "jupytext:" in head


def pytest_collect_file(file_path, parent):
    opt = parent.config.option
    if not (getattr(opt, "nbval", False) or getattr(opt, "nbval_lax", False)):
        return None
    if not _is_text_notebook(Path(file_path)):
        return None
    from nbval.plugin import IPyNbFile

    class MystNotebook(IPyNbFile):
        def collect(self):
            import jupytext
            import nbval.plugin

            nb = jupytext.read(str(self.fspath))
            original = nbval.plugin.nbformat.read
            nbval.plugin.nbformat.read = lambda *args, **kwargs: nb
            try:
                items = list(super().collect())
            finally:
                nbval.plugin.nbformat.read = original
            return items

    return MystNotebook.from_parent(parent, path=file_path)


def pytest_ignore_collect(collection_path, config):
    # The .ipynb files are generated Colab copies of the .md notebooks collected above;
    # running both would execute every notebook twice.
    if collection_path.suffix == ".ipynb":
        return True
    return None
