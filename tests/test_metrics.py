"""Tests for molft_utils.training.metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from molft_utils.training.metrics import aggregate, format_mean_std, regression_metrics


def test_hand_computed_values():
    y = [1.0, 2.0, 3.0, 4.0]
    p = [1.0, 2.0, 4.0, 3.0]
    m = regression_metrics(y, p)
    # errors 0, 0, 1, -1 -> mse 0.5, mae 0.5; ss_tot = 5 -> r2 = 1 - 2/5
    assert m["mse"] == pytest.approx(0.5)
    assert m["rmse"] == pytest.approx(math.sqrt(0.5))
    assert m["mae"] == pytest.approx(0.5)
    assert m["r2"] == pytest.approx(0.6)
    # both have variance 5/4 and covariance 4/4 -> pearson 0.8; ranks equal values -> spearman 0.8
    assert m["pearson"] == pytest.approx(0.8)
    assert m["spearman"] == pytest.approx(0.8)
    assert set(m) == {"mse", "rmse", "mae", "r2", "pearson", "spearman"}


def test_perfect_predictions():
    y = np.array([0.5, -1.0, 2.0, 3.5])
    m = regression_metrics(y, y.copy())
    assert m["rmse"] == 0.0 and m["mae"] == 0.0
    assert m["r2"] == pytest.approx(1.0)
    assert m["pearson"] == pytest.approx(1.0) and m["spearman"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("y", "p"),
    [([1.0, 2.0], [1.0]), ([], []), ([1.0, float("nan")], [1.0, 2.0]), ([1.0, 2.0], [np.inf, 2.0])],
)
def test_invalid_input_raises(y, p):
    with pytest.raises(ValueError):
        regression_metrics(y, p)


def test_aggregate_mean_std():
    recs = [{"rmse": 1.0, "r2": 0.5}, {"rmse": 2.0, "r2": 0.7}, {"rmse": 3.0, "r2": 0.6}]
    agg = aggregate(recs)
    assert agg["rmse"]["mean"] == pytest.approx(2.0)
    assert agg["rmse"]["std"] == pytest.approx(1.0)  # sample std (ddof=1)
    assert agg["rmse"]["n"] == 3
    assert agg["r2"]["mean"] == pytest.approx(0.6)
    assert agg["r2"]["std"] == pytest.approx(0.1)


def test_aggregate_single_record_and_nan():
    agg = aggregate([{"rmse": 1.5}])
    assert agg["rmse"]["mean"] == 1.5 and agg["rmse"]["n"] == 1 and math.isnan(agg["rmse"]["std"])
    agg = aggregate([{"r": 1.0}, {"r": float("nan")}, {"r": 3.0}])
    assert agg["r"] == {"mean": 2.0, "std": pytest.approx(math.sqrt(2.0)), "n": 2}


def test_format_mean_std():
    assert format_mean_std(0.71234, 0.0149, 3) == "0.712 ± 0.015 (n=3)"
    assert format_mean_std(1.0, 0.25, 5, digits=1) == "1.0 ± 0.2 (n=5)"
