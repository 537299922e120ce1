"""Run profiles: the learner's quick illustration beside the report's full budgets."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from molft_utils.runs.batch import notebook_defaults
from molft_utils.runs.profiles import PROFILES, QUICK_RECIPE, check_profile, recipe_overrides

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
#: Lessons with a ``profile`` parameter. Lesson 05 gets it with its next full-size rerun (adding it now would
#: make its committed full-size seed stale).
PROFILED = ("01", "02", "03", "04")


def test_profiles_and_recipe_overrides() -> None:
    assert PROFILES == ("full", "quick")
    assert recipe_overrides("full") == {}
    quick = recipe_overrides("quick")
    assert quick == QUICK_RECIPE and quick["epochs"] < 30 and quick["mlm_epochs"] < 10
    quick["epochs"] = 99  # a copy: the module's constant is not changed through it
    assert QUICK_RECIPE["epochs"] != 99
    with pytest.raises(ValueError, match="profile must be one of"):
        check_profile("fast")


@pytest.mark.parametrize("lesson", PROFILED)
def test_notebooks_default_to_full_and_record_their_profile(lesson: str) -> None:
    path = next(NOTEBOOKS.glob(f"{lesson}_*.ipynb"))
    assert notebook_defaults(path)["profile"] == "full"
    code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    assert 'check_profile(profile) == "quick"' in code, "the quick budgets are stated in the notebook"
    assert '"profile": profile' in code, "result.json records the profile, so the report keeps profiles apart"
