"""The real nbgrader on lesson 01 (smoke mode): generate_assignment, then autograde a right and a wrong answer.

This is the workflow course staff use (``nbgrader`` is in the dev extra); the source notebooks carry the
nbgrader metadata written by ``python -m molft_utils.teaching.student --annotate notebooks``.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager

from molft_utils.runs.batch import discover_notebooks
from molft_utils.teaching.grading import annotate, nbgrader_problems

NOTEBOOKS = discover_notebooks()
LESSON = NOTEBOOKS[0]  # 01: the cheapest in smoke mode (02-05 first train 01's models)
ASSIGNMENT = "lesson01"
REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_sources_carry_nbgrader_metadata(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    assert annotate(nb, path.stem[:2]) == nb, "run: python -m molft_utils.teaching.student --annotate notebooks"
    assert nbgrader_problems(nb, path.name) == []
    kinds = [c.metadata.get("nbgrader", {}) for c in nb.cells]
    assert sum(k.get("grade", False) and not k.get("solution") for k in kinds) >= 4  # autograded checks
    assert any(k.get("grade") and k.get("solution") for k in kinds)  # a manually graded interpretation answer
    assert any(k.get("locked") and not k.get("grade") for k in kinds)  # a read-only cell


def _nbgrader(course: Path, *args: str, env: dict[str, str]) -> None:
    cmd = [sys.executable, "-m", "nbgrader", *args, "--debug"]
    res = subprocess.run(cmd, cwd=course, env=env, capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, f"{' '.join(args)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-6000:]}"


def _submission(release: nbformat.NotebookNode, source: nbformat.NotebookNode, wrong: bool) -> nbformat.NotebookNode:
    """The released notebook with every solution cell filled in from the source (one wrong when ``wrong``)."""
    answers = {c.metadata["nbgrader"]["grade_id"]: c.source for c in source.cells if "nbgrader" in c.metadata}
    nb = copy.deepcopy(release)
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if not meta.get("solution"):
            continue
        cell.source = answers[meta["grade_id"]]
        if wrong and "def masked_mean_pool" in cell.source:
            # a plausible mistake: the mean over all positions, padding included
            cell.source = "import torch\n\n\ndef masked_mean_pool(hidden, attention_mask):\n    return hidden.mean(1)\n"
    return nb


@pytest.fixture(scope="module")
def course(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    if "molft" not in KernelSpecManager().find_kernel_specs():
        pytest.fail("the notebooks' kernel 'molft' is not registered: run `make env` (it runs ipykernel install)")
    root = tmp_path_factory.mktemp("course")
    (root / "nbgrader_config.py").write_text(
        'c = get_config()\nc.CourseDirectory.course_id = "molft"\nc.Execute.timeout = 1200\n', encoding="utf-8"
    )
    (root / "source" / ASSIGNMENT).mkdir(parents=True)
    shutil.copy(LESSON, root / "source" / ASSIGNMENT / LESSON.name)
    env = os.environ | {
        "MOLFT_SMOKE": "1",
        "TQDM_DISABLE": "1",
        # one model cache for both submissions (and the rest of the suite when `make test` sets it)
        "MOLFT_CACHE": os.environ.get("MOLFT_CACHE") or str(root / "cache"),
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        # nbgrader runs the `alembic` command of its environment to create the gradebook
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    _nbgrader(root, "generate_assignment", ASSIGNMENT, "--create", "--force", env=env)
    release = nbformat.read(root / "release" / ASSIGNMENT / LESSON.name, as_version=4)
    source = nbformat.read(LESSON, as_version=4)
    for student, wrong in (("right", False), ("wrong", True)):
        folder = root / "submitted" / student / ASSIGNMENT
        folder.mkdir(parents=True)
        nbformat.write(_submission(release, source, wrong), folder / LESSON.name)
    _nbgrader(root, "autograde", ASSIGNMENT, "--create", "--force", env=env)  # every submission, one process
    return root, env


@pytest.mark.integration
def test_release_has_no_solution(course: tuple[Path, dict[str, str]]) -> None:
    root, _ = course
    released = (root / "release" / ASSIGNMENT / LESSON.name).read_text(encoding="utf-8")
    source = nbformat.read(LESSON, as_version=4)
    assert "BEGIN SOLUTION" not in released and "Model answer" not in released
    assert "def masked_mean_pool" in released and "mask.sum(dim=1)" not in released
    assert any("Model answer" in c.source for c in source.cells)  # the staff answer is in the source only


@pytest.mark.integration
def test_autograde_scores(course: tuple[Path, dict[str, str]]) -> None:
    from nbgrader.api import Gradebook

    root, _ = course
    source = nbformat.read(LESSON, as_version=4)
    checks = {c.metadata["nbgrader"]["grade_id"]: c.metadata["nbgrader"]["points"] for c in source.cells
              if c.metadata.get("nbgrader", {}).get("grade") and not c.metadata["nbgrader"]["solution"]}
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        right = gb.find_submission_notebook(LESSON.stem, ASSIGNMENT, "right")
        wrong = gb.find_submission_notebook(LESSON.stem, ASSIGNMENT, "wrong")
        assert right.max_code_score == sum(checks.values())
        assert right.code_score == right.max_code_score, [(g.name, g.auto_score) for g in right.grades]
        pool_check = next(g for g in wrong.grades if g.cell.name == "01-check-2")
        assert pool_check.auto_score == 0, "the wrong masked_mean_pool must lose the points of its check"
        assert wrong.code_score == right.max_code_score - pool_check.max_score
        assert right.needs_manual_grade  # the interpretation answer waits for a person


@pytest.mark.integration
def test_executed_notebook_is_quiet(course: tuple[Path, dict[str, str]]) -> None:
    """The autograded (executed) smoke notebook: few progress outputs, no warnings a learner cannot act on."""
    from molft_utils.runs.notebook import count_progress_outputs

    root, _ = course
    nb = nbformat.read(root / "autograded" / "right" / ASSIGNMENT / LESSON.name, as_version=4)
    assert count_progress_outputs(nb) <= 20
    stderr = [o.text for c in nb.cells for o in c.get("outputs", []) if o.get("name") == "stderr"]
    assert not [t for t in stderr if "Warning" in t], stderr[:3]
