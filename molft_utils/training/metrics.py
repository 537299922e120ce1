"""Regression metrics and their aggregation over seeds.

* :func:`regression_metrics` scores one set of predictions (MSE, RMSE, MAE, R², Pearson and
  Spearman correlation), always in the original label units.
* :func:`aggregate` turns a list of per-seed metric dicts into mean / sample std / n per key.
* :func:`format_mean_std` renders one aggregate as ``"0.712 ± 0.015 (n=3)"`` for tables.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
from scipy import stats
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

__all__ = ["aggregate", "format_mean_std", "regression_metrics"]

logger = logging.getLogger(__name__)


def _as_1d(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return arr


def regression_metrics(y_true: Sequence[float] | np.ndarray, y_pred: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Compute standard regression metrics.

    Parameters
    ----------
    y_true, y_pred
        True and predicted labels, in the original (unscaled) label units.

    Returns
    -------
    dict[str, float]
        Keys ``mse``, ``rmse``, ``mae``, ``r2``, ``pearson`` and ``spearman``. Correlations are
        NaN when either array is constant (undefined); R² follows scikit-learn.

    Raises
    ------
    ValueError
        If the inputs differ in length, are empty or contain NaN / inf.
    """
    t = _as_1d(y_true, "y_true")
    p = _as_1d(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"length mismatch: y_true has {t.size} values, y_pred has {p.size}")
    mse = float(mean_squared_error(t, p))
    constant = t.size < 2 or np.ptp(t) == 0 or np.ptp(p) == 0
    if constant:
        pearson = spearman = float("nan")
    else:
        pearson = float(stats.pearsonr(t, p)[0])
        spearman = float(stats.spearmanr(t, p)[0])
    r2 = float(r2_score(t, p)) if t.size >= 2 else float("nan")
    return {
        "mse": mse,
        "rmse": math.sqrt(mse),
        "mae": float(mean_absolute_error(t, p)),
        "r2": r2,
        "pearson": pearson,
        "spearman": spearman,
    }


def aggregate(records: list[dict[str, float]]) -> dict[str, dict]:
    """Aggregate per-seed metric dicts into mean, sample standard deviation and count.

    Parameters
    ----------
    records
        One metric dict per run (e.g. per seed). Keys may differ between records; each key is
        aggregated over the records that contain it. NaN values are ignored.

    Returns
    -------
    dict[str, dict]
        ``{key: {"mean": float, "std": float, "n": int}}`` where ``std`` uses ``ddof=1`` and is
        NaN when fewer than two finite values exist; ``mean`` is NaN when there are none.
    """
    keys: list[str] = []
    for rec in records:
        for k in rec:
            if k not in keys:
                keys.append(k)
    out: dict[str, dict] = {}
    for k in keys:
        vals = np.asarray([float(rec[k]) for rec in records if k in rec], dtype=np.float64)
        vals = vals[np.isfinite(vals)]
        n = int(vals.size)
        mean = float(vals.mean()) if n else float("nan")
        std = float(vals.std(ddof=1)) if n >= 2 else float("nan")
        out[k] = {"mean": mean, "std": std, "n": n}
    return out


def format_mean_std(mean: float, std: float, n: int, digits: int = 3) -> str:
    """Format an aggregate as ``"0.712 ± 0.015 (n=3)"``.

    Parameters
    ----------
    mean, std
        The mean and standard deviation; a NaN std (n=1) is rendered as ``"nan"``.
    n
        Number of runs.
    digits
        Decimal places.

    Returns
    -------
    str
    """
    return f"{mean:.{digits}f} ± {std:.{digits}f} (n={n})"
