"""Tests for molft_utils.teaching (student-edition generator, its markup, nbgrader metadata)."""

from __future__ import annotations

import nbformat
import pytest
from nbformat import v4

from molft_utils.teaching.grading import annotate, nbgrader_problems
from molft_utils.teaching.markup import SolutionMarkupError, count_exercises
from molft_utils.teaching.student import build_release, generate, main, make_student_notebook

SOLUTION_LINES = ["    total = sum(values)", "    return total / len(values)"]

EXERCISE_SRC = "\n".join(
    [
        "def mean(values):",
        '    """Arithmetic mean."""',
        "    ### HINT: add up the values and divide by their number",
        "    ### BEGIN SOLUTION",
        *SOLUTION_LINES,
        "    ### END SOLUTION",
        "",
        "### BEGIN SOLUTION",
        "answer = 42",
        "### END SOLUTION",
        "print('done')",
    ]
)
CHECK_SRC = "assert mean([1, 2, 3]) == 2\nassert answer == 42"


def _solution_nb() -> nbformat.NotebookNode:
    nb = v4.new_notebook()
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {"x": 1}}}
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        v4.new_markdown_cell("# Exercise 1\nWrite `mean`.", id="md0"),
        v4.new_code_cell("import math", id="c1", execution_count=3),
        v4.new_code_cell(EXERCISE_SRC, id="c2", execution_count=4),
        v4.new_code_cell(CHECK_SRC, id="c3", metadata={"tags": ["check"]}),
    ]
    nb.cells[1].outputs = [v4.new_output("stream", name="stdout", text="hello\n")]
    nb.cells[2].outputs = [v4.new_output("execute_result", data={"text/plain": "42"}, execution_count=4)]
    nb.cells[2].metadata["execution"] = {"iopub.status.busy": "2026-01-01T00:00:00"}
    return nb


def test_no_solution_code_or_markers_survive():
    student = make_student_notebook(_solution_nb(), name="01_demo.ipynb")
    src = student.cells[2].source
    for secret in [*SOLUTION_LINES, "answer = 42", "### BEGIN", "### END", "### HINT"]:
        assert secret.strip() not in src


def test_stub_keeps_code_outside_regions_and_hint():
    src = make_student_notebook(_solution_nb()).cells[2].source
    assert src.split("\n") == [
        "def mean(values):",
        '    """Arithmetic mean."""',
        '    raise NotImplementedError("Exercise: add up the values and divide by their number")',
        "",
        'raise NotImplementedError("Exercise: complete this code")',
        "print('done')",
    ]


def test_stub_raises_with_hint():
    src = make_student_notebook(_solution_nb()).cells[2].source
    ns: dict = {}
    exec(src.split("\n\n")[0], ns)  # the function definition only
    with pytest.raises(NotImplementedError, match="add up the values"):
        ns["mean"]([1, 2])


def test_outputs_metadata_tags_and_input_untouched():
    nb = _solution_nb()
    before = nbformat.writes(nb)
    student = make_student_notebook(nb)
    assert nbformat.writes(nb) == before  # input not modified
    assert "widgets" not in student.metadata
    assert student.metadata["kernelspec"]["name"] == "python3"
    for cell in student.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
        assert "execution" not in cell.metadata
    assert student.cells[0].source == nb.cells[0].source  # markdown kept
    assert student.cells[3].source == CHECK_SRC  # check cell kept
    assert student.cells[3].metadata["tags"] == ["check"]
    assert student.cells[3].metadata["editable"] is False
    assert student.cells[2].metadata["tags"] == ["exercise"]
    assert "tags" not in student.cells[1].metadata
    assert count_exercises(nb) == count_exercises(student) == 2
    nbformat.validate(student)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("x = 1\n### BEGIN SOLUTION\ny = 2", "line 2: '### BEGIN SOLUTION' without a matching"),
        ("x = 1\n### END SOLUTION", "line 2: '### END SOLUTION' without a matching"),
        ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION", "line 2: nested"),
        ("### HINT: h\nx = 1\n### BEGIN SOLUTION\n### END SOLUTION", "line 1: '### HINT:' must be directly"),
    ],
)
def test_unbalanced_markers_raise(source, message):
    nb = v4.new_notebook()
    nb.cells = [v4.new_markdown_cell("intro"), v4.new_code_cell(source)]
    with pytest.raises(SolutionMarkupError, match="03_bad.ipynb: cell 1") as err:
        make_student_notebook(nb, name="03_bad.ipynb")
    assert message in str(err.value)


def test_markers_in_markdown_raise():
    nb = v4.new_notebook()
    nb.cells = [v4.new_markdown_cell("### BEGIN SOLUTION\nsecret\n### END SOLUTION")]
    with pytest.raises(SolutionMarkupError, match="cell 0: solution markers in a markdown cell"):
        make_student_notebook(nb, name="x.ipynb")


def test_generate_is_deterministic_and_filters_names(tmp_path):
    src = tmp_path / "notebooks"
    src.mkdir()
    nbformat.write(_solution_nb(), src / "01_demo.ipynb")
    nbformat.write(_solution_nb(), src / "02_more.ipynb")
    nbformat.write(_solution_nb(), src / "scratch.ipynb")  # not a course notebook
    out = tmp_path / "assignments"
    written = generate(src, out)
    assert [p.name for p in written] == ["01_demo.ipynb", "02_more.ipynb", "README.md"]
    first = {p.name: p.read_bytes() for p in written}
    assert generate(src, out) == written
    assert {p.name: p.read_bytes() for p in written} == first
    assert not (out / "scratch.ipynb").exists()
    readme = first["README.md"].decode()
    assert "make lab" in readme
    assert "| `notebooks/01_demo.ipynb` | 2 |" in readme
    for name in ("01_demo.ipynb", "02_more.ipynb"):
        assert b"answer = 42" not in first[name] and b"BEGIN SOLUTION" not in first[name]
    with pytest.raises(ValueError, match="must differ"):
        generate(src, src)


def test_generate_bad_markup_writes_nothing(tmp_path):
    src = tmp_path / "nb"
    src.mkdir()
    bad = v4.new_notebook()
    bad.cells = [v4.new_code_cell("### BEGIN SOLUTION\nx = 1")]
    nbformat.write(_solution_nb(), src / "01_ok.ipynb")
    nbformat.write(bad, src / "02_bad.ipynb")
    with pytest.raises(SolutionMarkupError, match="02_bad.ipynb: cell 0"):
        generate(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert main(["--src", str(src), "--out", str(tmp_path / "out")]) == 1


def test_check_cell_fails_on_student_and_passes_on_solution():
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = v4.new_notebook()
    nb.cells = [
        v4.new_code_cell(
            "def double(x):\n    ### HINT: twice x\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION"
        ),
        v4.new_code_cell("assert double(3) == 6", metadata={"tags": ["check"]}),
    ]
    NotebookClient(nb, kernel_name="python3", timeout=60).execute()  # solution: raises if any cell fails
    student = make_student_notebook(nb)
    with pytest.raises(CellExecutionError, match="NotImplementedError") as err:
        NotebookClient(student, kernel_name="python3", timeout=60).execute()
    assert "Exercise: twice x" in str(err.value)
    # the error comes from the check cell (the definition cell itself runs fine)
    assert student.cells[0].outputs == []
    assert student.cells[1].outputs[0]["ename"] == "NotImplementedError"


def test_release_is_self_contained_without_solutions(tmp_path):
    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    (repo / "molft_utils").mkdir()
    (repo / "molft_utils" / "__init__.py").write_text("")
    (repo / "data").mkdir()
    (repo / "data" / "x.csv").write_text("smiles,label\n")
    (repo / "reports").mkdir()
    (repo / "reports" / "01_demo.ipynb").write_text("executed")
    (repo / "staff").mkdir()
    (repo / "pyproject.toml").write_text("[project]\n")
    nb = _solution_nb()
    nb.cells.append(v4.new_markdown_cell("Model answer: secret", id="ans", metadata={"tags": ["answer"]}))
    nbformat.write(nb, repo / "notebooks" / "01_demo.ipynb")
    out = tmp_path / "release"
    build_release(repo / "notebooks", out, repo_root=repo)
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert names == ["README.md", "data/x.csv", "molft_utils/__init__.py", "notebooks/01_demo.ipynb", "pyproject.toml"]
    text = (out / "notebooks" / "01_demo.ipynb").read_text()
    assert "answer = 42" not in text and "Model answer" not in text and "YOUR ANSWER HERE" in text
    with pytest.raises(ValueError, match="contains the course sources"):
        build_release(repo / "notebooks", repo, repo_root=repo)


def test_annotate_marks_cells_for_nbgrader():
    nb = _solution_nb()
    nb.cells.append(v4.new_markdown_cell("why?", id="ans", metadata={"tags": ["answer"]}))
    nb.cells.append(v4.new_markdown_cell("read me", id="ro", metadata={"tags": ["locked"]}))
    assert nbgrader_problems(nb, "01_demo.ipynb") == [
        "01_demo.ipynb: cell 2: solution markup but no nbgrader solution metadata",
        "01_demo.ipynb: cell 3: check cell is not an autograded test with points",
        "01_demo.ipynb: cell 4: answer cell is not a graded solution",
    ]
    out = annotate(nb, "01")
    meta = [c.metadata.get("nbgrader") for c in out.cells]
    assert meta[0] is None and meta[1] is None
    assert meta[2]["solution"] and not meta[2]["grade"] and meta[2]["grade_id"] == "01-exercise-1"
    assert meta[3]["grade"] and meta[3]["locked"] and meta[3]["points"] == 1
    assert meta[4]["grade"] and meta[4]["solution"] and meta[4]["points"] == 2
    assert meta[5]["locked"] and not meta[5]["grade"]
    assert nbgrader_problems(out) == []
    out.cells[3].metadata["nbgrader"]["points"] = 5  # staff's choice survives re-annotation
    assert annotate(out, "01") == out
    out.cells[4].metadata["nbgrader"]["grade_id"] = "01-check-1"
    assert "repeats cell 3" in nbgrader_problems(out)[0]
