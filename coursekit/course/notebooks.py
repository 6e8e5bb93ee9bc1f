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

__all__ = [
    "MarkerError", "ReleaseError", "CourseConfig", "blank_source", "blank_notebook", "setup_cell_source",
    "intro_cell_source", "sync", "SyncReport",
]

CODE_BLANK = 'raise NotImplementedError("Exercise: replace this line with your code")'
SETUP_TAG = "colab-setup"
INTRO_TAG = "colab-intro"
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


PLACEHOLDER_URL = "https://github.com/sgm-course/generative-models"
"""The repository URL ``_config.yml`` carried before the course had a public home.

``coursekit sync --release`` refuses it (and any URL that is not on GitHub): a Colab button or set-up
cell pointing at it leads nowhere. This is not a second copy of the URL: the real one lives only in
``_config.yml`` (``repository: url:``)."""


class ReleaseError(ValueError):
    """``sync --release`` found a configuration that cannot be published (placeholder URL, no pinned ref)."""


@dataclass
class CourseConfig:
    """What the generated notebooks need from ``_config.yml``."""

    url: str  # repository: url:
    branch: str  # repository: branch:
    ref: str  # coursekit: ref: (the tag or commit the set-up cell installs)
    book_url: str  # where the book is published (coursekit: book_url:, else GitHub Pages of url)
    extensions: tuple[str, ...]  # parse: myst_enable_extensions
    bibfiles: list[Path]
    numfig_secnum_depth: int

    @classmethod
    def read(cls, root: Path) -> "CourseConfig":
        import yaml

        from .colab import ConversionError, book_url_from_repository

        cfg = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8")) or {}
        repo = cfg.get("repository") or {}
        url, branch = repo.get("url"), str(repo.get("branch", "main"))
        if not url:
            raise ValueError("_config.yml has no repository: url; it is needed for the Colab install cell")
        url = str(url).rstrip("/")
        ours = cfg.get("coursekit") or {}
        ref = str(ours.get("ref") or branch)
        book_url = ours.get("book_url")
        if not book_url:
            try:
                book_url = book_url_from_repository(url)
            except ConversionError:
                book_url = url + "/"
        sphinx_cfg = (cfg.get("sphinx") or {}).get("config") or {}
        return cls(
            url=url, branch=branch, ref=ref, book_url=str(book_url),
            extensions=tuple((cfg.get("parse") or {}).get("myst_enable_extensions") or ()),
            bibfiles=[root / b for b in cfg.get("bibtex_bibfiles") or []],
            numfig_secnum_depth=int(sphinx_cfg.get("numfig_secnum_depth", 1)),
        )

    def release_problems(self) -> list[str]:
        """Why this configuration cannot be released (empty when it can)."""
        problems = []
        if self.url.rstrip("/") == PLACEHOLDER_URL or "example" in self.url or "OWNER" in self.url:
            problems.append(
                f"repository: url: in _config.yml is still the placeholder {self.url}; set it to the course's "
                "public GitHub repository (the Colab buttons and every set-up cell install from it)")
        elif not self.url.startswith("https://github.com/"):
            problems.append(f"repository: url: {self.url} is not a GitHub URL; Colab opens notebooks from GitHub only")
        if self.ref in (self.branch, "main", "master", "HEAD", ""):
            problems.append(
                f"coursekit: ref: in _config.yml is {self.ref!r}, a branch; pin the tag you will push "
                "(e.g. v0.2.0) so that each notebook installs the package it was written for")
        return problems


#: Full-mode run time of each notebook (``COURSEKIT_MODE=full``, the whole notebook), keyed by its file
#: stem (an exercise notebook shares its solution's): ``gpu`` measured on a Colab T4-class GPU (``None``
#: until someone measures it), ``cpu`` on one thread of the course's 2-core CPU machines (myst-nb prints
#: "Executed notebook in N seconds" for each page of ``make book MODE=full``), both in seconds, and the
#: date of the measurement. The intro cell of each .ipynb states them; update them when they change.
FULL_MODE_TIMES: dict[str, dict] = {
    "01_introduction": {"gpu": None, "cpu": 8, "date": "2026-12-07"},
    "02_mde_mle": {"gpu": None, "cpu": 14, "date": "2026-12-07"},
    "03_flows_planar": {"gpu": None, "cpu": 285, "date": "2026-12-07"},
    "04_coupling_flows": {"gpu": None, "cpu": 767, "date": "2026-12-07"},
    "04b_beyond_triangular": {"gpu": None, "cpu": 369, "date": "2026-12-07"},
    "05_autoregressive_flows": {"gpu": None, "cpu": 342, "date": "2026-12-07"},
    "05b_convolutional_ar": {"gpu": None, "cpu": 390, "date": "2026-12-07"},
    "06_energy_based_models": {"gpu": None, "cpu": 434, "date": "2026-12-07"},
    "07_score_matching": {"gpu": None, "cpu": 182, "date": "2026-12-07"},
    "ex02_mle": {"gpu": None, "cpu": 7, "date": "2026-12-07"},
    "ex03_change_of_variables": {"gpu": None, "cpu": 5, "date": "2026-12-07"},
    "ex04_coupling": {"gpu": None, "cpu": 5, "date": "2026-12-07"},
    "ex04b_residual": {"gpu": None, "cpu": 7, "date": "2026-12-07"},
    "ex05_autoregressive": {"gpu": None, "cpu": 5, "date": "2026-12-07"},
    "ex06_ebm": {"gpu": None, "cpu": 5, "date": "2026-12-07"},
    "ex07_score_matching": {"gpu": None, "cpu": 5, "date": "2026-12-07"},
}


def _duration(seconds: float) -> str:
    if seconds < 60:
        return "under a minute"
    return f"about {max(1, round(seconds / 60))} min"


def full_mode_time_text(stem: str) -> str:
    """What the intro cell says about this notebook's full-mode time: measured on a GPU, or not yet."""
    t = FULL_MODE_TIMES.get(stem, {})
    if t.get("gpu") is not None:
        return f"In full mode this notebook takes **{_duration(t['gpu'])}** on a Colab T4 GPU (measured {t['date']})."
    text = "Its full-mode time on a Colab T4 GPU has not been measured yet"
    if t.get("cpu") is not None:
        text += (f"; on one thread of a 2-core CPU, full mode took **{_duration(t['cpu'])}** "
                 f"(measured {t['date']})")
    return text + "."


def intro_cell_source(stem: str, ref: str) -> str:
    """The first (Markdown) cell of every .ipynb: how to run it on Colab, the modes, the time it takes."""
    return (
        "**Running this notebook on Colab.** Run the set-up cell below first: it installs the course "
        f"package `coursekit` at version `{ref}`, the version this notebook was written for, and leaves "
        "Colab's own PyTorch as it is.\n\n"
        "**Mode.** `MODE` in the set-up cell chooses the sizes of every model and training run: "
        "`\"fast\"` (small models, short training: about a minute on a CPU), `\"full\"` (the sizes that give "
        "good results) or `\"auto\"` (the default: **full on a GPU**, fast otherwise). For full mode choose a "
        "GPU runtime first (*Runtime → Change runtime type → T4 GPU*). " + full_mode_time_text(stem) +
        " After changing `MODE`, rerun the set-up cell and `coursekit.setup()`. "
        "(The environment variable `COURSEKIT_MODE`, when set, overrides `MODE`.)"
    )


def setup_cell_source(url: str, ref: str) -> str:
    """The set-up cell of every .ipynb: the MODE form field and the pinned, torch-preserving install."""
    return f'''#@title Set-up: run this cell first {{ display-mode: "form" }}
MODE = "auto"  #@param ["auto", "fast", "full"]
# Written by `coursekit sync` (edit _config.yml, not this cell). `coursekit.setup()` reads MODE.
# Installs coursekit at the version of this notebook when it is missing. `pip install --no-deps`
# never installs, upgrades or downgrades torch: Colab's own CUDA build is kept.
COURSEKIT_URL = "{url}"
COURSEKIT_REF = "{ref}"


def _install_coursekit():
    import importlib, importlib.metadata, importlib.util, json, subprocess, sys
    try:
        info = json.loads(importlib.metadata.distribution("coursekit").read_text("direct_url.json") or "{{}}")
        vcs = info.get("vcs_info")
        if vcs is None or vcs.get("requested_revision") == COURSEKIT_REF:
            return "already installed"  # this version, or a local checkout of the course
    except importlib.metadata.PackageNotFoundError:
        pass
    if importlib.util.find_spec("torch") is None:
        raise RuntimeError("This notebook needs PyTorch, which Colab preinstalls. Elsewhere, install it first "
                           "(https://pytorch.org), then rerun this cell.")
    spec = f"git+{{COURSEKIT_URL}}@{{COURSEKIT_REF}}"
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--force-reinstall", spec]
    missing = [pkg for mod, pkg in [("numpy", "numpy"), ("matplotlib", "matplotlib"), ("tqdm", "tqdm"),
                                    ("sklearn", "scikit-learn")] if importlib.util.find_spec(mod) is None]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode == 0 and missing:  # never torch; Colab has all of these
        done = subprocess.run([sys.executable, "-m", "pip", "install", *missing], capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-3000:], sep="\\n")
        raise RuntimeError(
            f"Could not install coursekit from {{spec}} (pip's output is above). What to do:\\n"
            "* No network (pip cannot reach github.com): on Colab, check that the runtime is connected and "
            "rerun this cell. Offline, download the repository at version " + COURSEKIT_REF + " as a .zip "
            "(GitHub: Code > Download ZIP), upload it (Files pane), run `!pip install --no-deps <the .zip>` "
            "and rerun this cell.\\n"
            "* Private repository (pip asks for a username or says 'Repository not found'): Colab cannot "
            "clone it. Ask the course team for access to a public copy, or install from a .zip as above.\\n"
            "* In a local clone of the course: `pip install --no-deps -e <the clone>` instead.")
    importlib.invalidate_caches()
    print(done.stdout.strip())
    return "installed"


print("coursekit:", _install_coursekit(), f"({{COURSEKIT_URL}}@{{COURSEKIT_REF}})")
import coursekit'''


def _to_ipynb(nb, setup_source: str, intro_source: str, converter=None, where: str = "notebook") -> str:
    import jupytext
    import nbformat

    from .colab import ConversionError

    nb = copy.deepcopy(nb)
    nb.metadata.pop("jupytext", None)
    if converter is not None:
        for i, c in enumerate(nb.cells):
            if c.cell_type == "markdown":
                try:
                    c.source = converter.convert(c.source).strip("\n")
                except ConversionError as err:
                    raise ConversionError(f"{where}, cell {i}: {err}") from None
    intro = nbformat.v4.new_markdown_cell(intro_source, metadata={"tags": [INTRO_TAG, "remove-cell"]})
    cell = nbformat.v4.new_code_cell(setup_source, metadata={"tags": [SETUP_TAG, "remove-cell"], "cellView": "form"})
    nb.cells[:0] = [intro, cell]
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


def _markdown_cells(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "markdown"]


def _plain_page(path: Path) -> list[str] | None:
    if not path.exists():
        return None
    text = path.read_text(encoding="utf-8")
    if text.startswith("---"):
        end = text.find("\n---", 3)
        text = text[end + 4:] if end >= 0 else text
    return [text]


def expected_files(root: Path) -> dict[Path, str]:
    """Every generated file and the text it should contain."""
    import jupytext

    from .colab import Bibliography, BookIndex, Converter, make_parser, toc_documents

    root = Path(root)
    config = CourseConfig.read(root)
    setup = setup_cell_source(config.url, config.ref)
    parser = make_parser(config.extensions)
    files: dict[Path, str] = {}
    notebooks: dict[str, object] = {}  # docname -> notebook node, for numbering
    sources: list[tuple[Path, object, str]] = []  # (path, notebook, edition)
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
        sources += [(sol, nb, "instructor"), (ex_path, ex, "public")]
        notebooks[f"solutions/{sol.stem}"], notebooks[f"exercises/{sol.stem}"] = nb, ex
    for lec in _notebooks(root / "lectures"):
        nb = jupytext.read(lec)
        sources.append((lec, nb, "public"))
        notebooks[f"lectures/{lec.stem}"] = nb

    def page(doc: str):
        if doc in notebooks:
            return _markdown_cells(notebooks[doc])
        return _plain_page(root / f"{doc}.md")

    tocs = {"public": root / "_toc.yml", "instructor": root / "book" / "_toc_instructor.yml"}
    if not tocs["public"].exists():
        raise ValueError(f"{tocs['public']} is missing: the book's table of contents numbers the chapters, "
                         "equations and exercises that the Colab notebooks refer to. Run sync at the course root")
    indexes = {
        edition: BookIndex.build(toc_documents(toc), page, parser, config.numfig_secnum_depth)
        for edition, toc in tocs.items() if toc.exists()
    }
    indexes.setdefault("instructor", indexes["public"])
    bib_index = indexes["public"]
    bibliography = Bibliography(config.bibfiles, f"{config.book_url}{bib_index.bibliography_doc}.html")
    for path, nb, edition in sources:
        doc = str(path.relative_to(root).with_suffix(""))
        converter = Converter(indexes[edition], bibliography, config.book_url, doc, parser)
        files[path.with_suffix(".ipynb")] = _to_ipynb(
            nb, setup, intro_cell_source(path.stem, config.ref), converter, where=str(path.relative_to(root)))
    return files


def sync(root: str | Path = ".", check: bool = False, release: bool = False) -> SyncReport:
    """Regenerate (or, with ``check=True``, only compare) exercises and .ipynb copies.

    ``release=True`` first refuses a configuration that cannot be published
    (:meth:`CourseConfig.release_problems`: placeholder repository URL, ref that is a branch).
    """
    root = Path(root).resolve()
    if release:
        problems = CourseConfig.read(root).release_problems()
        if problems:
            raise ReleaseError("not releasable:\n" + "\n".join(f"  - {p}" for p in problems))
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
