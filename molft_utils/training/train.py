"""One fine-tuning loop for every notebook.

:func:`fit` trains a :class:`~molft_utils.models.RegressionModel` on SMILES → label with

* AdamW, separate learning rates for backbone and head, linear warm-up then linear or cosine decay;
* gradient clipping; early stopping on validation RMSE with the best weights restored;
* target scaling fitted on the training split only (min-max as in the reference study, or
  standardisation, or none), metrics always reported in the original units;
* dynamic padding with length-bucketed batches and bf16 autocast where it is faster;
* :class:`TrainHooks` so other methods can add a regulariser to the loss (L2-SP, DELTA, BSS),
  choose which parameters train (BitFit, linear probing, surgical fine-tuning) or act after an
  epoch.
"""

from __future__ import annotations

import copy
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase
from transformers.optimization import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

from molft_utils.core.device import autocast, autocast_dtype, get_device, seed_everything
from molft_utils.core.progress import progress_bar
from molft_utils.models.backbone import RegressionModel
from molft_utils.training.batching import bucketed_batches, sequential_batches
from molft_utils.training.collate import collate, encode
from molft_utils.training.loop import OptimizerStep, PlateauScale
from molft_utils.training.metrics import regression_metrics

__all__ = ["FitResult", "TargetScaler", "TrainConfig", "TrainHooks", "fit", "predict"]

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Fine-tuning hyper-parameters (defaults: the notebook-01 recipe).

    ``schedule`` is ``"linear"`` or ``"cosine"`` (warm-up, then decay to zero at ``epochs``) or ``"plateau"``
    (warm-up, then a constant rate multiplied by ``plateau_factor`` after every ``plateau_patience`` epochs
    without a better validation RMSE): with early stopping, a linear decay over a high epoch ceiling stops on
    validation noise while the rate is still near its peak; the plateau schedule anneals when progress stalls.
    """

    epochs: int = 20
    batch_size: int = 32
    lr_backbone: float = 1e-4
    lr_head: float = 1e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.06
    schedule: str = "linear"
    plateau_factor: float = 0.5
    plateau_patience: int = 2
    max_grad_norm: float = 1.0
    patience: int = 5
    target_scaling: str = "minmax"
    mixed_precision: str = "auto"
    bucket_batches: int = 20
    eval_batch_size: int = 128
    seed: int = 0


class TargetScaler:
    """Label scaling fitted on the training labels only.

    ``kind`` is ``"minmax"`` (to [0, 1], the reference study), ``"standard"`` (zero mean, unit
    variance) or ``"none"``.
    """

    def __init__(self, kind: str = "minmax") -> None:
        if kind not in ("minmax", "standard", "none"):
            raise ValueError(f"target_scaling must be minmax, standard or none, got {kind!r}")
        self.kind = kind
        self.shift, self.scale = 0.0, 1.0

    def fit(self, y: Sequence[float]) -> TargetScaler:
        y = np.asarray(y, dtype=float)
        if self.kind == "minmax":
            self.shift, self.scale = float(y.min()), float(y.max() - y.min()) or 1.0
        elif self.kind == "standard":
            self.shift, self.scale = float(y.mean()), float(y.std()) or 1.0
        return self

    def transform(self, y: Sequence[float]) -> np.ndarray:
        return (np.asarray(y, dtype=float) - self.shift) / self.scale

    def inverse(self, y: Sequence[float]) -> np.ndarray:
        return np.asarray(y, dtype=float) * self.scale + self.shift

    def to_dict(self) -> dict:
        return {"kind": self.kind, "shift": self.shift, "scale": self.scale}

    @classmethod
    def from_dict(cls, d: dict) -> TargetScaler:
        s = cls(d["kind"])
        s.shift, s.scale = d["shift"], d["scale"]
        return s


@dataclass
class TrainHooks:
    """Extension points of :func:`fit`.

    Attributes
    ----------
    trainable
        ``f(model) -> iterable of (name, parameter)`` that should train; the rest are frozen.
        Default: every parameter. Parameters whose name starts with ``head.`` use ``lr_head``.
    extra_loss
        ``f(model, batch, predictions, features) -> scalar tensor`` added to the MSE loss
        (regularisers). ``features`` are the pooled encoder features of the batch.
    on_epoch_end
        ``f(model, epoch, row)`` after each epoch's validation.
    after_optimizer_step
        ``f(model, global_step)`` right after ``optimizer.step()``, before the gradients are
        zeroed (AdaLoRA's rank allocation needs them).
    """

    trainable: Callable[[RegressionModel], Sequence[tuple[str, torch.nn.Parameter]]] | None = None
    extra_loss: Callable[..., torch.Tensor] | None = None
    on_epoch_end: Callable[[RegressionModel, int, dict], None] | None = None
    after_optimizer_step: Callable[[RegressionModel, int], None] | None = None


@dataclass
class FitResult:
    """Training history and what is needed to predict with the trained model."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_valid_rmse: float = float("nan")
    scaler: TargetScaler = field(default_factory=TargetScaler)
    train_seconds: float = 0.0
    molecules_per_second: float = 0.0
    n_trainable: int = 0
    config: dict = field(default_factory=dict)


def make_adamw(groups: list[dict], weight_decay: float) -> torch.optim.AdamW:
    """AdamW with the fused kernel when available (one kernel for all tensors; same update rule).

    Falls back to the default implementation, logging once, when this torch build or device has
    no fused AdamW.
    """
    try:
        return torch.optim.AdamW(groups, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError) as err:
        _log_once(f"fused AdamW unavailable ({err}); using the default implementation")
        return torch.optim.AdamW(groups, weight_decay=weight_decay)


@functools.cache
def _log_once(message: str) -> None:
    log.info(message)


@torch.no_grad()
def _predict_ids(
    model: RegressionModel,
    tokenizer: PreTrainedTokenizerBase,
    ids: list[list[int]],
    batch_size: int,
    dtype: torch.dtype | None,
) -> np.ndarray:
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = np.empty(len(ids))
    for idx in sequential_batches([len(x) for x in ids], batch_size):
        batch = collate(tokenizer, [ids[i] for i in idx], device)
        with autocast(device, dtype):
            out[idx] = model(**batch).float().cpu().numpy()
    model.train(was_training)
    return out


def predict(
    model: RegressionModel,
    tokenizer: PreTrainedTokenizerBase,
    smiles: Sequence[str],
    scaler: TargetScaler,
    batch_size: int = 128,
    mixed_precision: str = "auto",
) -> np.ndarray:
    """Predictions for ``smiles`` in original label units."""
    device = next(model.parameters()).device
    scaled = _predict_ids(
        model, tokenizer, encode(tokenizer, smiles), batch_size, autocast_dtype(device, mixed_precision)
    )
    return scaler.inverse(scaled)


def fit(
    model: RegressionModel,
    tokenizer: PreTrainedTokenizerBase,
    train_smiles: Sequence[str],
    train_y: Sequence[float],
    valid_smiles: Sequence[str],
    valid_y: Sequence[float],
    config: TrainConfig | None = None,
    hooks: TrainHooks | None = None,
    device: torch.device | None = None,
    progress: bool = True,
) -> FitResult:
    """Fine-tune ``model`` in place; the weights of the best validation epoch are restored.

    Returns
    -------
    FitResult
        Per-epoch rows (train loss, validation RMSE in label units, learning rates, seconds,
        molecules/s), the best epoch and the fitted target scaler.
    """
    cfg = config or TrainConfig()
    hooks = hooks or TrainHooks()
    device = device or get_device()
    dtype = autocast_dtype(device, cfg.mixed_precision)
    seed_everything(cfg.seed)
    model.to(device).train()

    scaler = TargetScaler(cfg.target_scaling).fit(train_y)
    y_train = torch.tensor(scaler.transform(train_y), dtype=torch.float32)
    valid_y = np.asarray(valid_y, dtype=float)
    ids = encode(tokenizer, train_smiles)
    valid_ids = encode(tokenizer, valid_smiles)
    lengths = [len(x) for x in ids]

    named = list(hooks.trainable(model)) if hooks.trainable else list(model.named_parameters())
    chosen = {id(p) for _, p in named}
    for p in model.parameters():
        p.requires_grad_(id(p) in chosen)
    head = [p for n, p in named if n.startswith("head.")]
    body = [p for n, p in named if not n.startswith("head.")]
    groups = [g for g in ({"params": body, "lr": cfg.lr_backbone}, {"params": head, "lr": cfg.lr_head}) if g["params"]]
    optimizer = make_adamw(groups, cfg.weight_decay)
    steps_per_epoch = -(-len(ids) // cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    plateau = PlateauScale(max(1, int(cfg.warmup_fraction * total)), cfg.plateau_factor, cfg.plateau_patience)
    if cfg.schedule == "plateau":
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, plateau)
    else:
        make_schedule = {"linear": get_linear_schedule_with_warmup, "cosine": get_cosine_schedule_with_warmup}[
            cfg.schedule
        ]
        schedule = make_schedule(optimizer, int(cfg.warmup_fraction * total), total)
    after_step = hooks.after_optimizer_step
    optimizer_step = OptimizerStep(
        optimizer, schedule, device, dtype, cfg.max_grad_norm, parameters=[p for _, p in named],
        after_step=None if after_step is None else functools.partial(after_step, model),
    )  # fmt: skip
    rng = np.random.default_rng(cfg.seed)

    def regression_loss(batch: dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        pred, features = model(**batch, return_features=True)
        loss = torch.nn.functional.mse_loss(pred.float(), target)
        if hooks.extra_loss is not None:
            loss = loss + hooks.extra_loss(model, batch, pred, features)
        return loss

    result = FitResult(scaler=scaler, n_trainable=sum(p.numel() for _, p in named), config=asdict(cfg))
    best_state, best_rmse, bad_epochs = None, float("inf"), 0
    t_start = time.perf_counter()
    bar = progress_bar(range(1, cfg.epochs + 1), progress=progress, desc="fine-tune", unit="epoch")
    for epoch in bar:
        t0 = time.perf_counter()
        losses = []
        for idx in bucketed_batches(lengths, cfg.batch_size, rng, cfg.bucket_batches):
            batch = collate(tokenizer, [ids[i] for i in idx], device)
            target = y_train[idx].to(device)
            losses.append(optimizer_step(regression_loss, batch, target))
        seconds = time.perf_counter() - t0
        valid_pred = scaler.inverse(_predict_ids(model, tokenizer, valid_ids, cfg.eval_batch_size, dtype))
        valid_metrics = regression_metrics(valid_y, valid_pred)
        row = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)),
            "valid_rmse": valid_metrics["rmse"],
            "valid_r2": valid_metrics["r2"],
            "lr": schedule.get_last_lr()[0],
            "seconds": seconds,
            "molecules_per_second": len(ids) / seconds,
        }
        result.history.append(row)
        bar.set_postfix(valid_rmse=f"{row['valid_rmse']:.3f}", refresh=False)
        log.debug("epoch %s", row)
        if hooks.on_epoch_end is not None:
            hooks.on_epoch_end(model, epoch, row)
        if row["valid_rmse"] < best_rmse:
            best_rmse, best_state, bad_epochs = row["valid_rmse"], copy.deepcopy(model.state_dict()), 0
            result.best_epoch = epoch
            plateau.epoch_end(improved=True)
        else:
            bad_epochs += 1
            plateau.epoch_end(improved=False)  # the plateau schedule reads its scale from the next step on
            if bad_epochs >= cfg.patience:
                log.info("early stopping after epoch %d (best %d)", epoch, result.best_epoch)
                break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    result.best_valid_rmse = best_rmse
    result.train_seconds = time.perf_counter() - t_start
    trained = sum(r["seconds"] for r in result.history)
    result.molecules_per_second = len(ids) * len(result.history) / trained if trained else 0.0
    return result
