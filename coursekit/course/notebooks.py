"""Generated notebooks: exercise notebooks from solutions, and Colab ``.ipynb`` copies.

Solutions are the source. :func:`blank_notebook` turns a solution notebook into the exercise
notebook by replacing marked regions (see CONTRIBUTING.md):

* code: ``# BEGIN SOLUTION`` ... ``# END SOLUTION`` becomes ``raise NotImplementedError(...)``;
  ``value = expr  # SOLUTION`` becomes ``value = ...``;
* markdown: ``<!-- BEGIN SOLUTION -->`` ... ``<!-- END SOLUTION -->`` is removed, and
  ``<!-- BEGIN SOLUTION: text -->`` ... replaces the region by ``text`` (e.g. a formula with ``?``);
* cells tagged ``solution`` are removed.

:func:`sync` writes ``exercises/*.md`` from ``solutions/*.md`` and an ``.ipynb`` beside every
notebook of ``lectures/``, ``exercises/`` and ``solutions/``. Each ``.ipynb`` starts with a set-up
cell that installs coursekit from the repository named in ``_config.yml`` when it is missing
(on Colab), without reinstalling torch. ``sync(check=True)`` only reports stale files.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MarkerError", "blank_source", "blank_notebook", "setup_cell_source", "sync", "SyncReport"]

CODE_BLANK = 'raise NotImplementedError("Exercise: replace this line with your code")'
SETUP_TAG = "colab-setup"
NOTEBOOK_DIRS = ("lectures", "solutions", "exercises")

_BEGIN_CODE = re.compile(r"^(?P<indent>\s*)# BEGIN SOLUTION\s*$")
_END_CODE = re.compile(r"^\s*# END SOLUTION\s*$")
_INLINE_CODE = re.compile(r"^(?P<lhs>\s*[^#=]+?=)(?!=)\s*(?P<rhs>.+?)\s*# SOLUTION\s*$")
_BEGIN_MD = re.compile(r"^\s*<!-- BEGIN SOLUTION(?::(?P<blank>.*?))?\s*-->\s*$")
_END_MD = re.compile(r"^\s*<!-- END SOLUTION\s*-->\s*$")


class MarkerError(ValueError):
    """A solution marker is unbalanced or malformed."""


def blank_source(source: str, cell_type: str, where: str = "cell") -> str:
    """Blank the solution regions of one cell's source (see module docstring)."""
    out: list[str] = []
    inside = False
    begin_line = 0
    for lineno, line in enumerate(source.split("\n"), start=1):
        if cell_type == "code":
            begin = _BEGIN_CODE.match(line)
            if begin:
                if inside:
                    raise MarkerError(f"{where}, line {lineno}: nested '# BEGIN SOLUTION'")
                inside, begin_line = True, lineno
                out.append(begin.group("indent") + CODE_BLANK)
                continue
            if _END_CODE.match(line):
                if not inside:
                    raise MarkerError(f"{where}, line {lineno}: '# END SOLUTION' without a BEGIN")
                inside = False
                continue
            if inside:
                continue
            if line.rstrip().endswith("# SOLUTION"):
                inline = _INLINE_CODE.match(line)
                if not inline:
                    raise MarkerError(f"{where}, line {lineno}: '# SOLUTION' needs the form 'name = expression  # SOLUTION'")
                out.append(inline.group("lhs") + " ...")
                continue
            out.append(line)
        else:
            begin = _BEGIN_MD.match(line)
            if begin:
                if inside:
                    raise MarkerError(f"{where}, line {lineno}: nested '<!-- BEGIN SOLUTION -->'")
                inside, begin_line = True, lineno
                blank = begin.group("blank")
                if blank is not None and blank.strip():
                    out.append(blank.strip())
                continue
            if _END_MD.match(line):
                if not inside:
                    raise MarkerError(f"{where}, line {lineno}: '<!-- END SOLUTION -->' without a BEGIN")
                inside = False
                continue
            if not inside:
                out.append(line)
    if inside:
        raise MarkerError(f"{where}, line {begin_line}: solution region is never closed")
    return "\n".join(out)


def blank_notebook(nb, where: str = "notebook"):
    """Return a copy of a solution notebook (nbformat node) with every solution blanked."""
    nb = copy.deepcopy(nb)
    cells = []
    n_regions = 0
    for i, cell in enumerate(nb.cells):
        if "solution" in cell.get("metadata", {}).get("tags", []):
            n_regions += 1
            continue
        new = blank_source(cell.source, cell.cell_type, where=f"{where}, cell {i}")
        n_regions += new != cell.source
        cell.source = new
        cells.append(cell)
    if n_regions == 0:
        raise MarkerError(f"{where}: no solution region found; an exercise notebook would equal its solution")
    nb.cells = cells
    return nb


def _repository(root: Path) -> tuple[str, str]:
    import yaml

    cfg = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))
    repo = cfg.get("repository") or {}
    url, branch = repo.get("url"), repo.get("branch", "main")
    if not url:
        raise ValueError("_config.yml has no repository: url; it is needed for the Colab install cell")
    return url.rstrip("/"), branch


def setup_cell_source(url: str, branch: str) -> str:
    return (
        "# Set-up for Colab (written by `coursekit sync`): install the course package when it is missing.\n"
        "# --no-deps keeps Colab's own torch; numpy, matplotlib, tqdm and scikit-learn are preinstalled there.\n"
        "try:\n"
        "    import coursekit\n"
        "except ImportError:\n"
        "    import subprocess, sys\n"
        f'    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "git+{url}@{branch}"])\n'
        "    import coursekit"
    )


def _to_ipynb(nb, setup_source: str) -> str:
    import jupytext
    import nbformat

    nb = copy.deepcopy(nb)
    nb.metadata.pop("jupytext", None)
    cell = nbformat.v4.new_code_cell(setup_source, metadata={"tags": [SETUP_TAG, "remove-cell"]})
    cell.pop("id", None)
    nb.cells.insert(0, cell)
    for c in nb.cells:
        c.pop("id", None)
    nb.nbformat, nb.nbformat_minor = 4, 4
    return jupytext.writes(nb, fmt="ipynb")


@dataclass
class SyncReport:
    written: list[str]
    stale: list[str]
    orphans: list[str]

    @property
    def ok(self) -> bool:
        return not self.stale and not self.orphans


def _notebooks(folder: Path) -> list[Path]:
    out = []
    for p in sorted(folder.glob("*.md")):
        head = p.read_text(encoding="utf-8")[:400]
        if head.startswith("---") and "jupytext:" in head:
            out.append(p)
    return out


def expected_files(root: Path) -> dict[Path, str]:
    """Every generated file and the text it should contain."""
    import jupytext

    root = Path(root)
    url, branch = _repository(root)
    setup = setup_cell_source(url, branch)
    files: dict[Path, str] = {}
    sources: list[tuple[Path, object]] = []
    for sol in _notebooks(root / "solutions"):
        nb = jupytext.read(sol)
        ex = blank_notebook(nb, where=str(sol.relative_to(root)))
        ex.metadata["coursekit"] = {"generated_from": str(sol.relative_to(root)), "notebook": sol.stem}
        # The book shows exercise pages unexecuted: their blanks raise by design.
        ex.metadata["mystnb"] = {"execution_mode": "off"}
        ex.metadata.setdefault("jupytext", {})["notebook_metadata_filter"] = "coursekit,mystnb"
        ex_path = root / "exercises" / sol.name
        files[ex_path] = jupytext.writes(ex, fmt="md:myst")
        nb.metadata["coursekit"] = {"notebook": sol.stem}
        sources += [(sol, nb), (ex_path, ex)]
    for lec in _notebooks(root / "lectures"):
        sources.append((lec, jupytext.read(lec)))
    for path, nb in sources:
        files[path.with_suffix(".ipynb")] = _to_ipynb(nb, setup)
    return files


def sync(root: str | Path = ".", check: bool = False) -> SyncReport:
    """Regenerate (or, with ``check=True``, only compare) exercises and .ipynb copies."""
    root = Path(root).resolve()
    files = expected_files(root)
    written, stale = [], []
    for path, text in files.items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current != text:
            stale.append(str(path.relative_to(root)))
            if not check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
                written.append(str(path.relative_to(root)))
    orphans = []
    for folder in NOTEBOOK_DIRS:
        for p in sorted((root / folder).glob("*")):
            generated = p in files
            source = folder != "exercises" and p.suffix == ".md"
            if p.suffix in (".md", ".ipynb") and not generated and not source:
                orphans.append(str(p.relative_to(root)))
    if check:
        return SyncReport(written=[], stale=stale, orphans=orphans)
    return SyncReport(written=written, stale=[], orphans=orphans)
