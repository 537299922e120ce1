"""Stage checkpoints: a run cut short resumes from the stages it finished, and only a run of the same notebook and
code (and the same stage key) reuses them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbformat import v4
from test_batch_report import _toy_notebook

from molft_utils.runs.checkpoints import Checkpoints, notebook_identity

IDENTITY = {"notebook": "00_toy.ipynb", "notebook_hash": "a" * 16, "code_hash": "b" * 16}


def _counting(value: dict):
    calls = []

    def compute() -> dict:
        calls.append(1)
        return value

    return compute, calls


def test_a_finished_stage_is_read_back_not_recomputed(tmp_path: Path) -> None:
    value = {"rmse": np.float64(0.7), "curve": np.array([1.0, float("nan")]), "n": np.int64(3)}
    compute, calls = _counting(value)
    first = Checkpoints(tmp_path / "ck", IDENTITY)
    got = first.get_or_compute("final lora", {"lr": 3e-3, "ranks": (2, 4)}, compute)
    assert calls == [1] and first.misses == ["final lora"] and first.hits == []
    # what a fresh run continues with is what it wrote (plain JSON; NaN stays NaN)
    assert got["rmse"] == 0.7 and got["n"] == 3 and got["curve"][0] == 1.0 and math.isnan(got["curve"][1])

    resumed = Checkpoints(tmp_path / "ck", IDENTITY)  # the run started again, e.g. in the next session
    again = resumed.get_or_compute("final lora", {"lr": 3e-3, "ranks": [2, 4]}, compute)
    assert calls == [1] and resumed.hits == ["final lora"]
    assert again["rmse"] == got["rmse"] and again["curve"][0] == 1.0 and math.isnan(again["curve"][1])
    assert "1 stage(s) resumed" in resumed.summary() and "none resumed" in first.summary()


@pytest.mark.parametrize(
    ("identity", "key"),
    [(IDENTITY | {"code_hash": "c" * 16}, {"lr": 3e-3}), (IDENTITY | {"notebook_hash": "d" * 16}, {"lr": 3e-3}),
     (IDENTITY, {"lr": 1e-3})],
    ids=["code changed", "notebook changed", "other key"],
)
def test_other_code_notebook_or_key_recomputes(tmp_path: Path, identity: dict, key: dict) -> None:
    compute, calls = _counting({"x": 1})
    Checkpoints(tmp_path, IDENTITY).get_or_compute("stage", {"lr": 3e-3}, compute)
    Checkpoints(tmp_path, identity).get_or_compute("stage", key, compute)
    assert len(calls) == 2


def test_an_edited_record_is_an_error_and_finish_removes_the_folder(tmp_path: Path) -> None:
    ck = Checkpoints(tmp_path / "ck", IDENTITY)
    ck.get_or_compute("stage", {"lr": 1}, lambda: {"x": 1})
    (path,) = (tmp_path / "ck").glob("stage-*.json")
    record = json.loads(path.read_text())
    path.write_text(json.dumps(record | {"key": {"lr": 2}}))
    with pytest.raises(RuntimeError, match="key mismatch"):
        Checkpoints(tmp_path / "ck", IDENTITY).get_or_compute("stage", {"lr": 1}, lambda: {"x": 1})
    with pytest.raises(TypeError, match="must return a dict"):
        ck.get_or_compute("other", {}, lambda: [1])
    ck.finish()
    assert not (tmp_path / "ck").exists()


def test_identity_follows_the_notebook_logic(tmp_path: Path) -> None:
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    toy = _toy_notebook(nbs / "00_toy.ipynb")
    before = notebook_identity("00_toy", nbs)
    assert before["notebook"] == "00_toy.ipynb" and len(before["code_logic_hash"]) == 16
    nb = nbformat.read(toy, as_version=4)
    nb.cells.append(v4.new_markdown_cell("A Discussion written while the run was cut short."))
    nb.cells[-2].source = "# a comment\n" + nb.cells[-2].source
    nbformat.write(nb, toy)
    assert notebook_identity("00_toy", nbs) == before  # prose and comments keep the checkpoints valid
    _toy_notebook(toy, body="x = 1")
    assert notebook_identity("00_toy", nbs)["notebook_logic_hash"] != before["notebook_logic_hash"]
    ck = Checkpoints.for_notebook("00_toy", tmp_path / "run", nbs)
    assert ck.root == tmp_path / "run" / "checkpoints"
    with pytest.raises(FileNotFoundError, match="no such notebook"):
        notebook_identity("99_missing", nbs)
