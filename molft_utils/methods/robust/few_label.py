"""The epoch-budgeted few-label protocol of lesson 05 (issue 21): the molecules of one setting, one trained method
with early stopping on the selection half of validation, and a record of every model's numbers.

The lesson's benchmark loop is written in the notebook from these pieces; the methods themselves live in
``partial``, ``penalties``, ``combine`` and ``roft_mol``.

Protocol
    * training labels: a nested subset (:func:`~molft_utils.methods.robust.budgets.label_subset`);
    * validation split in two halves (:func:`~molft_utils.methods.robust.budgets.split_validation`): early stopping
      and the strength sweeps use the *selection* half, the post-hoc choices (WiSE-FT's α, the greedy soup,
      RoFt-Mol's α and its step) the *post-hoc* half, so that no post-hoc choice is made on the molecules that
      already chose the model it starts from;
    * every trained method: :func:`~molft_utils.training.train.fit` for at most the epoch budget of its label budget,
      early stopping with the patience of that budget (:func:`~molft_utils.methods.robust.budgets.epoch_budget`);
    * the test part is only predicted.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from molft_utils.methods.robust.budgets import ValidationHalves
from molft_utils.methods.robust.combine import interpolate_models
from molft_utils.methods.robust.protocol import TRAINED, MethodOptions, starting_model
from molft_utils.models.backbone import RegressionModel
from molft_utils.training.metrics import regression_metrics
from molft_utils.training.train import FitResult, TargetScaler, TrainConfig, fit, predict

__all__ = [
    "NOT_ITERATIVE",
    "Parts",
    "SettingRecord",
    "axis_top",
    "fine_tune",
    "interpolation_curve",
    "make_parts",
    "scaled_config",
]

#: Convergence record of a model that is not trained iteratively (the random forest).
NOT_ITERATIVE = {"iterative": False, "converged": True, "reason": "not iteratively trained"}

Pair = tuple[list[str], np.ndarray]


@dataclass
class Parts:
    """The molecules of one (split, label budget) setting.

    Attributes
    ----------
    train
        (SMILES, labels) of the label subset.
    select
        The validation half for model selection (early stopping, strength sweeps).
    post
        The other validation half, for post-hoc choices (WiSE-FT's α, the greedy soup, RoFt-Mol).
    test
        Only predicted.
    post_fit, post_select
        Indices into ``post``: RoFt-Mol fits its α on ``post_fit`` and chooses its step on ``post_select``.
    features
        Frozen pooled features of the pretrained encoder, ``"train"`` and ``"select"`` (for linear probing).
    """

    train: Pair
    select: Pair
    post: Pair
    test: Pair
    post_fit: np.ndarray
    post_select: np.ndarray
    features: dict[str, torch.Tensor] = field(default_factory=dict)

    def sizes(self) -> dict[str, int]:
        return {k: len(getattr(self, k)[0]) for k in ("train", "select", "post", "test")}


def _pair(frame: pd.DataFrame, idx: np.ndarray | None = None) -> Pair:
    part = frame if idx is None else frame.iloc[np.asarray(idx, dtype=int)]
    return list(part.smiles), part.label.to_numpy(dtype=float)


def make_parts(
    train: pd.DataFrame,
    valid: pd.DataFrame,
    test: pd.DataFrame,
    subset: np.ndarray,
    halves: ValidationHalves,
    features: dict[str, torch.Tensor] | None = None,
) -> Parts:
    """The :class:`Parts` of one setting from a task's frames (columns ``smiles``, ``label``).

    Parameters
    ----------
    subset
        Positions of the label subset in ``train``.
    halves
        :func:`~molft_utils.methods.robust.budgets.split_validation` of ``valid``.
    features
        Optional frozen features of the *whole* ``"train"`` and ``"valid"`` frames (row order), sliced here.
    """
    if len(halves.select) + len(halves.post) != len(valid):
        raise ValueError(f"validation halves cover {len(halves.select) + len(halves.post)} of {len(valid)} molecules")
    feats = {}
    if features:
        feats = {"train": features["train"][torch.as_tensor(subset)],
                 "select": features["valid"][torch.as_tensor(halves.select)]}  # fmt: skip
    return Parts(
        train=_pair(train, subset),
        select=_pair(valid, halves.select),
        post=_pair(valid, halves.post),
        test=_pair(test),
        post_fit=np.searchsorted(halves.post, halves.post_fit),
        post_select=np.searchsorted(halves.post, halves.post_select),
        features=feats,
    )


def scaled_config(config: TrainConfig, lr_factor: float = 1.0, seed_offset: int = 0, **changes: object) -> TrainConfig:
    """``config`` with both learning rates times ``lr_factor`` and the seed (data order, dropout) moved by
    ``seed_offset``: a soup ingredient's recipe."""
    return TrainConfig(**{
        **config.__dict__, "lr_backbone": config.lr_backbone * lr_factor, "lr_head": config.lr_head * lr_factor,
        "seed": config.seed + seed_offset, **changes,
    })  # fmt: skip


def fine_tune(
    method: str,
    pretrained_backbone: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    parts: Parts,
    config: TrainConfig,
    strength: float | None = None,
    start: RegressionModel | None = None,
    surgical_group: str = "late",
    l2sp_beta: float = 0.01,
    device: torch.device | None = None,
) -> tuple[RegressionModel, FitResult]:
    """Train one of the registered methods (:data:`~molft_utils.methods.robust.protocol.TRAINED`) in one setting.

    :func:`~molft_utils.training.train.fit` on ``parts.train`` for at most ``config.epochs`` epochs with early
    stopping on ``parts.select``. The model is a copy of ``start`` (LP-FT and the soup ingredients: the linear-probed
    model) or, without it, the pretrained backbone under the head drawn after ``torch.manual_seed(config.seed)``.

    Returns
    -------
    (model, fit_result)
        ``fit_result.config`` records the epoch budget and patience, so
        :func:`~molft_utils.training.convergence.fit_convergence` judges the run.
    """
    spec = TRAINED[method]
    if spec.strength is not None and strength is None:
        raise ValueError(f"{method} needs a strength")
    if method == "LP-FT" and start is None:
        raise ValueError("LP-FT starts from the linear-probed model: pass start=")
    model = starting_model(start, pretrained_backbone, config.seed)
    cfg, hooks = spec.build(MethodOptions(pretrained_backbone, config, strength, surgical_group, l2sp_beta, None))
    res = fit(model, tokenizer, *parts.train, *parts.select, cfg, hooks, device, progress=False)
    return model, res


def interpolation_curve(
    start: RegressionModel,
    end: RegressionModel,
    scaler: TargetScaler,
    alphas: Sequence[float],
    record: SettingRecord,
) -> list[dict]:
    """RMSE of :func:`~molft_utils.methods.robust.combine.interpolate_models` ``(start, end, α)`` at every α on the
    post-hoc half (where α is chosen), the selection half and the test part: one row per α."""
    rows = []
    for a in alphas:
        model = interpolate_models(start, end, float(a))
        rows.append({"alpha": float(a), **{f"{p}_rmse": record.rmse(model, scaler, p) for p in ("post", "select",
                                                                                             "test")}})
    return rows


def axis_top(values: Sequence[float], margin: float = 0.05) -> float:
    """Upper end of an RMSE axis: the largest value, or the upper Tukey fence (Q3 + 1.5 IQR) of all values when one
    broken method lies above it, so that it does not squeeze the others (the report's rule)."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if v.size == 0:
        return 1.0
    q1, q3 = np.percentile(v, [25, 75])
    return float(min(v.max(), q3 + 1.5 * (q3 - q1))) + margin


@dataclass
class SettingRecord:
    """Every number of one (split, label budget) setting: per method its test metrics, its RMSE on both
    validation halves, its convergence and training history, and seconds.

    ``valid_rmse`` is on the selection half for every method (the same molecules for all, whatever chose them).
    """

    parts: Parts
    tokenizer: PreTrainedTokenizerBase
    test_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    valid_rmse: dict[str, float] = field(default_factory=dict)
    post_rmse: dict[str, float] = field(default_factory=dict)
    convergence: dict[str, dict] = field(default_factory=dict)
    histories: dict[str, list[dict]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def predict(self, model: RegressionModel, scaler: TargetScaler, part: str) -> np.ndarray:
        return predict(model, self.tokenizer, getattr(self.parts, part)[0], scaler)

    def rmse(self, model: RegressionModel, scaler: TargetScaler, part: str) -> float:
        """RMSE of ``model`` on ``part`` (``"select"``, ``"post"``, ``"test"``, ``"train"``)."""
        y = getattr(self.parts, part)[1]
        return regression_metrics(y, self.predict(model, scaler, part))["rmse"]

    def add(
        self,
        name: str,
        model: RegressionModel | None,
        scaler: TargetScaler | None,
        convergence: dict,
        history: list[dict] | None = None,
        seconds: float | None = None,
        predictions: dict[str, np.ndarray] | None = None,
    ) -> dict[str, float]:
        """Record ``name``: predict the three parts with ``model`` (or take ``predictions`` by part, e.g. for the
        random forest), store its convergence and history. Returns its test metrics."""
        pred = predictions or {p: self.predict(model, scaler, p) for p in ("select", "post", "test")}
        self.test_metrics[name] = regression_metrics(self.parts.test[1], pred["test"])
        self.valid_rmse[name] = regression_metrics(self.parts.select[1], pred["select"])["rmse"]
        self.post_rmse[name] = regression_metrics(self.parts.post[1], pred["post"])["rmse"]
        self.convergence[name] = dict(convergence)
        if history is not None:
            self.histories[name] = history
        if seconds is not None:
            self.seconds[name] = float(seconds)
        return self.test_metrics[name]


class Timer:
    """``with Timer() as t: ...; t.seconds``."""

    def __enter__(self) -> Timer:
        self.t0 = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0


__all__ += ["Timer"]
