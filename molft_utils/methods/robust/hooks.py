"""Robust fine-tuning methods as training hooks and weight-space operations: layer groups, partial
(LP, surgical, LP-FT), representation-based (feature-map, BSS) and weight-based (L2-SP, WiSE-FT, soups)."""

from __future__ import annotations

import copy
import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from molft_utils.models.backbone import RegressionModel, mean_pool
from molft_utils.training.train import FitResult, TrainConfig, TrainHooks, fit

__all__ = [
    "bss_hooks",
    "bss_penalty",
    "COARSE_GROUPS",
    "coarse_groups",
    "feature_map_hooks",
    "greedy_soup",
    "interpolate_state",
    "l2sp_hooks",
    "l2sp_penalty",
    "layer_groups",
    "linear_probe_hooks",
    "lp_ft",
    "snapshot_state",
    "surgical_hooks",
    "uniform_soup",
    "wise_ft",
]

log = logging.getLogger(__name__)

#: Names of the coarse groups used by surgical fine-tuning (the head is always trained as well).
COARSE_GROUPS = ("embeddings", "early", "middle", "late")
_LAYER_RE = re.compile(r"(?:^|\.)layers?\.(\d+)\.")


# --------------------------------------------------------------------------------------------- groups
def _n_layers(model: RegressionModel) -> int:
    n = getattr(model.backbone.config, "num_hidden_layers", None)
    if n is None:
        found = [int(m.group(1)) for name, _ in model.named_parameters() if (m := _LAYER_RE.search(name))]
        n = max(found) + 1 if found else 0
    return int(n)


def layer_groups(model: RegressionModel) -> OrderedDict[str, list[str]]:
    """Parameter names of a :class:`RegressionModel` grouped by layer, in forward order.

    Groups: ``"embeddings"``, ``"layer.0"`` … ``"layer.{L-1}"`` and ``"head"``. Backbone parameters
    that belong to no encoder layer are assigned by name: anything containing ``embed`` (word /
    token-type embeddings and their LayerNorm, RoFormer's fixed sinusoidal ``encoder.embed_positions``,
    ``embeddings_project``) joins ``"embeddings"``; the rest (e.g. a pooler, which mean pooling does not
    use) joins the last layer group, the one on the output side.

    Parameters
    ----------
    model
        The regression model.

    Returns
    -------
    OrderedDict
        Group name → list of full parameter names (as in ``model.named_parameters()``).
    """
    n = _n_layers(model)
    groups: OrderedDict[str, list[str]] = OrderedDict([("embeddings", [])])
    for i in range(n):
        groups[f"layer.{i}"] = []
    groups["head"] = []
    for name, _ in model.named_parameters():
        if name.startswith("head."):
            groups["head"].append(name)
        elif m := _LAYER_RE.search(name):
            groups[f"layer.{int(m.group(1))}"].append(name)
        elif "embed" in name or n == 0:
            groups["embeddings"].append(name)
        else:
            groups[f"layer.{n - 1}"].append(name)
    return groups


def coarse_groups(model: RegressionModel) -> OrderedDict[str, list[str]]:
    """Coarse backbone groups for surgical fine-tuning: embeddings, early, middle, late.

    The L encoder layers are split into three contiguous blocks with ``numpy.array_split`` (earlier
    blocks get the remainder): with 4 layers, early = layers 0-1, middle = layer 2, late = layer 3;
    with 6 layers 0-1 / 2-3 / 4-5; with 1 layer, early = layer 0 and middle / late are empty. Non-layer
    backbone parameters follow :func:`layer_groups`. The head is not part of any coarse group.
    """
    fine = layer_groups(model)
    blocks = np.array_split(np.arange(_n_layers(model)), 3)
    out: OrderedDict[str, list[str]] = OrderedDict([("embeddings", list(fine["embeddings"]))])
    for name, block in zip(COARSE_GROUPS[1:], blocks, strict=True):
        out[name] = [p for i in block for p in fine[f"layer.{int(i)}"]]
    return out


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


def interpolate_state(
    start: Mapping[str, torch.Tensor], end: Mapping[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """``(1 − α)·start + α·end`` for floating-point tensors; other tensors (integer buffers) from ``end``.

    α = 0 returns ``start`` and α = 1 returns ``end`` exactly (for finite tensors).
    """
    missing = set(end) - set(start)
    if missing:
        raise KeyError(f"start state lacks {sorted(missing)[:5]}")
    out = {}
    for k, v in end.items():
        if torch.is_floating_point(v):
            out[k] = (1.0 - alpha) * start[k].to(v.device, v.dtype) + alpha * v
        else:
            out[k] = v.clone()
    return out


def wise_ft(
    pretrained_backbone_state: Mapping[str, torch.Tensor], finetuned_model: RegressionModel, alpha: float
) -> RegressionModel:
    """WiSE-FT: a new model with backbone ``(1 − α) θ_pt + α θ_ft`` and the fine-tuned head.

    Parameters
    ----------
    pretrained_backbone_state
        Backbone ``state_dict`` before fine-tuning (keys with or without ``backbone.``).
    finetuned_model
        The fine-tuned model (not modified).
    alpha
        0 → pretrained backbone, 1 → fine-tuned model.
    """
    model = copy.deepcopy(finetuned_model)
    state = interpolate_state(_backbone_keys(pretrained_backbone_state), finetuned_model.backbone.state_dict(), alpha)
    model.backbone.load_state_dict(state)
    return model.eval()


def uniform_soup(models: Sequence[RegressionModel]) -> RegressionModel:
    """Uniform model soup: elementwise mean of every floating-point tensor (backbone and head).

    Integer buffers are copied from the first model. The models must share the architecture and
    should share the pretrained initialisation (Wortsman et al. 2022).
    """
    if not models:
        raise ValueError("uniform_soup needs at least one model")
    states = [m.state_dict() for m in models]
    mean = {}
    for k, v in states[0].items():
        if torch.is_floating_point(v):
            mean[k] = torch.stack([s[k].to(v.device, torch.float32) for s in states]).mean(0).to(v.dtype)
        else:
            mean[k] = v.clone()
    soup = copy.deepcopy(models[0])
    soup.load_state_dict(mean)
    return soup.eval()


def greedy_soup(
    models: Sequence[RegressionModel],
    score_fn: Callable[[RegressionModel], float],
    lower_is_better: bool = True,
) -> tuple[RegressionModel, list[int], list[dict]]:
    """Greedy model soup (Wortsman et al. 2022).

    Sort the models by their own validation score, start from the best, and add each next model
    if the uniform soup of the current ingredients plus that model scores at least as well as the
    current soup (ties are accepted, as in the paper).

    Parameters
    ----------
    models
        Fine-tuned models from the same pretrained backbone.
    score_fn
        ``f(model) -> float`` on held-out validation data (e.g. RMSE).
    lower_is_better
        True for errors (RMSE), False for scores such as R².

    Returns
    -------
    (soup, ingredients, log_rows)
        The soup model, indices (into ``models``) of the ingredients in the order added, and one
        row per candidate (index, individual score, soup score with it, accepted).
    """
    if not models:
        raise ValueError("greedy_soup needs at least one model")
    sign = 1.0 if lower_is_better else -1.0
    individual = [float(score_fn(m)) for m in models]
    order = sorted(range(len(models)), key=lambda i: sign * individual[i])
    ingredients = [order[0]]
    soup, best = models[order[0]], individual[order[0]]
    rows = [{"index": order[0], "score": best, "soup_score": best, "accepted": True}]
    for i in order[1:]:
        candidate = uniform_soup([models[j] for j in [*ingredients, i]])
        score = float(score_fn(candidate))
        accepted = sign * score <= sign * best
        rows.append({"index": i, "score": individual[i], "soup_score": score, "accepted": accepted})
        if accepted:
            ingredients.append(i)
            soup, best = candidate, score
    if len(ingredients) == 1:
        soup = copy.deepcopy(soup).eval()
    return soup, ingredients, rows


