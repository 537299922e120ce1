"""Runs stay current through edits that change no logic; their executed notebooks get today's text."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbformat import v4
from test_batch_report import _toy_notebook

from molft_utils.runs import batch
from molft_utils.runs.identity import cell_logic_source, code_logic_hash, logic_source, recorded_state

pytestmark = pytest.mark.usefixtures("in_process_notebooks")


def _run(toy: Path, out: Path, *extra: str) -> None:
    assert batch.main(["--notebooks", str(toy), "--seeds", "0", "--out", str(out), "--no-report", *extra]) == 0


def _done_toy(tmp_path: Path) -> tuple[Path, Path, batch.RunSpec]:
    """A toy notebook run by the batch: (notebook, output folder, the run's spec)."""
    (tmp_path / "nbs").mkdir()
    toy = _toy_notebook(tmp_path / "nbs" / "00_toy.ipynb")
    out = tmp_path / "out"
    _run(toy, out)
    return toy, out, batch.plan_runs([toy], [0], out)[0]


def _record(spec: batch.RunSpec) -> dict:
    return json.loads((spec.out_dir / "batch.json").read_text())


def test_logic_source_drops_comments_docstrings_and_formatting() -> None:
    plain = "def f(x):\n    return 2 * x\n"
    assert logic_source(plain) == logic_source('def f(x):\n    """Twice x."""\n    return 2*x  # doubled\n\n')
    assert logic_source(plain) != logic_source("def f(x):\n    return 2 * x + 0\n")
    assert logic_source('x = "a string that is data, not a docstring"') != logic_source('x = "another"')
    assert logic_source("def broken(:") == "def broken(:"  # not Python: every byte counts
    deep = "x = " + " + ".join(["a"] * 2000)
    assert logic_source(deep) == deep  # too deep to serialise: counts by its text, no crash
    # a line that starts with an operator is Python, not a magic (formatters break lines before operators)
    broken_before_operators = "ok = (\n    a\n    != b\n    and c\n)"
    assert logic_source(broken_before_operators) != logic_source("ok = (\n    a\n    and c\n    != b\n)")
    # empty and None fields are left out, so the text does not depend on the Python version (ast.dump's defaults
    # changed in 3.13; 3.12 added FunctionDef.type_params)
    tree = logic_source("def f(): pass")
    assert tree == "Module(body=[FunctionDef(name='f', args=arguments(), body=[Pass()])])"


def test_cells_are_hashed_as_the_kernel_runs_them() -> None:
    assert cell_logic_source("%matplotlib inline\nx = 1") != cell_logic_source("x = 1")
    loop = "for i in range(3):\n    f(i)\n    %time g()"
    assert cell_logic_source(loop) != cell_logic_source("for i in range(3):\n    f(i)\n%time g()")  # where it stands
    assert cell_logic_source("%env A=1\nimport os") != cell_logic_source("import os\n%env A=1")
    assert cell_logic_source('"result: 0.71"') != cell_logic_source('"result: 0.93"')  # a cell's string is output
    assert cell_logic_source("x = 1  # note") == cell_logic_source("x = 1")


def test_code_logic_hash_ignores_comments_and_docstrings(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    module = pkg / "m.py"
    module.write_text('"""Module."""\n\ndef f():\n    return 1\n')
    before = code_logic_hash(pkg)
    module.write_text('"""Module, reworded."""\n\n\ndef f():  # one\n    """One."""\n    return 1\n')
    assert code_logic_hash(pkg) == before
    module.write_text('"""Module."""\n\ndef f():\n    return 2\n')
    assert code_logic_hash(pkg) != before


def test_text_edit_refreshes_the_executed_notebook_without_a_rerun(tmp_path: Path) -> None:
    toy, out, spec = _done_toy(tmp_path)
    executed = nbformat.read(spec.output_notebook, as_version=4)
    executed.cells[-1].outputs = [v4.new_output("stream", text="the run's output\n")]  # as papermill keeps them
    nbformat.write(executed, spec.output_notebook)

    nb = nbformat.read(toy, as_version=4)
    nb.cells.insert(0, v4.new_markdown_cell("# Toy\nA Discussion written after the run."))
    nb.cells[-1].source = "# a comment added after the run\n" + nb.cells[-1].source
    nbformat.write(nb, toy)
    spec = batch.plan_runs([toy], [0], out)[0]
    assert batch.rerun_reason(spec) is None and recorded_state(spec.out_dir, toy.parent) == "current"
    assert "text edited since" in batch.status_table([spec])

    assert batch.sync_reason(spec) == "text edited (notebook_hash)"  # the workflow plans a text job from it
    _run(toy, out)  # skipped, and its text refreshed
    assert (spec.out_dir / "executions.txt").read_text() == "x"  # not executed again
    refreshed = nbformat.read(spec.output_notebook, as_version=4)
    assert refreshed.cells[0].source.startswith("# Toy")
    assert [c.metadata.get("tags") for c in refreshed.cells if c.cell_type == "code"][:2] == [
        ["parameters"], ["injected-parameters"]
    ]
    assert refreshed.cells[-1].source.startswith("# a comment added after the run")
    assert refreshed.cells[-1].outputs[0]["text"] == "the run's output\n"
    record = _record(spec)
    assert record["identity"] == spec.identity and record["text_refreshed"][0]["notebook_hash"][1] == (
        spec.identity["notebook_hash"]
    )
    assert batch.sync_record(spec) == [] and batch.sync_reason(spec) is None  # nothing left to do
    assert "text edited since" not in batch.status_table([spec])

    nb.cells[-1].source += "\nedited = True"  # logic: a rerun, not a refresh
    nbformat.write(nb, toy)
    spec = batch.plan_runs([toy], [0], out)[0]
    assert batch.rerun_reason(spec) == "notebook changed" and batch.refresh_text(spec) is False
    assert batch.sync_reason(spec) is None  # a rerun is due, not a text job
    with pytest.raises(ValueError, match="code cells differ"):
        batch._rebuild_text(refreshed, nbformat.read(toy, as_version=4))


def test_old_records_are_upgraded_while_their_text_is_unchanged(tmp_path: Path, capsys) -> None:
    toy, out, spec = _done_toy(tmp_path)
    record = _record(spec)
    legacy = {k: record["identity"][k] for k in ("notebook", "notebook_hash", "code_hash", "parameters")}
    (spec.out_dir / "batch.json").write_text(json.dumps(record | {"identity": legacy}))
    assert batch.rerun_reason(spec) is None  # same text: current
    assert batch.sync_reason(spec) == "record without logic hashes"

    original = toy.read_text()
    nb = nbformat.read(toy, as_version=4)
    nb.cells.append(v4.new_markdown_cell("Prose"))
    nbformat.write(nb, toy)
    # a record with text hashes only cannot tell prose from logic: any edit makes it stale
    assert batch.rerun_reason(batch.plan_runs([toy], [0], out)[0]) == "notebook changed"
    toy.write_text(original)

    _run(toy, out, "--sync-records")
    assert "00_toy seed=0: identity upgraded" in capsys.readouterr().out
    record = _record(spec)
    assert record["identity"] == spec.identity and record["identity_upgraded"][-1]["from"] == legacy
    assert sorted(p.name for p in spec.stamp.parent.iterdir()) == [spec.stamp.name]
    nbformat.write(nb, toy)  # now the same prose edit keeps the run current
    assert batch.rerun_reason(batch.plan_runs([toy], [0], out)[0]) is None
    assert (spec.out_dir / "executions.txt").read_text() == "x"


def test_tuple_parameters_stay_current(tmp_path: Path) -> None:
    """Parameters come back from JSON as lists and string keys; the rule compares them normalised."""
    (tmp_path / "nbs").mkdir()
    params = "seed = 0\nsmoke = False\nout_dir = None\nks = (1, 2)"
    toy = _toy_notebook(tmp_path / "nbs" / "00_toy.ipynb", params=params)
    toy_body = nbformat.read(toy, as_version=4)
    toy_body.cells[1].source = (
        "import pathlib\nfrom molft_utils.core.records import write_result\n"
        "write_result(pathlib.Path(out_dir), '00_toy', seed, {'ks': list(ks)}, {'m': {'rmse': 1.0}})"
    )
    nbformat.write(toy_body, toy)
    out = tmp_path / "out"
    _run(toy, out, "-p", "ks=(3, 4)")
    spec = batch.plan_runs([toy], [0], out, {"ks": (3, 4)})[0]
    assert spec.identity["parameters"]["ks"] == (3, 4)
    assert batch.rerun_reason(spec) is None


def test_refresh_is_skipped_when_the_notebook_changes_after_planning(tmp_path: Path, caplog) -> None:
    toy, out, _ = _done_toy(tmp_path)
    nb = nbformat.read(toy, as_version=4)
    nb.cells.append(v4.new_markdown_cell("Prose"))
    nbformat.write(nb, toy)
    spec = batch.plan_runs([toy], [0], out)[0]  # planned with the prose edit ...
    nb.cells[1].source += "\nedited = True"  # ... then the code changes before the refresh
    nbformat.write(nb, toy)
    before = spec.output_notebook.read_text()
    assert batch.sync_record(spec) == []
    assert spec.output_notebook.read_text() == before and "not refreshed" in caplog.text


def test_rebuild_takes_tags_from_the_source() -> None:
    source = v4.new_notebook(cells=[v4.new_code_cell("x = 1"), v4.new_markdown_cell("text")])
    source.cells[0].metadata["tags"] = ["parameters"]
    executed = v4.new_notebook(cells=[v4.new_code_cell("x = 1"), v4.new_code_cell("x = 2"), v4.new_markdown_cell("t")])
    executed.cells[0].metadata["tags"] = ["parameters", "hide-cell"]
    executed.cells[1].metadata["tags"] = ["injected-parameters"]
    executed.cells[2].id = source.cells[1].id
    executed.cells[2].metadata = {"tags": [], "papermill": {"duration": 0.1}}
    rebuilt = batch._rebuild_text(executed, source)
    assert [c.metadata.get("tags") for c in rebuilt.cells] == [["parameters"], ["injected-parameters"], []]
    assert rebuilt.cells[2].metadata["papermill"] == {"duration": 0.1} and rebuilt.cells[2].source == "text"
    del source.cells[0].metadata["tags"]  # no parameters cell: papermill injects at the top
    assert batch._rebuild_text(executed, source).cells[0].metadata["tags"] == ["injected-parameters"]


def test_records_of_another_logic_version_count_by_text_until_upgraded(tmp_path: Path) -> None:
    toy, out, spec = _done_toy(tmp_path)
    record = _record(spec)
    record["identity"] |= {"logic_version": 0, "notebook_logic_hash": "other", "code_logic_hash": "other"}
    (spec.out_dir / "batch.json").write_text(json.dumps(record))
    assert batch.rerun_reason(spec) is None  # same text: current, whatever the old hashing said
    assert batch.sync_record(spec) == ["identity upgraded"]
    assert _record(spec)["identity"] == spec.identity
