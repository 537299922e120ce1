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


def test_recipe_options_are_part_of_the_job() -> None:
    # the profile and the from-scratch ceiling change lesson 01's models, so they key the job
    assert cache_jobs.relevant_options({"profile": "quick", "random_init_epochs": 45, "k": 20}) == {
        "profile": "quick",
        "random_init_epochs": 45,
    }


def test_job_configs_match_lesson_01s_arms() -> None:
    from molft_utils.runs.identity import notebook_defaults
    from molft_utils.runs.profiles import QUICK_RECIPE

    defaults = notebook_defaults(Path(__file__).resolve().parents[1] / "notebooks" / "01_finetune_and_mlm.ipynb")
    assert cache_jobs.lesson01_random_init_epochs() == defaults["random_init_epochs"] > defaults["epochs"]
    recipe, mlm = pipeline.recipe_configs(0, False)
    # full profile: the pretrained arms use the recipe, the from-scratch arm only raises its ceiling
    assert cache_jobs.job_configs("finetuned-pretrained", 0, False) == (recipe, mlm)
    scratch, _ = cache_jobs.job_configs("finetuned-random", 0, False)
    assert scratch.epochs == defaults["random_init_epochs"]
    assert {**vars(scratch), "epochs": recipe.epochs} == vars(recipe)
    assert cache_jobs.job_configs("finetuned-random", 0, False, random_init_epochs=45)[0].epochs == 45
    # quick profile and smoke mode: every arm shares the recipe's ceiling, as in the notebook
    for kind in cache_jobs.KINDS:
        quick, quick_mlm = cache_jobs.job_configs(kind, 0, False, "quick")
        assert (quick.epochs, quick.patience, quick_mlm.epochs) == (
            QUICK_RECIPE["epochs"], QUICK_RECIPE["patience"], QUICK_RECIPE["mlm_epochs"]
        )
        assert cache_jobs.job_configs(kind, 0, True)[0] == pipeline.recipe_configs(0, True)[0]
