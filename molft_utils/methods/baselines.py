"""Classical baselines: random forests on ECFP4 count fingerprints, RDKit descriptors, or both.

ECFP4 (Morgan radius 2) count fingerprints folded to 2048 bits are the usual strong baseline
for small-molecule property regression. The forest defaults are chosen for a training set of a
few thousand molecules (the course uses 3,360):

* ``n_estimators=500`` - enough trees that the seed-to-seed spread is small;
* ``max_features=0.33`` - the classical regression-forest choice (p/3), i.e. ~680 of 2048
  features per split. ``"sqrt"`` (~45 features) is faster but, with sparse fingerprints, most
  candidate features are zero for a node and splits become weak;
* ``min_samples_leaf=1`` and unlimited depth (scikit-learn defaults).

The stronger baseline a chemist would try next uses RDKit 2D descriptors
(:mod:`molft_utils.data.descriptors`: logP estimates, polar surface area, charges...), alone or
concatenated with the fingerprint (``features="rdkit"`` / ``"ecfp4+rdkit"``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from rdkit import Chem, RDLogger
from rdkit.Chem import rdFingerprintGenerator
from sklearn.ensemble import RandomForestRegressor

from molft_utils.data.descriptors import rdkit_descriptors

__all__ = [
    "DEFAULT_MAX_FEATURES",
    "FEATURES",
    "ecfp4_counts",
    "featurise",
    "fit_random_forest",
    "random_forest_baseline",
]

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


#: Feature sets of the forest baselines.
FEATURES = ("ecfp4", "rdkit", "ecfp4+rdkit")


def featurise(smiles: Sequence[str], features: str = "ecfp4") -> np.ndarray:
    """Forest features of ``smiles``: ``"ecfp4"`` counts, ``"rdkit"`` descriptors, or both concatenated.

    Descriptors RDKit cannot compute (NaN) become 0 and magnitudes are clipped to 1e10, so float32 forests
    never see infinities.
    """
    if features not in FEATURES:
        raise ValueError(f"features must be one of {FEATURES}, got {features!r}")
    parts = []
    if "ecfp4" in features:
        parts.append(ecfp4_counts(smiles).astype(np.float64))
    if "rdkit" in features:
        desc = np.nan_to_num(rdkit_descriptors(smiles).astype(np.float64), nan=0.0)
        parts.append(np.clip(desc, -1e10, 1e10))
    return np.hstack(parts)


def fit_random_forest(
    train_smiles: Sequence[str],
    train_y: Sequence[float] | np.ndarray,
    seed: int,
    n_estimators: int = 500,
    n_jobs: int = -1,
    features: str = "ecfp4",
    **kw: Any,
) -> RandomForestRegressor:
    """Fit a random forest regressor on ECFP4 count fingerprints (or ``features``, see :func:`featurise`).

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
    X = featurise(train_smiles, features)
    kw.setdefault("max_features", DEFAULT_MAX_FEATURES)
    model = RandomForestRegressor(n_estimators=n_estimators, n_jobs=n_jobs, random_state=seed, **kw)
    logger.info("fitting random forest on %s: %d molecules, %d trees, seed %d", features, len(y), n_estimators, seed)
    model.fit(X, y)
    return model


def random_forest_baseline(
    train_smiles: Sequence[str],
    train_y: Sequence[float] | np.ndarray,
    test_smiles: Sequence[str],
    seed: int,
    n_estimators: int = 500,
    n_jobs: int = -1,
    features: str = "ecfp4",
    **kw: Any,
) -> np.ndarray:
    """Fit a random forest on the training set and predict the test set.

    Parameters
    ----------
    train_smiles, train_y, seed, n_estimators, n_jobs, features, **kw
        See :func:`fit_random_forest`.
    test_smiles
        Molecules to predict.

    Returns
    -------
    np.ndarray
        Predictions of shape ``(len(test_smiles),)`` in label units.
    """
    model = fit_random_forest(
        train_smiles, train_y, seed, n_estimators=n_estimators, n_jobs=n_jobs, features=features, **kw
    )
    return model.predict(featurise(test_smiles, features))
