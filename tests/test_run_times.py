"""The measured run-times table: read from the batch runner's records, written into the README's block."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_batch_report import _toy_notebook

from molft_utils.runs import batch, run_times


@pytest.mark.usefixtures("in_process_notebooks")
def test_table_lists_each_run_with_its_state_machine_and_time(tmp_path: Path) -> None:
    (tmp_path / "nbs").mkdir()
    toy = _toy_notebook(tmp_path / "nbs" / "00_toy.ipynb")
    out = tmp_path / "reports"
    assert batch.main(["--notebooks", str(toy), "--seeds", "0", "1", "--out", str(out), "--no-report"]) == 0
    smoke = ["--smoke", "--out", str(out / "smoke")]
    assert batch.main(["--notebooks", str(toy), "--seeds", "0", *smoke, "--no-report"]) == 0
    record = out / "00_toy" / "seed=1" / "batch.json"
    data = json.loads(record.read_text())
    data["seconds"] = 3725.0
    del data["machine"]  # a record from before machines were recorded
    record.write_text(json.dumps(data))

    rows = run_times.collect([out], toy.parent)
    assert [(r["notebook"], r["profile"], r["seed"], r["state"]) for r in rows] == [
        ("00_toy", "full", 0, "current"),
        ("00_toy", "full", 1, "current"),
    ]  # the smoke run is left out
    assert "thread(s) of" in rows[0]["machine"] and ", load " in rows[0]["machine"]
    assert rows[1]["machine"] == "not recorded"
    text = run_times.table(rows)
    assert "| 00_toy | full | 1 | current | 62 min (3,725 s) | not recorded | - |" in text


def test_readme_block_is_replaced_and_must_exist(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{run_times.START}\nold table\n{run_times.END}\nafter\n")
    assert run_times.write_readme(readme, "| new |") is True
    assert readme.read_text() == f"before\n{run_times.START}\n| new |\n{run_times.END}\nafter\n"
    assert run_times.write_readme(readme, "| new |") is False
    readme.write_text("no block")
    with pytest.raises(ValueError, match="no run-times block"):
        run_times.write_readme(readme, "| new |")
