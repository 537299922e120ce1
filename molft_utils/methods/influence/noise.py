"""A planted-noise experiment with a known answer: which pool labels are wrong, and what removing them does.

A seeded share of the pool's labels is shifted by ``±shift`` (random sign). The pool is then ranked by

* **validation influence**, most harmful first (``−score``; what an influence-based selection does),
* **|validation influence|** (the magnitude alone; shown because the sign is what separates the two questions),
* **self-influence** ``∇ℓ(z)ᵀ (H + λI)⁻¹ ∇ℓ(z)`` (Koh & Liang 2017, §5.4, for mislabelled training data),
* the **loss** ``(f(z) − y_z)²`` of the fitted model,
* **random** order,

and each ranking is scored as a detector of the corrupted molecules (ROC AUC, precision at k). Everything runs
on the exact output-layer problem of :mod:`.output_layer` (frozen features of the scored model), so every
"retrain" is an exact refit: adding the pool without the ``k`` molecules each ranker flags, and adding the ``k``
most helpful / most harmful / random pool molecules by validation influence, each reported on validation **and**
test (a selection made with the validation loss is optimistic on validation).

The removals and selections use the rankings of the ``"candidates"`` setting. Two settings of the fitted
model: ``"candidates"`` — the output layer fitted on the training split only, the pool
scored as candidates for addition (the lesson's situation); ``"training"`` — fitted on training + noisy pool,
the pool members scored as training points (Koh & Liang's mislabelled-data setting).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from molft_utils.methods.influence.output_layer import OutputLayer, fit_output_layer

__all__ = ["RANKERS", "corrupt_labels", "detection_metrics", "planted_noise", "rankings"]

#: The detectors, in display order.
RANKERS = ("validation influence", "|validation influence|", "self-influence", "loss", "random")


def corrupt_labels(
    y: Sequence[float], fraction: float = 0.2, shift: float = 2.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Shift ``round(fraction · n)`` labels, chosen with ``seed``, by ``±shift`` (random sign).

    Returns
    -------
    (noisy labels, boolean mask of the corrupted rows)
    """
    y = np.asarray(y, dtype=float)
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    n_bad = int(round(fraction * len(y)))
    bad = np.zeros(len(y), dtype=bool)
    bad[rng.choice(len(y), size=n_bad, replace=False)] = True
    noisy = y.copy()
    noisy[bad] += shift * rng.choice([-1.0, 1.0], size=n_bad)
    return noisy, bad


def detection_metrics(suspicion: np.ndarray, corrupted: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """ROC AUC of ``suspicion`` (higher = more suspect) for the ``corrupted`` mask, and precision at each ``k``."""
    out = {"auc": float(roc_auc_score(corrupted, suspicion)) if 0 < corrupted.sum() < len(corrupted) else float("nan")}
    order = np.argsort(-suspicion, kind="stable")
    for k in ks:
        out[f"precision@{k}"] = float(corrupted[order[:k]].mean()) if k > 0 else float("nan")
    return out


def rankings(
    layer: OutputLayer, phi_val: np.ndarray, y_val: np.ndarray, phi_pool: np.ndarray, y_pool: np.ndarray, seed: int = 0
) -> dict[str, np.ndarray]:
    """Suspicion per pool molecule (higher = flagged first) for every ranker in :data:`RANKERS`."""
    scores = layer.scores(phi_val, y_val, phi_pool, y_pool)
    return {
        "validation influence": -scores,
        "|validation influence|": np.abs(scores),
        "self-influence": layer.self_influence(phi_pool, y_pool),
        "loss": (layer.predict(phi_pool) - y_pool) ** 2,
        "random": np.random.default_rng(seed).random(len(y_pool)),
    }


def planted_noise(
    phi: dict[str, np.ndarray],
    y: dict[str, np.ndarray],
    damping: float,
    fraction: float = 0.2,
    shift: float = 2.0,
    seed: int = 0,
    unit_scale: float = 1.0,
    select_k: int | None = None,
) -> dict[str, Any]:
    """Run the planted-noise experiment on output-layer features.

    Parameters
    ----------
    phi, y
        Features (:func:`~.output_layer.penultimate_features`) and *scaled* labels for ``"train"``, ``"valid"``,
        ``"test"`` and ``"pool"`` (the pool's clean labels; they are corrupted here). ``shift`` is on the same
        scale as ``y`` (divide the label-unit shift by the scaler's scale).
    damping
        ``λ`` of the ridge objective (:func:`~.output_layer.ridge_damping`).
    fraction, shift, seed
        :func:`corrupt_labels`.
    unit_scale
        Factor from the scaled labels back to label units (``TargetScaler.scale``); RMSEs are reported in label
        units.
    select_k
        ``k`` of the selections (default: the number of corrupted molecules).

    Returns
    -------
    dict
        ``corrupted`` (mask), ``noisy_pool_labels``, ``detection`` (setting → ranker → AUC and precision@k),
        ``suspicion`` (setting → ranker → values), ``removal`` (ranker → valid/test RMSE after adding the pool
        without its flagged molecules, plus references), ``selection`` (helpful / harmful / random → valid/test
        RMSE after adding ``k`` pool molecules), ``n_corrupted``, ``k``.
    """
    noisy, bad = corrupt_labels(y["pool"], fraction, shift, seed)
    n_bad = int(bad.sum())
    k = n_bad if select_k is None else int(select_k)
    ks = sorted({k_ for k_ in (10, n_bad) if 0 < k_ <= len(noisy)})

    def rmse(layer: OutputLayer, part: str) -> float:
        return float(np.sqrt(layer.mse(phi[part], y[part])) * unit_scale)

    def refit(extra: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        layer = fit_output_layer(
            np.vstack([phi["train"], phi["pool"][extra]]), np.concatenate([y["train"], labels[extra]]), damping
        )
        return {"valid_rmse": rmse(layer, "valid"), "test_rmse": rmse(layer, "test"), "n_added": int(len(extra))}

    everyone = np.arange(len(noisy))
    fitted = {
        "candidates": fit_output_layer(phi["train"], y["train"], damping),
        "training": fit_output_layer(np.vstack([phi["train"], phi["pool"]]), np.concatenate([y["train"], noisy]),
                                     damping),
    }
    detection, suspicion = {}, {}
    for setting, layer in fitted.items():
        ranks = rankings(layer, phi["valid"], y["valid"], phi["pool"], noisy, seed)
        suspicion[setting] = ranks
        detection[setting] = {name: detection_metrics(s, bad, ks) for name, s in ranks.items()}
    removal = {
        "train only": refit(np.array([], dtype=int), noisy),
        "train + noisy pool": refit(everyone, noisy),
        "train + pool without the corrupted (oracle)": refit(everyone[~bad], noisy),
        "train + clean pool": refit(everyone, y["pool"]),
    }
    for name, s in suspicion["candidates"].items():
        flagged = np.argsort(-s, kind="stable")[:n_bad]
        removal[f"train + pool without {n_bad} flagged by {name}"] = refit(np.setdiff1d(everyone, flagged), noisy)
    scores = -suspicion["candidates"]["validation influence"]
    order = np.argsort(-scores, kind="stable")
    picks = {
        "helpful": order[:k],
        "harmful": order[::-1][:k],
        "random": np.sort(np.random.default_rng(seed).choice(len(noisy), size=min(k, len(noisy)), replace=False)),
    }
    selection = {"none": refit(np.array([], dtype=int), noisy)} | {
        name: refit(idx, noisy) | {"corrupted_among_them": int(bad[idx].sum())} for name, idx in picks.items()
    }
    return {
        "corrupted": bad,
        "noisy_pool_labels": noisy,
        "n_corrupted": n_bad,
        "k": k,
        "fraction": fraction,
        "shift": shift,
        "detection": detection,
        "suspicion": suspicion,
        "removal": removal,
        "selection": selection,
    }
