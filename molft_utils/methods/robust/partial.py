"""Partial fine-tuning: which parameters train (linear probing, surgical fine-tuning, LP-FT), and linear probing
on frozen features (the head trained on the pretrained encoder's pooled features, computed once)."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.optimization import get_linear_schedule_with_warmup

from molft_utils.core.device import autocast, autocast_dtype, get_device
from molft_utils.methods.robust.groups import COARSE_GROUPS, coarse_groups
from molft_utils.models.backbone import RegressionModel
from molft_utils.training.batching import sequential_batches
from molft_utils.training.collate import collate, encode
from molft_utils.training.metrics import regression_metrics
from molft_utils.training.train import FitResult, TargetScaler, TrainConfig, TrainHooks, fit

__all__ = [
    "fit_head",
    "linear_probe",
    "linear_probe_hooks",
    "lp_ft",
    "pooled_features",
    "probed_model",
    "surgical_hooks",
]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ partial methods
def linear_probe_hooks() -> TrainHooks:
    """Hooks that train only the head (``head.*``); the backbone stays bit-identical."""
    return TrainHooks(trainable=lambda model: [(n, p) for n, p in model.named_parameters() if n.startswith("head.")])


def surgical_hooks(group: str) -> TrainHooks:
    """Hooks that train one coarse backbone group (see :func:`coarse_groups`) and the head.

    Parameters
    ----------
    group
        ``"embeddings"``, ``"early"``, ``"middle"`` or ``"late"``.
    """
    if group not in COARSE_GROUPS:
        raise ValueError(f"group must be one of {COARSE_GROUPS}, got {group!r}")

    def trainable(model: RegressionModel) -> list[tuple[str, nn.Parameter]]:
        names = set(coarse_groups(model)[group])
        if not names:
            log.warning("surgical group %r is empty for this backbone; only the head trains", group)
        return [(n, p) for n, p in model.named_parameters() if n in names or n.startswith("head.")]

    return TrainHooks(trainable=trainable)


def lp_ft(
    model: RegressionModel,
    tokenizer: PreTrainedTokenizerBase,
    train_smiles: Sequence[str],
    train_y: Sequence[float],
    valid_smiles: Sequence[str],
    valid_y: Sequence[float],
    lp_config: TrainConfig | None = None,
    ft_config: TrainConfig | None = None,
    ft_hooks: TrainHooks | None = None,
    device: torch.device | None = None,
    progress: bool = True,
) -> tuple[FitResult, FitResult]:
    """LP-FT: linear probing, then full fine-tuning starting from the probed head (in place).

    Parameters
    ----------
    model
        Model with the pretrained backbone and a fresh head; trained in place.
    lp_config, ft_config
        Configurations of the two stages (default :class:`TrainConfig` for both; the probing stage only
        uses ``lr_head`` since the backbone is frozen).
    ft_hooks
        Optional hooks for the second stage (e.g. a regulariser); the first stage always uses
        :func:`linear_probe_hooks`.

    Returns
    -------
    (lp_result, ft_result)
        The two :class:`FitResult`. Both stages fit the target scaler on the same training labels,
        so ``ft_result.scaler`` is the one to predict with.
    """
    lp = fit(
        model,
        tokenizer,
        train_smiles,
        train_y,
        valid_smiles,
        valid_y,
        lp_config,
        linear_probe_hooks(),
        device,
        progress,
    )
    ft = fit(model, tokenizer, train_smiles, train_y, valid_smiles, valid_y, ft_config, ft_hooks, device, progress)
    return lp, ft


# ------------------------------------------------------------------------------ LP on frozen features
@torch.no_grad()
def pooled_features(
    backbone: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    smiles: Sequence[str],
    batch_size: int = 128,
    mixed_precision: str = "auto",
    device: torch.device | None = None,
) -> torch.Tensor:
    """Mean-pooled features of the frozen encoder (eval mode: no dropout), shape (N, H), fp32 on the CPU.

    These are exactly what the head of a linear-probed model sees at prediction time, so a head trained on
    them (:func:`fit_head`) and put on the unchanged encoder (:func:`probed_model`) predicts the same values.
    ``backbone`` is copied, never modified.
    """
    device = device or get_device()
    dtype = autocast_dtype(device, mixed_precision)
    model = RegressionModel(copy.deepcopy(backbone)).to(device).eval()
    ids = encode(tokenizer, smiles)
    out = torch.empty(len(ids), model.backbone.config.hidden_size)
    for idx in sequential_batches([len(x) for x in ids], batch_size):
        batch = collate(tokenizer, [ids[i] for i in idx], device)
        with autocast(device, dtype):
            out[torch.as_tensor(idx)] = model.embed(**batch).float().cpu()
    return out


def fit_head(
    head: nn.Module,
    train_x: torch.Tensor,
    train_y: Sequence[float],
    valid_x: torch.Tensor,
    valid_y: Sequence[float],
    config: TrainConfig,
) -> FitResult:
    """Train a regression head on frozen features: the loop of :func:`~molft_utils.training.train.fit` without the
    encoder (AdamW at ``config.lr_head``, linear warm-up and decay, clipping, early stopping on validation RMSE
    with the best weights restored; the target scaler fitted on ``train_y``). In place.

    Returns
    -------
    FitResult
        Its history has the rows of :func:`fit` (``epoch``, ``train_loss``, ``valid_rmse``, ``valid_r2``, ...),
        so :func:`~molft_utils.training.convergence.fit_convergence` judges it like any other fit.
    """
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    scaler = TargetScaler(config.target_scaling).fit(train_y)
    y = torch.tensor(scaler.transform(train_y), dtype=torch.float32)
    valid_y = np.asarray(valid_y, dtype=float)
    params = [p for p in head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=config.lr_head, weight_decay=config.weight_decay)
    steps_per_epoch = -(-len(y) // config.batch_size)
    total = steps_per_epoch * config.epochs
    schedule = get_linear_schedule_with_warmup(optimizer, int(config.warmup_fraction * total), total)
    result = FitResult(scaler=scaler, n_trainable=sum(p.numel() for p in params), config=asdict(config))
    best_state, best, bad = None, float("inf"), 0
    t_start = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        head.train()
        losses = []
        for idx in np.array_split(rng.permutation(len(y)), steps_per_epoch):
            loss = torch.nn.functional.mse_loss(head(train_x[idx]).squeeze(-1), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
        head.eval()
        with torch.no_grad():
            pred = scaler.inverse(head(valid_x).squeeze(-1).numpy())
        metrics = regression_metrics(valid_y, pred)
        seconds = time.perf_counter() - t0
        result.history.append({
            "epoch": epoch, "train_loss": float(np.mean(losses)), "valid_rmse": metrics["rmse"],
            "valid_r2": metrics["r2"], "lr": schedule.get_last_lr()[0], "seconds": seconds,
            "molecules_per_second": len(y) / seconds if seconds else 0.0,
        })  # fmt: skip
        if metrics["rmse"] < best:
            best, best_state, bad, result.best_epoch = metrics["rmse"], copy.deepcopy(head.state_dict()), 0, epoch
        else:
            bad += 1
            if bad >= config.patience:
                break
    if best_state is not None:
        head.load_state_dict(best_state)
    head.eval()
    result.best_valid_rmse = best
    result.train_seconds = time.perf_counter() - t_start
    return result


def probed_model(backbone: PreTrainedModel, head: nn.Module) -> RegressionModel:
    """A :class:`RegressionModel` with a copy of the (unchanged) ``backbone`` and a copy of the probed ``head``."""
    model = RegressionModel(copy.deepcopy(backbone))
    model.head.load_state_dict(head.state_dict())
    return model.eval()


def linear_probe(
    backbone: PreTrainedModel,
    train_x: torch.Tensor,
    train_y: Sequence[float],
    valid_x: torch.Tensor,
    valid_y: Sequence[float],
    config: TrainConfig,
) -> tuple[RegressionModel, FitResult]:
    """Linear probing on frozen features: the head ``RegressionModel`` draws after ``torch.manual_seed(config.seed)``
    (the same initial head as every fine-tune of that seed), trained by :func:`fit_head`, on the unchanged encoder.

    ``train_x`` / ``valid_x`` are :func:`pooled_features` of the same ``backbone``. The returned model is a
    shared start for LP-FT, the soup ingredients and WiSE-FT's α = 0 end (Wortsman et al.).
    """
    torch.manual_seed(config.seed)
    model = RegressionModel(copy.deepcopy(backbone))
    res = fit_head(model.head, train_x, train_y, valid_x, valid_y, config)
    return model.eval(), res
