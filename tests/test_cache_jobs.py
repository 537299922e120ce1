"""Lesson 01's cached models built as jobs of their own: the notebooks' calls then hit the same entries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from molft_utils.core.records import ModelCache
from molft_utils.core.settings import reload_settings
from molft_utils.runs import cache_jobs
from molft_utils.runs import finetune as pipeline


@pytest.fixture()
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MOLFT_CACHE", str(tmp_path / "cache"))
    reload_settings()
    return tmp_path / "cache"


def test_finetuned_job_builds_the_entry_the_notebook_call_hits(cache_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker.json"
    assert cache_jobs.main(["finetuned", "--init", "random", "--seed", "1", "--smoke", "--marker", str(marker)]) == 0
    record = json.loads(marker.read_text())
    assert (record["kind"], record["seed"], record["split"], record["smoke"]) == ("finetuned-random", 1, "random", True)
    assert record["cache_hit"] is False and Path(record["entry"]).parent.parent == cache_dir
    # what lesson 01 (and the lessons that reuse its models) call with the same seed and recipe
    task = pipeline.load_task("random", 1, smoke=True)
    train_config, mlm_config = pipeline.recipe_configs(1, True)
    art = pipeline.finetuned_model(task, "random", None, train_config, mlm_config, cache=ModelCache(), progress=False)
    assert art.cache_hit and str(art.path) == record["entry"]
    # the job again: found, not trained
    assert cache_jobs.build("finetuned-random", 1, "random", smoke=True)["cache_hit"] is True


def test_unknown_kind_and_irrelevant_options() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        cache_jobs.build("finetuned-scratch", 0, "random", smoke=True)
    # notebook parameters that do not change lesson 01's models are not part of the job
    assert cache_jobs.relevant_options({"model": None, "epochs": 5, "dataset": "x.csv"}) == {
        "dataset": "x.csv",
        "model": None,
    }
