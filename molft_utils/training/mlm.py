"""Masked-language-model training (with optional descriptor multi-task regression).

One loop serves both uses: pretraining the embedded backbone on a million MOSES molecules
(:mod:`molft_utils.pretraining.pretrain`) and adapting a pretrained backbone to the SMILES of the task
(notebook 01). Masking follows BERT and MoLFormer: 15 % of the tokens are selected; of those,
80 % become ``<mask>``, 10 % a random token and 10 % stay as they are
(``transformers.DataCollatorForLanguageModeling``). The loss is cross-entropy on the selected
tokens only.

With descriptor targets (``descriptors=`` and ``MLMConfig.descriptor_weight > 0``) the same loop adds
multi-task regression (MTR) of standardised RDKit descriptors predicted from the masked mean-pooled
last hidden state by a linear :class:`DescriptorHead`, as MolBERT's PhysChemPred and ChemBERTa-2's
MTR do; ``mlm_weight=0`` leaves the descriptor objective alone (no masking), which is descriptor
domain adaptation (Sultan et al., 2025). The loss is ``mlm_weight * MLM + descriptor_weight * MSE``.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import DataCollatorForLanguageModeling, PreTrainedModel, PreTrainedTokenizerFast
from transformers.optimization import get_cosine_schedule_with_warmup

from molft_utils.core.device import autocast, autocast_dtype, get_device, seed_everything
from molft_utils.core.progress import progress_bar
from molft_utils.models.backbone import mean_pool, speed_up_backbone
from molft_utils.training.batching import bucketed_batches, sequential_batches
from molft_utils.training.loop import OptimizerStep
from molft_utils.training.train import make_adamw

__all__ = ["DescriptorHead", "MLMConfig", "MLMHistory", "evaluate_descriptors", "evaluate_mlm", "train_mlm"]

log = logging.getLogger(__name__)


@dataclass
class MLMConfig:
    """Hyper-parameters of MLM training.

    Attributes
    ----------
    max_steps
        Optimiser steps. When ``None``, ``epochs`` passes over the training SMILES.
    epochs
        Used only when ``max_steps`` is None.
    lr, weight_decay, warmup_fraction
        AdamW with linear warm-up over ``warmup_fraction`` of the steps, then cosine decay to 0.
    batch_size, bucket_batches
        Molecules per step; how many batches are length-sorted together.
    mlm_probability
        Fraction of tokens selected for prediction.
    eval_every, checkpoint_every
        Held-out evaluation / checkpoint period in steps (0 = only at the end).
    max_grad_norm
        Gradient clipping.
    mixed_precision
        ``auto`` | ``bf16`` | ``fp16`` | ``no`` (see :func:`molft_utils.core.device.autocast_dtype`).
    seed
        Seeds batch order, masking and dropout.
    mlm_weight, descriptor_weight
        Weights of the MLM loss and of the descriptor regression loss (the latter needs
        ``descriptors=`` in :func:`train_mlm`). ``mlm_weight=0`` trains on unmasked input.
    fast
        Switch the model to :func:`molft_utils.models.backbone.speed_up_backbone` (the fine-tuning fast
        path: de-interleaved rotary attention, cheaper dropout masks).
    """

    max_steps: int | None = None
    epochs: float = 1.0
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05
    batch_size: int = 128
    bucket_batches: int = 50
    mlm_probability: float = 0.15
    eval_every: int = 0
    checkpoint_every: int = 0
    max_grad_norm: float = 1.0
    mixed_precision: str = "auto"
    seed: int = 0
    mlm_weight: float = 1.0
    descriptor_weight: float = 0.0
    fast: bool = True


class DescriptorHead(nn.Module):
    """A linear map from the pooled encoder representation to standardised descriptors."""

    def __init__(self, hidden: int, n_descriptors: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden, n_descriptors)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.linear(pooled)


@dataclass
class MLMHistory:
    """What happened during MLM training: one row per evaluation plus totals."""

    rows: list[dict] = field(default_factory=list)
    molecules_seen: int = 0
    tokens_seen: int = 0
    steps: int = 0
    wall_seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _tokenize(tokenizer: PreTrainedTokenizerFast, smiles: Sequence[str]) -> list[list[int]]:
    return tokenizer(list(smiles), truncation=True, add_special_tokens=True)["input_ids"]


def _collate(collator: DataCollatorForLanguageModeling, ids: list[list[int]]) -> dict[str, torch.Tensor]:
    return collator([{"input_ids": x} for x in ids])


@torch.no_grad()
def evaluate_mlm(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    smiles: Sequence[str] | list[list[int]],
    batch_size: int = 256,
    mlm_probability: float = 0.15,
    seed: int = 1234,
    mixed_precision: str = "auto",
) -> dict[str, float]:
    """Held-out MLM loss and accuracy on ``smiles`` with a fixed masking seed.

    The same ``seed`` masks the same tokens every time, so successive evaluations during
    training are comparable. Returns ``{"loss", "accuracy", "n_tokens"}``; ``accuracy`` is the
    fraction of selected tokens whose original token is the arg-max prediction.
    """
    ids = smiles if smiles and isinstance(smiles[0], list) else _tokenize(tokenizer, smiles)  # type: ignore[arg-type]
    device = next(model.parameters()).device
    dtype = autocast_dtype(device, mixed_precision)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=mlm_probability, seed=seed)
    was_training = model.training
    model.eval()
    total_loss, correct, n = 0.0, 0, 0
    for batch_idx in sequential_batches([len(x) for x in ids], batch_size):
        batch = _collate(collator, [ids[i] for i in batch_idx])
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(device, dtype):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        selected = batch["labels"] != -100
        logits = logits[selected].float()
        labels = batch["labels"][selected]
        total_loss += torch.nn.functional.cross_entropy(logits, labels, reduction="sum").item()
        correct += (logits.argmax(-1) == labels).sum().item()
        n += int(selected.sum())
    model.train(was_training)
    return {"loss": total_loss / max(n, 1), "accuracy": correct / max(n, 1), "n_tokens": n}


def _encoder(model: PreTrainedModel) -> nn.Module:
    return getattr(model, model.base_model_prefix)


@torch.no_grad()
def evaluate_descriptors(
    model: PreTrainedModel,
    head: nn.Module,
    tokenizer: PreTrainedTokenizerFast,
    smiles: Sequence[str] | list[list[int]],
    targets: np.ndarray,
    batch_size: int = 256,
    mixed_precision: str = "auto",
) -> dict[str, float]:
    """Descriptor regression on unmasked ``smiles``: ``{"mse", "r2"}`` (R² averaged over descriptors)."""
    ids = smiles if smiles and isinstance(smiles[0], list) else _tokenize(tokenizer, smiles)  # type: ignore[arg-type]
    device = next(model.parameters()).device
    dtype = autocast_dtype(device, mixed_precision)
    was_training = model.training
    model.eval()
    head.eval()
    preds = np.zeros_like(targets, dtype=np.float32)
    for batch_idx in sequential_batches([len(x) for x in ids], batch_size):
        batch = tokenizer.pad({"input_ids": [ids[i] for i in batch_idx]}, return_tensors="pt")
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(device, dtype):
            hidden = _encoder(model)(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            pooled = mean_pool(hidden.last_hidden_state.float(), batch["attention_mask"])
        preds[np.asarray(batch_idx)] = head(pooled).float().cpu().numpy()
    model.train(was_training)
    head.train(was_training)
    err = ((preds - targets) ** 2).mean(0)
    var = targets.var(0)
    r2 = 1 - err[var > 0] / var[var > 0]
    return {"mse": float(err.mean()), "r2": float(r2.mean())}


def _save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train_mlm(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    train_smiles: Sequence[str],
    valid_smiles: Sequence[str] = (),
    config: MLMConfig | None = None,
    checkpoint_dir: Path | None = None,
    device: torch.device | None = None,
    progress: bool = True,
    descriptors: np.ndarray | None = None,
    valid_descriptors: np.ndarray | None = None,
    descriptor_head: nn.Module | None = None,
) -> MLMHistory:
    """Train ``model`` (a ``...ForMaskedLM``) with the MLM objective (and descriptor regression).

    Parameters
    ----------
    model
        A masked-language model, e.g. ``RoFormerForMaskedLM``. Trained in place.
    tokenizer
        The SMILES tokenizer (needs a mask token).
    train_smiles, valid_smiles
        Training SMILES; held-out SMILES evaluated every ``config.eval_every`` steps and at the end.
    config
        Hyper-parameters.
    checkpoint_dir
        If given, ``last.pt`` there is written every ``config.checkpoint_every`` steps and
        training resumes from it when it exists (same data and config assumed; the step and the
        data order are restored).
    device
        Defaults to :func:`molft_utils.core.device.get_device`.
    progress
        Show a tqdm bar (``TQDM_DISABLE=1`` silences it).
    descriptors, valid_descriptors
        Standardised descriptor targets, one row per training / held-out SMILES (needed when
        ``config.descriptor_weight > 0``).
    descriptor_head
        The head predicting them (trained in place; created as :class:`DescriptorHead` if omitted,
        pass one to keep it: the function trains it but does not return it).

    Returns
    -------
    MLMHistory
        Evaluation rows (step, molecules seen, train loss, held-out loss and accuracy, lr,
        seconds) and totals.
    """
    cfg = config or MLMConfig()
    device = device or get_device()
    dtype = autocast_dtype(device, cfg.mixed_precision)
    seed_everything(cfg.seed)
    if cfg.fast:
        speed_up_backbone(model)
    use_desc = cfg.descriptor_weight > 0
    use_mlm = cfg.mlm_weight > 0
    if not (use_desc or use_mlm):
        raise ValueError("both mlm_weight and descriptor_weight are 0: nothing to train")
    if use_desc:
        if descriptors is None or len(descriptors) != len(train_smiles):
            raise ValueError("descriptor_weight > 0 needs one descriptor row per training SMILES")
        if descriptor_head is None:
            descriptor_head = DescriptorHead(model.config.hidden_size, descriptors.shape[1])
        descriptor_head.to(device).train()
        desc_t = torch.as_tensor(np.asarray(descriptors, dtype=np.float32))
    model.to(device).train()

    ids = _tokenize(tokenizer, train_smiles)
    lengths = np.array([len(x) for x in ids])
    valid_ids = _tokenize(tokenizer, valid_smiles) if len(valid_smiles) else []
    steps_per_epoch = math.ceil(len(ids) / cfg.batch_size)
    total_steps = cfg.max_steps or max(1, round(cfg.epochs * steps_per_epoch))

    decay, no_decay = [], []
    named = list(model.named_parameters())
    if use_desc:
        named += [(f"descriptor_head.{n}", p) for n, p in descriptor_head.named_parameters()]
    for name, p in named:
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "LayerNorm" in name else decay).append(p)
    optimizer = make_adamw(
        [{"params": decay, "weight_decay": cfg.weight_decay, "lr": cfg.lr},
         {"params": no_decay, "weight_decay": 0.0, "lr": cfg.lr}],
        weight_decay=cfg.weight_decay,
    )  # fmt: skip
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(cfg.warmup_fraction * total_steps), total_steps)
    optimizer_step = OptimizerStep(optimizer, scheduler, device, dtype, cfg.max_grad_norm)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=cfg.mlm_probability)

    history = MLMHistory()
    step, elapsed_before = 0, 0.0
    ckpt_path = checkpoint_dir / "last.pt" if checkpoint_dir else None
    if ckpt_path and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        if use_desc:
            descriptor_head.load_state_dict(state["descriptor_head"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        history = MLMHistory(**state["history"])
        step, elapsed_before = state["step"], history.wall_seconds
        log.info("resumed MLM training from %s at step %d", ckpt_path, step)

    def evaluate_and_log(train_loss: float) -> None:
        row = {
            "step": step,
            "molecules_seen": history.molecules_seen,
            "train_loss": train_loss,
            "lr": scheduler.get_last_lr()[0],
            "seconds": elapsed_before + time.perf_counter() - t0,
        }
        if valid_ids and use_mlm:
            metrics = evaluate_mlm(model, tokenizer, valid_ids, mixed_precision=cfg.mixed_precision)
            row |= {"valid_loss": metrics["loss"], "valid_accuracy": metrics["accuracy"]}
        if valid_ids and use_desc and valid_descriptors is not None:
            metrics = evaluate_descriptors(
                model, descriptor_head, tokenizer, valid_ids, valid_descriptors, mixed_precision=cfg.mixed_precision
            )
            row |= {"valid_descriptor_mse": metrics["mse"], "valid_descriptor_r2": metrics["r2"]}
        history.rows.append(row)
        log.info("MLM %s", {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})

    def batch_loss(batch: dict[str, torch.Tensor], batch_idx: list[int]) -> torch.Tensor:
        if use_mlm:
            out = model(**batch, output_hidden_states=use_desc)
            loss = cfg.mlm_weight * out.loss
            hidden = out.hidden_states[-1] if use_desc else None
        else:
            loss = 0.0
            hidden = _encoder(model)(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).last_hidden_state
        if use_desc:
            pooled = mean_pool(hidden.float(), batch["attention_mask"])
            target = desc_t[torch.as_tensor(batch_idx)].to(device)
            desc_loss = nn.functional.mse_loss(descriptor_head(pooled).float(), target)
            loss = loss + cfg.descriptor_weight * desc_loss
        return loss

    t0 = time.perf_counter()
    if step == 0 and valid_ids:
        evaluate_and_log(float("nan"))
    bar = progress_bar(total=total_steps, initial=step, desc="MLM", unit="step", progress=progress)
    running, n_running = 0.0, 0
    epoch = step // steps_per_epoch
    while step < total_steps:
        # the batch order of an epoch depends only on (seed, epoch), so resuming skips exactly
        batches = bucketed_batches(
            lengths, cfg.batch_size, np.random.default_rng([cfg.seed, epoch]), cfg.bucket_batches
        )
        for batch_idx in batches[step - epoch * steps_per_epoch :]:
            if use_mlm:
                batch = _collate(collator, [ids[i] for i in batch_idx])
            else:
                batch = dict(tokenizer.pad({"input_ids": [ids[i] for i in batch_idx]}, return_tensors="pt"))
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            running += optimizer_step(batch_loss, batch, batch_idx)
            step += 1
            history.steps = step
            history.molecules_seen += len(batch_idx)
            history.tokens_seen += int(batch["attention_mask"].sum())
            n_running += 1
            bar.update(1)
            if cfg.eval_every and step % cfg.eval_every == 0:
                evaluate_and_log(running / n_running)
                running, n_running = 0.0, 0
                bar.set_postfix(valid_loss=history.rows[-1].get("valid_loss"))
            if ckpt_path and cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                history.wall_seconds = elapsed_before + time.perf_counter() - t0
                checkpoint_dir.mkdir(parents=True, exist_ok=True)
                _save_checkpoint(
                    ckpt_path,
                    {
                        "model": model.state_dict(),
                        "descriptor_head": descriptor_head.state_dict() if use_desc else None,
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "torch_rng": torch.get_rng_state(),
                        "history": history.to_dict(),
                        "step": step,
                        "config": asdict(cfg),
                    },
                )
            if step >= total_steps:
                break
        epoch += 1
    bar.close()
    if not history.rows or history.rows[-1]["step"] != step:
        evaluate_and_log(running / max(n_running, 1))
    history.wall_seconds = elapsed_before + time.perf_counter() - t0
    model.eval()
    if use_desc:
        descriptor_head.eval()
    return history
