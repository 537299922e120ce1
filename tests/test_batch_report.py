"""The papermill batch runner (resume, failures, overrides) and the report built from result files."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbformat import v4

from molft_utils.core.machine import machine_info
from molft_utils.core.records import write_result
from molft_utils.runs import batch
from molft_utils.runs.report import (
    build_report,
    diagnostics_table,
    format_quantity,
    markdown_table,
    method_table,
    paired_table,
)

PARAMS = "seed = 0\nsmoke = False\nout_dir = None\nscale = 1.0\nfail_on_seed = -1"
BODY = """
import json, pathlib
from molft_utils.core.records import write_result
if seed == fail_on_seed:
    raise RuntimeError(f"deliberate failure for seed {seed}")
out = pathlib.Path(out_dir)
counter = out / "executions.txt"
counter.write_text(counter.read_text() + "x" if counter.exists() else "x")
metrics = {"good": {"rmse": 0.5 * scale + 0.01 * seed}, "reference": {"rmse": 0.6 * scale + 0.01 * seed}}
write_result(out, "00_toy", seed, {"seed": seed, "scale": scale, "out_dir": out_dir}, metrics,
             extra={"paired_reference": "reference", "diagnostics": {"answer": 42}})
"""


def _toy_notebook(path: Path, params: str = PARAMS, body: str = BODY) -> Path:
    nb = v4.new_notebook()
    p = v4.new_code_cell(params)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p, v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.fixture()
def toy(tmp_path: Path) -> Path:
    (tmp_path / "nbs").mkdir()
    return _toy_notebook(tmp_path / "nbs" / "00_toy.ipynb")


def test_plan_runs_layout_and_hash(toy: Path, tmp_path: Path) -> None:
    specs = batch.plan_runs([toy], [0, 1], tmp_path / "out")
    tmp_path = tmp_path.resolve()
    assert [s.out_dir for s in specs] == [
        tmp_path / "out" / "00_toy" / "seed=0",
        tmp_path / "out" / "00_toy" / "seed=1",
    ]
    assert specs[0].parameters["seed"] == 0 and specs[0].parameters["smoke"] is False
    assert specs[0].run_hash != specs[1].run_hash
    tagged = batch.plan_runs([toy], [0], tmp_path / "out", {"scale": 2.0})
    assert tagged[0].out_dir == tmp_path / "out" / "00_toy" / "scale=2.0" / "seed=0"
    assert tagged[0].parameters["scale"] == 2.0


def test_source_hash_ignores_outputs_but_not_code(toy: Path) -> None:
    from molft_utils.runs.identity import notebook_logic_hash, notebook_source_hash

    before, logic = notebook_source_hash(toy), notebook_logic_hash(toy)
    nb = nbformat.read(toy, as_version=4)
    nb.cells[1].outputs = [v4.new_output("stream", text="hello")]
    nbformat.write(nb, toy)
    assert (notebook_source_hash(toy), notebook_logic_hash(toy)) == (before, logic)
    # text only: Markdown, a comment, formatting, a docstring change the text hash, not the logic hash
    nb.cells.insert(1, v4.new_markdown_cell("## Prose"))
    nb.cells[2].source = "# a comment\n" + nb.cells[2].source.replace("=", " = ") + "\n\n"
    nb.cells.append(v4.new_code_cell('def f(x):\n    """Double x."""\n    return 2 * x'))
    nbformat.write(nb, toy)
    text, logic = notebook_source_hash(toy), notebook_logic_hash(toy)
    assert text != before
    nb.cells[-1].source = 'def f(x):\n    """Twice x, reworded."""\n\n    return 2 * x  # same logic'
    nbformat.write(nb, toy)
    assert notebook_logic_hash(toy) == logic and notebook_source_hash(toy) != text
    for code in ("def f(x):\n    return 3 * x", "def f(y):\n    return 2 * y", "def f(x):\n    return 2 * x\nprint(1)"):
        nb.cells[-1].source = code
        nbformat.write(nb, toy)
        assert notebook_logic_hash(toy) != logic, code


def test_parse_override() -> None:
    assert batch.parse_override("epochs=5") == ("epochs", 5)
    assert batch.parse_override("model=ibm/MoLFormer-XL-both-10pct") == ("model", "ibm/MoLFormer-XL-both-10pct")
    assert batch.parse_override("lr=1e-4") == ("lr", 1e-4)
    with pytest.raises(Exception, match="key=value"):
        batch.parse_override("epochs")


@pytest.mark.parametrize("executor", ["in process", pytest.param("jupyter kernel", marks=pytest.mark.integration)])
def test_batch_failure_resume_and_report(toy: Path, tmp_path: Path, executor: str, request) -> None:
    if executor == "in process":  # the batch logic; the kernel variant also runs papermill for real
        request.getfixturevalue("in_process_notebooks")
    out = tmp_path / "reports"
    argv = ["--notebooks", str(toy), "--seeds", "0", "1", "2", "--out", str(out), "-p", "fail_on_seed=1"]
    # one seed raises: the others still run, the failing notebook is kept with its error, exit status 1
    assert batch.main(argv) == 1
    failed_nb = out / "00_toy" / "fail_on_seed=1" / "seed=1" / "00_toy.ipynb"
    assert failed_nb.is_file() and "deliberate failure" in failed_nb.read_text()
    done = {s: (out / "00_toy" / "fail_on_seed=1" / f"seed={s}" / "result.json").is_file() for s in (0, 1, 2)}
    assert done == {0: True, 1: False, 2: True}
    log = json.loads((out / "batch_log.json").read_text())
    assert sorted(r["status"] for r in log["runs"]) == ["done", "done", "failed"]

    # each finished run records the machine it ran on beside its wall time (times compare only on one kind)
    record = json.loads((out / "00_toy" / "fail_on_seed=1" / "seed=0" / "batch.json").read_text())
    assert record["seconds"] > 0 and record["machine"] == machine_info()

    # started again: completed runs are skipped (their notebook is not executed a second time)
    assert batch.main(argv) == 1
    for s in (0, 2):
        assert (out / "00_toy" / "fail_on_seed=1" / f"seed={s}" / "executions.txt").read_text() == "x"
    log = json.loads((out / "batch_log.json").read_text())
    assert sorted(r["status"] for r in log["runs"]) == ["failed", "skipped", "skipped"]

    # the report aggregates what exists, seeds counted
    summary = (out / "summary.md").read_text()
    assert "## 00_toy" in summary and "0.510 ± 0.014 (n=2)" in summary  # good: 0.50 (seed 0) and 0.52 (seed 2)
    assert summary.index("## Findings") < summary.index("## 00_toy")
    # no convergence recorded by the toy: the interval says better, the verdict is not decided
    assert "| good | reference | -0.100 | [-0.100, -0.100] | 2/2 | not decided (unconverged) | better |" in summary
    assert "| answer | 42 ± 0 (n=2) |" in summary


@pytest.mark.usefixtures("in_process_notebooks")
def test_interrupted_run_is_redone(toy: Path, tmp_path: Path) -> None:
    out = tmp_path / "reports"
    argv = ["--notebooks", str(toy), "--seeds", "0", "--out", str(out), "--no-report"]
    assert batch.main(argv) == 0
    run = out / "00_toy" / "seed=0"
    (run / batch.BATCH_FILE).unlink()  # as if the kernel died after writing result.json but before the marker
    assert batch.main(argv) == 0
    assert (run / "executions.txt").read_text() == "xx"
    assert batch.main(argv) == 0
    assert (run / "executions.txt").read_text() == "xx"


def _records(tmp_path: Path) -> list[dict]:
    for seed, (a, b) in enumerate([(0.5, 0.7), (0.6, 0.7), (0.7, 0.9)]):
        write_result(tmp_path / f"s{seed}", "nb", seed, {"seed": seed}, {"A": {"rmse": a, "r2": 0.5}, "B": {"rmse": b}})
    return [json.loads((tmp_path / f"s{s}" / "result.json").read_text()) for s in range(3)]


def test_method_and_paired_tables(tmp_path: Path) -> None:
    recs = _records(tmp_path)
    table = method_table(recs).set_index("method")
    assert table.loc["A", "RMSE"] == "0.600 ± 0.100 (n=3)"
    assert table.loc["B", "seeds"] == 3
    assert pd.isna(table.loc["B", "R²"]) and "| B | 3 | 0.767 ± 0.115 (n=3) | – |" in markdown_table(method_table(recs))
    pt = paired_table(recs, "B").set_index("method")
    assert pt.loc["A", "ΔRMSE vs B"] == "-0.167 ± 0.058 (n=3)"
    assert pt.loc["A", "seeds better"] == "3/3"


def test_structured_method_names_become_columns(tmp_path: Path) -> None:
    write_result(tmp_path / "r", "nb", 0, {"seed": 0}, {"method=L2-SP|labels=50|split=random": {"rmse": 1.0}})
    recs = [json.loads((tmp_path / "r" / "result.json").read_text())]
    row = method_table(recs).iloc[0]
    assert (row["method"], row["labels"], row["split"]) == ("L2-SP", "50", "random")
    md = markdown_table(method_table(recs))
    assert md.splitlines()[0].startswith("| method | labels | split | seeds | RMSE")


def test_report_groups_by_configuration(tmp_path: Path) -> None:
    for scale in (1, 2):
        for seed in (0, 1):
            write_result(
                tmp_path / f"scale{scale}" / f"seed{seed}",
                "nb",
                seed,
                {"seed": seed, "scale": scale, "out_dir": "x"},
                {"A": {"rmse": scale + 0.1 * seed}},
            )
    text = build_report(tmp_path).read_text()
    assert text.count("## nb") == 2
    assert "1.050 ± 0.071 (n=2)" in text and "2.050 ± 0.071 (n=2)" in text
    assert "`scale=1`" in text and "`scale=2`" in text


@pytest.mark.usefixtures("in_process_notebooks")
def test_parallel_jobs_with_relative_paths(toy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """papermill changes the working directory while it runs; parallel jobs must not be confused by that."""
    monkeypatch.chdir(tmp_path)
    argv = ["--notebooks", "nbs/00_toy.ipynb", "--seeds", "0", "1", "--out", "rel", "--jobs", "2", "--no-report"]
    assert batch.main(argv) == 0
    assert all((tmp_path / "rel" / "00_toy" / f"seed={s}" / "result.json").is_file() for s in (0, 1))


def test_paired_reference_pattern(tmp_path: Path) -> None:
    for seed, d in enumerate([0.1, 0.3]):
        metrics = {
            "method=Full FT|labels=50": {"rmse": 1.0},
            "method=L2-SP|labels=50": {"rmse": 1.0 - d},
            "method=Full FT|labels=all": {"rmse": 0.7},
            "method=L2-SP|labels=all": {"rmse": 0.7 + d},
        }
        write_result(tmp_path / f"s{seed}", "nb", seed, {"seed": seed}, metrics)
    recs = [json.loads((tmp_path / f"s{s}" / "result.json").read_text()) for s in range(2)]
    pt = paired_table(recs, {"method": "Full FT"}).set_index("labels")
    assert list(pt["method"]) == ["L2-SP", "L2-SP"]
    assert pt.loc["50", "ΔRMSE vs method=Full FT"] == "-0.200 ± 0.141 (n=2)"
    assert pt.loc["all", "ΔRMSE vs method=Full FT"] == "0.200 ± 0.141 (n=2)"
    assert pt.loc["50", "seeds better"] == "2/2" and pt.loc["all", "seeds better"] == "0/2"


def test_single_seed_shows_no_spread(tmp_path: Path) -> None:
    write_result(tmp_path / "r", "nb", 0, {"seed": 0}, {"A": {"rmse": 0.81234}})
    recs = [json.loads((tmp_path / "r" / "result.json").read_text())]
    assert method_table(recs).iloc[0]["RMSE"] == "0.812 (n=1)"


@pytest.mark.parametrize(
    ("values", "shown"),
    [
        ([0.2795, 0.33], "0.3048 ± 0.0357 (n=2)"),  # four significant digits
        ([220.04, 210.1], "215.1 ± 7.0 (n=2)"),
        ([1000, 1000, 1000], "1,000 ± 0 (n=3)"),  # one whole number: no decimals
        ([12, 13], "12.50 ± 0.71 (n=2)"),  # whole numbers that differ: mean and std alike
        ([0, 1, 1], "0.6667 ± 0.5774 (n=3)"),  # a flag: the share of seeds
        ([3437313], "3,437,313 (n=1)"),  # a parameter count, one seed: no spread
        ([3e-5], "3e-05 (n=1)"),  # a learning rate is not 0.0000
        ([0.004, 0.004], "0.004 ± 0 (n=2)"),  # the same rate on every seed
        ([37.8084], "37.81 (n=1)"),
        ([3.1e-7, 2e-7], "2.55e-07 ± 7.78e-08 (n=2)"),  # a solver residual
        ([-1.69e12, -3e12], "-2.34e+12 ± 9.26e+11 (n=2)"),
        ([0.0, 0.0], "0 ± 0 (n=2)"),
        ([float("nan"), 2.0], "2 (n=1)"),
        ([float("nan")], "–"),
    ],
)
def test_diagnostics_show_the_digits_their_size_needs(values: list[float], shown: str) -> None:
    assert format_quantity(values) == shown


def test_diagnostics_table_skips_flags_and_text() -> None:
    recs = [{"extra": {"diagnostics": {"lr": lr, "flag": True, "note": "x"}}} for lr in (1e-4, 3e-4)]
    table = diagnostics_table(recs)
    assert table.to_dict("records") == [{"quantity": "lr", "mean ± std (n)": "2.00e-04 ± 1.41e-04 (n=2)"}]


def test_report_verdicts_use_recorded_convergence(tmp_path: Path) -> None:
    conv = {"converged": True, "best_epoch": 3, "epochs_run": 8, "patience": 5, "reason": "stopped early"}
    for seed, (a, b) in enumerate([(0.50, 0.70), (0.52, 0.71), (0.49, 0.69)]):
        metrics = {"A": {"rmse": a}, "B": {"rmse": b}}
        extra = {"paired_reference": "B", "convergence": {"A": conv, "B": conv}}
        write_result(tmp_path / "x" / f"seed={seed}", "00_toy", seed, {"seed": seed}, metrics, extra=extra)
    text = build_report(tmp_path).read_text()
    findings = text.split("## Findings")[1].split("## 00_toy")[0]
    # (3 seeds; then a note that these hand-written results carry no batch record, so their version is unknown)
    assert "**00_toy** (3 seeds; **3 of 3 runs not current** (3 not recorded)" in findings
    assert "A vs B: *better*" in findings
    assert "| A | B | -0.197 |" in text and "| 3/3 | better | better | all converged |" in text
    assert any(p.name.endswith("_forest.png") for p in (tmp_path / "figures").iterdir())


def test_report_leaves_the_matplotlib_backend_and_pyplot_alone(tmp_path: Path) -> None:
    """Building the report (figures included) neither switches the global backend nor leaves pyplot figures."""
    import matplotlib
    import matplotlib.pyplot as plt

    conv = {"converged": True, "reason": "stopped early"}
    for seed, (a, b) in enumerate([(0.50, 0.70), (0.52, 0.71)]):
        extra = {"paired_reference": "B", "convergence": {"A": conv, "B": conv}}
        metrics = {"A": {"rmse": a}, "B": {"rmse": b}}
        write_result(tmp_path / "x" / f"seed={seed}", "00_toy", seed, {"seed": seed}, metrics, extra=extra)
    before = matplotlib.get_backend()
    plt.switch_backend("svg")  # a backend that is not the Agg the report once forced
    try:
        figures = plt.get_fignums()
        build_report(tmp_path)
        assert any(p.suffix == ".png" for p in (tmp_path / "figures").iterdir())
        assert (matplotlib.get_backend(), plt.get_fignums()) == ("svg", figures)
    finally:
        plt.switch_backend(before)


@pytest.mark.usefixtures("in_process_notebooks")
def test_status_lists_current_missing_and_stale_runs(toy: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert batch.main(["--notebooks", str(toy), "--seeds", "0", "--out", str(out), "--no-report"]) == 0
    specs = batch.plan_runs([toy], [0, 1], out)
    table = batch.status_table(specs)
    assert "| 00_toy | 0 | current |" in table and "| 00_toy | 1 | missing | - |" in table
    nb = nbformat.read(toy, as_version=4)
    nb.cells[1].source += "\n# a comment changes no number"
    nbformat.write(nb, toy)
    assert batch.main(["--notebooks", str(toy), "--seeds", "0", "--out", str(out), "--status"]) == 0
    assert "| 00_toy | 0 | current (text edited since: --sync-records refreshes it) |" in capsys.readouterr().out
    nb.cells[1].source += "\nedited = True"
    nbformat.write(nb, toy)
    assert batch.main(["--notebooks", str(toy), "--seeds", "0", "--out", str(out), "--status"]) == 0
    assert "| 00_toy | 0 | stale (notebook changed) |" in capsys.readouterr().out
    assert (out / "00_toy" / "seed=0" / "executions.txt").read_text() == "x"  # --status executed nothing


def test_selection_report_draws_both_regimes_and_pairs_with_the_start(tmp_path: Path) -> None:
    """Lesson 03's records: regime A points and regime B curves are separate figures; every strategy is also
    compared with the start (strategy none, n = 0) of its own regime and learner."""
    from molft_utils.methods.selection_study import method_name
    from molft_utils.runs.comparisons import lesson_comparisons

    recs = []
    for seed in (0, 1, 2):
        metrics = {}
        for learner in ("finetuned", "rf"):
            metrics[method_name("A", "none", 0, learner)] = {"rmse": 0.80 + 0.01 * seed}
            metrics[method_name("B", "none", 0, learner)] = {"rmse": 1.20 + 0.01 * seed}
            for strategy, gain in (("random", 0.0), ("maxmin", 0.02)):
                metrics[method_name("A", strategy, 100, learner)] = {"rmse": 0.78 - gain + 0.01 * seed}
                for budget in (100, 200):
                    metrics[method_name("B", strategy, budget, learner)] = {"rmse": 1.1 - budget / 1e3 - gain}
        extra = {"paired_reference": {"strategy": "random"}, "convergence": {}}
        recs.append(write_result(tmp_path / "03_data_selection" / f"seed={seed}", "03_data_selection", seed,
                                 {"seed": seed, "n_start": 200}, metrics, extra=extra))  # fmt: skip
    loaded = [json.loads(Path(p).read_text()) | {"seed": s} for s, p in enumerate(recs)]
    comps = lesson_comparisons(loaded)
    pairs = {(c.method, c.reference) for c in comps}
    assert (method_name("B", "maxmin", 200, "rf"), method_name("B", "random", 200, "rf")) in pairs
    assert (method_name("B", "maxmin", 200, "rf"), method_name("B", "none", 0, "rf")) in pairs
    assert (method_name("A", "random", 100), method_name("A", "none", 0)) in pairs
    summary = build_report(tmp_path).read_text()
    figures = sorted(p.name for p in (tmp_path / "figures").glob("03_data_selection_*_rmse*.png"))
    assert len(figures) == 2 and any(name.endswith("_rmse_A.png") for name in figures)
    for name in figures:
        assert f"figures/{name}" in summary


def test_robust_methods_are_also_compared_with_the_forest() -> None:
    from molft_utils.runs.comparisons import lesson_comparisons

    recs = []
    for seed in (0, 1):
        metrics = {f"method={m}|labels=50|split=random": {"rmse": r + 0.01 * seed}
                   for m, r in (("Full FT", 1.0), ("L2-SP", 0.95), ("ECFP4 + RF", 0.9))}  # fmt: skip
        recs.append({"notebook": "05_robust_finetuning", "seed": seed, "metrics": metrics,
                     "extra": {"paired_reference": {"method": "Full FT"}}})  # fmt: skip
    refs = {(c.method, c.reference) for c in lesson_comparisons(recs)}
    assert ("method=L2-SP|labels=50|split=random", "method=ECFP4 + RF|labels=50|split=random") in refs
    assert ("method=L2-SP|labels=50|split=random", "method=Full FT|labels=50|split=random") in refs


@pytest.mark.usefixtures("in_process_notebooks")
def test_report_marks_runs_made_by_an_older_notebook(toy: Path, tmp_path: Path) -> None:
    from molft_utils.runs.identity import recorded_state

    out = tmp_path / "out"
    assert batch.main(["--notebooks", str(toy), "--seeds", "0", "--out", str(out), "--no-report"]) == 0
    run_dir = out / "00_toy" / "seed=0"
    assert recorded_state(run_dir, toy.parent) == "current"
    assert "runs not current" not in build_report(out, notebooks=toy.parent).read_text()

    nb = nbformat.read(toy, as_version=4)
    nb.cells.append(v4.new_markdown_cell("Prose changes no number."))
    nbformat.write(nb, toy)
    assert recorded_state(run_dir, toy.parent) == "current"
    nb.cells[1].source += "\nedited = True"
    nbformat.write(nb, toy)
    assert recorded_state(run_dir, toy.parent) == "stale (notebook changed)"
    summary = build_report(out, notebooks=toy.parent).read_text()
    findings = summary[summary.index("## Findings") : summary.index("## 00_toy")]
    assert "**1 of 1 runs not current** (1 stale (notebook changed))" in findings
    assert summary.count("runs not current") == 2  # in Findings and at the head of the lesson's section

    (run_dir / "batch.json").unlink()  # a result written outside the batch runner: its version is unknown
    assert recorded_state(run_dir, toy.parent) == "not recorded"
    assert "(1 not recorded)" in build_report(out, notebooks=toy.parent).read_text()


@pytest.mark.usefixtures("in_process_notebooks")
def test_a_rerun_removes_the_figures_of_the_run_it_replaces(toy: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_dir = out / "00_toy" / "seed=0"
    run_dir.mkdir(parents=True)
    (run_dir / "fig3_old_name.png").write_bytes(b"png")
    (run_dir / "notes.txt").write_text("kept")
    assert batch.main(["--notebooks", str(toy), "--seeds", "0", "--out", str(out), "--no-report"]) == 0
    assert not (run_dir / "fig3_old_name.png").exists() and (run_dir / "notes.txt").read_text() == "kept"


def test_seeds_group_together_when_a_nested_setting_repeats_the_seed(tmp_path: Path) -> None:
    # lesson 02 records its retrain configuration, whose training seed is the run's seed
    for seed in (0, 1):
        config = {"seed": seed, "k": 20, "retrain_config": {"seed": seed, "epochs": 30}}
        metrics = {"good": {"rmse": 0.5 + 0.01 * seed}, "reference": {"rmse": 0.6}}
        write_result(tmp_path / f"02_x/seed={seed}", "02_x", seed, config, metrics,
                     extra={"paired_reference": "reference"})
    text = build_report(tmp_path).read_text()
    assert "Seeds: [0, 1]." in text and "Seeds: [0]." not in text
    # a nested setting that differs for another reason still separates the runs
    write_result(tmp_path / "02_x/seed=2", "02_x", 2, {"seed": 2, "k": 20, "retrain_config": {"seed": 2, "epochs": 5}},
                 {"good": {"rmse": 0.5}, "reference": {"rmse": 0.6}}, extra={"paired_reference": "reference"})
    text = build_report(tmp_path).read_text()
    assert "Seeds: [0, 1]." in text and "Seeds: [2]." in text


def test_reference_rows_name_methods_that_the_committed_results_record():
    """Each published number of the student report is set beside one of our methods by name: that name must be a
    method key of the lesson's committed full-size results (a renamed method would otherwise show '–')."""
    root = Path(__file__).resolve().parents[1]
    ref = pd.read_csv(root / "data" / "reference_student_report.csv", comment="#")
    for row in ref.itertuples(index=False):
        results = sorted((root / "reports" / row.lesson).glob("seed=*/result.json"))
        if not results:
            pytest.skip(f"no committed results of {row.lesson}")
        keys = set().union(*(json.loads(p.read_text())["metrics"] for p in results))
        assert row.our_method in keys, f"{row.lesson}: {row.our_method!r} is not a method of its results"


def test_report_removes_figures_of_configurations_it_no_longer_shows(tmp_path: Path) -> None:
    import shutil

    conv = {"converged": True, "reason": "stopped early"}

    def results(scale: float) -> None:
        for seed in (0, 1):
            metrics = {"A": {"rmse": 0.5 * scale + 0.01 * seed}, "B": {"rmse": 0.7 * scale}}
            extra = {"paired_reference": "B", "convergence": {"A": conv, "B": conv}}
            write_result(tmp_path / "runs" / f"seed={seed}", "00_toy", seed, {"seed": seed, "scale": scale}, metrics,
                         extra=extra)  # fmt: skip

    results(1.0)
    build_report(tmp_path)
    first = {p.name for p in (tmp_path / "figures").glob("00_toy_*.png")}
    (tmp_path / "figures" / "notes.png").write_bytes(b"not a lesson figure")
    shutil.rmtree(tmp_path / "runs")
    results(2.0)  # another configuration: another group hash, other figure names
    text = build_report(tmp_path).read_text()
    now = {p.name for p in (tmp_path / "figures").glob("00_toy_*.png")}
    assert first and now and not first & now
    assert all(f"figures/{name}" in text for name in now)
    assert (tmp_path / "figures" / "notes.png").is_file()


def test_versus_names_only_what_differs_in_the_reference():
    from molft_utils.runs.report_figures import versus

    a = "regime=B|strategy=kmeans|n=400|learner=rf"
    assert versus(a, "regime=B|strategy=random|n=400|learner=rf") == "random"
    assert versus(a, "regime=B|strategy=none|n=0|learner=rf") == "none, n = 0"


def test_notebooks_are_named_by_file_name_or_number(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for name in ("01_first", "02_second"):
        nbformat.write(v4.new_notebook(), tmp_path / f"{name}.ipynb")
    first, second = tmp_path / "01_first.ipynb", tmp_path / "02_second.ipynb"
    assert batch.resolve_notebooks(["02", "01_first", "1", str(second)], tmp_path) == [second, first, first, second]
    with pytest.raises(ValueError, match=r"--notebooks 03: is neither .* one of: 01_first, 02_second"):
        batch.resolve_notebooks(["03"], tmp_path)
    with pytest.raises(ValueError, match="no such notebook file"):
        batch.resolve_notebooks([str(tmp_path / "09_missing.ipynb")], tmp_path)
    # the command line reports the problem in one line and fails, instead of a traceback
    assert batch.main(["--notebooks", "no_such_lesson", "--status"]) == 1
    assert "no_such_lesson: is neither a .ipynb file nor a numbered notebook" in caplog.text


@pytest.mark.usefixtures("in_process_notebooks")
def test_status_counts_the_checkpoints_a_rerun_would_resume_from(toy: Path, tmp_path: Path) -> None:
    from molft_utils.runs.checkpoints import Checkpoints

    out = tmp_path / "out"
    assert batch.main(["--notebooks", str(toy), "--seeds", "0", "--out", str(out), "--no-report"]) == 0
    spec = batch.plan_runs([toy], [0], out, smoke=True)[0]  # other parameters: a rerun
    Checkpoints.for_notebook("00_toy", spec.out_dir, toy.parent).get_or_compute("stage", {"k": 1}, lambda: {"x": 1})
    old = spec.out_dir / "checkpoints" / "other-0.json"  # a record keyed by an older notebook
    old.write_text(json.dumps({"identity": {"notebook": "00_toy.ipynb", "notebook_hash": "old"}, "value": {}}))
    assert batch.checkpoint_counts(spec) == (1, 2)
    assert "| 00_toy | 0 | stale (parameters changed); a rerun resumes from 1 of 2 checkpoints |" in (
        batch.status_table([spec])
    )
