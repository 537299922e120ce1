"""Tests for molft_utils.methods.baselines (small forests so the tests stay fast)."""

from __future__ import annotations

import numpy as np
import pytest

from molft_utils.methods.baselines import ecfp4_counts, fit_random_forest, random_forest_baseline
from molft_utils.training.metrics import regression_metrics


def _alkyl_series() -> tuple[list[str], np.ndarray]:
    """Molecules whose label is their number of carbons."""
    smiles = []
    for n in range(1, 13):
        smiles += ["C" * n, "C" * n + "O", "C" * n + "N", "OC" + "C" * (n - 1) + "O", "C" * n + "Cl"]
    from rdkit import Chem

    y = np.array([sum(a.GetSymbol() == "C" for a in Chem.MolFromSmiles(s).GetAtoms()) for s in smiles], float)
    return smiles, y


def test_fingerprint_shape_dtype_determinism():
    smiles = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1"]
    fp = ecfp4_counts(smiles)
    assert fp.shape == (3, 2048)
    assert np.issubdtype(fp.dtype, np.integer)
    assert (fp.sum(axis=1) > 0).all()
    np.testing.assert_array_equal(fp, ecfp4_counts(smiles))
    assert ecfp4_counts(smiles, n_bits=512).shape == (3, 512)
    # counts, not bits: ethane has two identical CH3 environments
    assert ecfp4_counts(["CC"]).max() >= 2


def test_unparsable_smiles_names_index():
    with pytest.raises(ValueError, match=r"index 1.*not_a_smiles"):
        ecfp4_counts(["CCO", "not_a_smiles"])


def test_random_forest_beats_mean():
    smiles, y = _alkyl_series()
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(smiles))
    test, train = idx[:12], idx[12:]
    tr_s, te_s = [smiles[i] for i in train], [smiles[i] for i in test]
    pred = random_forest_baseline(tr_s, y[train], te_s, seed=0, n_estimators=50, n_jobs=1)
    assert pred.shape == (len(test),)
    rf_rmse = regression_metrics(y[test], pred)["rmse"]
    mean_rmse = regression_metrics(y[test], np.full(len(test), y[train].mean()))["rmse"]
    assert rf_rmse < 0.7 * mean_rmse


def test_fit_random_forest_is_seeded():
    smiles, y = _alkyl_series()
    a = fit_random_forest(smiles, y, seed=3, n_estimators=10, n_jobs=1)
    b = fit_random_forest(smiles, y, seed=3, n_estimators=10, n_jobs=1)
    X = ecfp4_counts(smiles[:5])
    np.testing.assert_allclose(a.predict(X), b.predict(X))
    assert a.max_features == 0.33
