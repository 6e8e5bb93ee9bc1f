"""Exercise generation from solutions: the markers, their errors, and the Colab set-up cell."""

import jupytext
import pytest

from coursekit.course.notebooks import CODE_BLANK, MarkerError, blank_notebook, blank_source, setup_cell_source


def test_code_region_becomes_indented_raise():
    src = "def f(x):\n    # BEGIN SOLUTION\n    y = x + 1\n    return y\n    # END SOLUTION\n"
    out = blank_source(src, "code")
    assert out == f"def f(x):\n    {CODE_BLANK}\n"
    assert "x + 1" not in out


def test_inline_solution_becomes_ellipsis():
    assert blank_source("sigma2 = ((x - m) ** 2).mean()  # SOLUTION", "code") == "sigma2 = ..."
    assert blank_source("a, b = 1, 2  # SOLUTION", "code") == "a, b = ..."


def test_inline_solution_needs_an_assignment():
    with pytest.raises(MarkerError, match="name = expression"):
        blank_source("print(x)  # SOLUTION", "code")


def test_markdown_region_removed_or_replaced_by_blank():
    src = "Before.\n<!-- BEGIN SOLUTION -->\nThe answer is 42.\n<!-- END SOLUTION -->\nAfter."
    assert blank_source(src, "markdown") == "Before.\nAfter."
    src = "<!-- BEGIN SOLUTION: $$p(x) = \\; ?$$ -->\n$$p(x) = q(x)$$\n<!-- END SOLUTION -->"
    assert blank_source(src, "markdown") == "$$p(x) = \\; ?$$"


@pytest.mark.parametrize(
    "src, kind, message",
    [
        ("# BEGIN SOLUTION\nx = 1\n", "code", "never closed"),
        ("x = 1\n# END SOLUTION\n", "code", "without a BEGIN"),
        ("# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION\n", "code", "nested"),
        ("<!-- BEGIN SOLUTION -->\ntext\n", "markdown", "never closed"),
        ("<!-- END SOLUTION -->\n", "markdown", "without a BEGIN"),
    ],
)
def test_unbalanced_markers_are_errors(src, kind, message):
    with pytest.raises(MarkerError, match=message):
        blank_source(src, kind, where="demo.md, cell 3")


def test_blank_notebook_drops_solution_cells_and_refuses_a_notebook_without_solutions(fixtures):
    nb = jupytext.read(fixtures / "demo_exercises.md")
    ex = blank_notebook(nb)
    text = "\n".join(c.source for c in ex.cells)
    assert "x * x" not in text and "3.14159" not in text
    assert CODE_BLANK in text and "pi = ..." in text and "x \\mapsto \\; ?" in text
    nb.cells.append(jupytext.reads("```{code-cell}\nz = 1\n```", fmt="md:myst").cells[0])
    nb.cells[-1].metadata["tags"] = ["solution"]
    assert len(blank_notebook(nb).cells) == len(ex.cells)
    with pytest.raises(MarkerError, match="no solution region"):
        blank_notebook(ex)


def _run_setup_cell(monkeypatch, returncode: int):
    """Execute the generated set-up cell with coursekit 'missing' and pip replaced by a recorder."""
    import importlib.metadata
    import subprocess
    import types

    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(list(cmd))
        return types.SimpleNamespace(returncode=returncode, stdout="pip says ok", stderr="pip says no")

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    src = setup_cell_source("https://github.com/org/repo", "v9.8.7")
    namespace: dict = {}
    try:
        exec(compile(src, "setup-cell", "exec"), namespace)
    finally:
        monkeypatch.undo()
    return namespace, calls


def test_setup_cell_installs_the_pinned_ref_without_dependencies_and_never_torch(monkeypatch):
    namespace, calls = _run_setup_cell(monkeypatch, returncode=0)
    assert namespace["MODE"] == "auto"  # the Colab form field, read by coursekit.setup
    assert calls, "the set-up cell did not call pip although coursekit was missing"
    first = calls[0]
    assert first[1:4] == ["-m", "pip", "install"] and "--no-deps" in first
    assert "git+https://github.com/org/repo@v9.8.7" in first
    assert not any("torch" in arg for cmd in calls for arg in cmd), calls


def test_setup_cell_says_what_to_do_when_the_install_fails(monkeypatch):
    with pytest.raises(RuntimeError, match="No network") as err:
        _run_setup_cell(monkeypatch, returncode=1)
    assert "Private repository" in str(err.value) and "v9.8.7" in str(err.value)
