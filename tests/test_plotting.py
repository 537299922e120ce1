"""The notebooks' shared figures draw what their captions say."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest

from molft_utils.runs import plotting


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _history(valid: list[float]) -> list[dict]:
    return [{"epoch": i + 1, "train_loss": 1.0 / (i + 1), "valid_rmse": v} for i, v in enumerate(valid)]


def test_learning_curves_mark_the_restored_epoch() -> None:
    histories = {"a": _history([0.9, 0.7, 0.8]), "b": _history([1.0, 0.95])}
    fig = plotting.learning_curves(histories, {"a": 2}, unit="log units")
    ax_loss, ax_val = fig.axes
    assert [line.get_label() for line in ax_val.lines] == ["a", "b"] and len(ax_loss.lines) == 2
    assert ax_val.get_ylabel() == "validation RMSE (log units)" and ax_loss.get_yscale() == "log"
    (marker,) = ax_val.collections  # only "a" has a restored epoch
    assert marker.get_offsets().tolist() == [[2.0, 0.7]]


def test_parity_plots_one_panel_per_method_with_metrics_and_identity_line() -> None:
    y = np.array([0.0, 1.0, 2.0, 3.0])
    preds = {"model": y + 0.1, "forest": y[::-1]}
    metrics = {"model": {"rmse": 0.1, "r2": 0.99}, "forest": {"rmse": 2.236, "r2": -3.0}}
    fig = plotting.parity_plots(y, preds, metrics, label="logD")
    assert len(fig.axes) == 2
    assert fig.axes[0].get_title() == "model\nRMSE 0.100, R² 0.990" and fig.axes[0].get_ylabel() == "predicted logD"
    for ax in fig.axes:
        (identity,) = ax.lines
        x, y_line = identity.get_data()
        assert list(x) == list(y_line)  # the diagonal
        assert ax.get_xlim() == ax.get_ylim() and ax.get_xlim()[0] < -0.1 and ax.get_xlim()[1] > 3.1


def test_mlm_curve_skips_the_untrained_point_of_the_training_loss() -> None:
    rows = [
        {"step": 0, "train_loss": float("nan"), "valid_loss": 2.0},
        {"step": 50, "train_loss": 1.5, "valid_loss": 1.4},
        {"step": 100, "train_loss": 1.2, "valid_loss": 1.1},
    ]
    (ax,) = plotting.mlm_curve(rows, "adaptation").axes
    train, valid = ax.lines
    assert list(train.get_xdata()) == [50, 100] and list(valid.get_xdata()) == [0, 50, 100]
    assert ax.get_title() == "adaptation"
    (ax,) = plotting.mlm_curve([{"step": 0, "train_loss": 1.0}, {"step": 9, "train_loss": 0.5}]).axes
    assert len(ax.lines) == 1  # no held-out evaluation recorded: no held-out line


def test_token_length_histogram_has_a_step_outline_per_part() -> None:
    (ax,) = plotting.token_length_histogram({"train": [10, 12, 12, 30], "test": [11, 25]}).axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train", "test"]
    assert ax.get_xlabel() == "tokens per molecule"
