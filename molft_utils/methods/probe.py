"""Linear probe: how much of a label a frozen representation holds before any fine-tuning.

The backbone stays frozen; its masked mean-pooled features (:func:`molft_utils.training.embedding.embed_smiles`)
are standardised and a ridge regression is fitted on the training molecules, with the ridge penalty
chosen by efficient leave-one-out cross-validation on the training set only (scikit-learn's
``RidgeCV``). Validation and test are scored with the fitted map, so a probe's numbers are as honest as
a fine-tune's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from sklearn.linear_model import RidgeCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from molft_utils.models.backbone import RegressionModel, load_backbone
from molft_utils.training.embedding import embed_smiles
from molft_utils.training.metrics import regression_metrics

__all__ = ["ALPHAS", "frozen_features", "linear_probe", "linear_probe_features"]

#: Ridge penalties searched (leave-one-out on the training molecules).
ALPHAS = tuple(float(a) for a in np.logspace(-2, 4, 13))


def frozen_features(model: str | Path | None, smiles: Sequence[str], batch_size: int = 128) -> np.ndarray:
    """Mean-pooled features of ``smiles`` from the frozen backbone ``model`` (``None``: the default)."""
    backbone, tokenizer = load_backbone(model)
    return embed_smiles(RegressionModel(backbone), tokenizer, list(smiles), batch_size=batch_size)


def linear_probe_features(
    features: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray], alphas: Sequence[float] = ALPHAS
) -> dict:
    """Fit ridge on ``features["train"]``; metrics for every other part given (e.g. ``valid``, ``test``).

    Returns ``{"alpha": chosen penalty, "<part>": regression metrics, ...}``.
    """
    probe = make_pipeline(StandardScaler(), RidgeCV(alphas=list(alphas)))
    probe.fit(features["train"], np.asarray(labels["train"], dtype=float))
    out: dict = {"alpha": float(probe[-1].alpha_)}
    for part, x in features.items():
        if part != "train":
            out[part] = regression_metrics(np.asarray(labels[part], dtype=float), probe.predict(x))
    return out


def linear_probe(
    model: str | Path | None, smiles: Mapping[str, Sequence[str]], labels: Mapping[str, np.ndarray]
) -> dict:
    """Linear probe of a backbone on named parts (``train`` plus any of ``valid``, ``test``).

    See :func:`linear_probe_features`; the features are computed once for all parts.
    """
    names = list(smiles)
    flat = [s for n in names for s in smiles[n]]
    x = frozen_features(model, flat)
    bounds = np.cumsum([0] + [len(smiles[n]) for n in names])
    features = {n: x[bounds[i] : bounds[i + 1]] for i, n in enumerate(names)}
    return linear_probe_features(features, labels)
