"""MyST Markdown to the plain Jupyter Markdown that Colab renders (CommonMark and ``$…$`` math).

The book's pages are MyST: directives (``:::{exercise}``, ``:::{prf:proposition}``, ```` ```{note} ````),
roles (``{cite:p}`key` ``, ``{eq}`label` ``), labelled equations (``$$ … $$ (label)``), targets and
comments. Colab shows all of them as raw text. :func:`BookIndex.build` numbers what the book numbers
(the way Sphinx does with ``numfig``: ``chapter.k`` per figure type, counted in table-of-contents order
over the chapter page and the pages below it), and :class:`Converter` rewrites the Markdown cells of
one page:

* ``{cite:p}`a,b` `` becomes ``[Author et al., 2014, Other, 2017]`` and ``{cite:t}`a` `` becomes
  ``Author et al. [2014]``, each author–year linked to the book's bibliography page (the book's own
  author–year style, sphinxcontrib-bibtex's defaults);
* ``{eq}`label` `` becomes ``(4.1)``; ``{prf:ref}`label` `` becomes ``Proposition 4.1``; ``{numref}``,
  ``{ref}`` and ``{doc}`` become the number, the title or a link to the book page;
* ``$$ … $$ (label)`` keeps its math and gets ``\\tag{4.1}``; the label disappears, as do ``(target)=``
  lines and ``% comments``;
* exercise, solution, proposition-like, proof and admonition directives become *headed blocks*: a
  block quote whose first line is the bold heading the book prints (``**Exercise 4.1** (title)``);
  an admonition with ``:class: dropdown`` (an answer the book folds away) becomes an HTML
  ``<details>`` block, folded in Colab too;
* figures become an image and their caption (``**Fig. 4.1** caption``); ``{math}`` becomes ``$$``;
* ``{glue:text}`name:.2f` `` (a value myst-nb pastes from a code cell) becomes the code span ``name``.

The Markdown is parsed with markdown-it-py and the mdit-py-plugins that MyST-Parser itself uses, and
rewritten in place, span by span, so that everything else (lists, tables, code fences, HTML
comments) is kept byte for byte and directives may nest. A construct with no Colab rendering is an
error (:class:`ConversionError`), never passed through.
"""

from __future__ import annotations

import html
import posixpath
import re
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

__all__ = [
    "ConversionError", "Directive", "Target", "Bibliography", "BookIndex", "Converter",
    "make_parser", "parse_directive", "toc_documents", "myst_leftovers", "book_url_from_repository",
]

#: sphinx-proof's enumerable directives (``prf:proof`` is not numbered).
PROOF_TYPES = (
    "axiom", "theorem", "lemma", "algorithm", "definition", "remark", "conjecture", "corollary", "criterion",
    "example", "property", "observation", "proposition", "assumption", "notation",
)
#: Admonitions and the heading the book prints for them.
ADMONITIONS = {
    "note": "Note", "warning": "Warning", "tip": "Tip", "hint": "Hint", "important": "Important",
    "caution": "Caution", "attention": "Attention", "danger": "Danger", "error": "Error", "seealso": "See also",
    "admonition": "", "topic": "",
}
#: Sphinx's default ``numfig_format`` plus sphinx-exercise's and sphinx-proof's (used by ``{numref}``).
NUMFIG_FORMAT = {"figure": "Fig. %s", "table": "Table %s", "code-block": "Listing %s", "section": "Section %s",
                 "exercise": "Exercise %s", "displaymath": "(%s)", **{t: f"{t} %s" for t in PROOF_TYPES}}
#: What the book prints before the number of each numbered kind.
KIND_TITLE = {"figure": "Fig.", "exercise": "Exercise", "displaymath": "Equation",
              **{t: t.title() for t in PROOF_TYPES}}
DEFAULT_EXTENSIONS = ("amsmath", "dollarmath", "colon_fence", "deflist", "substitution")

_ROLE_TITLE = re.compile(r"^(?P<text>.*?)\s*<(?P<target>[^<>]+)>$", re.S)
_OPTION = re.compile(r"^:(?P<key>[\w-]+):(?:\s+(?P<value>.*?))?\s*$")
_DIRECTIVE_INFO = re.compile(r"^\{(?P<name>[\w:.+-]+)\}\s*(?P<arg>.*?)\s*$", re.S)


class ConversionError(ValueError):
    """A MyST construct that has no Colab rendering, or a reference that does not resolve."""


# --------------------------------------------------------------------------------------- parsing
def make_parser(extensions: Iterable[str] = DEFAULT_EXTENSIONS):
    """A markdown-it parser configured as MyST-Parser configures its own (``myst_parser.parsers.mdit``)."""
    from markdown_it import MarkdownIt
    from mdit_py_plugins.amsmath import amsmath_plugin
    from mdit_py_plugins.colon_fence import colon_fence_plugin
    from mdit_py_plugins.deflist import deflist_plugin
    from mdit_py_plugins.dollarmath import dollarmath_plugin
    from mdit_py_plugins.footnote import footnote_plugin
    from mdit_py_plugins.front_matter import front_matter_plugin
    from mdit_py_plugins.myst_blocks import myst_block_plugin
    from mdit_py_plugins.myst_role import myst_role_plugin
    from mdit_py_plugins.substitution import substitution_plugin

    extensions = set(extensions)
    md = (MarkdownIt("commonmark").enable("table").use(front_matter_plugin).use(myst_block_plugin)
          .use(myst_role_plugin).use(footnote_plugin).disable("footnote_inline").disable("footnote_tail"))
    if "dollarmath" in extensions:
        md.use(dollarmath_plugin, allow_labels=True, allow_space=True, allow_digits=True, double_inline=False)
    if "colon_fence" in extensions:
        md.use(colon_fence_plugin)
    if "amsmath" in extensions:
        md.use(amsmath_plugin)
    if "deflist" in extensions:
        md.use(deflist_plugin)
    if "substitution" in extensions:
        md.use(substitution_plugin)
    return md


@dataclass
class Directive:
    name: str
    argument: str
    options: dict
    body: str


def parse_directive(token) -> Directive | None:
    """The directive a ``colon_fence`` / ``fence`` token holds (``None`` for a plain code fence)."""
    if token.type not in ("colon_fence", "fence"):
        return None
    m = _DIRECTIVE_INFO.match(token.info.strip())
    if not m:
        return None
    lines = token.content.split("\n")
    options: dict[str, str] = {}
    i = 0
    if lines and lines[0].strip() == "---":  # YAML block of options
        import yaml

        end = next((j for j in range(1, len(lines)) if lines[j].strip() == "---"), None)
        if end is None:
            raise ConversionError(f"{{{m['name']}}}: its '---' options block is never closed")
        options = {str(k): "" if v is None else str(v) for k, v in (yaml.safe_load("\n".join(lines[1:end])) or {}).items()}
        i = end + 1
    else:
        while i < len(lines) and (opt := _OPTION.match(lines[i])):
            options[opt["key"]] = opt["value"] or ""
            i += 1
    body = "\n".join(lines[i:]).strip("\n")
    return Directive(m["name"], m["arg"], options, body)


# ----------------------------------------------------------------------------------- bibliography
class Bibliography:
    """Author–year labels of ``references.bib``, as sphinxcontrib-bibtex's ``author_year`` style prints them."""

    def __init__(self, paths: Iterable[Path], url: str):
        from pybtex.database import parse_file
        from pybtex.richtext import Text

        self.url = url
        self.entries: dict[str, tuple[list[str], str]] = {}
        for path in paths:
            for key, entry in parse_file(str(path)).entries.items():
                persons = entry.persons.get("author") or entry.persons.get("editor") or []
                names = [Text.from_latex(" ".join(p.prelast_names + p.last_names)).render_as("text") for p in persons]
                if not names:
                    names = [Text.from_latex(entry.fields.get("title", key)).render_as("text")]
                year = Text.from_latex(entry.fields.get("year", "n.d.")).render_as("text")
                self.entries[key.lower()] = (names, year)

    def authors(self, key: str, full: bool = False) -> str:
        names = self._entry(key)[0]
        if len(names) == 1:
            return names[0]
        if len(names) == 2:
            return f"{names[0]} and {names[1]}"
        if not full:
            return f"{names[0]} *et al.*"
        return ", ".join(names[:-1]) + ", and " + names[-1]

    def _entry(self, key: str):
        try:
            return self.entries[key.strip().lower()]
        except KeyError:
            raise ConversionError(f"citation key {key!r} is not in the bibliography") from None

    def cite(self, role: str, keys: str) -> str:
        """Markdown for ``{cite:p}`` (parenthetical) or ``{cite:t}`` (textual), and their variants."""
        variant = role.split(":", 1)[1]
        if variant not in ("p", "ps", "cp", "cps", "t", "ts", "ct", "cts"):
            raise ConversionError(f"{{{role}}} has no Colab rendering (use cite:p or cite:t)")
        full = variant.endswith("s")
        items = [k.strip() for k in keys.split(",") if k.strip()]
        if any("{" in k for k in items):
            raise ConversionError(f"{{{role}}}`{keys}`: pre- and post-texts are not supported")
        if "p" in variant:
            parts = [f"[{self.authors(k, full)}, {self._entry(k)[1]}]({self.url})" for k in items]
            text = "\\[" + ", ".join(parts) + "\\]"
        else:
            parts = [f"{self.authors(k, full)} \\[[{self._entry(k)[1]}]({self.url})\\]" for k in items]
            text = ", ".join(parts)
        return text[0].upper() + text[1:] if variant.startswith("c") else text


# ----------------------------------------------------------------------------------------- numbers
@dataclass
class Target:
    """Something the book numbers (or titles): an equation, exercise, proposition, figure or section."""

    figtype: str  # "displaymath", "exercise", "proposition", ..., "figure", "section"
    label: str | None
    doc: str
    number: tuple[int, ...] = ()
    title: str = ""  # the directive's title argument (MyST), or a section's heading text

    @property
    def number_text(self) -> str:
        return ".".join(map(str, self.number))

    @property
    def name(self) -> str:
        """How the book refers to it: ``Exercise 4.1``, ``Proposition 4.1``, ``(4.1)``."""
        if self.figtype == "displaymath":
            return f"({self.number_text})"
        if self.figtype == "section":
            return self.title
        return f"{KIND_TITLE[self.figtype]} {self.number_text}".strip()


def toc_documents(toc_path: Path) -> list[tuple[str, tuple[int, ...]]]:
    """Every document of a Jupyter Book ``_toc.yml`` in reading order, with its chapter number.

    Sphinx numbers the entries of each ``numbered`` toctree from 1 (every numbered part restarts);
    a document below a chapter (``sections:``) shares the chapter's number for ``numfig`` purposes
    (``numfig_secnum_depth: 1``). Documents outside numbered parts get ``()``.
    """
    import yaml

    toc = yaml.safe_load(Path(toc_path).read_text(encoding="utf-8"))
    out: list[tuple[str, tuple[int, ...]]] = [(toc["root"], ())]

    def entries(items, secnum: tuple[int, ...] | None):
        for k, item in enumerate(items or [], start=1):
            if "file" not in item:
                continue
            num = (k,) if secnum is None else secnum
            out.append((str(item["file"]), num))
            for key in ("sections", "chapters"):
                entries(item.get(key), num)

    for part in toc.get("parts") or [{"chapters": toc.get("chapters"), "numbered": toc.get("numbered")}]:
        numbered = bool(part.get("numbered"))
        chapters = part.get("chapters") or []
        if numbered:
            entries(chapters, None)
        else:
            for item in chapters:
                if "file" in item:
                    out.append((str(item["file"]), ()))
                    entries(item.get("sections"), ())
    return out


class BookIndex:
    """Numbers and titles of one edition of the book, as Sphinx assigns them."""

    def __init__(self):
        self.targets: dict[str, Target] = {}
        self.by_doc: dict[str, list[Target]] = defaultdict(list)
        self.titles: dict[str, str] = {}
        self.bibliography_doc = "book/bibliography"

    @classmethod
    def build(cls, docs: list[tuple[str, tuple[int, ...]]], sources: Callable[[str], list[str] | None],
              parser=None, numfig_secnum_depth: int = 1) -> "BookIndex":
        """``docs`` from :func:`toc_documents`; ``sources(doc)`` gives a page's Markdown cells (or ``None``)."""
        parser = parser or make_parser()
        index = cls()
        counters: dict[tuple[str, tuple[int, ...]], int] = defaultdict(int)

        def register(figtype: str, label: str | None, doc: str, secnum: tuple[int, ...], title: str = ""):
            key = secnum[:numfig_secnum_depth]
            counters[figtype, key] += 1
            target = Target(figtype, label or None, doc, (*key, counters[figtype, key]), title)
            index.by_doc[doc].append(target)
            if label:
                if label in index.targets:
                    raise ConversionError(f"{doc}: label {label!r} is also defined in {index.targets[label].doc}")
                index.targets[label] = target

        def scan(text: str, doc: str, secnum: tuple[int, ...]):
            tokens = parser.parse(text)
            pending_labels: list[str] = []
            for i, tok in enumerate(tokens):
                if tok.type == "myst_target":
                    pending_labels.append(tok.content.strip())
                elif tok.type == "heading_open":
                    heading = tokens[i + 1].content.strip()
                    if tok.tag == "h1" and doc not in index.titles:
                        index.titles[doc] = heading
                    for label in pending_labels:
                        index.targets[label] = Target("section", label, doc, (), heading)
                    pending_labels = []
                elif tok.type == "math_block_label":
                    register("displaymath", tok.info.strip(), doc, secnum)
                elif tok.type == "amsmath" and tok.meta.get("numbered") != "*":
                    register("displaymath", None, doc, secnum)
                elif (d := parse_directive(tok)) is not None:
                    kind = _enumerable(d)
                    if kind:
                        register(kind, d.options.get("label") or d.options.get("name"), doc, secnum, d.argument)
                    if d.name == "bibliography":
                        index.bibliography_doc = doc
                    if d.name not in ("code-cell", "code-block", "code", "sourcecode", "math"):
                        scan(d.body, doc, secnum)

        for doc, secnum in docs:
            cells = sources(doc)
            for text in cells or []:
                scan(text, doc, secnum)
        return index


def _enumerable(d: Directive) -> str | None:
    """The ``numfig`` figure type of a directive, or ``None`` when the book does not number it."""
    if "nonumber" in d.options:
        return None
    if d.name in ("exercise", "exercise-start"):
        return "exercise"
    if d.name.startswith("prf:") and d.name[4:] in PROOF_TYPES:
        return d.name[4:]
    if d.name == "math" and d.options.get("label"):
        return "displaymath"
    if d.name == "figure" and d.body.strip():  # Sphinx numbers captioned figures only
        return "figure"
    return None


# --------------------------------------------------------------------------------------- converter
def book_url_from_repository(url: str) -> str:
    """``https://github.com/org/repo`` -> ``https://org.github.io/repo/`` (where GitHub Pages publishes it)."""
    m = re.match(r"^https://github\.com/(?P<org>[^/]+)/(?P<repo>[^/]+?)(?:\.git)?/?$", url)
    if not m:
        raise ConversionError(f"cannot tell where the book of {url} is published; set coursekit: book_url: in _config.yml")
    return f"https://{m['org'].lower()}.github.io/{m['repo']}/"


class Converter:
    """Rewrites the Markdown cells of one page (``doc``), in order, for Colab."""

    def __init__(self, index: BookIndex, bibliography: Bibliography, book_url: str, doc: str, parser=None):
        self.index, self.bib, self.doc = index, bibliography, doc
        self.book_url = book_url if book_url.endswith("/") else book_url + "/"
        self.parser = parser or make_parser()
        self._queue = defaultdict(deque)
        for t in index.by_doc.get(doc, []):
            self._queue[t.figtype].append(t)

    # ---- numbering
    def _next(self, figtype: str, label: str | None) -> Target:
        if not self._queue[figtype]:
            raise ConversionError(f"{self.doc}: a {figtype} the book index does not know (label {label!r})")
        target = self._queue[figtype].popleft()
        if label and target.label != label:
            raise ConversionError(f"{self.doc}: numbering out of step: expected {target.label!r}, found {label!r}")
        return target

    def _resolve(self, label: str, role: str) -> Target:
        try:
            return self.index.targets[label.strip()]
        except KeyError:
            raise ConversionError(f"{self.doc}: {{{role}}}`{label}` refers to an unknown label") from None

    def page_url(self, doc: str) -> str:
        return f"{self.book_url}{doc}.html"

    # ---- entry point
    def convert(self, text: str) -> str:
        """Colab Markdown for one MyST Markdown cell."""
        tokens = self.parser.parse(text)
        starts = [0]
        for line in text.split("\n"):
            starts.append(starts[-1] + len(line) + 1)
        n_lines = len(starts) - 1

        def span(a: int, b: int) -> tuple[int, int]:
            return starts[a], min(starts[min(b, n_lines)], len(text))

        edits: list[tuple[int, int, str]] = []
        cursor = 0
        for tok in tokens:
            if tok.type == "inline":
                if tok.map is None:
                    continue
                a, b = span(*tok.map)
                cursor = self._inline(tok, text, max(a, cursor), b, edits)
                continue
            if tok.map is None:
                continue
            a, b = span(*tok.map)
            replacement = self._block(tok, text[a:b])
            if replacement is not None:
                edits.append((a, b, replacement))
                cursor = max(cursor, b)
        out, last = [], 0
        for a, b, new in sorted(edits):
            if a < last:
                raise ConversionError(f"{self.doc}: overlapping rewrites near {text[a:a + 40]!r}")
            out.append(text[last:a])
            out.append(new)
            last = b
        out.append(text[last:])
        return re.sub(r"\n{3,}", "\n\n", "".join(out))

    # ---- blocks
    def _block(self, tok, src: str) -> str | None:
        """Replacement of the whole lines ``src`` of a block token (``None``: keep them)."""
        trailing = "\n" if src.endswith("\n") else ""
        if tok.type in ("myst_target", "myst_line_comment", "front_matter", "myst_block_break"):
            return ""
        if tok.type == "math_block_label":
            target = self._next("displaymath", tok.info.strip())
            body = src.rstrip("\n")
            new = re.sub(r"\$\$\s*\(" + re.escape(tok.info.strip()) + r"\)\s*$", lambda _: f"\\tag{{{target.number_text}}}\n" + _indent_of(body.split("\n")[-1]) + "$$", body)
            if new == body:
                raise ConversionError(f"{self.doc}: cannot find the label of equation {tok.info!r}")
            return new + trailing
        if tok.type == "amsmath":
            prefix = _indent_of(src)
            body = _dedent(src.rstrip("\n"), prefix)
            if tok.meta.get("numbered") != "*":
                env = tok.meta.get("environment", "")
                number = self._next("displaymath", None).number_text
                body = body.replace(f"\\begin{{{env}}}", f"\\begin{{{env}*}}", 1)
                body = _replace_last(body, f"\\end{{{env}}}", f"\\tag{{{number}}}\n\\end{{{env}*}}")
            return _prefix(f"$$\n{body}\n$$", prefix) + trailing
        if tok.type.startswith("footnote") or tok.type.startswith("substitution") or tok.type == "dl_open":
            raise ConversionError(f"{self.doc}: {tok.type.split('_')[0]} syntax has no Colab rendering: {src.strip()[:60]!r}")
        d = parse_directive(tok)
        if d is None:
            return None
        first = src.split("\n", 1)[0]
        prefix = first[: len(first) - len(first.lstrip(" >"))]
        return "\n" + _prefix(self._directive(d), prefix) + "\n" + trailing

    def _directive(self, d: Directive) -> str:
        title = self.convert(d.argument).strip() if d.argument else ""
        name = d.name
        if name in ("exercise", "exercise-start"):
            label = d.options.get("label")
            if "nonumber" in d.options:
                head = "**Exercise**"
            else:
                head = f"**{self._next('exercise', label).name}**"
            head += f" ({title})" if title else ""
            return self._headed(head, d.body) if name == "exercise" else head
        if name in ("solution", "solution-start"):
            ex = self._resolve(d.argument, name)
            ex_title = self.convert(ex.title).strip() if ex.title else ""
            head = f"**Solution to {ex.name}**" + (f" ({ex_title})" if ex_title else "")
            return self._headed(head, d.body) if name == "solution" else head
        if name in ("exercise-end", "solution-end"):
            return ""
        if name == "prf:proof":
            return self._headed("**Proof.**", d.body)
        if name.startswith("prf:") and name[4:] in PROOF_TYPES:
            kind = name[4:]
            if "nonumber" in d.options:
                head = f"**{KIND_TITLE[kind]}**"
            else:
                head = f"**{self._next(kind, d.options.get('label')).name}**"
            return self._headed(head + (f" ({title})" if title else ""), d.body)
        if name in ADMONITIONS:
            heading = title if name in ("admonition", "topic") else ADMONITIONS[name]
            body = d.body
            if name not in ("admonition", "topic") and title:  # e.g. ```{note} First line
                body = title + "\n\n" + d.body
            if "dropdown" in d.options.get("class", "").split():  # folded in the book: folded in Colab too
                return self._folded(heading, body)
            return self._headed(f"**{heading}**", body)
        if name == "math":
            body = d.body.strip("\n")
            if d.options.get("label"):
                body += f" \\tag{{{self._next('displaymath', d.options['label']).number_text}}}"
            return f"$$\n{body}\n$$"
        if name in ("code-block", "code", "sourcecode"):
            lang = d.argument.split()[0] if d.argument else ""
            fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", d.body)), default=0))
            return f"{fence}{lang}\n{d.body}\n{fence}"
        if name in ("figure", "image"):
            alt = d.options.get("alt", "")
            image = f"![{alt}]({d.argument.strip()})"
            if name == "image" or not d.body.strip():
                return image
            number = self._next("figure", d.options.get("label") or d.options.get("name")).number_text
            caption = self.convert(d.body).strip()
            return f"{image}\n\n**Fig. {number}** {caption}"
        if name == "bibliography":
            return f"The references are listed in the book's [bibliography]({self.page_url(self.index.bibliography_doc)})."
        raise ConversionError(f"{self.doc}: the MyST directive {{{name}}} has no Colab rendering; "
                              "add one to coursekit/course/colab.py")

    def _folded(self, head: str, body: str) -> str:
        """A block the reader opens by clicking its heading (HTML ``<details>``, which Jupyter and Colab
        render; the blank lines around the body let its Markdown, math included, render inside)."""
        content = self.convert(body).strip("\n") if body.strip() else ""
        summary = html.escape(head.replace("**", "").strip()) or "Details"
        return f"<details>\n<summary><b>{summary}</b></summary>\n\n{content}\n\n</details>"

    def _headed(self, head: str, body: str) -> str:
        content = self.convert(body).strip("\n") if body.strip() else ""
        lines = [f"> {head}"]
        if content:
            lines.append(">")
            lines += [f"> {line}".rstrip() if line.strip() else ">" for line in content.split("\n")]
        return "\n".join(lines)

    # ---- inline
    def _inline(self, tok, text: str, a: int, b: int, edits: list) -> int:
        """Queue the rewrites of the roles of one inline token found in ``text[a:b]``; return the new cursor."""
        pos = a
        for child in tok.children or []:
            if child.type == "code_inline":
                tick = re.compile(r"(?<!`)" + re.escape(child.markup) + r"(?!`)")
                m1 = tick.search(text, pos, b)
                m2 = tick.search(text, m1.end(), b) if m1 else None
                if m2:
                    pos = m2.end()
            elif child.type == "math_inline":
                k = text.find(child.content, pos, b)
                if k >= 0:
                    pos = k + len(child.content)
            elif child.type == "myst_role":
                name = child.meta["name"]
                pattern = re.compile(re.escape("{" + name + "}") + r"(`+)" + re.escape(child.content) + r"\1(?!`)")
                m = pattern.search(text, pos, b)
                if not m:
                    raise ConversionError(f"{self.doc}: cannot locate the role {{{name}}}`{child.content}` in its line")
                edits.append((m.start(), m.end(), self._role(name, child.content)))
                pos = m.end()
            elif child.type.startswith("footnote") or child.type.startswith("substitution"):
                raise ConversionError(f"{self.doc}: {child.type} has no Colab rendering")
        return pos

    def _role(self, name: str, content: str) -> str:
        if name.startswith("cite:") or name == "cite":
            return self.bib.cite(name if ":" in name else "cite:p", content)
        explicit = _ROLE_TITLE.match(content)
        text, label = (explicit["text"], explicit["target"]) if explicit else (None, content.strip())
        if name == "math":
            return f"${content}$"
        if name in ("glue", "glue:", "glue:any", "glue:text"):
            # myst-nb pastes a value computed by a code cell; in Colab that value lives in the kernel
            # under this name, so the text names it (the book shows the number).
            return f"`{content.split(':', 1)[0].strip()}`"
        if name in ("sub", "subscript"):
            return f"<sub>{content}</sub>"
        if name in ("sup", "superscript"):
            return f"<sup>{content}</sup>"
        if name == "eq":
            return f"({self._resolve(label, name).number_text})" if text is None else text
        if name == "prf:ref":
            return text if text is not None else self._resolve(label, name).name
        if name == "numref":
            target = self._resolve(label, name)
            template = text if text is not None else NUMFIG_FORMAT.get(target.figtype, "%s")
            return template.replace("%s", target.number_text).replace("{number}", target.number_text).replace(
                "{name}", target.title)
        if name == "ref":
            return text if text is not None else self._resolve(label, name).name
        if name == "doc":
            doc = label[:-3] if label.endswith(".md") else label
            if not doc.startswith("/"):
                doc = str(Path(self.doc).parent / doc)
            doc = posixpath.normpath(doc.lstrip("/"))
            return f"[{text or self.index.titles.get(doc, doc)}]({self.page_url(doc)})"
        raise ConversionError(f"{self.doc}: the MyST role {{{name}}} has no Colab rendering; add one to coursekit/course/colab.py")


def _indent_of(text: str) -> str:
    first = text.split("\n", 1)[0]
    return first[: len(first) - len(first.lstrip(" "))]


def _dedent(text: str, prefix: str) -> str:
    return "\n".join(line[len(prefix):] if line.startswith(prefix) else line.lstrip(" ") for line in text.split("\n"))


def _prefix(text: str, prefix: str) -> str:
    if not prefix:
        return text
    quote = prefix.strip()
    return "\n".join(prefix + line if line.strip() else quote for line in text.split("\n"))


def _replace_last(text: str, old: str, new: str) -> str:
    k = text.rfind(old)
    return text if k < 0 else text[:k] + new + text[k + len(old):]


# ------------------------------------------------------------------------------------------ checks
def myst_leftovers(text: str, parser=None) -> list[str]:
    """Every piece of MyST syntax a Markdown cell still contains (what Colab would show raw)."""
    parser = parser or make_parser()
    found = []
    for tok in parser.parse(text):
        if tok.type in ("myst_target", "myst_line_comment", "math_block_label", "amsmath", "front_matter",
                        "myst_block_break") or tok.type.startswith(("footnote", "substitution", "dl_")):
            found.append(f"{tok.type}: {tok.content.strip()[:60] or tok.markup}")
        elif tok.type in ("colon_fence", "fence") and parse_directive(tok) is not None:
            found.append(f"directive {{{parse_directive(tok).name}}}")
        elif tok.type == "colon_fence":
            found.append(f"colon fence ::: {tok.info}")
        for child in tok.children or []:
            if child.type == "myst_role" or child.type.startswith(("footnote", "substitution")):
                found.append(f"role {{{child.meta.get('name', child.type)}}}`{child.content}`")
    return found
