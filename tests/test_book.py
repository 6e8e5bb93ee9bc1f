"""Checks of the built HTML book (`make book` builds it; `make test` builds it first).

* every page loads nothing from outside the site (scripts, styles, fonts, images), so it
  renders offline; links to other sites (Colab, the repository) are allowed;
* the sidebar lists the chapters;
* each notebook page's Colab button points at an .ipynb that exists in the repository;
* headless Chromium typesets the math (MathJax renders <mjx-container> elements).
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.book

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
EXTERNAL = re.compile(r"^(https?:)?//", re.I)


@pytest.fixture(scope="module")
def html_dir() -> Path:
    if not (HTML / "index.html").exists():
        pytest.fail(f"no built book at {HTML}: run `make book` first (`make test` does it for you)")
    return HTML


class _Resources(HTMLParser):
    """Collect the URLs a page LOADS (not the ones it merely links to)."""

    def __init__(self):
        super().__init__()
        self.loads: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("script", "img", "iframe", "source", "audio", "video", "embed") and a.get("src"):
            self.loads.append(a["src"])
        if tag == "link" and a.get("href"):
            rel = (a.get("rel") or "").lower()
            if any(r in rel for r in ("stylesheet", "preload", "icon", "modulepreload", "prefetch")):
                self.loads.append(a["href"])
        if tag == "object" and a.get("data"):
            self.loads.append(a["data"])
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])


def _parse(page: Path) -> _Resources:
    parser = _Resources()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def test_pages_load_nothing_from_outside_the_site(html_dir):
    offenders = []
    for page in html_dir.rglob("*.html"):
        for url in _parse(page).loads:
            if EXTERNAL.match(url):
                offenders.append(f"{page.relative_to(html_dir)}: {url}")
    for css in html_dir.rglob("*.css"):
        for url in re.findall(r"url\(\s*['\"]?([^'\")]+)", css.read_text(encoding="utf-8", errors="ignore")):
            if EXTERNAL.match(url):
                offenders.append(f"{css.relative_to(html_dir)}: {url}")
    assert not offenders, "the book loads resources from outside the site:\n" + "\n".join(offenders[:20])


def test_mathjax_is_served_locally(html_dir):
    page = (html_dir / "lectures" / "03_flows_planar.html").read_text(encoding="utf-8")
    scripts = re.findall(r'<script[^>]+src="([^"]*mathjax[^"]*)"', page, re.I)
    assert scripts, "no MathJax script on a lecture page"
    for src in scripts:
        local = (html_dir / "lectures" / src.split("?")[0]).resolve()
        assert local.exists(), f"MathJax script {src} is missing from the site"


def test_sidebar_lists_the_chapters(html_dir):
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    chapters = [e["file"] for part in toc["parts"] for c in part["chapters"] for e in [c, *c.get("sections", [])]]
    # index.html redirects to the root page, book/index.html, whose sidebar links are relative to book/
    landing = html_dir / "book" / "index.html"
    linked = {
        posixpath.normpath(posixpath.join("book", re.sub(r"\.html(#.*)?$", "", href)))
        for href in _parse(landing).links
        if not EXTERNAL.match(href)
    }
    for chapter in chapters:
        assert chapter in linked, f"the sidebar of index.html does not link {chapter}"
    assert "lectures/01_introduction" in chapters and "lectures/02_mde_mle" in chapters


def test_colab_buttons_open_notebooks_that_exist(html_dir):
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    repo = cfg["repository"]["url"].rstrip("/").removeprefix("https://github.com/")
    prefix = f"https://colab.research.google.com/github/{repo}/blob/{cfg['repository']['branch']}/"
    pages = sorted((html_dir / "lectures").glob("*.html")) + sorted((html_dir / "exercises").glob("*.html"))
    assert pages
    for page in pages:
        colab = [h for h in _parse(page).links if h.startswith("https://colab.research.google.com")]
        assert colab, f"{page.relative_to(html_dir)} has no Colab button"
        for href in colab:
            assert href.startswith(prefix), f"{href} does not point at the repository of _config.yml"
            target = href[len(prefix):]
            assert target.endswith(".ipynb"), f"Colab cannot open {target}: it is not an .ipynb"
            assert (ROOT / target).exists(), f"the Colab button of {page.name} points at {target}, not in the repo"


def test_solutions_stay_out_of_the_public_book(html_dir):
    assert not (html_dir / "solutions").exists(), "the public edition contains the solutions"


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def test_math_is_typeset_in_a_headless_browser(html_dir):
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is not installed: scripts/test.sh installs it (apt-get install chromium)")
        pytest.skip("Chromium is not installed (scripts/test.sh installs it when run as root)")
    page = html_dir / "lectures" / "03_flows_planar.html"
    shots = ROOT / "_build" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--virtual-time-budget=15000", "--window-size=1200,1600"]
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run([browser, *flags, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                             capture_output=True, text=True, timeout=120).stdout
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, *flags, f"--user-data-dir={profile}", f"--screenshot={shots / 'chapter3.png'}",
                        page.as_uri()], capture_output=True, text=True, timeout=120)
    n = dom.count("<mjx-container")
    assert n > 10, f"MathJax typeset {n} formulas on {page.name}; expected many (is MathJax loading offline?)"
    assert (shots / "chapter3.png").stat().st_size > 10_000


def test_no_warnings_in_executed_outputs(html_dir):
    """No executed cell of the book shows a warning (a UserWarning, a DeprecationWarning, ...) or
    writes to stderr: what a reader sees is what the text explains."""
    import nbformat

    found = []
    for path in _executed(html_dir):
        nb = nbformat.read(str(path), as_version=4)
        for index, cell in enumerate(nb.cells):
            for out in cell.get("outputs", []):
                text = out.get("text", "") if out.get("output_type") == "stream" else ""
                if (out.get("output_type") == "stream" and out.get("name") == "stderr") or re.search(
                        r"\b\w*Warning\b:", text):
                    found.append(f"{path.relative_to(ROOT)} cell {index}: {text.strip()[:160]}")
    assert not found, "warnings or stderr in the executed book:\n" + "\n".join(found)


def _executed(html_dir: Path) -> list[Path]:
    """The executed notebooks of the build whose HTML is ``html_dir`` (``<out>/_build/jupyter_execute``)."""
    executed = sorted((html_dir.parent / "jupyter_execute").rglob("*.ipynb"))
    assert executed, f"no executed notebooks beside {html_dir}: build the book first"
    return executed


def test_printed_outputs_fit_the_column(html_dir):
    """Text that a cell prints fits the book's code column (88 characters), like the code itself
    (tests/test_prose.py): a reader should not scroll sideways to read a result."""
    import nbformat

    long = []
    for path in _executed(html_dir):
        nb = nbformat.read(str(path), as_version=4)
        for index, cell in enumerate(nb.cells):
            for out in cell.get("outputs", []):
                text = out.get("text", "") if out.get("output_type") == "stream" else ""
                text += (out.get("data") or {}).get("text/plain", "") if "data" in out else ""
                if "data" in out and "image/png" in out["data"]:
                    continue  # a figure's text/plain is its repr, which the page does not show
                long += [f"{path.relative_to(ROOT)} cell {index}: {len(line)}: {line[:100]}"
                         for line in text.split("\n") if len(line) > 88]
    assert not long, "printed lines wider than the column (88 characters):\n" + "\n".join(long)
