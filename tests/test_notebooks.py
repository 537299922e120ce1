"""Static checks of the committed notebook sources (execution is tested by nbval: `make test`)."""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

from molft_utils.runs.batch import discover_notebooks
from molft_utils.runs.finetune import RECIPE
from molft_utils.teaching.markup import count_exercises

NOTEBOOKS = discover_notebooks()
REQUIRED_PARAMETERS = {"seed", "model", "smoke", "out_dir", "dataset", "smiles_col", "label_col"}


def _parameters(nb: nbformat.NotebookNode) -> dict:
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "exactly one cell tagged 'parameters'"
    values = {}
    for node in ast.parse(cells[0].source).body:
        assert isinstance(node, ast.Assign), f"parameters cell holds only assignments, found {ast.dump(node)[:60]}"
        values[node.targets[0].id] = ast.literal_eval(node.value)
    return values


def test_there_are_notebooks() -> None:
    assert NOTEBOOKS and NOTEBOOKS[0].name == "01_finetune_and_mlm.ipynb"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_source_is_clean(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "molft", "papermill and nbval start the kernel the notebook names"
    assert "widgets" not in nb.metadata
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "commit notebook sources without outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_lesson_structure(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    params = _parameters(nb)
    assert REQUIRED_PARAMETERS <= params.keys()
    assert params["smoke"] is None and params["out_dir"] is None
    assert params["dataset"] == "lipophilicity", "the committed default data set"
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for heading in ("## Aim", "## Theory", "## Practical", "## Discussion", "## Quiz", "### References"):
        assert heading in text, f"{path.name}: missing '{heading}'"
    assert count_exercises(nb) >= 3, "at least three exercises per notebook"
    assert any("check" in c.metadata.get("tags", []) for c in nb.cells)


def test_notebook_01_states_the_project_recipe() -> None:
    params = _parameters(nbformat.read(NOTEBOOKS[0], as_version=4))
    assert {k: params[k] for k in RECIPE} == RECIPE
