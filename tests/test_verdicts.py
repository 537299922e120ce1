"""Interval, verdict and convergence logic of :mod:`molft_utils.runs.verdicts` on constructed inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from molft_utils.runs import verdicts as vd

CONVERGED = {"a": "converged", "ref": "converged"}


def _seeds(values: list[float]) -> dict[int, float]:
    return dict(enumerate(values))


def test_interval_matches_student_t() -> None:
    diffs = [0.1, 0.3, 0.2, 0.25]
    mean, lo, hi = vd.interval(diffs)
    half = stats.t.ppf(0.975, 3) * np.std(diffs, ddof=1) / math.sqrt(4)
    assert mean == pytest.approx(0.2125)
    assert (lo, hi) == pytest.approx((mean - half, mean + half))
    m1, lo1, hi1 = vd.interval([0.4])
    assert m1 == 0.4 and math.isnan(lo1) and math.isnan(hi1)


def test_clear_difference_is_better_or_worse_by_direction() -> None:
    ref = _seeds([1.00, 1.02, 0.98, 1.01, 0.99])
    lower = _seeds([v - 0.2 + 0.01 * i for i, v in enumerate(ref.values())])
    c = vd.compare("a", "ref", lower, ref, "rmse", CONVERGED)
    assert c.verdict == "better" and c.hi < 0 and c.n_better == 5 and c.n == 5
    assert vd.compare("a", "ref", lower, ref, "r2", CONVERGED).verdict == "worse"  # R²: lower is worse
    higher = {s: v + 0.3 for s, v in ref.items()}
    assert vd.compare("a", "ref", higher, ref, "rmse", CONVERGED).verdict == "worse"
    assert vd.compare("a", "ref", higher, ref, "r2", CONVERGED).verdict == "better"


def test_noise_is_not_distinguishable() -> None:
    rng = np.random.default_rng(0)
    ref = _seeds(list(rng.normal(1.0, 0.05, 5)))
    noisy = {s: v + d for (s, v), d in zip(ref.items(), [0.03, -0.04, 0.02, -0.01, -0.02], strict=True)}
    c = vd.compare("a", "ref", noisy, ref, "rmse", CONVERGED)
    assert c.lo < 0 < c.hi
    assert c.verdict == "not distinguishable" == c.interval_verdict
    identical = vd.compare("a", "ref", ref, ref, "rmse", CONVERGED)  # e.g. WiSE-FT choosing α = 1
    assert identical.verdict == "not distinguishable" and identical.n_better == 0


def test_unconverged_or_unknown_model_is_not_decided() -> None:
    ref = _seeds([1.0, 1.0, 1.0])
    lower = _seeds([0.7, 0.71, 0.69])
    c = vd.compare("a", "ref", lower, ref, "rmse", {"a": "converged", "ref": "unconverged (3/3 seeds)"})
    assert c.verdict == "not decided (unconverged)"
    assert c.interval_verdict == "better"  # what the interval alone says is kept beside it
    assert c.undecided_because == ["ref: unconverged (3/3 seeds)"]
    unknown = vd.compare("a", "ref", lower, ref, "rmse", {"a": "not recorded", "ref": "converged"})
    assert unknown.verdict == "not decided (unconverged)" and unknown.as_row()["convergence"] == "a: not recorded"
    baseline = vd.compare("a", "ref", lower, ref, "rmse", {"a": "not iterative", "ref": "converged"})
    assert baseline.verdict == "better"


def test_single_seed_has_no_interval() -> None:
    c = vd.compare("a", "ref", {0: 0.5}, {0: 1.0}, "rmse", CONVERGED)
    assert c.verdict == "not decided (n=1)" and math.isnan(c.lo)
    assert c.as_row()["95 % CI"] == "–" and c.as_row()["seeds better"] == "1/1"
    only_shared = vd.compare("a", "ref", {0: 0.5, 1: 0.4}, {1: 1.0, 2: 1.0}, "rmse", CONVERGED)
    assert only_shared.n == 1  # pairs only seeds present in both


def _hist(values: list[float]) -> list[dict]:
    return [{"epoch": i + 1, "valid_rmse": v} for i, v in enumerate(values)]


def test_convergence_early_stop_plateau_and_short_runs() -> None:
    stopped = vd.convergence(_hist([1.0, 0.8, 0.7, 0.72, 0.71, 0.73]), patience=3)
    assert stopped["stopped_early"] and stopped["converged"]
    assert stopped["best_epoch"] == 3 and stopped["epochs_run"] == 6 and stopped["patience"] == 3

    plateau = vd.convergence(_hist([1.0, 0.8, 0.75, 0.749, 0.748, 0.747, 0.746, 0.745]), patience=10)
    assert not plateau["stopped_early"]
    assert plateau["last_window_gain"] == pytest.approx((0.75 - 0.745) / 0.75)
    assert plateau["converged"] and plateau["last_window_gain"] < vd.CONVERGENCE_THRESHOLD

    improving = vd.convergence(_hist([1.0, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65]), patience=5)
    assert not improving["converged"] and improving["last_window_gain"] > 0.1
    assert improving["best_epoch"] == 7

    short = vd.convergence(_hist([1.0, 0.9, 0.85]), patience=3)
    assert not short["converged"] and math.isnan(short["last_window_gain"])
    assert "too short" in short["reason"]

    unknown_patience = vd.convergence(_hist([1.0, 0.8, 0.9, 0.95, 0.99, 1.0, 1.1]))
    assert not unknown_patience["stopped_early"] and unknown_patience["patience"] is None

    steps = vd.convergence([{"step": s, "select_rmse": v} for s, v in [(0, 1.0), (10, 0.9), (20, 0.95)]],
                           patience=1, key="select_rmse")  # fmt: skip
    assert steps["stopped_early"] and steps["best_epoch"] == 2
    assert not vd.convergence([])["converged"]


def test_a_run_that_used_its_whole_budget_did_not_stop_early() -> None:
    """15 of 15 epochs with the best at 11: patience 3 would call it stopped, but the budget ran out first."""
    values = [1.0, 0.9, 0.85, 0.82, 0.8, 0.79, 0.78, 0.775, 0.772, 0.771, 0.77, 0.771, 0.772, 0.771, 0.773]
    out = vd.convergence(_hist(values), patience=3, budget=15)
    assert not out["stopped_early"]
    assert "gain over the last 5 evaluations" in out["reason"]
    assert vd.convergence(_hist(values), patience=3, budget=20)["stopped_early"]  # it would have stopped by itself


def test_combine_and_label() -> None:
    ok = {"converged": True}
    assert vd.combine_convergence({"x": ok, "y": ok})["converged"] is True
    assert vd.combine_convergence({"x": ok, "y": {"converged": False}})["converged"] is False
    assert vd.combine_convergence({"x": ok, "y": None})["converged"] is None
    assert vd.convergence_label(None) == "not recorded"
    assert vd.convergence_label(vd.combine_convergence({"x": None})) == "not recorded"
    assert vd.convergence_label({"converged": False}) == "unconverged"
    assert vd.convergence_label({"converged": True, "iterative": False}) == "not iterative"
    assert vd.convergence_label({"converged": True}) == "converged"


def test_pipeline_convergence_returns_the_documented_keys() -> None:
    from molft_utils.runs import finetune as pipeline

    out = pipeline.convergence(_hist([1.0, 0.8, 0.7, 0.75, 0.76]), patience=2)
    assert out["stopped_early"] is True and out["converged"] is True  # documented key, now returned
    assert {"epochs_run", "best_epoch", "patience", "last_window_gain", "converged", "reason"} <= set(out)
