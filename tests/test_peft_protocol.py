"""Tests of lesson 04's protocol helpers: the equal-budget views of converged runs (budget_views), interleaved cost
rounds (costs), LoRA variants of the rank study, the test-RMSE monitor of fine_tune, and the Pareto figures."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pytest
import torch

from molft_utils.methods.peft_methods import (
    LoraSettings,
    budget_views,
    cost_pareto_figure,
    costs,
    fine_tune,
    interleaved_costs,
    lora_variant,
    measure_epoch,
    pareto_front,
    prepare,
    rank_figure,
    round_orders,
)
from molft_utils.models.backbone import RegressionModel
from molft_utils.training.train import TrainConfig, predict

matplotlib.use("Agg")
torch.set_num_threads(1)

SMILES = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "CCN(CC)CC", "CCCCO", "c1ccncc1", "CC(C)O", "OCC(O)CO"]
LABELS = [0.1, 1.5, 0.3, 1.1, 0.9, 0.6, 0.2, -0.8]


def _history(valid: list[float], test: list[float] | None = None) -> list[dict]:
    test = test or [v + 0.1 for v in valid]
    return [{"epoch": i + 1, "valid_rmse": v, "test_rmse": t} for i, (v, t) in enumerate(zip(valid, test, strict=True))]


# --- budget_views -------------------------------------------------------------------------------


def test_budget_is_full_fine_tunings_best_epoch_in_steps_and_time() -> None:
    histories = {
        "full": _history([1.0, 0.8, 0.7, 0.75, 0.76]),  # best at epoch 3
        "slow": _history([1.2, 1.0, 0.9, 0.8, 0.6, 0.5]),  # twice as slow per epoch, still improving
        "fast": _history([1.1, 0.9, 0.85, 0.82, 0.81, 0.65]),  # half the time per epoch
    }
    seconds = {"full": 10.0, "slow": 20.0, "fast": 5.0}
    out = budget_views(histories, seconds)
    assert out["budget_epochs"] == 3 and out["budget_seconds"] == pytest.approx(30.0)
    # the reference gives its converged result in both views
    assert out["methods"]["full"]["steps"]["epoch"] == 3 == out["methods"]["full"]["time"]["epoch"]
    # steps: everyone gets 3 epochs
    assert out["methods"]["slow"]["steps"]["epoch"] == 3 and out["methods"]["slow"]["steps"]["valid_rmse"] == 0.9
    # time: 30 s are 1 epoch of the slow method and 6 of the fast one
    assert out["methods"]["slow"]["time"]["budget_epochs"] == 1
    assert out["methods"]["slow"]["time"]["test_rmse"] == pytest.approx(1.3)
    assert out["methods"]["fast"]["time"]["budget_epochs"] == 6
    assert out["methods"]["fast"]["time"]["epoch"] == 6
    assert out["methods"]["fast"]["time"]["within_run"] is True


def test_a_method_as_fast_as_the_reference_gets_the_same_epochs() -> None:
    sec = 0.1 + 0.2  # a float that does not divide evenly
    histories = {"full": _history([1.0, 0.9, 0.8, 0.85, 0.9, 0.95, 0.97]), "same": _history([1.0] * 7)}
    out = budget_views(histories, {"full": sec, "same": sec})
    assert out["methods"]["same"]["time"]["budget_epochs"] == out["budget_epochs"] == 3


def test_budget_views_errors() -> None:
    with pytest.raises(KeyError, match="reference"):
        budget_views({"lora": _history([1.0])}, {"lora": 1.0})
    with pytest.raises(KeyError, match="seconds per epoch"):
        budget_views({"full": _history([1.0]), "lora": _history([1.0])}, {"full": 1.0})
    with pytest.raises(ValueError, match="empty"):
        budget_views({"full": []}, {"full": 1.0})


# --- interleaved cost rounds --------------------------------------------------------------------


def test_round_orders_rotate_so_every_method_takes_every_place() -> None:
    orders = round_orders(["a", "b", "c"], 3)
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    for place in range(3):
        assert {o[place] for o in orders} == {"a", "b", "c"}
    assert round_orders(["a", "b"], 3)[2] == ["a", "b"]
    with pytest.raises(ValueError, match="rounds"):
        round_orders(["a"], 0)


def test_interleaved_costs_takes_medians_in_rotated_rounds(monkeypatch) -> None:
    calls: list[str] = []
    fake = {"full": iter([10.0, 30.0, 11.0]), "lora": iter([12.0, 13.0, 50.0])}  # one burst each

    def measure(job: dict) -> dict:
        calls.append(job["method"])
        if job["method"] == "broken":
            raise RuntimeError("no such thing")
        return {"seconds": next(fake[job["method"]]), "peak_mib": 100.0 if job["method"] == "full" else 80.0}

    monkeypatch.setattr(costs, "measure_epoch", measure)
    jobs = {"full": {"method": "full", "lr": 1e-4}, "lora": {"method": "lora", "lr": 1e-3},
            "broken": {"method": "broken", "lr": 1.0}}
    out = interleaved_costs("unused", jobs, SMILES, LABELS, rounds=3, fresh_process=False, scale_to=2 * len(SMILES))
    assert calls == ["full", "lora", "broken", "lora", "broken", "full", "broken", "full", "lora"]
    assert out["full"]["seconds"] == [10.0, 30.0, 11.0] and out["full"]["seconds_median"] == 11.0
    assert out["lora"]["seconds_median"] == 13.0
    assert out["lora"]["seconds_per_epoch"] == pytest.approx(26.0)  # scaled to twice the molecules
    assert out["lora"]["peak_mib_median"] == 80.0
    assert math.isnan(out["broken"]["seconds_median"]) and len(out["broken"]["errors"]) == 3
    with pytest.raises(ValueError, match="equal length"):
        interleaved_costs("unused", jobs, SMILES, LABELS[:2], fresh_process=False)


def test_measure_epoch_on_a_tiny_backbone(tiny_mlm, tokenizer, tmp_path) -> None:
    tiny_mlm.roformer.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    job = {"backbone": str(tmp_path), "method": "lora", "smiles": SMILES, "labels": LABELS, "lr": 1e-3,
           "batch_size": 4, "seed": 0, "threads": 1, "settings": lora_variant(2, "attention+ffn")}
    out = measure_epoch(job)
    assert out["steps"] == 2 and out["seconds"] > 0
    assert out["source"] in ("rss", "cuda") and out["peak_mib"] >= 0


# --- LoRA variants ------------------------------------------------------------------------------


def test_lora_variant_keeps_the_update_scale_and_places_adapters(tiny_mlm) -> None:
    assert lora_variant(8) == LoraSettings()
    for r in (2, 4, 16):
        s = lora_variant(r)
        assert s.alpha / s.r == 2 and s.feedforward == "none"
    assert lora_variant(4, "attention+ffn").feedforward == "both"
    with pytest.raises(ValueError, match="rank"):
        lora_variant(0)
    with pytest.raises(ValueError, match="placement"):
        lora_variant(4, "everywhere")
    # trainable encoder parameters: r * (in + out) per adapted matrix; hidden 32, intermediate 64, one layer
    attention = prepare(RegressionModel(tiny_mlm.roformer), "lora", lora_variant(2)).n_trainable_backbone
    assert attention == 3 * 2 * (32 + 32)


def test_lora_variant_with_feedforward_counts(tiny_mlm) -> None:
    n = prepare(RegressionModel(tiny_mlm.roformer), "lora", lora_variant(2, "attention+ffn")).n_trainable_backbone
    assert n == 3 * 2 * (32 + 32) + 2 * (32 + 64) + 2 * (64 + 32)


# --- the test-RMSE monitor ----------------------------------------------------------------------


def test_monitor_records_test_rmse_without_changing_training(tiny_mlm, tokenizer, tmp_path) -> None:
    tiny_mlm.roformer.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    cfg = TrainConfig(epochs=3, batch_size=4, lr_backbone=1e-3, patience=3, seed=0)
    train, valid, test = (SMILES[:6], LABELS[:6]), (SMILES[6:], LABELS[6:]), (SMILES[2:5], LABELS[2:5])
    _, plain, _ = fine_tune(tmp_path, "lora", *train, *valid, cfg)
    setup, watched, tok = fine_tune(tmp_path, "lora", *train, *valid, cfg, monitor=test)
    assert [r["valid_rmse"] for r in plain.history] == pytest.approx([r["valid_rmse"] for r in watched.history])
    assert "test_rmse" not in plain.history[0]
    assert all(math.isfinite(r["test_rmse"]) for r in watched.history)
    # the restored (best-validation) model predicts the test set with its epoch's monitored RMSE
    pred = predict(setup.model, tok, test[0], watched.scaler)
    rmse = float(np.sqrt(np.mean((pred - np.asarray(test[1])) ** 2)))
    assert rmse == pytest.approx(watched.history[watched.best_epoch - 1]["test_rmse"], rel=1e-4, abs=1e-5)


# --- Pareto front and figures -------------------------------------------------------------------


def test_pareto_front_keeps_only_undominated_points() -> None:
    xs = [10, 1, 5, 5, 20, float("nan"), 1]
    ys = [0.5, 0.9, 0.7, 0.8, 0.4, 0.1, 0.95]
    assert pareto_front(xs, ys) == [1, 2, 0, 4]
    assert pareto_front([], []) == []
    with pytest.raises(ValueError, match="same length"):
        pareto_front([1], [])


def test_cost_pareto_figure_has_a_panel_per_measured_cost() -> None:
    rows = [
        {"method": "full", "n_trainable_backbone": 1000, "seconds_per_epoch": 10, "peak_mib": 500, "test_rmse": 0.7},
        {"method": "lora", "n_trainable_backbone": 50, "seconds_per_epoch": 12, "peak_mib": 400, "test_rmse": 0.8},
        {"method": "ia3", "n_trainable_backbone": 5, "seconds_per_epoch": 9, "peak_mib": math.nan, "test_rmse": 0.9},
    ]
    fig = cost_pareto_figure(rows)
    assert len(fig.axes) == 3
    fronts = [[line for line in ax.get_lines() if line.get_label() == "Pareto front"] for ax in fig.axes]
    assert all(len(f) == 1 for f in fronts)
    # seconds: ia3 (9 s) then full (10 s) — lora (12 s, worse RMSE than full) is dominated
    assert list(fronts[1][0].get_xdata()) == [9.0, 10.0]
    fig2 = cost_pareto_figure([{k: v for k, v in r.items() if k != "peak_mib"} for r in rows])
    assert len(fig2.axes) == 2
    with pytest.raises(ValueError, match="no cost column"):
        cost_pareto_figure([{"method": "a", "test_rmse": 1.0}])


def test_rank_figure_draws_a_line_per_placement() -> None:
    rows = [{"r": r, "placement": p, "n_trainable_backbone": r * k, "test_rmse": 1.0 / r}
            for p, k in (("attention", 100), ("attention+ffn", 300)) for r in (2, 4, 8)]
    fig = rank_figure(rows)
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert labels.count("attention") == 1 and labels.count("attention+ffn") == 1 and "Pareto front" in labels


@pytest.mark.integration
def test_interleaved_costs_in_fresh_processes(tiny_mlm, tokenizer, tmp_path) -> None:
    """The default path: each measurement in a new interpreter; settings (a LoRA variant) travel with the job."""
    tiny_mlm.roformer.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    jobs = {"lora r2 ffn": {"method": "lora", "lr": 1e-3, "settings": lora_variant(2, "attention+ffn")}}
    out = interleaved_costs(tmp_path, jobs, SMILES, LABELS, rounds=1, batch_size=4, fresh_process=True)
    row = out["lora r2 ffn"]
    assert row["errors"] == [], row["errors"]
    assert row["fresh_process"] and len(row["seconds"]) == 1 and row["seconds_median"] > 0
    assert math.isfinite(row["peak_mib_median"]) and row["peak_mib_median"] >= 0


def test_rate_beyond_continues_the_grid_past_its_edge() -> None:
    from molft_utils.methods.peft_methods import rate_beyond

    assert rate_beyond([3e-5, 1e-4, 3e-4], upward=True) == 1e-3  # the 1-3-10 ladder goes on
    assert rate_beyond([3e-5, 1e-4, 3e-4, 1e-3], upward=True) == 3e-3
    assert rate_beyond([3e-5, 1e-4, 3e-4], upward=False) == 1e-5
    assert rate_beyond([1e-3, 3e-3, 1e-2], upward=False) == 3e-4
    assert rate_beyond([1e-2, 3e-3, 1e-3], upward=True) == 3e-2  # order does not matter
    assert rate_beyond([2e-4, 4e-4, 8e-4], upward=True) == pytest.approx(1.6e-3)  # other grids: their own step
    assert rate_beyond([2e-4, 4e-4, 8e-4], upward=False) == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="two distinct positive rates"):
        rate_beyond([1e-3, 1e-3], upward=True)
