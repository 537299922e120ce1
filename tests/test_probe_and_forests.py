"""Linear probe on frozen features, descriptor forests, and loading the embedded backbones by name."""

from __future__ import annotations

import numpy as np
import pytest

from molft_utils.methods.baselines import featurise, random_forest_baseline
from molft_utils.methods.probe import linear_probe, linear_probe_features
from molft_utils.models.backbone import MLM_BACKBONE, resolve_backbone


def test_probe_recovers_a_linear_signal_and_scores_only_held_out_parts():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8))
    y = x @ np.arange(8.0) + rng.normal(scale=0.1, size=300)
    feats = {"train": x[:200], "valid": x[200:250], "test": x[250:]}
    labels = {"train": y[:200], "valid": y[200:250], "test": y[250:]}
    out = linear_probe_features(feats, labels)
    assert set(out) == {"alpha", "valid", "test"}
    assert out["test"]["r2"] > 0.99
    shuffled = linear_probe_features(feats, {**labels, "train": rng.permutation(labels["train"])})
    assert shuffled["test"]["r2"] < 0.2  # no signal, no fit


def test_probe_on_the_embedded_backbone():
    smiles = ["CCO", "CCCO", "CCCCO", "c1ccccc1", "Cc1ccccc1", "CCc1ccccc1", "CC(=O)O", "CCN", "CCCN", "OCCO"] * 2
    y = np.array([len(s) for s in smiles], dtype=float)
    out = linear_probe(MLM_BACKBONE, {"train": smiles[:14], "test": smiles[14:]}, {"train": y[:14], "test": y[14:]})
    assert np.isfinite(out["test"]["rmse"]) and out["alpha"] > 0


def test_forest_features_and_names():
    smiles = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1"]
    e, d, both = (featurise(smiles, f) for f in ("ecfp4", "rdkit", "ecfp4+rdkit"))
    assert e.shape == (3, 2048) and both.shape == (3, 2048 + d.shape[1]) and np.isfinite(both).all()
    with pytest.raises(ValueError, match="features"):
        featurise(smiles, "maccs")
    pred = random_forest_baseline(smiles * 5, np.arange(15.0), smiles, seed=0, n_estimators=5, features="rdkit")
    assert pred.shape == (3,)


def test_backbones_resolve_by_name():
    assert resolve_backbone("molft-roformer-small-mlm") == MLM_BACKBONE
    assert resolve_backbone("ibm/MoLFormer-XL-both-10pct") == "ibm/MoLFormer-XL-both-10pct"
