"""Tests of the equal-budget view (molft_utils.methods.peft_methods.budget) and of the setup module split."""

from __future__ import annotations

import pytest

from molft_utils.methods.peft_methods import epochs_within, equal_budget

HISTORY = [
    {"epoch": 1, "valid_rmse": 1.00, "test_rmse": 1.10},
    {"epoch": 2, "valid_rmse": 0.80, "test_rmse": 0.95},
    {"epoch": 3, "valid_rmse": 0.85, "test_rmse": 0.70},  # a better test RMSE must not be picked: selection is on valid
    {"epoch": 4, "valid_rmse": 0.60, "test_rmse": 0.75},
]


def test_cut_at_the_budget_restores_the_best_validation_epoch() -> None:
    out = equal_budget(HISTORY, 3)
    assert out["epoch"] == 2 and out["valid_rmse"] == 0.80 and out["test_rmse"] == 0.95
    assert out["epochs_used"] == 3 and out["within_run"] is True
    assert equal_budget(HISTORY, 1)["epoch"] == 1


def test_a_run_shorter_than_the_budget_gives_its_own_best() -> None:
    out = equal_budget(HISTORY, 10)
    assert out["epoch"] == 4 and out["epochs_used"] == 4 and out["within_run"] is False


def test_missing_test_metric_and_bad_input() -> None:
    assert equal_budget([{"valid_rmse": 0.5}], 2)["test_rmse"] is None
    with pytest.raises(ValueError, match="budget_epochs"):
        equal_budget(HISTORY, 0)
    with pytest.raises(ValueError, match="empty"):
        equal_budget([], 3)
    with pytest.raises(ValueError, match="no 'valid_rmse'"):
        equal_budget([{"valid_rmse": 1.0}, {"loss": 2.0}], 2)


def test_epochs_within_a_time_budget() -> None:
    assert epochs_within(30.0, 95.0) == 3
    assert epochs_within(30.0, 10.0) == 1  # at least one epoch
    with pytest.raises(ValueError, match="seconds_per_epoch"):
        epochs_within(float("nan"), 10.0)
    with pytest.raises(ValueError, match="budget_seconds"):
        epochs_within(3.0, 0)


def test_split_modules_keep_the_old_import_paths() -> None:
    from molft_utils.methods.peft_methods import merge, settings, setup, targets

    assert setup.LoraSettings is settings.LoraSettings
    assert setup.attention_targets is targets.attention_targets
    assert setup.merge_and_save is merge.merge_and_save
    assert setup.NoTargetModulesError is targets.NoTargetModulesError
