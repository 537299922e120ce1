"""Every notebook's Discussion opens with its findings cell, and the contradicted sentences of issue 15 are gone."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from molft_utils.core.records import write_result
from molft_utils.runs import verdicts
from molft_utils.runs.findings import findings_for

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("0*.ipynb"))

#: Sentences the committed data contradicted (issue 15); none may come back.
CONTRADICTED = (
    "takes structural outliers",
    "should get a negative score",
    "Time per epoch barely changes",
    "time per epoch changes little",
    "an α below 1 often helps",
    "not what this run found",
    "a pool label far from\nthe Lipophilicity label should be harmful",
)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_discussion_opens_with_findings_cell(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    heads = [i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and c.source.startswith("## Discussion")]
    assert len(heads) == 1, f"{path.name}: expected one '## Discussion' cell"
    cell = nb.cells[heads[0] + 1]
    assert cell.cell_type == "code" and "findings" in cell.metadata.get("tags", []), path.name
    assert f'findings_for("{path.stem}", path)' in cell.source, path.name
    assert len(cell.source.splitlines()) <= 4  # the machinery lives in the package
    # the findings cell reads `path`, which the run-record cell before it writes
    before = "\n".join(c.source for c in nb.cells[: heads[0]] if c.cell_type == "code")
    assert "path = write_result(" in before and '"convergence":' in before, path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_contradicted_sentences_are_gone(path: Path) -> None:
    text = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells)
    for sentence in CONTRADICTED:
        assert sentence not in text, f"{path.name}: {sentence!r}"


def test_findings_for_this_run_and_across_seeds(tmp_path: Path) -> None:
    conv = {"converged": True, "reason": "stopped early"}
    paths = []
    for seed, (a, b) in enumerate([(0.50, 0.70), (0.52, 0.71), (0.49, 0.69)]):
        extra = {"paired_reference": "B", "convergence": {"A": conv, "B": conv}}
        out = tmp_path / "reports" / "00_toy" / f"seed={seed}"
        paths.append(
            write_result(
                out,
                "00_toy",
                seed,
                # a nested setting that repeats the seed (lesson 02's retrain configuration) groups all the same
                {"seed": seed, "split": "random", "retrain": {"seed": seed, "epochs": 30}},
                {"A": {"rmse": a}, "B": {"rmse": b}},
                extra=extra,
            )
        )
    text = findings_for("00_toy", paths[0], tmp_path / "reports")
    this_run, across = text.split("**Across seeds**")
    assert "not decided (n=1)" in this_run and "| A | B | -0.200 |" in this_run
    assert "3 seeds [0, 1, 2]" in across and "| 3/3 | better |" in across
    record = json.loads(paths[0].read_text())
    assert findings_for("00_toy", record, tmp_path / "nothing").endswith("yet.")
    # a run with another configuration (a scaffold split, a smoke run) is not shown the batch's verdicts
    other = dict(record, config={"seed": 0, "split": "scaffold"})
    text = findings_for("00_toy", other, tmp_path / "reports")
    assert "**Across seeds**" not in text and "made with this run's configuration" in text


def test_theory_checks_direction_words() -> None:
    recs = [{"extra": {"diagnostics": {"duplicates spearman(|label diff|, score)": v}}} for v in (0.08, 0.07, 0.10)]
    (line,) = verdicts.theory_checks("02_influence_lissa", recs)
    assert "**above 0**" in line and "(n=3)" in line
    recs = [{"extra": {"diagnostics": {"duplicates spearman(|label diff|, score)": v}}} for v in (0.3, -0.3, 0.01)]
    assert "**not distinguishable from 0**" in verdicts.theory_checks("02", recs)[0]
    wise = {"WiSE-FT alpha|labels=50|split=random": 1.0, "WiSE-FT alpha|labels=100|split=random": 0.5,
            "WiSE-FT alpha|labels=all|split=random": 1.0}  # fmt: skip
    assert "in 1 of 2 few-label settings" in verdicts.theory_checks("05", [{"extra": {"diagnostics": wise}}])[0]
