"""The penalties of the representation- and weight-based methods, as :class:`~molft_utils.training.train.TrainHooks`
``extra_loss`` terms: feature-map L2 (DELTA without attention), batch spectral shrinkage, L2-SP."""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn
from transformers import PreTrainedModel

from molft_utils.models.backbone import RegressionModel, mean_pool
from molft_utils.training.train import TrainHooks

__all__ = ["bss_hooks", "bss_penalty", "feature_map_hooks", "l2sp_hooks", "l2sp_penalty", "snapshot_state"]


# --------------------------------------------------------------------------- representation methods
def feature_map_hooks(pretrained_backbone: PreTrainedModel, delta: float) -> TrainHooks:
    """Feature-map L2 towards a frozen pretrained backbone: ``δ/2 · mean_batch ‖f_ft(x) − f_pt(x)‖²``.

    ``f`` are the mean-pooled encoder features (the input of the head). DELTA (Li et al. 2019,
    "DELTA: deep learning transfer using feature map with attention") additionally weights channels
    by their importance for the source task; that attention is omitted here, so this is the unweighted
    feature-map distance. A deep copy of ``pretrained_backbone`` is kept frozen in eval mode (no
    dropout), so the penalty is exactly zero for the pretrained weights in eval mode; while training,
    dropout in the fine-tuned model makes it small but non-zero.

    Parameters
    ----------
    pretrained_backbone
        The backbone before fine-tuning (copied; the argument is not modified).
    delta
        Strength δ.
    """
    frozen = copy.deepcopy(pretrained_backbone).eval().requires_grad_(False)

    def extra_loss(model: RegressionModel, batch: dict, pred: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        if next(frozen.parameters()).device != features.device:
            frozen.to(features.device)
        with torch.no_grad():
            hidden = frozen(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
            target = mean_pool(hidden, batch["attention_mask"]).float()
        return 0.5 * delta * (features.float() - target).pow(2).sum(-1).mean()

    return TrainHooks(extra_loss=extra_loss)


def bss_penalty(features: torch.Tensor, delta: float, k: int = 1) -> torch.Tensor:
    """Batch spectral shrinkage ``δ Σ_{i=1..k} σ_{-i}²`` of a (B, H) feature matrix (fp32, autocast off)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    with torch.autocast(device_type=features.device.type, enabled=False):
        sigma = torch.linalg.svdvals(features.float())  # descending, min(B, H) values
    return delta * sigma[-k:].pow(2).sum()


def bss_hooks(delta: float, k: int = 1) -> TrainHooks:
    """Hooks adding BSS (Chen et al. 2019) on the batch's pooled features: ``δ Σ`` of the k smallest σ².

    The singular values are those of the (B, H) matrix of mean-pooled features of the mini-batch
    (not centred, as in the reference implementation
    ``BatchSpectralShrinkage`` of thuml's Transfer-Learning-Library); with B < k all min(B, H) values are penalised.
    """
    return TrainHooks(extra_loss=lambda model, batch, pred, features: bss_penalty(features, delta, k))


# ---------------------------------------------------------------------------------- weight methods
def snapshot_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Detached clone of ``module.state_dict()`` (take it from the backbone before fine-tuning)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _backbone_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Backbone state with the ``backbone.`` prefix removed (head entries dropped)."""
    out = {}
    for k, v in state.items():
        if k.startswith("head."):
            continue
        out[k.removeprefix("backbone.")] = v
    return out


def l2sp_penalty(
    model: RegressionModel, pretrained_state: Mapping[str, torch.Tensor], alpha: float, beta: float
) -> torch.Tensor:
    """``α/2 Σ_backbone ‖w − w_pt‖² + β/2 Σ_head ‖w‖²`` over all parameters (fp32)."""
    anchor = _backbone_keys(pretrained_state)
    device = next(model.parameters()).device
    total = torch.zeros((), device=device)
    for name, p in model.backbone.named_parameters():
        if name not in anchor:
            raise KeyError(f"pretrained_state has no entry for backbone parameter {name!r}")
        total = total + 0.5 * alpha * (p.float() - anchor[name].to(p.device, torch.float32)).pow(2).sum()
    for p in model.head.parameters():
        total = total + 0.5 * beta * p.float().pow(2).sum()
    return total


def l2sp_hooks(pretrained_state: Mapping[str, torch.Tensor], alpha: float, beta: float) -> TrainHooks:
    """L2-SP (Li et al. 2018): pull the backbone towards its pretrained weights, shrink the new head.

    Adds ``α/2 ‖w − w_pt‖²`` (backbone, every parameter incl. biases and LayerNorms) ``+ β/2 ‖w‖²``
    (head) to the loss. Interaction with :func:`~molft_utils.training.train.fit`: fit uses AdamW, whose
    decoupled ``weight_decay`` additionally shrinks every trainable parameter *towards zero*, which
    works against the L2-SP anchor for the backbone and doubles up with β for the head; for a clean
    L2-SP run set ``TrainConfig(weight_decay=0.0)``. Because the penalty is part of the loss, Adam
    rescales its gradient per coordinate (it is not equivalent to a decoupled decay towards w_pt), and
    its gradient also counts towards the gradient-norm clipping.

    Parameters
    ----------
    pretrained_state
        Backbone ``state_dict`` before fine-tuning (keys with or without ``backbone.``); copied.
    alpha, beta
        Strengths for the backbone anchor and the head decay.
    """
    anchor = {k: v.detach().clone() for k, v in _backbone_keys(pretrained_state).items()}
    return TrainHooks(extra_loss=lambda model, batch, pred, features: l2sp_penalty(model, anchor, alpha, beta))
