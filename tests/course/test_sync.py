"""exercises/ and every .ipynb are generated; the committed copies must be current."""

from coursekit.course.notebooks import sync


def test_generated_notebooks_are_current(root):
    report = sync(root, check=True)
    assert report.ok, (
        "generated notebooks are out of date; run `make sync` and commit:\n"
        + "\n".join([f"  stale: {f}" for f in report.stale] + [f"  orphan: {f}" for f in report.orphans])
    )


def test_every_notebook_page_has_a_colab_copy(root):
    for folder in ("lectures", "exercises", "solutions"):
        for md in (root / folder).glob("*.md"):
            assert md.with_suffix(".ipynb").exists(), f"{md.relative_to(root)} has no .ipynb for Colab"


def test_stale_exercise_is_detected(root, tmp_path):
    import shutil

    for item in ("_config.yml", "_toc.yml", "book", "solutions", "exercises", "lectures"):
        src = root / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / item)
    assert sync(tmp_path, check=True).ok
    solution = next((tmp_path / "solutions").glob("*.md"))
    solution.write_text(solution.read_text(encoding="utf-8") + "\nAn added sentence.\n", encoding="utf-8")
    report = sync(tmp_path, check=True)
    assert f"exercises/{solution.name}" in report.stale
    assert f"solutions/{solution.stem}.ipynb" in report.stale
