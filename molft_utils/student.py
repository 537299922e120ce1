"""Student editions of the course notebooks: solutions replaced by stubs (nbgrader markup).

Course staff write *solution* notebooks and hand out *student* notebooks with the key code removed. The
markup is the one of nbgrader (Jupyter Development Team, *nbgrader: A Tool for Creating and Grading
Assignments in the Jupyter Notebook*, J. Open Source Educ. 2(11), 32, 2019; "Autograded answer" cells):

* inside a code cell, the lines between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` are the solution;
* an optional line ``### HINT: <text>`` directly above ``### BEGIN SOLUTION`` gives the hint shown to
  students;
* *check cells* are ordinary code cells tagged ``check`` (cell metadata ``tags``) whose asserts pass on the
  solution edition.

:func:`make_student_notebook` replaces each region (hint line, markers and solution lines) by a single line
``raise NotImplementedError("Exercise: <hint>")`` at the indentation of the ``BEGIN`` marker, keeps the code
before and after the region, tags the cell ``exercise``, locks check cells against editing and deletion
(``editable``/``deletable`` cell metadata, honoured by Jupyter), clears all outputs and execution counts and
drops widget state and execution timing metadata. Unbalanced or nested markers raise
:class:`SolutionMarkupError` naming the notebook, the cell index and the line.

:func:`generate` writes the student edition of every ``[0-9][0-9]_*.ipynb`` notebook plus a ``README.md``
for students and staff. Output is deterministic (``nbformat.write`` sorts keys; no timestamps), so
regenerating gives byte-identical files and the diff of ``assignments/`` shows only real changes.

Why not nbgrader itself: ``pip install --dry-run nbgrader`` (0.9.6) would not change any pinned package but
pulls ~50 packages (jupyterlab, notebook, jupyter_server, SQLAlchemy, alembic, nbconvert, ...) for a course
database and grading server we do not use; the part we need - stripping marked regions - is this module.

Command line::

    python -m molft_utils.student --src notebooks --out assignments
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import nbformat
from nbformat import NotebookNode

__all__ = [
    "BEGIN",
    "CHECK_TAG",
    "END",
    "EXERCISE_TAG",
    "HINT",
    "NOTEBOOK_GLOB",
    "SolutionMarkupError",
    "count_exercises",
    "generate",
    "main",
    "make_student_notebook",
    "stub_cell_source",
]

logger = logging.getLogger(__name__)

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
HINT = "### HINT:"
CHECK_TAG = "check"
EXERCISE_TAG = "exercise"
NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
DEFAULT_HINT = "complete this code"
#: A generated stub line (used to count exercises in a student edition).
_STUB_RE = re.compile(r"^\s*raise NotImplementedError\(\"Exercise: ")
_WIDGET_KEYS = ("widgets",)
_CELL_VOLATILE_KEYS = ("execution", "widgets", "ExecuteTime")


class SolutionMarkupError(ValueError):
    """Malformed solution markup (unbalanced or nested markers, stray hint, markers outside code cells)."""


def _marker(line: str) -> str | None:
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
        kind = _marker(line)
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


def _tags(cell: NotebookNode) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def make_student_notebook(nb: NotebookNode, name: str = "<notebook>") -> NotebookNode:
    """Student edition of a solution notebook (the input is not modified).

    Parameters
    ----------
    nb
        Solution notebook (nbformat v4).
    name
        Notebook name for error messages (e.g. the file name).

    Returns
    -------
    NotebookNode
        Copy with solution regions replaced by ``raise NotImplementedError("Exercise: <hint>")`` stubs,
        exercise cells tagged ``exercise``, check cells locked, outputs/execution counts cleared and widget
        state removed. Markdown, raw and check cells are otherwise kept as they are.

    Raises
    ------
    SolutionMarkupError
        On malformed markup, or solution markers in a markdown/raw cell (only code cells are supported).
    """
    student = copy.deepcopy(nb)
    for key in _WIDGET_KEYS:
        student.metadata.pop(key, None)
    for i, cell in enumerate(student.cells):
        where = f"{name}: cell {i}"
        for key in _CELL_VOLATILE_KEYS:
            cell.metadata.pop(key, None)
        if cell.cell_type != "code":
            if any(_marker(line) in ("begin", "end") for line in cell.source.split("\n")):
                raise SolutionMarkupError(
                    f"{where}: solution markers in a {cell.cell_type} cell (only code cells are supported)"
                )
            continue
        cell.outputs = []
        cell.execution_count = None
        new_source, n_regions = stub_cell_source(cell.source, where)
        tags = _tags(cell)
        if n_regions:
            cell.source = new_source
            if EXERCISE_TAG not in tags:
                tags.append(EXERCISE_TAG)
        if CHECK_TAG in tags:
            cell.metadata["editable"] = False
            cell.metadata["deletable"] = False
        if tags:
            cell.metadata["tags"] = tags
    return student


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


_README = """\
# Student notebooks

These notebooks are the **student edition** of the molft course notebooks (fine-tuning SMILES transformers
for MoleculeNet Lipophilicity). They are generated automatically from the solution notebooks - do not edit
them by hand in the course repository.

## For students

* Work through the notebooks in order. Code cells tagged `exercise` contain a line such as

  ```python
  raise NotImplementedError("Exercise: <hint>")
  ```

  Replace that line with your code (keep the code around it). The hint tells you what is expected.
* Cells tagged `check` contain `assert` statements that test your answer. They are locked (not editable,
  not deletable) in Jupyter. Run them after your exercise cell: no output means the check passed; an
  `AssertionError` (or a `NameError` for a variable you have not defined yet) means it did not.
* As long as an exercise is unsolved, running its cell raises `NotImplementedError` and the checks after it
  fail - this is expected. "Restart kernel and run all" should finish without errors once you are done.
* The notebooks use the `molft_utils` package and the data in the course repository; start Jupyter from the
  repository's environment (`.venv`).

## For staff

* Solutions live in `notebooks/NN_*.ipynb`. Mark the removed code inside a code cell with

  ```python
  ### HINT: one line shown to students (optional, directly above BEGIN)
  ### BEGIN SOLUTION
  ...solution code...
  ### END SOLUTION
  ```

  and put the asserts that test it in a separate code cell tagged `check`; they must pass on the solution
  notebook.
* Regenerate this folder with

  ```
  python -m molft_utils.student --src notebooks --out assignments
  ```

  The output is deterministic: regenerating without changes to the solutions gives byte-identical files.
  Unbalanced or nested markers stop the generator with an error naming the notebook, cell and line.
* Outputs, execution counts and widget state are removed from the student edition.

## Notebooks

{table}
"""


def _readme(rows: Sequence[tuple[str, int]]) -> str:
    table = "| notebook | exercises |\n|---|---|\n" + "".join(f"| `{n}` | {k} |\n" for n, k in rows)
    return _README.format(table=table.rstrip("\n"))


def generate(src_dir: Path, out_dir: Path) -> list[Path]:
    """Write the student edition of every ``NN_*.ipynb`` in ``src_dir`` to ``out_dir``, plus ``README.md``.

    Parameters
    ----------
    src_dir
        Folder with the solution notebooks.
    out_dir
        Output folder (created if needed); must differ from ``src_dir`` so solutions are never overwritten.

    Returns
    -------
    list[Path]
        The written notebooks (sorted by name) followed by the README.

    Raises
    ------
    FileNotFoundError
        If ``src_dir`` does not exist or contains no ``NN_*.ipynb`` notebook.
    ValueError
        If ``out_dir`` is ``src_dir``.
    SolutionMarkupError
        On malformed markup in any notebook (nothing is written in that case).
    """
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    if not src_dir.is_dir():
        raise FileNotFoundError(f"{src_dir}: no such folder")
    if out_dir.resolve() == src_dir.resolve():
        raise ValueError(f"out_dir must differ from src_dir ({src_dir}); refusing to overwrite the solutions")
    sources = sorted(src_dir.glob(NOTEBOOK_GLOB))
    if not sources:
        raise FileNotFoundError(f"{src_dir}: no notebooks matching {NOTEBOOK_GLOB}")
    # convert everything first so a markup error leaves out_dir untouched
    converted = []
    for path in sources:
        nb = nbformat.read(path, as_version=4)
        converted.append((path.name, make_student_notebook(nb, name=path.name), count_exercises(nb)))
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for fname, student, n_ex in converted:
        target = out_dir / fname
        with target.open("w", encoding="utf-8", newline="\n") as fh:
            nbformat.write(student, fh)
        logger.info("%s: %d exercise(s)", target, n_ex)
        written.append(target)
    stale = sorted(set(out_dir.glob(NOTEBOOK_GLOB)) - set(written))
    for path in stale:
        logger.warning("%s has no solution notebook in %s (left in place)", path, src_dir)
    readme = out_dir / "README.md"
    readme.write_text(_readme([(f, k) for f, _, k in converted]), encoding="utf-8", newline="\n")
    written.append(readme)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: ``python -m molft_utils.student --src notebooks --out assignments``."""
    parser = argparse.ArgumentParser(description="Generate student notebooks from solution notebooks.")
    parser.add_argument("--src", type=Path, default=Path("notebooks"), help="folder with NN_*.ipynb solutions")
    parser.add_argument("--out", type=Path, default=Path("assignments"), help="output folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        written = generate(args.src, args.out)
    except (SolutionMarkupError, FileNotFoundError, ValueError) as err:
        logger.error("error: %s", err)
        return 1
    logger.info("wrote %d file(s) to %s", len(written), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
