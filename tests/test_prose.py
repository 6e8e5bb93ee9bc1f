"""The prose of the book states no number that a cell did not compute.

A decimal number written in the Markdown of a chapter (``lectures/*.md``) or of a solution
notebook (``solutions/*.md``, the source of the exercise notebooks) is a claim: "the test NLL is
2.13", "0.92 of the samples", "14.61 dB". The book is built in two modes (``COURSEKIT_MODE=fast``
for CI, ``full`` for the published book), and a number copied by hand from one run is false in
the other, or after the next change of the code. So every such number must be one of:

* **glued**: written ``{glue:text}`name:.2f``` and computed by the cell that calls
  ``glue("name", value, display=False)`` (myst-nb pastes it into the page, in either mode);
* **quoted from a script**: the sentence names the script of ``benchmarks/`` that prints it
  (CONTRIBUTING.md: figures from other runs, seeds or modes come from such a script);
* **quoted from a paper**: the sentence cites the paper it comes from (``{cite:p}`` / ``{cite:t}``);
* **a constant** of the mathematics or of the slides, listed in :data:`ALLOWED` with its reason.

What is scanned: the Markdown cells, with code cells, inline code (which includes every role's
content, hence glued values), HTML comments, directive option lines (``:label:``, ``:class:``)
and the YAML front matter removed. **Math is formulas, not measurements**: a decimal inside
``$...$`` or ``$$...$$`` is a constant of a formula (a step size, a weight of a mixture, a clamp)
and is not scanned, unless the math is nothing but a number (digits with ``\\pm``, ``\\approx``,
``\\%``, units in ``\\text{}``...), which is a measurement written in math mode and is scanned
like prose. References to numbered things ("Exercise 3.2", "exercises 3.1–3.4", "eq. (2.10)",
"Proposition 2.1", "Python 3.10") are names, not numbers.

A second test checks that every ``{glue:text}`` refers to a value that a code cell of the same
notebook glues, and a third that no code line of a notebook is longer than 88 characters (the
width the book's code blocks show without a scroll bar, and ruff's line length).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted((ROOT / "lectures").glob("*.md")) + sorted((ROOT / "solutions").glob("*.md"))

#: Decimal numbers that may appear in prose outside math, each with the reason it is not a
#: measurement. Keep it short: a number that a cell computes is glued instead, and a constant
#: of a formula is written in the formula (math is not scanned). Empty today: every constant of
#: the chapters (sigma = 0.5, the logit margin 0.05, the clamp c = 0.5, ...) is written in math.
ALLOWED: dict[str, str] = {}


_FRONT = re.compile(r"\A---\n.*?\n---\n", re.S)
_CODE_CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
_FENCE = re.compile(r"^(`{3,}|~{3,})[^\n]*\n.*?^\1[ \t]*$", re.S | re.M)
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_OPTION = re.compile(r"^\s*:[\w-]+:.*$", re.M)
_DISPLAY = re.compile(r"\$\$.*?\$\$", re.S)
_INLINE_MATH = re.compile(r"(?<![\\$])\$(?!\$)(.+?)(?<![\\$])\$", re.S)
_INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.S)
_NAMES = re.compile(
    r"(?i)\b(?:exercises?|ex\.|figs?\.|figures?|sections?|equations?|eqs?\.|propositions?|"
    r"definitions?|algorithms?|tables?|chapters?|steps?|python|version|v)\s*\(?\d+\.\d+\)?"
    r"(?:\s*(?:,|and|or|to|–|-)\s*\(?\d+\.\d+\)?)*"
)
_REF_IN_PARENS = re.compile(r"\(\d+\.\d+\)")  # "(2.10)": an equation number
_DECIMAL = re.compile(r"(?<![\w.])[-+]?\d+\.\d+(?![\w.]*\d)")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z(*`{$])")
_BENCHMARK = re.compile(r"benchmarks/\w+\.py")
_CITE = re.compile(r"\{cite:[a-z]+\}")
_BARE_MATH = re.compile(r"^[\s\d.,+\-−~]*(?:(?:\\pm|\\approx|\\%|\\,|\\;|\\times|\\text\{[^}]*\}|\\mathrm\{[^}]*\})"
                        r"[\s\d.,+\-−~]*)*$")


def _markdown(text: str) -> str:
    """The Markdown of a jupytext MyST page, code cells and front matter removed."""
    text = _FRONT.sub("", text)
    text = _CODE_CELL.sub("\n", text)
    return text


def _prose(markdown: str) -> str:
    """What a reader reads as sentences: no code, comments, options; bare-number math kept."""
    text = _COMMENT.sub(" ", markdown)
    text = _FENCE.sub(" ", text)
    text = _OPTION.sub(" ", text)
    text = _DISPLAY.sub(" ", text)
    text = _INLINE_MATH.sub(lambda m: " " + m.group(1) + " " if _BARE_MATH.match(m.group(1)) else " ", text)
    text = _INLINE_CODE.sub(lambda m: " `code` " if "benchmarks/" not in m.group(2) else m.group(0), text)
    text = re.sub(r"\\pm|\\approx", " ", text)
    return text


def stated_numbers(text: str) -> list[tuple[str, str]]:
    """(number, sentence) for every decimal number of the prose that needs a source."""
    found = []
    for paragraph in re.split(r"\n\s*\n", _prose(_markdown(text))):
        for sentence in _SENTENCE.split(" ".join(paragraph.split())):
            if _BENCHMARK.search(sentence) or _CITE.search(sentence):
                continue
            plain = _NAMES.sub(" ", sentence)
            plain = _REF_IN_PARENS.sub(" ", plain)
            for m in _DECIMAL.finditer(plain):
                number = m.group(0).lstrip("+-")
                if number not in ALLOWED:
                    found.append((number, sentence))
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_numbers_in_prose_come_from_the_computation(page):
    found = stated_numbers(page.read_text(encoding="utf-8"))
    assert not found, (
        f"{page.relative_to(ROOT)} states numbers that no cell computes (glue them, name the "
        "benchmarks/ script, cite the paper, or add a constant to ALLOWED with its reason):\n"
        + "\n".join(f"  {n}: ...{s[:160]}..." for n, s in found)
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_glued_values_exist(page):
    text = page.read_text(encoding="utf-8")
    glued = set(re.findall(r"""\bglue\(\s*["'](\w+)["']""", text))
    used = set(re.findall(r"\{glue(?::\w+)?\}`(\w+)", _markdown(text)))
    assert used <= glued, f"{page.relative_to(ROOT)}: no cell glues {sorted(used - glued)}"


def _code(cell: str) -> str:
    """The code of a code cell, without its options block (``---`` YAML ``---``)."""
    if cell.startswith("---\n"):
        return cell[cell.index("\n---\n", 3) + 5 :]
    return cell


@pytest.mark.parametrize("page", PAGES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_code_lines_fit_the_column(page):
    rel = page.relative_to(ROOT).as_posix()
    text = page.read_text(encoding="utf-8")
    long = [
        line
        for cell in _CODE_CELL.findall(_FRONT.sub("", text))
        for line in _code(cell).split("\n")
        if len(line) > 88
    ]
    assert not long, f"{rel}: code lines over 88 characters (ruff format them):\n" + "\n".join(
        f"  {len(line)}: {line}" for line in long
    )


def test_the_scanner_sees_what_it_should():
    page = (
        "---\njupytext: 1.19.6\n---\n"
        "The test NLL is 2.13 nats. Exercise 3.2 and exercises 6.1 and 6.2 are names.\n\n"
        "A formula $\\gamma = 0.01$ is math; $2.234 \\pm 0.003$ is a number.\n\n"
        "Glued: {glue:text}`nll:.2f`. The sweep gives 0.92 (`benchmarks/bench_x.py`).\n\n"
        "```{code-cell} ipython3\nx = 3.14\n```\n"
        "Eq. (2.10) is a name; Python 3.10 too. A paper reports 3.49 {cite:p}`key`.\n"
    )
    assert [n for n, _ in stated_numbers(page)] == ["2.13", "2.234", "0.003"]
    ALLOWED["2.13"] = "a constant of this test"
    try:
        assert [n for n, _ in stated_numbers(page)] == ["2.234", "0.003"]
    finally:
        del ALLOWED["2.13"]
