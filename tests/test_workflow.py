"""The Snakemake workflow (workflow/Snakefile) and the rerun rule it shares with molft_utils.runs.batch."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from conftest import tracked_data_state
from test_batch_report import _toy_notebook

from molft_utils.data.loading import md5
from molft_utils.runs import batch, cache_jobs, identity

REPO = Path(__file__).resolve().parent.parent
SNAKEFILE = REPO / "workflow" / "Snakefile"
NOTEBOOKS = sorted(p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _env(tmp_path: Path) -> dict:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
        MOLFT_NUM_THREADS="1",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        TQDM_DISABLE="1",
        MOLFT_CACHE=str(tmp_path / "cache"),
    )
    return env


def _snakemake(tmp_path: Path, *args: str, config: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    entries = [f"{k}={v}" for k, v in config.items()]
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(tmp_path), *args]
    cmd += ["--config", *entries]
    res = subprocess.run(cmd, env=_env(tmp_path), capture_output=True, text=True, timeout=timeout, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    return res


def _job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a (dry) run; empty when there is nothing to do."""
    if "Nothing to be done" in output:
        return {}
    table = output.split("Job stats:", 1)[1]
    counts = dict(re.findall(r"^([a-z_]+)\s+(\d+)$", table, flags=re.M))
    counts.pop("total", None)
    return {k: int(v) for k, v in counts.items()}


def _config(tmp_path: Path, **extra: object) -> dict:
    base = {"out": tmp_path / "out", "cache": tmp_path / "cache", "seeds": "[0]"}
    return {k: str(v) for k, v in (base | extra).items()}


@pytest.mark.integration
def test_slurm_profile_dry_run(tmp_path: Path) -> None:
    """10-seed-style plan on the SLURM profile: cache jobs once per seed and split, GPUs and partition set."""
    cfg = _config(tmp_path, seeds="[0,1]", splits="[random,scaffold]", smoke="false")
    res = _snakemake(tmp_path, "-n", "--profile", str(REPO / "workflow" / "profiles" / "slurm"), config=cfg)
    out = res.stdout + res.stderr
    # 2 seeds x 2 splits x 4 cached models; 2 seeds x (4 notebooks x 2 splits + notebook 05, which has both splits)
    assert _job_counts(out) == {"cache_model": 16, "identity": 18, "notebook": 18, "summary": 1, "all": 1}
    assert "slurm_partition=gpu" in out and "gpu=1" in out
    assert "workflow specific profile" in out  # profiles/default (rerun-triggers: mtime) applies too
    assert "05_robust_finetuning/split=scaffold" not in out
    assert f"{tmp_path / 'out'}/01_finetune_and_mlm/split=scaffold/seed=1/result.json" in out
    assert f"{tmp_path / 'out'}/01_finetune_and_mlm/seed=1/result.json" in out  # the default split: no extra level
    assert not (tmp_path / "out").exists()


@pytest.mark.integration
def test_workflow_and_batch_agree_on_what_is_stale(tmp_path: Path) -> None:
    """Runs made by the batch are up to date for Snakemake and vice versa; an edit is stale for both."""
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    toy, other = _toy_notebook(nbs / "00_toy.ipynb"), _toy_notebook(nbs / "98_other.ipynb")
    out = tmp_path / "out"
    assert batch.main(["--notebooks", str(toy), str(other), "--seeds", "0", "--out", str(out), "--no-report"]) == 0
    cfg = _config(tmp_path, notebooks="[00_toy,98_other]", notebook_dir=nbs, smoke="false")
    res = _snakemake(tmp_path, "-n", config=cfg)
    assert _job_counts(res.stdout) == {"summary": 1, "all": 1}  # no notebook job: the batch's results count

    nb = nbformat.read(other, as_version=4)
    nb.cells[1].source += "\nedited = True"
    nbformat.write(nb, other)
    specs = batch.plan_runs([toy, other], [0], out)
    assert [batch.rerun_reason(s) for s in specs] == [None, "notebook changed"]
    res = _snakemake(tmp_path, "-n", config=cfg)
    assert _job_counts(res.stdout) == {"notebook": 1, "summary": 1, "all": 1}
    assert "98_other/seed=0: notebook changed" in res.stderr
    assert "wildcards: nb=98_other, rest=seed=0" in res.stdout

    _snakemake(tmp_path, "--cores", "1", config=cfg)
    assert (out / "98_other" / "seed=0" / "executions.txt").read_text() == "xx"
    assert (out / "00_toy" / "seed=0" / "executions.txt").read_text() == "x"
    assert all(batch.rerun_reason(s) is None for s in batch.plan_runs([toy, other], [0], out))
    assert (out / "summary.md").is_file()

    # prose only: a text job refreshes the executed notebook, nothing is executed, the summary follows
    nb = nbformat.read(toy, as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell("A Discussion written after the run."))
    nbformat.write(nb, toy)
    res = _snakemake(tmp_path, "-n", config=cfg)
    assert _job_counts(res.stdout) == {"text": 1, "summary": 1, "all": 1}, res.stdout + res.stderr
    assert "00_toy/seed=0: text edited (notebook_hash)" in res.stderr
    _snakemake(tmp_path, "--cores", "1", config=cfg)
    executed = nbformat.read(out / "00_toy" / "seed=0" / "00_toy.ipynb", as_version=4)
    assert executed.cells[-1].source == "A Discussion written after the run."
    assert (out / "00_toy" / "seed=0" / "executions.txt").read_text() == "x"
    assert _job_counts(_snakemake(tmp_path, "-n", config=cfg).stdout) == {}


@pytest.mark.integration
def test_smoke_batch_through_snakemake_on_a_custom_csv(tpsa_csv: Path, tmp_path: Path) -> None:
    """The five notebooks in smoke mode on a CSV that is not Lipophilicity, one seed, one core; then an edit of
    one notebook re-runs only it.

    One run checks the workflow (cache jobs, identity stamps, notebook jobs, summary) and the any-dataset path
    together: each notebook job is ``python -m molft_utils.runs.batch`` for exactly that run, so every lesson runs
    through the batch runner on the CSV (its column options, splits made on demand under the cache, a pool held
    out of the training part, the label's name in the report), with lesson 01's models built by the cache jobs for
    that data set.
    """
    before = tracked_data_state()
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    for stem in NOTEBOOKS:
        shutil.copy(REPO / "notebooks" / f"{stem}.ipynb", nbs / f"{stem}.ipynb")
    columns = {"smiles_col": "molecule", "label_col": "tpsa_A2", "label_name": "TPSA", "label_unit": "Å²"}
    cfg = _config(tmp_path, notebook_dir=nbs, smoke="true", dataset=tpsa_csv,
                  parameters="{" + ", ".join(f"{k}: {v}" for k, v in columns.items()) + "}")
    t0 = time.perf_counter()
    _snakemake(tmp_path, "--cores", "1", config=cfg, timeout=1800)
    seconds = time.perf_counter() - t0
    print(f"\nsmoke batch through Snakemake ({len(NOTEBOOKS)} notebooks on {tpsa_csv.name}, 1 seed, 1 core): "
          f"{seconds:.0f} s")
    out, cache = tmp_path / "out", tmp_path / "cache"
    results = sorted(out.rglob("result.json"))
    assert sorted(r.relative_to(out).parts[0] for r in results) == NOTEBOOKS
    for path in results:
        stem = path.relative_to(out).parts[0]
        assert (path.parent / f"{stem}.ipynb").is_file()
        parameters = json.loads((path.parent / "batch.json").read_text())["identity"]["parameters"]
        assert parameters == {"seed": 0, "smoke": True, "dataset": str(tpsa_csv), **columns}, parameters
        rec = json.loads(path.read_text())
        assert rec["config"]["dataset"] == str(tpsa_csv)
        tasks = rec["extra"]["task"]
        for task in tasks.values() if "dataset" not in tasks else [tasks]:
            assert task["dataset"]["path"] == str(tpsa_csv) and task["dataset"]["md5"] == md5(tpsa_csv)
            assert task["dataset"]["label_unit"] == "Å²" and task["pool_source"] == "train-holdout"
            assert cache in Path(task["split_file"]).parents
    summary = (out / "summary.md").read_text()
    for stem in NOTEBOOKS:
        assert f"## {stem} · tpsa_set" in summary
    assert summary.count("label TPSA (Å²)") == len(results) and "logD" not in summary
    executed = {p.stem: p.read_text() for p in out.rglob("0[23]_*.ipynb")}
    assert all("has no external pool" in text for text in executed.values()) and len(executed) == 2
    markers = sorted(p.stem for p in (cache / "workflow").rglob("*.json"))
    assert markers == sorted(cache_jobs.KINDS)
    # named by the logic of the code that builds the models, as their cache keys are: an edit of it reruns the jobs
    code = identity.module_logic_hash("runs.finetune")
    assert {p.parent.name for p in (cache / "workflow").rglob("*.json")} == {f"code={code}"}
    # the notebooks loaded lesson 01's models that the cache jobs had built for this data set
    assert "cache hit: True" in executed["02_influence_lissa"]
    assert tracked_data_state() == before, "tracked data/ must not change"

    assert _job_counts(_snakemake(tmp_path, "-n", config=cfg).stdout) == {}
    edited = nbs / "03_data_selection.ipynb"
    nb = nbformat.read(edited, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("edited = True"))
    nbformat.write(nb, edited)
    res = _snakemake(tmp_path, "-n", config=cfg)
    assert _job_counts(res.stdout) == {"notebook": 1, "summary": 1, "all": 1}
    assert "wildcards: nb=03_data_selection, rest=" in res.stdout
    assert re.search(r"03_data_selection/\S+/seed=0: notebook changed", res.stderr), res.stderr[-2000:]


def _done_spec(toy: Path, out: Path, smoke: bool = False) -> batch.RunSpec:
    assert (
        batch.main(
            ["--notebooks", str(toy), "--seeds", "0", "--out", str(out), "--no-report"] + (["--smoke"] if smoke else [])
        )
        == 0
    )
    return batch.plan_runs([toy], [0], out, smoke=smoke)[0]


@pytest.mark.usefixtures("in_process_notebooks")
def test_rerun_rule_reports_code_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "pkg"
    shutil.copytree(identity.PACKAGE_DIR, package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(identity, "PACKAGE_DIR", package)
    (tmp_path / "nbs").mkdir()
    toy = _toy_notebook(tmp_path / "nbs" / "00_toy.ipynb")
    out = tmp_path / "out"
    spec = _done_spec(toy, out)
    assert batch.rerun_reason(spec) is None
    assert spec.stamp.is_file() and spec.stamp.stat().st_mtime <= (spec.out_dir / "result.json").stat().st_mtime

    for orchestration in identity.ORCHESTRATION_MODULES:  # runs/batch.py, runs/cache_jobs.py, runs/identity.py
        (package / orchestration).write_text((package / orchestration).read_text() + "\n# orchestration only\n")
    assert batch.rerun_reason(batch.plan_runs([toy], [0], out)[0]) is None
    # only the code the notebook can run counts: a new module, or an edit to one it never imports, leaves it current
    (package / "training" / "batch.py").write_text("# not orchestration: same name, other subpackage\n")
    assert batch.rerun_reason(batch.plan_runs([toy], [0], out)[0]) is None
    metrics = package / "training" / "metrics.py"  # the toy imports core.records only
    metrics.write_text(metrics.read_text() + "\n# a change\n")
    assert batch.rerun_reason(batch.plan_runs([toy], [0], out)[0]) is None
    settings = package / "core" / "settings.py"  # imported by core.records: counts
    settings.write_text(settings.read_text() + "\n# a comment: no change of logic\n")
    assert batch.rerun_reason(batch.plan_runs([toy], [0], out)[0]) is None
    settings.write_text(settings.read_text() + "\nA_CHANGE = 1\n")
    changed = batch.plan_runs([toy], [0], out)[0]
    assert changed.identity["code_logic_hash"] != spec.identity["code_logic_hash"]
    assert batch.rerun_reason(changed) == "code changed"
    assert batch.main(["--notebooks", str(toy), "--seeds", "0", "--out", str(out), "--no-report"]) == 0
    record = json.loads((out / "batch_log.json").read_text())["runs"][0]
    assert (record["status"], record["reason"]) == ("done", "code changed")
    assert [p.name for p in changed.stamp.parent.iterdir()] == [changed.stamp.name]  # the old stamp is gone


@pytest.mark.usefixtures("in_process_notebooks")
def test_sync_stamp_follows_the_rerun_rule(tmp_path: Path) -> None:
    (tmp_path / "nbs").mkdir()
    toy = _toy_notebook(tmp_path / "nbs" / "00_toy.ipynb")
    out = tmp_path / "out"
    spec = _done_spec(toy, out)
    result = spec.out_dir / "result.json"
    spec.stamp.unlink()  # e.g. a results folder copied without its hidden files: up to date, stamp rewritten older
    assert batch.sync_stamp(spec) is None and spec.stamp.stat().st_mtime < result.stat().st_mtime
    stale = batch.plan_runs([toy], [0], out, smoke=True)[0]  # same folder, other parameters
    assert batch.sync_stamp(stale) == "parameters changed"
    assert stale.stamp.stat().st_mtime >= result.stat().st_mtime  # newer than the outputs: Snakemake reruns it
    assert batch.sync_stamp(batch.plan_runs([toy], [0], tmp_path / "elsewhere")[0]) == "new"


@pytest.mark.usefixtures("in_process_notebooks")
def test_rerun_rule_other_reasons(tmp_path: Path) -> None:
    (tmp_path / "nbs").mkdir()
    toy = _toy_notebook(tmp_path / "nbs" / "00_toy.ipynb")
    out = tmp_path / "out"
    assert batch.rerun_reason(batch.plan_runs([toy], [0], out)[0]) == "new"
    spec = _done_spec(toy, out)
    assert batch.rerun_reason(batch.plan_runs([toy], [0], out, smoke=True)[0]) == "parameters changed"
    record = json.loads((spec.out_dir / "batch.json").read_text())
    del record["identity"]  # a record written before identities were stored
    (spec.out_dir / "batch.json").write_text(json.dumps(record))
    assert batch.rerun_reason(spec) == "code changed"
    (spec.out_dir / "result.json").unlink()
    assert batch.rerun_reason(spec) == "new"


def test_overrides_only_where_declared_and_not_default(tmp_path: Path) -> None:
    (tmp_path / "nbs").mkdir()
    toy = _toy_notebook(tmp_path / "nbs" / "00_toy.ipynb")
    assert batch.notebook_defaults(toy) == {
        "seed": 0,
        "smoke": False,
        "out_dir": None,
        "scale": 1.0,
        "fail_on_seed": -1,
    }
    same = batch.plan_runs([toy], [0], tmp_path, {"scale": 1.0})[0]
    assert same.out_dir == (tmp_path / "00_toy" / "seed=0").resolve() and same.overrides == {}
    with pytest.raises(ValueError, match="epoch"):
        batch.plan_runs([toy], [0], tmp_path, {"epoch": 5})
    assert batch.plan_runs([toy], [0], tmp_path, {"epoch": 5}, strict=False)[0].overrides == {}


def test_cache_job_options_follow_load_task() -> None:
    names = cache_jobs.task_option_names()
    assert "split" not in names and "seed" not in names
    opts = cache_jobs.relevant_options({"model": "x", "epochs": 5, **{n: "v" for n in names}})
    assert opts == {"model": "x", **{n: "v" for n in names}}
