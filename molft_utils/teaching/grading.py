"""nbgrader metadata for the course notebooks, derived from their solution markup and tags.

:func:`annotate` writes nbgrader's cell metadata (``metadata.nbgrader``, schema 3) into the source notebooks, so
that staff can run the real ``nbgrader generate_assignment`` and ``nbgrader autograde`` on them
(``tests/test_nbgrader.py`` does, on lesson 01): code cells with solution markup become *solution* cells,
``check`` cells become *autograded test* cells (``points``, locked), markdown cells tagged ``answer`` become
*manually graded answers* (the source holds the staff's model answer; students get ``YOUR ANSWER HERE``) and cells
tagged ``locked`` become read-only. Existing ``grade_id`` and ``points`` are kept, so annotating is idempotent:
``python -m molft_utils.teaching.student --annotate notebooks`` (:func:`annotate_folder`).
:func:`nbgrader_problems` says what keeps a notebook from working with nbgrader.
"""

from __future__ import annotations

import copy
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from molft_utils.teaching.markup import (
    ANSWER_TAG,
    CHECK_TAG,
    LOCKED_TAG,
    NOTEBOOK_GLOB,
    cell_tags,
    stub_cell_source,
)

__all__ = ["DEFAULT_ANSWER_POINTS", "DEFAULT_CHECK_POINTS", "annotate", "annotate_folder", "nbgrader_problems"]

#: points of an autograded check cell / a manually graded answer when the metadata gives none
DEFAULT_CHECK_POINTS = 1
DEFAULT_ANSWER_POINTS = 2
NBGRADER_SCHEMA = 3


def _nbgrader(cell: NotebookNode, grade_id: str, *, solution: bool, grade: bool, locked: bool,
              points: int | None) -> dict:
    old = cell.metadata.get("nbgrader", {})
    meta = {
        "grade": grade,
        "grade_id": old.get("grade_id", grade_id),
        "locked": locked,
        "schema_version": NBGRADER_SCHEMA,
        "solution": solution,
        "task": False,
    }
    if grade:
        meta["points"] = old.get("points", points)
    return meta


def annotate(nb: NotebookNode, stem: str) -> NotebookNode:
    """Copy of a solution notebook with nbgrader cell metadata derived from the markup and the tags.

    Parameters
    ----------
    nb
        Solution notebook.
    stem
        Notebook stem; new ``grade_id`` values are ``<stem>-exercise-<n>``, ``<stem>-check-<n>``,
        ``<stem>-answer-<n>`` and ``<stem>-locked-<n>`` (numbered in cell order).

    Returns
    -------
    NotebookNode
        The annotated copy. Cells that are none of the four kinds lose any stale ``nbgrader`` metadata.
        Existing ``grade_id`` and ``points`` are kept (idempotent).
    """
    out = copy.deepcopy(nb)
    counters = {"exercise": 0, "check": 0, "answer": 0, "locked": 0}

    def next_id(kind: str) -> str:
        counters[kind] += 1
        return f"{stem}-{kind}-{counters[kind]}"

    for i, cell in enumerate(out.cells):
        tags = cell_tags(cell)
        if cell.cell_type == "code" and stub_cell_source(cell.source, f"{stem}: cell {i}")[1]:
            meta = _nbgrader(cell, next_id("exercise"), solution=True, grade=False, locked=False, points=None)
        elif cell.cell_type == "code" and CHECK_TAG in tags:
            meta = _nbgrader(cell, next_id("check"), solution=False, grade=True, locked=True,
                             points=DEFAULT_CHECK_POINTS)
        elif cell.cell_type == "markdown" and ANSWER_TAG in tags:
            meta = _nbgrader(cell, next_id("answer"), solution=True, grade=True, locked=False,
                             points=DEFAULT_ANSWER_POINTS)
        elif LOCKED_TAG in tags:
            meta = _nbgrader(cell, next_id("locked"), solution=False, grade=False, locked=True, points=None)
        else:
            cell.metadata.pop("nbgrader", None)
            continue
        cell.metadata["nbgrader"] = meta
    return out


def nbgrader_problems(nb: NotebookNode, name: str = "<notebook>") -> list[str]:
    """What keeps a source notebook from working with nbgrader (empty list: nothing).

    Checks that every solution region sits in a cell marked as an nbgrader solution, every ``check`` cell is
    an autograded test with positive points, every ``answer`` cell a graded solution, and that ``grade_id``
    values are unique.
    """
    problems: list[str] = []
    seen: dict[str, int] = {}
    for i, cell in enumerate(nb.cells):
        meta = cell.metadata.get("nbgrader", {})
        tags = cell_tags(cell)
        where = f"{name}: cell {i}"
        if cell.cell_type == "code" and stub_cell_source(cell.source, where)[1] and not meta.get("solution"):
            problems.append(f"{where}: solution markup but no nbgrader solution metadata")
        if CHECK_TAG in tags and not (meta.get("grade") and not meta.get("solution") and meta.get("points", 0) > 0):
            problems.append(f"{where}: check cell is not an autograded test with points")
        if ANSWER_TAG in tags and not (meta.get("grade") and meta.get("solution")):
            problems.append(f"{where}: answer cell is not a graded solution")
        if meta:
            gid = meta.get("grade_id", "")
            if gid in seen:
                problems.append(f"{where}: grade_id {gid!r} repeats cell {seen[gid]}")
            seen[gid] = i
    return problems


def annotate_folder(src_dir: Path) -> list[Path]:
    """Rewrite every ``NN_*.ipynb`` in ``src_dir`` with :func:`annotate`; return the files that changed."""
    changed = []
    for path in sorted(Path(src_dir).glob(NOTEBOOK_GLOB)):
        nb = nbformat.read(path, as_version=4)
        new = annotate(nb, path.stem[:2])
        if new != nb:
            with path.open("w", encoding="utf-8", newline="\n") as fh:
                nbformat.write(new, fh)
            changed.append(path)
    return changed
