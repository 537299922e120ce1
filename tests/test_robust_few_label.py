"""The epoch-budgeted few-label protocol of lesson 05 (methods/robust/few_label.py, issue 21)."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_SMILES
from transformers import RoFormerModel

from molft_utils.methods.robust import (
    NOT_ITERATIVE,
    SettingRecord,
    axis_top,
    epoch_budget,
    fine_tune,
    interpolate_models,
    interpolation_curve,
    linear_probe,
    make_parts,
    pooled_features,
    scaled_config,
    snapshot_state,
    split_validation,
)
from molft_utils.models.backbone import RegressionModel
from molft_utils.pretraining.pretrain import backbone_config
from molft_utils.training.convergence import fit_convergence
from molft_utils.training.train import TrainConfig, predict

torch.set_num_threads(1)

SMILES = TINY_SMILES + ["CCCC", "OCCO", "c1ccncc1", "CC(C)O", "CCOC(=O)C", "NCCN", "CCCCCC", "CC(=O)O",
                         "c1ccc2ccccc2c1", "OCC(O)CO", "CCCCO", "ClCCl", "CC#N", "C1CCCCC1"]
Y = [0.3 * s.count("C") - 0.5 * s.count("O") for s in SMILES]
QUICK = TrainConfig(epochs=3, batch_size=4, lr_backbone=1e-3, lr_head=1e-2, patience=2, mixed_precision="no", seed=0)


def _backbone(tokenizer):
    torch.manual_seed(1)
    return RoFormerModel(backbone_config(len(tokenizer), layers=2, hidden=32, heads=2, intermediate=64)).eval()


def _frames() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    df = pd.DataFrame({"smiles": SMILES, "label": Y})
    return df.iloc[:8].reset_index(drop=True), df.iloc[8:14].reset_index(drop=True), df.iloc[14:].reset_index(drop=True)


def _parts(tokenizer, backbone=None, subset=(0, 2, 4, 5, 7)):
    train, valid, test = _frames()
    halves = split_validation(len(valid), seed=0)
    feats = None
    if backbone is not None:
        feats = {p: pooled_features(backbone, tokenizer, list(f.smiles), mixed_precision="no")
                 for p, f in (("train", train), ("valid", valid))}  # fmt: skip
    return make_parts(train, valid, test, np.asarray(subset), halves, feats), halves, (train, valid, test)


def test_epoch_budget_sets_patience_per_label_budget_with_string_keys():
    cfg = epoch_budget(50, {"50": 200, "all": 30}, QUICK, {"50": 20, "all": 5})
    assert (cfg.epochs, cfg.patience, cfg.batch_size) == (200, 20, QUICK.batch_size)
    assert epoch_budget("all", {50: 200, "all": 30}, QUICK).patience == QUICK.patience  # no table: unchanged
    with pytest.raises(KeyError, match="no patience"):
        epoch_budget(50, {50: 200}, QUICK, {100: 3})
    with pytest.raises(ValueError, match=">= 1"):
        epoch_budget(50, {50: 10}, QUICK, {50: 0})


def test_make_parts_slices_subset_halves_and_features(tokenizer):
    backbone = _backbone(tokenizer)
    parts, halves, (train, valid, test) = _parts(tokenizer, backbone)
    assert parts.sizes() == {"train": 5, "select": len(halves.select), "post": len(halves.post), "test": len(test)}
    assert parts.train[0] == [train.smiles[i] for i in (0, 2, 4, 5, 7)]
    assert parts.select[0] == [valid.smiles[i] for i in halves.select]
    # RoFt-Mol's quarters are positions inside the post-hoc half, disjoint, covering it
    assert [parts.post[0][i] for i in parts.post_fit] == [valid.smiles[i] for i in halves.post_fit]
    assert sorted([*parts.post_fit, *parts.post_select]) == list(range(len(halves.post)))
    full = pooled_features(backbone, tokenizer, parts.select[0], mixed_precision="no")
    torch.testing.assert_close(parts.features["select"], full)
    assert parts.features["train"].shape == (5, backbone.config.hidden_size)
    with pytest.raises(ValueError, match="cover"):
        make_parts(train, valid.iloc[:-1], test, np.arange(3), halves)


def test_fine_tune_early_stops_on_the_selection_half_and_records_its_budget(tokenizer):
    backbone = _backbone(tokenizer)
    before = snapshot_state(backbone)
    parts, _, _ = _parts(tokenizer)
    model, res = fine_tune("Full FT", backbone, tokenizer, parts, QUICK)
    assert all(torch.equal(v, backbone.state_dict()[k]) for k, v in before.items()), "the argument is not trained"
    assert res.config["epochs"] == QUICK.epochs and res.config["patience"] == QUICK.patience
    conv = fit_convergence(res)
    assert conv["epochs_run"] == len(res.history) <= QUICK.epochs
    # the recorded validation RMSE is on the selection half
    pred = predict(model, tokenizer, parts.select[0], res.scaler, mixed_precision="no")
    assert float(np.sqrt(np.mean((pred - parts.select[1]) ** 2))) == pytest.approx(res.best_valid_rmse, rel=1e-4)
    with pytest.raises(ValueError, match="start"):
        fine_tune("LP-FT", backbone, tokenizer, parts, QUICK)
    with pytest.raises(ValueError, match="strength"):
        fine_tune("L2-SP", backbone, tokenizer, parts, QUICK)


def test_lp_ft_starts_from_the_probed_head_and_ingredients_differ(tokenizer):
    backbone = _backbone(tokenizer)
    parts, _, _ = _parts(tokenizer, backbone)
    head_cfg = TrainConfig(**{**QUICK.__dict__, "epochs": 5, "warmup_fraction": 0.0})
    lp, lp_fit = linear_probe(backbone, parts.features["train"], parts.train[1], parts.features["select"],
                              parts.select[1], head_cfg)  # fmt: skip
    zero_lr = scaled_config(QUICK, 0.0)
    assert (zero_lr.lr_backbone, zero_lr.lr_head, zero_lr.seed) == (0.0, 0.0, QUICK.seed)
    same, _ = fine_tune("LP-FT", backbone, tokenizer, parts, zero_lr, start=lp)
    for k, v in lp.state_dict().items():
        torch.testing.assert_close(same.state_dict()[k], v, msg=k)  # lr 0: LP-FT is the probed model
    a, _ = fine_tune("LP-FT", backbone, tokenizer, parts, QUICK, start=lp)
    b, _ = fine_tune("LP-FT", backbone, tokenizer, parts, scaled_config(QUICK, 2.0, seed_offset=1), start=lp)
    assert not torch.equal(a.head[0].weight, b.head[0].weight)
    cfg = scaled_config(QUICK, 0.5, seed_offset=2)
    assert (cfg.lr_backbone, cfg.lr_head, cfg.seed) == (QUICK.lr_backbone * 0.5, QUICK.lr_head * 0.5, 2)


def test_setting_record_and_interpolation_curve_endpoints(tokenizer):
    backbone = _backbone(tokenizer)
    parts, _, _ = _parts(tokenizer, backbone)
    rec = SettingRecord(parts, tokenizer)
    start = RegressionModel(copy.deepcopy(backbone)).eval()
    end = copy.deepcopy(start)
    with torch.no_grad():
        for p in end.parameters():
            p.add_(0.05 * torch.randn_like(p))
    scaler = fine_tune("Full FT", backbone, tokenizer, parts, TrainConfig(**{**QUICK.__dict__, "epochs": 1}))[1].scaler
    curve = interpolation_curve(start, end, scaler, (0.0, 0.5, 1.0), rec)
    assert [r["alpha"] for r in curve] == [0.0, 0.5, 1.0]
    assert curve[0]["test_rmse"] == pytest.approx(rec.rmse(start, scaler, "test"), rel=1e-5)
    assert curve[-1]["post_rmse"] == pytest.approx(rec.rmse(end, scaler, "post"), rel=1e-5)
    mid = interpolate_models(start, end, 0.5)
    assert curve[1]["select_rmse"] == pytest.approx(rec.rmse(mid, scaler, "select"), rel=1e-5)
    metrics = rec.add("end", end, scaler, {"converged": True}, history=[{"epoch": 1}], seconds=1.5)
    assert metrics["rmse"] == pytest.approx(curve[-1]["test_rmse"], rel=1e-5)
    assert rec.valid_rmse["end"] == pytest.approx(curve[-1]["select_rmse"], rel=1e-5)
    assert rec.histories["end"] == [{"epoch": 1}] and rec.seconds["end"] == 1.5
    # predictions given directly (a non-neural baseline)
    const = {p: np.full(len(getattr(parts, p)[1]), 0.5) for p in ("select", "post", "test")}
    rec.add("constant", None, None, NOT_ITERATIVE, predictions=const)
    assert rec.test_metrics["constant"]["rmse"] == pytest.approx(float(np.sqrt(np.mean((parts.test[1] - 0.5) ** 2))))
    assert rec.convergence["constant"]["converged"] is True and rec.convergence["constant"]["iterative"] is False


def test_axis_top_ignores_one_broken_method():
    values = [1.0, 1.02, 1.05, 0.98, 1.01, 3.0]
    top = axis_top(values)
    assert 1.05 < top < 3.0
    assert axis_top([1.0, 1.1]) == pytest.approx(1.15)  # nothing broken: the largest value plus the margin
    assert axis_top([float("nan")]) == 1.0
