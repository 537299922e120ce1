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

**nbgrader metadata**: :mod:`molft_utils.teaching.grading` writes nbgrader's cell metadata into the source
notebooks from the same markup (:mod:`molft_utils.teaching.markup`), so that staff can also run the real
``nbgrader generate_assignment`` and ``nbgrader autograde`` on them:
``python -m molft_utils.teaching.student --annotate notebooks``.

**Student release.** :func:`build_release` writes a self-contained folder: the student notebooks in
``notebooks/``, the ``molft_utils`` package, the vendored ``data/``, the setup files (``pyproject.toml``,
``environment.yml``, ``Makefile``) and ``reports/summary.md`` (the results over seeds that the interpretation
exercises read) - no solution notebooks, no executed reports, no staff answer key.

Command line::

    python -m molft_utils.teaching.student --src notebooks --out assignments      # the student release
    python -m molft_utils.teaching.student --annotate notebooks                   # (re)write nbgrader metadata
"""

from __future__ import annotations

import argparse
import copy
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from molft_utils.teaching.grading import annotate_folder
from molft_utils.teaching.markup import (
    ANSWER_PLACEHOLDER,
    ANSWER_TAG,
    CHECK_TAG,
    EXERCISE_TAG,
    LOCKED_TAG,
    NOTEBOOK_GLOB,
    SolutionMarkupError,
    cell_tags,
    count_exercises,
    line_marker,
    stub_cell_source,
)

__all__ = ["RELEASE_COPY", "build_release", "generate", "main", "make_student_notebook"]

logger = logging.getLogger(__name__)

_WIDGET_KEYS = ("widgets",)
_CELL_VOLATILE_KEYS = ("execution", "widgets", "ExecuteTime")


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
            if any(line_marker(line) in ("begin", "end") for line in cell.source.split("\n")):
                raise SolutionMarkupError(
                    f"{where}: solution markers in a {cell.cell_type} cell (only code cells are supported)"
                )
            if ANSWER_TAG in cell_tags(cell) or cell.metadata.get("nbgrader", {}).get("solution"):
                cell.source = ANSWER_PLACEHOLDER  # the source holds the staff's model answer
            continue
        cell.outputs = []
        cell.execution_count = None
        new_source, n_regions = stub_cell_source(cell.source, where)
        tags = cell_tags(cell)
        if n_regions:
            cell.source = new_source
            if EXERCISE_TAG not in tags:
                tags.append(EXERCISE_TAG)
        if CHECK_TAG in tags or LOCKED_TAG in tags:
            cell.metadata["editable"] = False
            cell.metadata["deletable"] = False
        if tags:
            cell.metadata["tags"] = tags
    return student


_README = """\
# molft course: student edition

Fine-tuning chemical language models (a SMILES transformer) for MoleculeNet Lipophilicity. This folder is
self-contained: the lesson notebooks with the exercises left for you, the `molft_utils` package they use,
the data and the pretrained model they start from, and `reports/summary.md` (the course's results over
seeds, which the interpretation exercises ask you to read). It was generated from the course sources; it holds
no solutions.

## Start

```bash
make env    # .venv with the pinned packages, JupyterLab and the notebooks' kernel "Python 3 (molft)"
make lab    # opens JupyterLab on notebooks/
```

## How the exercises work

* Code cells tagged `exercise` contain a line such as `raise NotImplementedError("Exercise: <hint>")`.
  Replace that line with your code (keep the code around it). The hint says what is expected.
* Cells tagged `check` test your answer with `assert` statements. They are locked (not editable, not
  deletable). No output but "...: correct" means the check passed; an `AssertionError` (or a `NameError`
  for a variable you have not defined yet) means it did not. Your instructor may grade with extra tests.
* Markdown cells that say `YOUR ANSWER HERE` ask you to read a result and decide; write a few sentences
  that cite the numbers you used. They are graded by hand.
* As long as an exercise is unsolved, its checks fail - this is expected. "Restart kernel and run all"
  should finish without errors once you are done.
* `molft_utils` contains the course's own implementations; the checks compare your code with fixed
  expected values and properties, so using them instead of writing the code teaches you nothing.

## Notebooks

{table}
"""

def _readme(rows: Sequence[tuple[str, int]]) -> str:
    table = "| notebook | exercises |\n|---|---|\n" + "".join(f"| `notebooks/{n}` | {k} |\n" for n, k in rows)
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


#: What a student release copies from the course repository besides the generated notebooks.
#: ``reports/summary.md`` (mean ± std over seeds, no executed notebooks) is what the interpretation exercises read.
RELEASE_COPY = (
    "molft_utils", "data", "pyproject.toml", "environment.yml", "Makefile", "reports/summary.md", "reports/figures"
)  # fmt: skip
#: The batch's run records (numbers only, no executed notebook): the findings cells read their verdicts from them.
RELEASE_RESULTS = "reports/*/**/result.json"
_RELEASE_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "corpus", ".ipynb_checkpoints")


def build_release(src_dir: Path, out_dir: Path, repo_root: Path | None = None) -> list[Path]:
    """Write the self-contained student release: ``notebooks/`` (student editions), package, data, setup.

    Parameters
    ----------
    src_dir
        Folder with the solution notebooks.
    out_dir
        Release folder; replaced if it exists (it must not contain ``src_dir``).
    repo_root
        Course repository (default: the one this package lies in) whose :data:`RELEASE_COPY` entries are copied.

    Returns
    -------
    list[Path]
        The written notebooks and the README (see :func:`generate`).
    """
    from molft_utils.core.records import REPO_ROOT

    root = Path(repo_root) if repo_root is not None else REPO_ROOT
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    if src_dir.resolve().is_relative_to(out_dir.resolve()) or root.resolve().is_relative_to(out_dir.resolve()):
        raise ValueError(f"{out_dir} contains the course sources; refusing to replace it")
    # convert first (raises on bad markup before anything is touched), then replace the folder
    for path in sorted(src_dir.glob(NOTEBOOK_GLOB)):
        make_student_notebook(nbformat.read(path, as_version=4), name=path.name)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    written = generate(src_dir, out_dir / "notebooks")
    readme = written.pop()
    target = out_dir / "README.md"
    readme.replace(target)
    for name in RELEASE_COPY:
        src = root / name
        if src.is_dir():
            shutil.copytree(src, out_dir / name, ignore=_RELEASE_IGNORE)
        elif src.is_file():
            (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, out_dir / name)
    for src in sorted(root.glob(RELEASE_RESULTS)):
        dest = out_dir / src.relative_to(root)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)
    return [*written, target]


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: ``python -m molft_utils.teaching.student --src notebooks --out assignments``."""
    parser = argparse.ArgumentParser(description="Generate student notebooks from solution notebooks.")
    parser.add_argument("--src", type=Path, default=Path("notebooks"), help="folder with NN_*.ipynb solutions")
    parser.add_argument("--out", type=Path, default=Path("assignments"), help="output folder (the release)")
    parser.add_argument("--annotate", type=Path, metavar="DIR", help="write nbgrader metadata into DIR's notebooks")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.annotate is not None:
        for path in annotate_folder(args.annotate):
            logger.info("annotated %s", path)
        return 0
    try:
        written = build_release(args.src, args.out)
    except (SolutionMarkupError, FileNotFoundError, ValueError) as err:
        logger.error("error: %s", err)
        return 1
    logger.info("wrote %d file(s) to %s", len(written), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
