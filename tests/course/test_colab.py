"""Colab-native .ipynb: MyST converted to Colab Markdown, book numbering, the set-up cell, releases.

The last test runs generated notebooks as Colab would: a fresh environment that already has torch
(and Colab's other preinstalled packages), the notebook's own set-up cell installing coursekit from
a local clone through a ``git+file://`` URL, then every cell, with nbclient.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from coursekit.course.colab import (Bibliography, BookIndex, ConversionError, Converter, make_parser,
                                    myst_leftovers, toc_documents)
from coursekit.course.notebooks import (FULL_MODE_TIMES, INTRO_TAG, PLACEHOLDER_URL, SETUP_TAG, CourseConfig, ReleaseError,
                                        expected_files, sync)

BIB = textwrap.dedent("""\
    @article{dinh2014nice, title={NICE}, author={Dinh, Laurent and Krueger, David and Bengio, Yoshua}, year={2014}}
    @article{du2019implicit, title={Implicit}, author={Du, Yilun and Mordatch, Igor}, year={2019}}
    @article{hyv2005, title={Score}, author={Hyv{\\"a}rinen, Aapo}, year={2005}}
    @article{oord2016, title={Pixel}, author={van den Oord, A{\\"a}ron and Kalchbrenner, Nal and Kavukcuoglu, Koray}, year={2016}}
    """)
URL = "https://book.example/"
BIB_URL = URL + "book/bibliography.html"


ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def generated():
    """Every generated file, computed in memory (nothing in the repository is written)."""
    return expected_files(ROOT)


@pytest.fixture(scope="module")
def ipynbs(generated):
    return {p: json.loads(t) for p, t in generated.items() if p.suffix == ".ipynb"}


@pytest.fixture
def demo(tmp_path):
    """A two-chapter book: its index and a converter factory."""
    bib = tmp_path / "refs.bib"
    bib.write_text(BIB, encoding="utf-8")
    pages = {
        "lectures/01_a": ["# One\n\n$$ a $$ (eq-a1)\n\n:::{prf:definition} D\n:label: def-a\nx\n:::\n"],
        "lectures/02_b": ["(sec-b)=\n# Two\n\n$$\nb = 1\n$$ (eq-b1)\n",
                          ":::{prf:proposition} First\n:label: prop-b\n\n$$ c $$ (eq-b2)\n:::\n"],
        "exercises/ex02_b": [":::{exercise} Sum\n:label: ex-2-1\nDo it.\n:::\n\n:::{exercise} Product\n:label: ex-2-2\n:::\n"],
    }
    docs = [("book/index", ()), ("lectures/01_a", (1,)), ("lectures/02_b", (2,)), ("exercises/ex02_b", (2,))]
    index = BookIndex.build(docs, pages.get)
    bibliography = Bibliography([bib], BIB_URL)
    return index, lambda doc="lectures/02_b": Converter(index, bibliography, URL, doc)


# ---------------------------------------------------------------------------------- conversion
def test_citations_are_linked_author_year_text(demo):
    _, conv = demo
    c = conv()
    assert c.convert("NICE {cite:p}`dinh2014nice` works.") == f"NICE \\[[Dinh *et al.*, 2014]({BIB_URL})\\] works."
    assert c.convert("{cite:t}`du2019implicit` show") == f"Du and Mordatch \\[[2019]({BIB_URL})\\] show"
    two = c.convert("{cite:p}`hyv2005,oord2016`")
    assert two == f"\\[[Hyvärinen, 2005]({BIB_URL}), [van den Oord *et al.*, 2016]({BIB_URL})\\]"
    with pytest.raises(ConversionError, match="nokey"):
        c.convert("{cite:p}`nokey`")


def test_references_become_the_books_numbers(demo):
    index, conv = demo
    assert index.targets["eq-a1"].number == (1, 1) and index.targets["def-a"].number == (1, 1)
    # chapter 2: counters per figure type, shared by the chapter page and the exercise page below it
    assert index.targets["eq-b1"].number == (2, 1) and index.targets["eq-b2"].number == (2, 2)
    assert index.targets["ex-2-2"].name == "Exercise 2.2" and index.targets["prop-b"].name == "Proposition 2.1"
    out = conv("exercises/ex02_b").convert(
        "See {eq}`eq-b2`, {prf:ref}`prop-b`, {prf:ref}`that result <prop-b>`, {numref}`ex-2-1`, "
        "{numref}`Exercise %s <ex-2-2>`, {ref}`sec-b`, {doc}`../lectures/01_a` and {math}`x^2`.")
    assert out == ("See (2.2), Proposition 2.1, that result, Exercise 2.1, Exercise 2.2, Two, "
                   f"[One]({URL}lectures/01_a.html) and $x^2$.")
    with pytest.raises(ConversionError, match="unknown label"):
        conv().convert("{eq}`eq-nowhere`")


def test_directives_become_headed_blocks_and_labels_disappear(demo):
    _, conv = demo
    c = conv()
    out = c.convert("(sec-b)=\n# Two\n% a comment\n\n$$\nb = 1\n$$ (eq-b1)\n")
    assert out.strip() == "# Two\n\n$$\nb = 1\n\\tag{2.1}\n$$"
    out = c.convert(":::{prf:proposition} First\n:label: prop-b\n\n$$ c $$ (eq-b2)\n:::\n")
    assert out.strip() == "> **Proposition 2.1** (First)\n>\n> $$ c \\tag{2.2}\n> $$"
    ex = conv("exercises/ex02_b")
    out = ex.convert(":::{exercise} Sum {cite:p}`du2019implicit`\n:label: ex-2-1\nDo it.\n:::\n")
    assert out.strip() == f"> **Exercise 2.1** (Sum \\[[Du and Mordatch, 2019]({BIB_URL})\\])\n>\n> Do it."
    out = ex.convert(":::{solution} ex-2-1\n:class: dropdown\nDone.\n:::")
    assert out.strip().startswith("> **Solution to Exercise 2.1** (Sum")
    note = c.convert("```{note}\nCareful.\n```\n\n```{admonition} A title\n:class: warning\nText.\n```")
    assert note.strip() == "> **Note**\n>\n> Careful.\n\n> **A title**\n>\n> Text."
    proof = c.convert(":::{prf:proof}\nBecause.\n:::")
    assert proof.strip() == "> **Proof.**\n>\n> Because."


def test_dropdown_answers_stay_folded(demo):
    """An answer the book folds away (admonition with :class: dropdown) is an HTML <details> block in
    Colab: folded until clicked, its Markdown (a nested directive, math) rendered inside."""
    from markdown_it import MarkdownIt

    _, conv = demo
    src = ("::::{admonition} Show the answer (Exercise 2.1)\n:class: dropdown\n\n"
           ":::{note}\n$a + b$ is *it*.\n:::\n::::\n")
    out = conv().convert(src).strip()
    assert out.startswith("<details>\n<summary><b>Show the answer (Exercise 2.1)</b></summary>\n\n")
    assert out.endswith("\n\n</details>") and "> **Note**" in out
    html = MarkdownIt("commonmark").render(out)
    assert "<em>it</em>" in html and "$a + b$" in html and ":class:" not in html and "{prf" not in html
    plain = conv().convert("```{admonition} Aside\nText.\n```").strip()
    assert plain == "> **Aside**\n>\n> Text."  # without the class: an open headed block, as before


def test_nesting_lists_and_code_fences_survive(demo):
    _, conv = demo
    src = textwrap.dedent("""\
        ::::{note}
        Outer {eq}`eq-a1`.

        :::{prf:proof}
        Inner.

        ```python
        x = "{cite:p}`not-a-citation`"
        ```
        :::
        ::::

        1. An item with a labelled equation:

           $$ z $$ (eq-b1)

        Code `` {eq}`eq-a1` `` stays code, and so does the fence:

        ```
        :::{exercise} not parsed
        ```
        """)
    out = conv().convert(src)
    assert "> **Note**" in out and "> > **Proof.**" in out
    assert '> > x = "{cite:p}`not-a-citation`"' in out and "> > ```python" in out
    assert "Outer (1.1)." in out
    assert "   $$ z \\tag{2.1}\n   $$" in out
    assert "`` {eq}`eq-a1` ``" in out and "```\n:::{exercise} not parsed\n```" in out


def test_figures_keep_their_caption(demo):
    index = BookIndex.build([("lectures/01_a", (1,))], {"lectures/01_a": [
        "```{figure} img/a.png\n:name: fig-a\n:alt: A plot\n\nThe *caption*.\n```"]}.get)
    c = Converter(index, demo[1]().bib, URL, "lectures/01_a")
    out = c.convert("```{figure} img/a.png\n:name: fig-a\n:alt: A plot\n\nThe *caption*.\n```")
    assert out.strip() == "![A plot](img/a.png)\n\n**Fig. 1.1** The *caption*."


def test_unknown_constructs_are_errors_not_raw_text(demo):
    _, conv = demo
    with pytest.raises(ConversionError, match="directive {tabbed}"):
        conv().convert(":::{tabbed} x\ny\n:::")
    with pytest.raises(ConversionError, match="role {kbd}"):
        conv().convert("Press {kbd}`Ctrl`.")


# ------------------------------------------------------------------------------- the real book
def test_book_numbers_match_the_source(root):
    """Known numbers, checked by reading the sources in _toc.yml order (as Sphinx numbers with numfig)."""
    import jupytext

    cfg = CourseConfig.read(root)

    def page(doc):
        path = root / f"{doc}.md"
        if doc.startswith("exercises/"):
            path = root / "solutions" / path.name  # same labelled items as the generated exercise page
        if not path.exists():
            return None
        return [c.source for c in jupytext.read(path).cells if c.cell_type == "markdown"]

    index = BookIndex.build(toc_documents(root / "_toc.yml"), page, make_parser(cfg.extensions))
    # lectures/03_flows_planar.md: eq-pushforward, eq-expectation, eq-cov are its 1st, 2nd, 3rd labelled equations
    assert [index.targets[k].number_text for k in ("eq-pushforward", "eq-expectation", "eq-cov")] == ["3.1", "3.2", "3.3"]
    # lectures/04_coupling_flows.md: eq-dequant-bound (line 292) then eq-interp (line 474)
    assert index.targets["eq-dequant-bound"].name == "(4.1)" and index.targets["eq-interp"].name == "(4.2)"
    assert index.targets["prop-triangular"].name == "Proposition 4.1"
    # exercise numbers are the ids the checks are registered under (the labels say the same)
    from coursekit.course.registry import registry

    course = [ex for ex in registry().values() if ex.fn.__module__.startswith("coursekit.course.checks.")]
    assert course
    for ex in course:  # (not the tests' demo exercises, registered when another test imports them)
        numbered = [t.number_text for t in index.by_doc[f"exercises/{ex.notebook}"] if t.figtype == "exercise"]
        assert ex.id in numbered, (ex.id, ex.notebook, numbered)
    for label, target in index.targets.items():
        if re.fullmatch(r"ex-\d+-\d+", label):
            assert target.number_text == label[3:].replace("-", "."), label


def test_no_generated_notebook_contains_myst(ipynbs):
    parser = make_parser()
    assert ipynbs
    for path, nb in ipynbs.items():
        for i, cell in enumerate(nb["cells"]):
            if cell["cell_type"] != "markdown":
                continue
            src = "".join(cell["source"])
            left = myst_leftovers(src, parser)
            assert not left, f"{path.name}, cell {i}: MyST left: {left}"
            # a second net, below the parser: no role or directive text outside code
            bare = re.sub(r"(`+).*?\1", "", src, flags=re.S)
            assert not re.search(r"\{[a-z]+(:[a-z]+)?\}`|^\s*:::|^:label:|\$\$[ \t]*\([\w-]+\)[ \t]*$", bare, re.M), (path.name, i)


def test_commonmark_rendering_shows_no_directive_text(ipynbs):
    from markdown_it import MarkdownIt

    cm = MarkdownIt("commonmark")
    leaks = re.compile(r"\{(cite|eq|prf|numref|ref|doc|glue|exercise|solution|note|admonition|math)[:}]|:::|"
                       r":label:|:class:|\]\(eq-|\((eq|ex|prop)-[\w-]+\)")
    for path, nb in ipynbs.items():
        for i, cell in enumerate(nb["cells"]):
            if cell["cell_type"] == "markdown":
                html = cm.render("".join(cell["source"]))
                visible = re.sub(r"<(code|pre)>.*?</\1>", "", html, flags=re.S)
                m = leaks.search(visible)
                assert not m, f"{path.name}, cell {i}: {visible[max(0, m.start() - 60):m.end() + 60]!r}"


def test_every_notebook_starts_with_the_intro_and_the_pinned_setup_cell(root, ipynbs):
    cfg = CourseConfig.read(root)
    for path, nb in ipynbs.items():
        intro, setup = nb["cells"][0], nb["cells"][1]
        assert INTRO_TAG in intro["metadata"]["tags"] and SETUP_TAG in setup["metadata"]["tags"]
        text = "".join(intro["source"])
        assert '"auto"' in text and "full on a GPU" in text and cfg.ref in text
        # the notebook's full-mode time: measured on a GPU, or said not to be, with the CPU time measured
        stem = path.stem
        assert stem in FULL_MODE_TIMES, f"{path}: no entry in FULL_MODE_TIMES (coursekit/course/notebooks.py)"
        gpu = re.search(r"takes \*\*[^*]+\*\* on a Colab T4 GPU \(measured \d{4}-\d\d-\d\d\)", text)
        cpu = re.search(r"has not been measured yet; on one thread of a 2-core CPU, full mode took \*\*[^*]+\*\* "
                        r"\(measured \d{4}-\d\d-\d\d\)", text)
        assert gpu or cpu, f"{path}: the intro cell states no measured full-mode time: {text}"
        src = "".join(setup["source"])
        lines = src.splitlines()
        assert lines[1] == 'MODE = "auto"  #@param ["auto", "fast", "full"]'
        assert f'COURSEKIT_URL = "{cfg.url}"' in src and f'COURSEKIT_REF = "{cfg.ref}"' in src
        assert '"--no-deps"' in src and "torch" not in re.sub(r"#.*|\"[^\"]*torch[^\"]*\"", "", src).replace(
            'find_spec("torch")', "")
        compile(src, str(path), "exec")


def test_release_refuses_placeholders(root, tmp_path):
    from coursekit.course.cli import main

    shutil.copy(root / "_config.yml", tmp_path / "_config.yml")
    (tmp_path / "solutions").mkdir()
    text = (tmp_path / "_config.yml").read_text(encoding="utf-8")
    assert PLACEHOLDER_URL in text, "update this test once the real URL is in _config.yml"
    with pytest.raises(ReleaseError, match="placeholder"):
        sync(tmp_path, release=True)
    assert main(["sync", "--root", str(tmp_path), "--release"]) == 3
    real = text.replace(PLACEHOLDER_URL, "https://github.com/real-org/real-repo")
    (tmp_path / "_config.yml").write_text(real.replace("ref: v0.1.0", "ref: main"), encoding="utf-8")
    with pytest.raises(ReleaseError, match="a branch"):
        sync(tmp_path, release=True)
    (tmp_path / "_config.yml").write_text(real, encoding="utf-8")
    cfg = CourseConfig.read(tmp_path)
    assert cfg.release_problems() == [] and cfg.book_url == "https://real-org.github.io/real-repo/"


def test_mode_form_field_is_read_and_the_environment_wins(monkeypatch):
    from coursekit import config

    main = sys.modules["__main__"]
    monkeypatch.delenv(config.MODE_ENV, raising=False)
    monkeypatch.setattr(main, "MODE", "full", raising=False)
    assert config.mode() == "full" and config.mode_source() == "MODE in the set-up cell"
    monkeypatch.setattr(main, "MODE", "auto")
    import torch

    assert config.mode() == ("full" if torch.cuda.is_available() else "fast")
    monkeypatch.setenv(config.MODE_ENV, "fast")
    monkeypatch.setattr(main, "MODE", "full")
    assert config.mode() == "fast" and config.mode_source() == config.MODE_ENV
    monkeypatch.delenv(config.MODE_ENV)
    monkeypatch.setattr(main, "MODE", "quick")
    with pytest.raises(ValueError, match="set-up cell"):
        config.mode()


# ------------------------------------------------------------------------------ simulated Colab
COLAB_PREINSTALLED = ["torch==2.13.0", "numpy", "matplotlib", "scikit-learn", "tqdm", "ipykernel", "nbclient",
                      "nbformat"]
COLAB_NOTEBOOKS = ["lectures/01_introduction.ipynb", "solutions/ex04_coupling.ipynb", "exercises/ex04_coupling.ipynb"]

_DRIVER = textwrap.dedent("""\
    import json, sys, nbformat
    from nbclient import NotebookClient
    path, workdir, out, fast = sys.argv[1:5]
    nb = nbformat.read(path, as_version=4)
    if fast == "1":  # what choosing "fast" in Colab's drop-down does to the form line
        nb.cells[1].source = nb.cells[1].source.replace('MODE = "auto"', 'MODE = "fast"', 1)
    nb.cells.append(nbformat.v4.new_code_cell(
        "import sys, json, importlib.metadata as md, torch, coursekit\\n"
        "print('PROBE', json.dumps({'prefix': sys.prefix, 'coursekit': coursekit.__file__, 'torch': torch.__file__,"
        " 'torch_version': torch.__version__, 'direct_url': json.loads(md.distribution('coursekit')"
        ".read_text('direct_url.json') or '{}')}))"))
    client = NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": workdir}})
    client.execute()
    nbformat.write(nb, out)
    """)


def _colab_base(tmp_root: Path) -> Path:
    """Colab's preinstalled packages (torch 2.13.0 and the usual ones): built once, then reused.

    Cached in ``$COURSEKIT_COLAB_BASE`` (default ``~/.cache/coursekit/colab-base``): building it takes
    about two minutes here. Each test run layers a fresh, empty environment over it, so that nothing a
    previous run installed (coursekit) is visible.
    """
    base = Path(os.environ.get("COURSEKIT_COLAB_BASE", Path.home() / ".cache" / "coursekit" / "colab-base"))
    py = base / "bin" / "python"
    probe = "import torch, numpy, matplotlib, sklearn, tqdm, ipykernel, nbclient; assert torch.__version__.startswith('2.13.0')"
    if py.exists() and subprocess.run([py, "-c", probe], capture_output=True).returncode == 0:
        return base
    shutil.rmtree(base, ignore_errors=True)
    base.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", base], check=True)
    subprocess.run([py, "-m", "pip", "install", "-q", *COLAB_PREINSTALLED], check=True)
    subprocess.run([py, "-m", "pip", "uninstall", "-y", "-q", "coursekit"], capture_output=True)
    return base


def _site_packages(python: Path) -> str:
    return subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.notebooks
def test_simulated_colab_runs_notebooks_from_their_own_setup_cell(root, tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is needed for a git+file:// install")
    # 1. the course repository, as published: working tree -> a git repository with a tag, whose
    #    _config.yml names itself (file://) and that tag; its notebooks generated by coursekit sync
    repo = tmp_path / "repo"
    ignore = shutil.ignore_patterns(".venv", "_build", ".git", "*.ipynb", "__pycache__", ".pytest_cache", "*.egg-info")
    shutil.copytree(root, repo, ignore=ignore)
    tag = "colab-test"
    cfg = (repo / "_config.yml").read_text(encoding="utf-8")
    current = CourseConfig.read(root)
    cfg = cfg.replace(f"url: {current.url}", f"url: file://{repo}").replace(f"ref: {current.ref}", f"ref: {tag}")
    (repo / "_config.yml").write_text(cfg, encoding="utf-8")
    assert CourseConfig.read(repo).ref == tag and CourseConfig.read(repo).url == f"file://{repo}"
    for path, text in expected_files(repo).items():
        if path.suffix == ".ipynb" and str(path.relative_to(repo)) in COLAB_NOTEBOOKS:
            path.write_text(text, encoding="utf-8")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "course"], ["tag", tag]):
        subprocess.run(git + args, check=True, capture_output=True)

    # 2. "Colab": torch and friends preinstalled, no coursekit; a fresh environment over them
    base = _colab_base(tmp_path)
    env_dir = tmp_path / "colab"
    subprocess.run([sys.executable, "-m", "venv", env_dir], check=True)
    py = env_dir / "bin" / "python"
    Path(_site_packages(py), "colab_preinstalled.pth").write_text(_site_packages(base / "bin" / "python") + "\n")
    torch_probe = [py, "-c", "import torch, os; print(torch.__file__, torch.__version__, os.path.getmtime(torch.__file__))"]
    before = subprocess.run(torch_probe, capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert subprocess.run([py, "-c", "import coursekit"], capture_output=True, cwd=tmp_path).returncode != 0
    run_env = {k: v for k, v in os.environ.items() if not k.startswith(("COURSEKIT_", "PYTHON", "VIRTUAL_ENV", "JUPYTER"))}
    run_env.update(PATH=f"{env_dir / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}", OMP_NUM_THREADS="1",
                   JUPYTER_PATH=str(env_dir / "share" / "jupyter"), JUPYTER_DATA_DIR=str(tmp_path / "jupyter-data"))
    driver = tmp_path / "driver.py"
    driver.write_text(_DRIVER, encoding="utf-8")
    content = tmp_path / "content"  # Colab's working folder: not the repository
    content.mkdir()

    # 3. each notebook, whole, from its own set-up cell
    for k, rel in enumerate(COLAB_NOTEBOOKS):
        out = tmp_path / f"out{k}.ipynb"
        subprocess.run([py, driver, repo / rel, content, out, "1" if k == 0 else "0"], env=run_env, check=True,
                       timeout=600, cwd=content)
        nb = json.loads(out.read_text(encoding="utf-8"))
        errors, text = [], []
        for i, cell in enumerate(nb["cells"]):
            for o in cell.get("outputs", []):
                if o["output_type"] == "error":
                    errors.append((i, o["ename"], o["evalue"]))
                text.append(o.get("text", "") if isinstance(o.get("text", ""), str) else "".join(o["text"]))
        setup_out = "".join("".join(o.get("text", "")) for o in nb["cells"][1].get("outputs", []))
        if k == 0:
            assert "Successfully installed coursekit" in setup_out, setup_out
            assert "torch" not in setup_out.lower(), setup_out  # pip never touched torch
            assert "mode: fast (from MODE in the set-up cell)" in "".join(text)
        else:
            assert "coursekit: already installed" in setup_out, setup_out  # same ref: no reinstall
        if rel.startswith("exercises/"):  # blanks raise by design; everything else must run
            assert errors and all(e[1] == "NotImplementedError" or "ExerciseFailure" in e[1] or "AssertionError" == e[1]
                                  for e in errors), errors
            assert any("check" in "".join(c["source"]) for c in nb["cells"])
        else:
            assert not errors, f"{rel}: {errors}"
        probe = json.loads("".join(text).split("PROBE ", 1)[1].splitlines()[0])
        assert probe["prefix"] == str(env_dir)
        assert probe["coursekit"].startswith(_site_packages(py)), probe  # installed, not the clone or the dev tree
        assert probe["direct_url"]["vcs_info"]["requested_revision"] == tag
    after = subprocess.run(torch_probe, capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert after == before and "2.13.0" in after
