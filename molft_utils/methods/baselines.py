"""Classical baseline: random forest on ECFP4 count fingerprints.

ECFP4 (Morgan radius 2) count fingerprints folded to 2048 bits are the usual strong baseline
for small-molecule property regression. The forest defaults are chosen for a training set of a
few thousand molecules (the course uses 3,360):

* ``n_estimators=500`` - enough trees that the seed-to-seed spread is small;
* ``max_features=0.33`` - the classical regression-forest choice (p/3), i.e. ~680 of 2048
  features per split. ``"sqrt"`` (~45 features) is faster but, with sparse fingerprints, most
  candidate features are zero for a node and splits become weak;
* ``min_samples_leaf=1`` and unlimited depth (scikit-learn defaults).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from rdkit import Chem, RDLogger
from rdkit.Chem import rdFingerprintGenerator
from sklearn.ensemble import RandomForestRegressor

__all__ = ["ecfp4_counts", "fit_random_forest", "random_forest_baseline", "DEFAULT_MAX_FEATURES"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_FEATURES: float = 0.33


def ecfp4_counts(smiles: Sequence[str], n_bits: int = 2048) -> np.ndarray:
    """Compute ECFP4 (Morgan radius 2) count fingerprints.

    Parameters
    ----------
    smiles
        SMILES strings.
    n_bits
        Fingerprint length.

    Returns
    -------
    np.ndarray
        Array of shape ``(len(smiles), n_bits)`` and dtype ``uint32``.

    Raises
    ------
    ValueError
        If a SMILES cannot be parsed (the message names its index and the string).
    """
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=n_bits)
    out = np.zeros((len(smiles), n_bits), dtype=np.uint32)
    RDLogger.DisableLog("rdApp.*")
    try:
        for i, smi in enumerate(smiles):
            mol = Chem.MolFromSmiles(smi) if isinstance(smi, str) else None
            if mol is None:
                raise ValueError(f"could not parse SMILES at index {i}: {smi!r}")
            out[i] = gen.GetCountFingerprintAsNumPy(mol)
    finally:
        RDLogger.EnableLog("rdApp.*")
    return out


def fit_random_forest(
    train_smiles: Sequence[str],
    train_y: Sequence[float] | np.ndarray,
    seed: int,
    n_estimators: int = 500,
    n_jobs: int = -1,
    **kw: Any,
) -> RandomForestRegressor:
    """Fit a random forest regressor on ECFP4 count fingerprints.

    Parameters
    ----------
    train_smiles, train_y
        Training molecules and labels (original units).
    seed
        ``random_state`` of the forest.
    n_estimators, n_jobs
        Passed to :class:`~sklearn.ensemble.RandomForestRegressor`.
    **kw
        Further forest arguments; ``max_features`` defaults to :data:`DEFAULT_MAX_FEATURES`.

    Returns
    -------
    RandomForestRegressor
        The fitted forest (expects ``ecfp4_counts`` features at predict time).
    """
    y = np.asarray(train_y, dtype=np.float64).reshape(-1)
    if len(train_smiles) != y.size:
        raise ValueError(f"length mismatch: {len(train_smiles)} SMILES but {y.size} labels")
    X = ecfp4_counts(train_smiles)
    kw.setdefault("max_features", DEFAULT_MAX_FEATURES)
    model = RandomForestRegressor(n_estimators=n_estimators, n_jobs=n_jobs, random_state=seed, **kw)
    logger.info("fitting random forest: %d molecules, %d trees, seed %d", len(y), n_estimators, seed)
    model.fit(X, y)
    return model


def random_forest_baseline(
    train_smiles: Sequence[str],
    train_y: Sequence[float] | np.ndarray,
    test_smiles: Sequence[str],
    seed: int,
    n_estimators: int = 500,
    n_jobs: int = -1,
    **kw: Any,
) -> np.ndarray:
    """Fit a random forest on the training set and predict the test set.

    Parameters
    ----------
    train_smiles, train_y, seed, n_estimators, n_jobs, **kw
        See :func:`fit_random_forest`.
    test_smiles
        Molecules to predict.

    Returns
    -------
    np.ndarray
        Predictions of shape ``(len(test_smiles),)`` in label units.
    """
    model = fit_random_forest(train_smiles, train_y, seed, n_estimators=n_estimators, n_jobs=n_jobs, **kw)
    return model.predict(ecfp4_counts(test_smiles))
