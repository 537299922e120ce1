"""The solution markup of the course notebooks (nbgrader's): regions, hints, tags, and their stubs.

Inside a code cell, the lines between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` are the solution; an
optional ``### HINT: <text>`` line directly above ``### BEGIN SOLUTION`` is the hint students see. *Check cells*
are code cells tagged ``check``; markdown cells tagged ``answer`` hold a model answer; cells tagged ``locked``
are read-only. :func:`stub_cell_source` replaces each region by ``raise NotImplementedError("Exercise: <hint>")``
and raises :class:`SolutionMarkupError` (cell and line named) on unbalanced or nested markers.
:mod:`molft_utils.teaching.student` builds the student edition from this, :mod:`molft_utils.teaching.grading`
the nbgrader metadata.
"""

from __future__ import annotations

import json
import re

from nbformat import NotebookNode

__all__ = [
    "ANSWER_PLACEHOLDER",
    "ANSWER_TAG",
    "BEGIN",
    "CHECK_TAG",
    "END",
    "EXERCISE_TAG",
    "HINT",
    "LOCKED_TAG",
    "NOTEBOOK_GLOB",
    "SolutionMarkupError",
    "cell_tags",
    "count_exercises",
    "line_marker",
    "stub_cell_source",
]

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
HINT = "### HINT:"
CHECK_TAG = "check"
EXERCISE_TAG = "exercise"
ANSWER_TAG = "answer"
LOCKED_TAG = "locked"
ANSWER_PLACEHOLDER = "YOUR ANSWER HERE"
NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
DEFAULT_HINT = "complete this code"
#: A generated stub line (used to count exercises in a student edition).
_STUB_RE = re.compile(r"^\s*raise NotImplementedError\(\"Exercise: ")


class SolutionMarkupError(ValueError):
    """Malformed solution markup (unbalanced or nested markers, stray hint, markers outside code cells)."""


def line_marker(line: str) -> str | None:
    """Return ``"begin"``, ``"end"``, ``"hint"`` or ``None`` for a source line."""
    text = line.strip()
    if text == BEGIN:
        return "begin"
    if text == END:
        return "end"
    if text.startswith(HINT):
        return "hint"
    return None


def _stub(indent: str, hint: str | None) -> str:
    message = f"Exercise: {hint or DEFAULT_HINT}"
    # a JSON string literal is also a valid Python string literal (double quotes, same escapes)
    return f"{indent}raise NotImplementedError({json.dumps(message, ensure_ascii=False)})"


def stub_cell_source(source: str, where: str = "<cell>") -> tuple[str, int]:
    """Replace the solution regions of one code cell's source by stubs.

    Parameters
    ----------
    source
        Cell source.
    where
        Description used in error messages (notebook name and cell index).

    Returns
    -------
    (new_source, n_regions)
        The student source and the number of regions replaced.

    Raises
    ------
    SolutionMarkupError
        On ``END`` without ``BEGIN``, nested ``BEGIN``, ``BEGIN`` without ``END``, or a ``HINT`` line that is
        not directly followed by ``BEGIN``.
    """
    lines = source.split("\n")
    out: list[str] = []
    n_regions = 0
    inside_since: int | None = None
    pending_hint: tuple[int, str] | None = None
    for lineno, line in enumerate(lines, start=1):
        kind = line_marker(line)
        if pending_hint is not None and kind != "begin":
            raise SolutionMarkupError(
                f"{where}, line {pending_hint[0]}: '{HINT}' must be directly followed by '{BEGIN}'"
            )
        if kind == "hint":
            if inside_since is None:
                pending_hint = (lineno, line.strip()[len(HINT) :].strip())
            continue  # hints inside a region are part of the solution and dropped with it
        if kind == "begin":
            if inside_since is not None:
                raise SolutionMarkupError(
                    f"{where}, line {lineno}: nested '{BEGIN}' (region opened on line {inside_since} is not closed)"
                )
            indent = line[: len(line) - len(line.lstrip())]
            out.append(_stub(indent, pending_hint[1] if pending_hint else None))
            pending_hint = None
            inside_since = lineno
            n_regions += 1
        elif kind == "end":
            if inside_since is None:
                raise SolutionMarkupError(f"{where}, line {lineno}: '{END}' without a matching '{BEGIN}'")
            inside_since = None
        elif inside_since is None:
            out.append(line)
    if pending_hint is not None:
        raise SolutionMarkupError(f"{where}, line {pending_hint[0]}: '{HINT}' must be directly followed by '{BEGIN}'")
    if inside_since is not None:
        raise SolutionMarkupError(f"{where}, line {inside_since}: '{BEGIN}' without a matching '{END}'")
    return "\n".join(out), n_regions


def cell_tags(cell: NotebookNode) -> list[str]:
    """The cell's tags (``metadata.tags``), as a new list."""
    return list(cell.get("metadata", {}).get("tags", []))


def count_exercises(nb: NotebookNode) -> int:
    """Number of exercises: solution regions in a solution notebook, stubs in a student notebook.

    Counting both kinds makes ``count_exercises(solution) == count_exercises(make_student_notebook(solution))``.
    """
    total = 0
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        _, n_regions = stub_cell_source(cell.source, f"cell {i}")
        total += n_regions + sum(bool(_STUB_RE.match(line)) for line in cell.source.split("\n"))
    return total
