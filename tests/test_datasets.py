"""Any SMILES + label CSV through the series: the dataset registry, splits on demand, the held-out pool, and
a wrong column caught before training. Every notebook run on a CSV that is not Lipophilicity (the batch runner
inside the workflow's jobs): tests/test_workflow.py::test_smoke_batch_through_snakemake_on_a_custom_csv."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import TPSA_MOLECULES, tracked_data_state

from molft_utils.core.settings import REPO_ROOT, reload_settings
from molft_utils.data import datasets
from molft_utils.data.loading import LIPOPHILICITY, DataValidationError, load_dataset, md5
from molft_utils.data.splits import SPLIT_DIR
from molft_utils.runs import batch
from molft_utils.runs import finetune as pipeline


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MOLFT_CACHE", str(tmp_path / "cache"))
    reload_settings()
    return tmp_path / "cache"


def test_registry_default_and_csv(tpsa_csv: Path) -> None:
    lipo = datasets.get_dataset()
    assert lipo.name == "lipophilicity" and "lipophilicity" in datasets.available()
    assert lipo.path == LIPOPHILICITY and lipo.pool_path is not None and lipo.committed_splits
    assert lipo.axis_label == "logD (log units)"
    spec = datasets.get_dataset(str(tpsa_csv), smiles_col="molecule", label_col="tpsa_A2", label_unit="Å²")
    assert spec.name == "tpsa_set" and spec.pool_path is None and not spec.committed_splits
    assert spec.label_name == "tpsa_A2" and spec.axis_label == "tpsa_A2 (Å²)"
    assert spec.record()["md5"] == md5(tpsa_csv) and spec.record()["path"] == str(tpsa_csv)
    assert len(spec.load()) == TPSA_MOLECULES
    with pytest.raises(FileNotFoundError, match="neither a registered name"):
        datasets.get_dataset("no-such-dataset")
    with pytest.raises(FileNotFoundError, match="no such data file"):
        datasets.get_dataset("/nowhere/x.csv")


def test_register_needs_a_new_name(tpsa_csv: Path) -> None:
    with pytest.raises(ValueError, match="already registered"):
        datasets.register(datasets.DatasetSpec(name="lipophilicity", path=tpsa_csv))


def test_conflicting_duplicate_message_shows_plain_numbers(tmp_path: Path) -> None:
    path = tmp_path / "dup.csv"
    path.write_text("smiles,target\nCCO,1.0\nOCC,2.5\n")
    with pytest.raises(DataValidationError) as err:
        load_dataset(path)
    message = str(err.value)
    assert "with labels 1.0 and 2.5" in message and "np.float64" not in message and str(path) in message


def test_splits_on_demand_go_to_the_cache_and_are_reused(tpsa_csv: Path, cache: Path) -> None:
    before = tracked_data_state()
    kwargs = {"dataset": str(tpsa_csv), "smiles_col": "molecule", "label_col": "tpsa_A2"}
    first = {kind: pipeline.load_task(kind, 3, **kwargs) for kind in ("random", "scaffold")}
    for kind, task in first.items():
        path = Path(task.split_file)
        assert path.is_file() and cache in path.parents, path
        saved = json.loads(path.read_text())
        assert saved["data_md5"] == md5(tpsa_csv) and saved["n_rows"] == TPSA_MOLECULES and saved["kind"] == kind
    stamp = {k: Path(t.split_file).stat().st_mtime_ns for k, t in first.items()}
    again = {kind: pipeline.load_task(kind, 3, **kwargs) for kind in ("random", "scaffold")}
    for kind in first:
        assert again[kind].split_file == first[kind].split_file
        assert Path(again[kind].split_file).stat().st_mtime_ns == stamp[kind], "a saved split is reused, not rewritten"
        assert again[kind].split.test == first[kind].split.test
    assert tracked_data_state() == before, "tracked data/ must not change at run time"


def test_lipophilicity_uses_the_committed_splits(cache: Path) -> None:
    before = tracked_data_state()
    task = pipeline.load_task("random", 0, smoke=True)
    assert Path(task.split_file) == SPLIT_DIR / "lipophilicity_random_seed0.json"
    assert task.pool_source == "external" and task.describe()["dataset"]["md5"] == md5(LIPOPHILICITY)
    assert "dataset" not in task.key, "the default data set keeps its cache keys"
    new_seed = pipeline.load_task("random", 7, smoke=True)  # not committed: made under the cache
    assert cache in Path(new_seed.split_file).parents
    assert tracked_data_state() == before


def test_held_out_pool_without_an_external_pool(tpsa_csv: Path, cache: Path) -> None:
    kwargs = {"dataset": str(tpsa_csv), "smiles_col": "molecule", "label_col": "tpsa_A2"}
    task = pipeline.load_task("random", 0, **kwargs)
    assert task.pool_source == "train-holdout" and "no external pool" in task.pool_note
    n_train = len(task.split.train)
    assert len(task.pool) == round(pipeline.POOL_FRACTION * n_train) and len(task.train) == n_train - len(task.pool)
    assert not set(task.pool.row) & set(task.train.row), "pool rows leave the training part"
    assert set(task.pool.row) | set(task.train.row) == set(task.split.frames(task.dataset.load())["train"].row)
    assert pipeline.load_task("random", 0, **kwargs).pool.row.tolist() == task.pool.row.tolist()  # seeded
    assert pipeline.load_task("random", 1, **kwargs).key != task.key
    assert task.key["dataset"]["pool"] == "train-holdout"


def test_override_folder_names_are_readable_and_safe(tpsa_csv: Path) -> None:
    tag = batch._override_tag({"dataset": str(tpsa_csv), "label_unit": "Å²", "label_col": "tpsa_A2"})
    assert tag.startswith("dataset=tpsa_set-") and "/" not in tag and " " not in tag
    assert tag.isascii()
    other = batch._override_tag({"dataset": str(tpsa_csv), "label_unit": "µM", "label_col": "tpsa_A2"})
    assert other != tag, "different values must not share a folder"


def _batch_env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        MOLFT_SMOKE="1", MOLFT_CACHE=str(cache), MOLFT_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
        TQDM_DISABLE="1", PYTHONPATH=os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    return env


@pytest.mark.integration
def test_wrong_columns_stop_with_the_loaders_message_before_training(tpsa_csv: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    out = tmp_path / "reports"
    notebook = REPO_ROOT / "notebooks" / "01_finetune_and_mlm.ipynb"
    proc = subprocess.run(
        [sys.executable, "-m", "molft_utils.runs.batch", "--smoke", "--seeds", "0", "--out", str(out), "--no-report",
         "--notebooks", str(notebook), "-p", f"dataset={tpsa_csv}", "-p", "smiles_col=smiles", "-p", "label_col=logD"],
        cwd=REPO_ROOT, env=_batch_env(cache), capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    executed = nbformat.read(next(out.rglob("01_finetune_and_mlm.ipynb")), as_version=4)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert len(errors) == 1 and errors[0].ename == "DataValidationError"
    assert f"{tpsa_csv}: missing column(s) ['smiles', 'logD']" in errors[0].evalue
    assert "columns found: ['molecule', 'tpsa_A2']" in errors[0].evalue
    failed = next(c for c in executed.cells if any(o.output_type == "error" for o in c.get("outputs", [])))
    assert "load_task" in failed.source, "the data is validated by the data-loading cell"
    trained = [p for kind in ("finetuned", "mlm_adapted") for p in (cache / kind).glob("*")]
    assert trained == [], "nothing may be trained before the data is validated"
    assert not list(out.rglob("result.json"))
