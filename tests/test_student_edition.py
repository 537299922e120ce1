"""The student edition generated from the real course notebooks (the generator itself: test_student.py)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from molft_utils.runs.batch import discover_notebooks
from molft_utils.teaching.markup import BEGIN, CHECK_TAG, END, count_exercises
from molft_utils.teaching.student import generate

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = discover_notebooks()


def _solution_lines(nb: nbformat.NotebookNode) -> set[str]:
    lines: set[str] = set()
    for cell in nb.cells:
        inside = False
        for line in cell.source.splitlines():
            if line.strip() == BEGIN:
                inside = True
            elif line.strip() == END:
                inside = False
            elif inside and len(line.strip()) > 12:  # short lines ("return x") may legitimately recur
                lines.add(line.strip())
    return lines


@pytest.fixture(scope="module")
def edition(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("assignments")
    generate(NOTEBOOKS[0].parent, out)
    return out


def test_every_notebook_has_a_student_edition(edition: Path) -> None:
    assert sorted(p.name for p in edition.glob("*.ipynb")) == [p.name for p in NOTEBOOKS]
    assert (edition / "README.md").is_file()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_student_edition_has_no_solution_code(edition: Path, path: Path) -> None:
    solution = nbformat.read(path, as_version=4)
    student = nbformat.read(edition / path.name, as_version=4)
    nbformat.validate(student)
    assert count_exercises(student) == count_exercises(solution) >= 3
    code = "\n".join(c.source for c in student.cells if c.cell_type == "code")
    assert BEGIN not in code and END not in code
    leaked = {line for line in _solution_lines(solution) if line in code}
    assert not leaked, f"solution lines in the student edition: {sorted(leaked)[:3]}"
    assert code.count("raise NotImplementedError(") >= count_exercises(solution)


def test_regeneration_is_byte_identical(edition: Path, tmp_path: Path) -> None:
    generate(NOTEBOOKS[0].parent, tmp_path)
    for path in sorted(edition.iterdir()):
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name


@pytest.mark.integration
def test_check_cells_fail_until_the_exercises_are_done(edition: Path, tmp_path: Path) -> None:
    """Executing the student edition of lesson 01 (smoke mode): every check cell raises."""
    nb = nbformat.read(edition / NOTEBOOKS[0].name, as_version=4)
    env = os.environ.copy()
    # reuse the suite's model cache when `make test` sets one (lesson 01's smoke models are trained once)
    os.environ.update({"MOLFT_SMOKE": "1", "MOLFT_CACHE": env.get("MOLFT_CACHE") or str(tmp_path / "cache")})
    try:
        NotebookClient(
            nb,
            timeout=600,
            kernel_name="python3",
            allow_errors=True,
            resources={"metadata": {"path": str(NOTEBOOKS[0].parent)}},
        ).execute()
    finally:
        os.environ.clear()
        os.environ.update(env)
    checks = [c for c in nb.cells if CHECK_TAG in c.metadata.get("tags", [])]
    assert len(checks) >= 3
    for cell in checks:
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert errors, f"check cell passed without the exercise being done:\n{cell.source[:200]}"
        # a stub inside a function raises when the check calls it; a stub at top level leaves a name undefined
        assert errors[0].ename in ("NotImplementedError", "NameError"), errors[0].ename
        if errors[0].ename == "NotImplementedError":
            assert re.search(r"Exercise", errors[0].evalue)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_quiz_answer_key_matches_the_quiz(path: Path) -> None:
    """The staff key has one answer per quiz question (so a changed quiz comes with a changed key)."""
    text = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")
    quiz = text[text.index("## Quiz") :].split("\n## ")[0]
    questions = re.findall(r"^\d+\. ", quiz, flags=re.MULTILINE)
    key = (Path(__file__).resolve().parents[1] / "staff" / "quiz_answer_key.md").read_text(encoding="utf-8")
    section = re.search(rf"^## {path.stem[:2]} .*?(?=^## |\Z)", key, flags=re.MULTILINE | re.DOTALL)
    assert section, f"staff/quiz_answer_key.md has no section '## {path.stem[:2]} ...'"
    answers = re.findall(r"^\d+\. ", section.group(0), flags=re.MULTILINE)
    assert len(answers) == len(questions) >= 3, f"{path.name}: {len(questions)} questions, {len(answers)} answers"


def test_release_holds_no_staff_material(tmp_path: Path) -> None:
    from molft_utils.teaching.student import build_release

    out = tmp_path / "release"
    build_release(NOTEBOOKS[0].parent, out)
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert not any(f.startswith(("staff/", "tests/")) for f in files)
    # from reports/: the summary, its figures and the run records the findings cells read; no executed notebook
    released_reports = {f for f in files if f.startswith("reports/")}
    assert "reports/summary.md" in released_reports
    assert all(f == "reports/summary.md" or f.endswith(("/result.json", ".png")) for f in released_reports)
    assert any(f.endswith("/result.json") for f in released_reports) == any(REPO.glob("reports/*/**/result.json"))
    assert {f"notebooks/{p.name}" for p in NOTEBOOKS} <= files and "molft_utils/teaching/student.py" in files
    for path in NOTEBOOKS:
        text = (out / "notebooks" / path.name).read_text(encoding="utf-8")
        assert "BEGIN SOLUTION" not in text and "Model answer" not in text
