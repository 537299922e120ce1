"""Robust fine-tuning under scarce labels: partial, representation-based and weight-based methods, and RoFt-Mol.

RoFt-Mol (Liu, Zou, Shoghi, Fung, Liu & Li, "RoFt-Mol: Benchmarking Robust Fine-Tuning with Molecular
Graph Foundation Models", NeurIPS 2025 Datasets & Benchmarks, arXiv:2509.00614; an earlier version called
the method DWiSE-FT) sorts eight fine-tuning methods into three mechanisms and benchmarks them on
molecular foundation models with few labels. This module implements one representative of each for a
:class:`~molft_utils.models.backbone.RegressionModel`; everything plugs
into :func:`molft_utils.training.train.fit` through
:class:`~molft_utils.training.train.TrainHooks`.

Partial fine-tuning (``TrainHooks.trainable``)
    * linear probing (:func:`linear_probe_hooks`): only the head trains;
    * surgical fine-tuning (:func:`surgical_hooks`, Lee et al. 2023, "Surgical fine-tuning improves
      adaptation to distribution shifts"): one coarse group of the backbone + the head;
    * LP-FT (:func:`lp_ft`, Kumar et al. 2022, "Fine-tuning can distort pretrained features"): linear
      probing first, then full fine-tuning starting from the probed head.

Representation-based (``TrainHooks.extra_loss``)
    * feature-map regularisation (:func:`feature_map_hooks`): ``δ/2 · mean_batch ‖f_ft(x) − f_pt(x)‖²``
      on the mean-pooled features, against a frozen copy of the pretrained backbone. This is DELTA
      (Li et al. 2019) *without* its attention weights over channels, i.e. plain feature-map L2;
    * batch spectral shrinkage (:func:`bss_hooks`, Chen et al. 2019, "Catastrophic forgetting meets
      negative transfer: batch spectral shrinkage for safe transfer learning"): ``δ Σ_{i≤k} σ_{-i}²``,
      the k smallest squared singular values of the batch's pooled feature matrix.

Weight-based
    * L2-SP (:func:`l2sp_hooks`, Li, Grandvalet & Davoine 2018): ``α/2 ‖w − w_pt‖²`` on the backbone
      plus ``β/2 ‖w‖²`` on the new head;
    * WiSE-FT (:func:`wise_ft`, Wortsman et al. 2022, "Robust fine-tuning of zero-shot models"):
      ``θ(α) = (1 − α) θ_pt + α θ_ft`` for the backbone, head from fine-tuning;
    * model soups (:func:`uniform_soup`, :func:`greedy_soup`, Wortsman et al. 2022, "Model soups").

RoFt-Mol (:class:`LayerwiseInterpolation`, :func:`fit_roft_mol`)
    WiSE-FT with one interpolation coefficient per layer group (the embeddings and every encoder
    layer), learned by gradient descent on held-out labelled data while the head stays the fine-tuned
    one. What was checked against the authors' public training script (a Mole-BERT/GIN code base,
    ``GNN_interpolate``): one α per group (input embedding + each GNN layer), all initialised to 0.9 by
    default (``--alphas 0.9_0.9_...``), Adam with lr 1e-3 and no weight decay on the α only (the
    classifier head is frozen when the fine-tuned head exists), regression loss ``sqrt(MSE)``, 100 epochs
    over the *validation* loader, best epoch chosen on that same validation loader. In that script a
    ``clamp_(0, 1)`` of α after each step is commented out, so α there appears to be unconstrained;
    the model file that defines ``GNN_interpolate`` could not be inspected, so whether it applies a
    sigmoid or clamp internally is **not verified**. Here ``parameterisation="clamp"`` (default;
    projected gradient descent onto [0, 1]), ``"sigmoid"`` (α = sigmoid(a)) and ``"none"`` are offered.

    Deliberate differences from that script: α are fitted on one part of the validation data and the
    step is selected on the *other* part (fitting and selecting on the same molecules overstates the
    gain); the loss is MSE on the scaled targets (same minimiser as sqrt(MSE)); dropout is off while α
    are fitted (eval mode), so the objective is deterministic; the default learning rate is 1e-2 for a
    few hundred steps instead of 1e-3 for 100 epochs. The fine-tuned end point may be any
    :class:`RegressionModel` with the same architecture, for example a soup.

Few-label protocol (:func:`run_setting`)
    Training labels are truncated to nested subsets (:func:`label_subset`); every trained method gets the
    same number of optimisation steps (:func:`fit_steps` repeats a small training set within an "epoch" so
    that validation happens every ``eval_every`` steps, not after every few steps) and early stopping on
    the same validation set; regulariser strengths are chosen on validation; WiSE-FT, the soups and
    RoFt-Mol start from the setting's Full FT model. :func:`train_method` builds each trained method from
    the pretrained backbone.

Parameter names follow ``RegressionModel.named_parameters()`` (``backbone.…``, ``head.…``); "pretrained
state" arguments are a backbone ``state_dict`` (keys with or without the ``backbone.`` prefix), e.g.
:func:`snapshot_state` of the backbone taken before fine-tuning.
"""

from __future__ import annotations

import copy
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from molft_utils.core.device import autocast, autocast_dtype, get_device, seed_everything
from molft_utils.core.progress import progress_bar
from molft_utils.core.registry import Registry
from molft_utils.models.backbone import RegressionModel, mean_pool
from molft_utils.training.collate import collate, encode
from molft_utils.training.convergence import combine_convergence, convergence, fit_convergence
from molft_utils.training.metrics import regression_metrics
from molft_utils.training.train import FitResult, TargetScaler, TrainConfig, TrainHooks, fit, predict

__all__ = [
    "COARSE_GROUPS",
    "MECHANISM",
    "POST_HOC",
    "MethodOptions",
    "POST_HOC_METHODS",
    "REGULARISED",
    "SettingResult",
    "TRAINED",
    "TRAINED_METHODS",
    "TrainedMethod",
    "fit_steps",
    "repeats_for_steps",
    "run_setting",
    "train_method",
    "wise_curve",
    "LayerwiseInterpolation",
    "RoftMolResult",
    "bss_hooks",
    "bss_penalty",
    "coarse_groups",
    "feature_map_hooks",
    "fit_roft_mol",
    "greedy_soup",
    "interpolate_state",
    "l2sp_hooks",
    "l2sp_penalty",
    "label_subset",
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


# ------------------------------------------------------------------------------------------ RoFt-Mol
class LayerwiseInterpolation(nn.Module):
    """Backbone ``θ_g(α_g) = (1 − α_g) θ_pt,g + α_g θ_ft,g`` with one learnable α per layer group.

    The head is the fine-tuned one and stays fixed; the forward pass calls the (frozen) fine-tuned
    model through :func:`torch.func.functional_call` with the interpolated backbone tensors, so only
    the α receive gradients.

    Parameters
    ----------
    pretrained_state
        Backbone ``state_dict`` before fine-tuning (keys with or without ``backbone.``).
    finetuned_model
        The fine-tuned end point (any :class:`RegressionModel` of the same architecture, e.g. a soup);
        deep-copied.
    groups
        Group name → full parameter names (``backbone.…``); default :func:`layer_groups` without the
        head (embeddings + each encoder layer). Backbone tensors in no group (and all buffers) are
        taken from the fine-tuned model.
    init
        Initial α of every group (0.9 as in the authors' script).
    parameterisation
        ``"clamp"`` (α itself is the parameter, :meth:`project` clamps it to [0, 1] after each step),
        ``"sigmoid"`` (α = sigmoid(a)) or ``"none"`` (unconstrained α).
    """

    def __init__(
        self,
        pretrained_state: Mapping[str, torch.Tensor],
        finetuned_model: RegressionModel,
        groups: Mapping[str, Sequence[str]] | None = None,
        init: float = 0.9,
        parameterisation: str = "clamp",
    ) -> None:
        super().__init__()
        if parameterisation not in ("clamp", "sigmoid", "none"):
            raise ValueError(f"parameterisation must be clamp, sigmoid or none, got {parameterisation!r}")
        self.parameterisation = parameterisation
        self.model = copy.deepcopy(finetuned_model).eval().requires_grad_(False)
        if groups is None:
            groups = OrderedDict((g, names) for g, names in layer_groups(self.model).items() if g != "head")
        self.group_names = list(groups)
        anchor = _backbone_keys(pretrained_state)
        own = dict(self.model.named_parameters())
        self._names: list[str] = []
        self._group_index: list[int] = []
        for gi, (g, names) in enumerate(groups.items()):
            for name in names:
                if name.startswith("head.") or name not in own:
                    raise ValueError(f"group {g!r}: {name!r} is not a backbone parameter of the model")
                if name.removeprefix("backbone.") not in anchor:
                    raise KeyError(f"pretrained_state has no entry for {name!r}")
                self._names.append(name)
                self._group_index.append(gi)
        left = [n for n in own if not n.startswith("head.") and n not in set(self._names)]
        if left:
            log.info("%d backbone tensors in no group are kept fine-tuned: %s", len(left), left[:5])
        # endpoints as buffers (non-persistent) so that .to(device) moves them
        for i, name in enumerate(self._names):
            self.register_buffer(f"_pt{i}", anchor[name.removeprefix("backbone.")].detach().clone().float(), False)
            self.register_buffer(f"_ft{i}", own[name].detach().clone().float(), False)
        a0 = torch.full((len(self.group_names),), float(init))
        if parameterisation == "sigmoid":
            if not 0.0 < init < 1.0:
                raise ValueError("sigmoid parameterisation needs 0 < init < 1")
            a0 = torch.logit(a0)
        self.raw_alpha = nn.Parameter(a0)

    def alphas(self) -> torch.Tensor:
        """Effective α per group, shape (G,)."""
        return torch.sigmoid(self.raw_alpha) if self.parameterisation == "sigmoid" else self.raw_alpha

    def alpha_dict(self) -> dict[str, float]:
        """Effective α per group name."""
        return dict(zip(self.group_names, self.alphas().detach().cpu().tolist(), strict=True))

    @torch.no_grad()
    def project(self) -> None:
        """Clamp α to [0, 1] (``"clamp"`` parameterisation only; call after each optimiser step)."""
        if self.parameterisation == "clamp":
            self.raw_alpha.clamp_(0.0, 1.0)

    def interpolated_params(self) -> dict[str, torch.Tensor]:
        """Interpolated backbone tensors (differentiable in α), keyed by full parameter name."""
        alpha = self.alphas()
        out = {}
        for i, (name, gi) in enumerate(zip(self._names, self._group_index, strict=True)):
            a = alpha[gi]
            out[name] = (1.0 - a) * getattr(self, f"_pt{i}") + a * getattr(self, f"_ft{i}")
        return out

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, return_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Predictions (scaled targets) of the interpolated model, shape (B,)."""
        return torch.func.functional_call(
            self.model, self.interpolated_params(), (input_ids, attention_mask), {"return_features": return_features}
        )

    @torch.no_grad()
    def materialise(self) -> RegressionModel:
        """A plain :class:`RegressionModel` with the current interpolated weights (eval mode)."""
        model = copy.deepcopy(self.model)
        own = dict(model.named_parameters())
        for name, value in self.interpolated_params().items():
            own[name].copy_(value)
        return model.eval().requires_grad_(True)


@dataclass
class RoftMolResult:
    """Outcome of :func:`fit_roft_mol`."""

    model: RegressionModel
    alphas: dict[str, float]
    best_step: int
    best_select_rmse: float
    history: list[dict] = field(default_factory=list)
    fit_indices: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=int))
    select_indices: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=int))


def _mse_batches(
    module: LayerwiseInterpolation,
    batches: list[tuple[dict[str, torch.Tensor], torch.Tensor]],
) -> torch.Tensor:
    total, n = 0.0, 0
    for batch, y in batches:
        pred = module(**batch)
        total = total + torch.nn.functional.mse_loss(pred.float(), y, reduction="sum")
        n += len(y)
    return total / n


def fit_roft_mol(
    pretrained_state: Mapping[str, torch.Tensor],
    finetuned_model: RegressionModel,
    tokenizer: PreTrainedTokenizerBase,
    smiles: Sequence[str],
    y: Sequence[float],
    scaler: TargetScaler,
    fit_fraction: float = 0.5,
    fit_indices: Sequence[int] | None = None,
    select_indices: Sequence[int] | None = None,
    steps: int = 300,
    lr: float = 1e-2,
    batch_size: int = 32,
    eval_every: int = 10,
    patience: int = 10,
    init: float = 0.9,
    parameterisation: str = "clamp",
    groups: Mapping[str, Sequence[str]] | None = None,
    seed: int = 0,
    mixed_precision: str = "auto",
    device: torch.device | None = None,
    progress: bool = True,
) -> RoftMolResult:
    """RoFt-Mol: learn one interpolation coefficient per layer group on held-out labels.

    The labelled held-out molecules (normally the validation split of the fine-tuning run) are split
    in two: α are fitted with Adam on the MSE of the scaled targets of the *fit* part (mini-batches,
    ``steps`` steps, α projected to [0, 1] with the default parameterisation), and the α of the step
    with the lowest RMSE on the *select* part (checked every ``eval_every`` steps, including the
    initial α) are kept; fitting stops after ``patience`` checks without improvement.

    Parameters
    ----------
    pretrained_state
        Backbone ``state_dict`` before fine-tuning.
    finetuned_model
        Fine-tuned model (or a soup of fine-tuned models); not modified.
    smiles, y
        Held-out molecules and labels (original units).
    scaler
        The target scaler of the fine-tuning run (``FitResult.scaler``).
    fit_fraction
        Share of ``smiles`` used to fit α when the indices are not given (random, by ``seed``).
    fit_indices, select_indices
        Explicit disjoint index sets into ``smiles``.
    steps, lr, batch_size, eval_every, patience
        Optimisation settings.
    init, parameterisation, groups
        See :class:`LayerwiseInterpolation`.
    mixed_precision
        As in :class:`~molft_utils.training.train.TrainConfig` (bf16 autocast on this CPU is about 3x faster; the
        interpolation itself and the α stay fp32).

    Returns
    -------
    RoftMolResult
        The materialised model, α per group, best step, selection RMSE (label units) and history.
    """
    device = device or get_device()
    dtype = autocast_dtype(device, mixed_precision)
    seed_everything(seed)
    n = len(smiles)
    if fit_indices is None or select_indices is None:
        perm = np.random.default_rng(seed).permutation(n)
        n_fit = int(round(fit_fraction * n))
        if not 0 < n_fit < n:
            raise ValueError(f"fit_fraction={fit_fraction} leaves an empty part of {n} molecules")
        fit_idx, sel_idx = np.sort(perm[:n_fit]), np.sort(perm[n_fit:])
    else:
        fit_idx, sel_idx = np.asarray(fit_indices, dtype=int), np.asarray(select_indices, dtype=int)
    if set(fit_idx.tolist()) & set(sel_idx.tolist()):
        raise ValueError("fit and select parts overlap")

    module = LayerwiseInterpolation(pretrained_state, finetuned_model, groups, init, parameterisation).to(device)
    ids = encode(tokenizer, smiles)
    y_scaled = torch.tensor(scaler.transform(y), dtype=torch.float32)

    def make_batches(index: np.ndarray) -> list[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        return [
            (collate(tokenizer, [ids[i] for i in chunk], device), y_scaled[chunk].to(device))
            for chunk in np.array_split(index, max(1, -(-len(index) // batch_size)))
        ]

    select_batches = make_batches(sel_idx)
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.Adam([module.raw_alpha], lr=lr)
    history: list[dict] = []

    def check(step: int) -> float:
        with torch.no_grad(), autocast(device, dtype):
            rmse = float(torch.sqrt(_mse_batches(module, select_batches))) * abs(scaler.scale)
        history.append({"step": step, "select_rmse": rmse} | {f"alpha[{g}]": a for g, a in module.alpha_dict().items()})
        return rmse

    best_rmse, best_step, bad = check(0), 0, 0
    best_raw = module.raw_alpha.detach().clone()
    order = np.empty(0, dtype=int)
    bar = progress_bar(range(1, steps + 1), progress=progress, desc="RoFt-Mol", unit="step")
    for step in bar:
        if len(order) < min(batch_size, len(fit_idx)):
            order = np.concatenate([order, rng.permutation(fit_idx)])
        chunk, order = order[:batch_size], order[batch_size:]
        batch = collate(tokenizer, [ids[i] for i in chunk], device)
        with autocast(device, dtype):
            pred = module(**batch)
        loss = torch.nn.functional.mse_loss(pred.float(), y_scaled[chunk].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        module.project()
        if step % eval_every == 0 or step == steps:
            rmse = check(step)
            bar.set_postfix(select_rmse=f"{rmse:.3f}", refresh=False)
            history[-1]["fit_loss"] = float(loss.detach())
            if rmse < best_rmse:
                best_rmse, best_step, bad = rmse, step, 0
                best_raw = module.raw_alpha.detach().clone()
            else:
                bad += 1
                if bad >= patience:
                    log.info("RoFt-Mol: stopping at step %d (best %d)", step, best_step)
                    break
    bar.close()
    with torch.no_grad():
        module.raw_alpha.copy_(best_raw)
    log.info("RoFt-Mol alphas %s (step %d, select RMSE %.4f)", module.alpha_dict(), best_step, best_rmse)
    return RoftMolResult(
        model=module.materialise(),
        alphas=module.alpha_dict(),
        best_step=best_step,
        best_select_rmse=best_rmse,
        history=history,
        fit_indices=fit_idx,
        select_indices=sel_idx,
    )


# ------------------------------------------------------------------------------------- label budgets
def label_subset(train_indices: Sequence[int] | np.ndarray, n: int | str | None, seed: int) -> np.ndarray:
    """A fixed subset of ``n`` training indices per seed, nested across ``n``.

    The indices are put in a seed-determined random order (independent of the input order) and the
    first ``n`` are returned (sorted), so for one seed the 50-subset lies inside the 100-subset inside
    the 500-subset.

    Parameters
    ----------
    train_indices
        Indices of the full training split.
    n
        Number of labels; ``"all"`` or ``None`` for all.
    seed
        Seed of the order.
    """
    pool = np.sort(np.asarray(train_indices, dtype=int))
    if n is None or n == "all":
        return pool.copy()
    n = int(n)
    if not 0 < n <= len(pool):
        raise ValueError(f"n must be in 1..{len(pool)}, got {n}")
    order = np.random.default_rng(seed).permutation(len(pool))
    return np.sort(pool[order[:n]])


# ------------------------------------------------------------------------------- few-shot protocol
def repeats_for_steps(n_train: int, steps: int, batch_size: int, eval_every: int) -> tuple[int, int]:
    """How to express a budget of optimisation steps as epochs of :func:`~molft_utils.training.train.fit`.

    With few labels an epoch is a handful of steps, and validating after every one would cost more
    than training. The training set is therefore repeated ``k`` times per "epoch" so that one epoch
    has at least ``eval_every`` steps, and the number of such epochs that best matches ``steps`` is
    used (at least one). Exact repetition leaves the min-max and standard target scalers unchanged.

    Returns
    -------
    (k, epochs)
        Repeats of the training set per epoch and number of epochs.
    """
    if min(n_train, steps, batch_size, eval_every) < 1:
        raise ValueError("n_train, steps, batch_size and eval_every must be >= 1")
    k = max(1, -(-eval_every * batch_size // n_train))
    per_epoch = -(-k * n_train // batch_size)
    return k, max(1, int(round(steps / per_epoch)))


def fit_steps(
    model: RegressionModel,
    tokenizer: PreTrainedTokenizerBase,
    train_smiles: Sequence[str],
    train_y: Sequence[float],
    valid_smiles: Sequence[str],
    valid_y: Sequence[float],
    steps: int,
    eval_every: int,
    config: TrainConfig,
    hooks: TrainHooks | None = None,
    device: torch.device | None = None,
    progress: bool = False,
) -> FitResult:
    """:func:`~molft_utils.training.train.fit` for about ``steps`` optimisation steps, validating every ``eval_every``.

    See :func:`repeats_for_steps`; ``config.epochs`` is replaced, early stopping (``config.patience``)
    counts validations. ``FitResult.config`` records the epochs actually configured and the history
    rows count validations as epochs.
    """
    k, epochs = repeats_for_steps(len(train_smiles), steps, config.batch_size, eval_every)
    cfg = TrainConfig(**{**config.__dict__, "epochs": epochs})
    res = fit(
        model,
        tokenizer,
        list(train_smiles) * k,
        list(np.asarray(train_y, dtype=float)) * k,
        valid_smiles,
        valid_y,
        cfg,
        hooks,
        device,
        progress,
    )
    res.config |= {"repeats_per_epoch": k, "steps_per_epoch": -(-k * len(train_smiles) // config.batch_size)}
    return res


@dataclass(frozen=True)
class MethodOptions:
    """What a trained method's :attr:`TrainedMethod.build` may read (the arguments of :func:`train_method`)."""

    pretrained_backbone: PreTrainedModel
    config: TrainConfig
    strength: float | None
    surgical_group: str
    l2sp_beta: float
    lp_lr_head: float | None


@dataclass(frozen=True)
class TrainedMethod:
    """A method trained by gradient descent from the pretrained backbone.

    Attributes
    ----------
    mechanism
        Its mechanism in RoFt-Mol's taxonomy: ``"reference"``, ``"partial"``, ``"representation"``, ``"weight"``.
    build
        ``build(options) -> (train_config, hooks)`` for :func:`fit` (``hooks`` ``None`` for plain fine-tuning).
    strength
        What the strength swept on validation is (``"delta"``, ``"alpha"``), or ``None`` if nothing is swept.
    """

    mechanism: str
    build: Callable[[MethodOptions], tuple[TrainConfig, TrainHooks | None]]
    strength: str | None = None


#: Trained methods by name; :func:`train_method` and :func:`run_setting` dispatch on it. A new method is one
#: registration (plus its test)::
#:
#:     TRAINED.register("My-reg", TrainedMethod("weight", lambda o: (o.config, my_hooks(o.strength)), "alpha"))
#:
#: after which ``run_setting(..., methods=("Full FT", "My-reg"))`` trains, sweeps and reports it.
TRAINED: Registry[TrainedMethod] = Registry("trained robust method")
TRAINED.register("Full FT", TrainedMethod("reference", lambda o: (o.config, None)))
TRAINED.register(
    "LP",
    TrainedMethod(
        "partial",
        lambda o: (
            o.config if o.lp_lr_head is None else TrainConfig(**{**o.config.__dict__, "lr_head": o.lp_lr_head}),
            linear_probe_hooks(),
        ),
    ),
)
TRAINED.register("Surgical", TrainedMethod("partial", lambda o: (o.config, surgical_hooks(o.surgical_group))))
TRAINED.register("LP-FT", TrainedMethod("partial", lambda o: (o.config, None)))  # full FT from the probed model
TRAINED.register(
    "Feature-map",
    TrainedMethod(
        "representation", lambda o: (o.config, feature_map_hooks(o.pretrained_backbone, float(o.strength))), "delta"
    ),
)
TRAINED.register(
    "BSS", TrainedMethod("representation", lambda o: (o.config, bss_hooks(float(o.strength), k=1)), "delta")
)
TRAINED.register(
    "L2-SP",
    TrainedMethod(
        "weight",
        lambda o: (
            TrainConfig(**{**o.config.__dict__, "weight_decay": 0.0}),  # AdamW's decoupled decay off
            l2sp_hooks(snapshot_state(o.pretrained_backbone), float(o.strength), o.l2sp_beta),
        ),
        "alpha",
    ),
)

#: Post-hoc weight-space methods built from fine-tuned models, name → mechanism (built in :func:`run_setting`).
POST_HOC: Registry[str] = Registry("post-hoc robust method")
for _name in ("WiSE-FT", "Uniform soup", "Greedy soup", "RoFt-Mol"):
    POST_HOC.register(_name, "weight")

#: The built-in names, in the lesson's order (views of the registries as they are at import).
TRAINED_METHODS = TRAINED.names()
POST_HOC_METHODS = POST_HOC.names()
#: Method → mechanism in RoFt-Mol's taxonomy ("reference" for full fine-tuning).
MECHANISM = {**{n: m.mechanism for n, m in TRAINED.items()}, **dict(POST_HOC.items())}
#: Methods whose strength is swept on validation (name → what the strength is).
REGULARISED = {n: m.strength for n, m in TRAINED.items() if m.strength is not None}


def train_method(
    method: str,
    pretrained_backbone: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_smiles: Sequence[str],
    train_y: Sequence[float],
    valid_smiles: Sequence[str],
    valid_y: Sequence[float],
    config: TrainConfig,
    steps: int,
    eval_every: int,
    strength: float | None = None,
    surgical_group: str = "late",
    l2sp_beta: float = 0.01,
    lp_lr_head: float | None = None,
    start: RegressionModel | None = None,
    device: torch.device | None = None,
    progress: bool = False,
) -> tuple[RegressionModel, FitResult]:
    """Fine-tune a fresh :class:`RegressionModel` on the pretrained backbone with one of :data:`TRAINED_METHODS`.

    Parameters
    ----------
    method
        ``"Full FT"``, ``"LP"`` (head only, learning rate ``lp_lr_head``), ``"Surgical"`` (``surgical_group``
        + head), ``"LP-FT"`` (full fine-tuning starting from ``start``, the linear-probed model; probed here
        first when ``start`` is None), ``"Feature-map"`` (δ = ``strength``), ``"BSS"`` (δ = ``strength``, k = 1)
        or ``"L2-SP"`` (α = ``strength``, β = ``l2sp_beta``; AdamW's decoupled weight decay is switched off).
    pretrained_backbone
        Copied, never modified.
    config
        Batch size, learning rates, seed, …; the number of epochs comes from ``steps`` / ``eval_every``.

    Returns
    -------
    (model, fit_result)
        For LP-FT the result of the second stage.
    """
    spec = TRAINED[method]
    if spec.strength is not None and strength is None:
        raise ValueError(f"{method} needs a strength")
    data = (tokenizer, train_smiles, train_y, valid_smiles, valid_y)
    if method == "LP-FT" and start is None:
        start, _ = train_method("LP", pretrained_backbone, *data, config, steps, eval_every, lp_lr_head=lp_lr_head,
                                device=device, progress=progress)  # fmt: skip
    if start is not None:
        model = copy.deepcopy(start)
    else:
        torch.manual_seed(config.seed)
        model = RegressionModel(copy.deepcopy(pretrained_backbone))
    cfg, hooks = spec.build(
        MethodOptions(pretrained_backbone, config, strength, surgical_group, l2sp_beta, lp_lr_head)
    )
    res = fit_steps(model, *data, steps, eval_every, cfg, hooks, device, progress)
    return model, res


def wise_curve(
    pretrained_state: Mapping[str, torch.Tensor],
    finetuned_model: RegressionModel,
    tokenizer: PreTrainedTokenizerBase,
    scaler: TargetScaler,
    alphas: Sequence[float],
    parts: Mapping[str, tuple[Sequence[str], Sequence[float]]],
) -> list[dict]:
    """RMSE of the WiSE-FT model at each α on each named part (e.g. valid and test).

    Returns one row per α: ``{"alpha": α, "<part>_rmse": …}``.
    """
    rows = []
    for a in alphas:
        model = wise_ft(pretrained_state, finetuned_model, float(a))
        row: dict = {"alpha": float(a)}
        for name, (smiles, y) in parts.items():
            row[f"{name}_rmse"] = regression_metrics(np.asarray(y, float), predict(model, tokenizer, smiles, scaler))[
                "rmse"
            ]
        rows.append(row)
    return rows


@dataclass
class SettingResult:
    """Everything :func:`run_setting` measured in one (split, label budget) setting.

    Attributes
    ----------
    test_metrics
        Method → :func:`~molft_utils.training.metrics.regression_metrics` on the test part.
    valid_rmse
        Method → validation RMSE of the kept model (RoFt-Mol: on the selection half only).
    sweep
        Regularised method → {strength: best validation RMSE}; ``chosen`` holds the selected strength.
    wise
        WiSE-FT curve rows (``alpha``, ``valid_rmse``, ``test_rmse``); ``wise_alpha`` the α chosen on validation.
    roft_alphas, roft_history, roft_best_step
        Learned α per layer group and the fitting history of RoFt-Mol.
    soup
        ``{"ingredients": [...], "rows": [...]}`` of the greedy soup (indices into ``soup_members``).
    histories, seconds
        Training history and wall seconds per method.
    convergence
        Method → :func:`.convergence` of its kept model (``best_epoch``, ``epochs_run`` in
        validations, ``patience``, ``converged``, ...). WiSE-FT and the soups are built from Full FT models and
        RoFt-Mol also from its α fit: theirs is :func:`.combine_convergence` of those parts.
    sweep_convergence
        Regularised method → {strength: convergence} of every candidate of its strength sweep.
    """

    test_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    valid_rmse: dict[str, float] = field(default_factory=dict)
    sweep: dict[str, dict[float, float]] = field(default_factory=dict)
    chosen: dict[str, float] = field(default_factory=dict)
    wise: list[dict] = field(default_factory=list)
    wise_alpha: float = float("nan")
    roft_alphas: dict[str, float] = field(default_factory=dict)
    roft_history: list[dict] = field(default_factory=list)
    roft_best_step: int = 0
    soup: dict = field(default_factory=dict)
    soup_members: list[str] = field(default_factory=list)
    histories: dict[str, list[dict]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    convergence: dict[str, dict] = field(default_factory=dict)
    sweep_convergence: dict[str, dict[float, dict]] = field(default_factory=dict)


def run_setting(
    pretrained_backbone: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train: tuple[Sequence[str], Sequence[float]],
    valid: tuple[Sequence[str], Sequence[float]],
    test: tuple[Sequence[str], Sequence[float]],
    config: TrainConfig,
    methods: Sequence[str],
    steps: int,
    eval_every: int,
    strengths: Mapping[str, Sequence[float]] | None = None,
    surgical_group: str = "late",
    l2sp_beta: float = 0.01,
    lp_lr_head: float | None = None,
    soup_lr_factors: Sequence[float] = (0.5, 2.0),
    wise_alphas: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0),
    roft_steps: int = 60,
    roft_lr: float = 1e-2,
    full_ft: tuple[RegressionModel, FitResult] | None = None,
    device: torch.device | None = None,
    progress: bool = False,
) -> SettingResult:
    """Run the robust fine-tuning benchmark in one setting: every method from the same pretrained backbone.

    Protocol: every trained method gets the same step budget (:func:`fit_steps`) and early stopping on the
    same validation part; a regularised method with several strengths is trained once per strength and
    the one with the lowest validation RMSE is kept; WiSE-FT's α is chosen on validation from
    ``wise_alphas``; the soups mix the Full FT model with one model per ``soup_lr_factors`` (learning
    rates multiplied, seed + i); RoFt-Mol fits α on one random half of validation and selects the step on
    the other (:func:`fit_roft_mol`), starting from the Full FT model. The test part is only predicted.

    Parameters
    ----------
    train, valid, test
        (SMILES, labels) of each part; ``train`` is already the label subset.
    methods
        Any of :data:`TRAINED_METHODS` and :data:`POST_HOC_METHODS`; post-hoc methods need ``"Full FT"``
        (trained here unless ``full_ft`` is given, e.g. notebook 01's cached model for all labels).
    strengths
        Regularised method → strengths to sweep (one value: no sweep).
    """
    unknown = set(methods) - set(TRAINED) - set(POST_HOC)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}")
    strengths = dict(strengths or {})
    out = SettingResult()
    pt_state = snapshot_state(pretrained_backbone)
    data = (tokenizer, train[0], train[1], valid[0], valid[1])
    models: dict[str, tuple[RegressionModel, TargetScaler]] = {}

    def record(name: str, model: RegressionModel, scaler: TargetScaler, valid_rmse: float) -> None:
        models[name] = (model, scaler)
        out.valid_rmse[name] = float(valid_rmse)
        pred = predict(model, tokenizer, test[0], scaler)
        out.test_metrics[name] = regression_metrics(np.asarray(test[1], float), pred)

    def valid_rmse_of(model: RegressionModel, scaler: TargetScaler) -> float:
        return regression_metrics(np.asarray(valid[1], float), predict(model, tokenizer, valid[0], scaler))["rmse"]

    def train(method: str, **kw) -> tuple[RegressionModel, FitResult]:
        t0 = time.perf_counter()
        model, res = train_method(
            method, pretrained_backbone, *data, kw.pop("config", config), steps, eval_every,
            surgical_group=surgical_group, l2sp_beta=l2sp_beta, lp_lr_head=lp_lr_head, device=device,
            progress=progress, **kw,
        )  # fmt: skip
        out.seconds[method] = out.seconds.get(method, 0.0) + time.perf_counter() - t0
        return model, res

    needs_full = any(m in POST_HOC for m in methods) or "Full FT" in methods
    if needs_full:
        if full_ft is not None:
            model, res = full_ft
        else:
            model, res = train("Full FT")
        out.histories["Full FT"] = res.history
        out.convergence["Full FT"] = fit_convergence(res)
        record("Full FT", model, res.scaler, res.best_valid_rmse)
    for method in [m for m in TRAINED if m in methods and m != "Full FT"]:
        if method == "LP-FT":
            start = models["LP"][0] if "LP" in models else None
            model, res = train("LP-FT", start=start)
        elif TRAINED[method].strength is not None:
            values = list(strengths.get(method, ()))
            if not values:
                raise ValueError(f"no strength given for {method}")
            trained = {}
            for v in values:
                trained[float(v)] = train(method, strength=float(v))
            out.sweep[method] = {v: r.best_valid_rmse for v, (_, r) in trained.items()}
            out.sweep_convergence[method] = {v: fit_convergence(r) for v, (_, r) in trained.items()}
            out.chosen[method] = min(out.sweep[method], key=out.sweep[method].get)
            model, res = trained[out.chosen[method]]
        else:
            model, res = train(method)
        out.histories[method] = res.history
        out.convergence[method] = fit_convergence(res)
        record(method, model, res.scaler, res.best_valid_rmse)

    if not any(m in POST_HOC for m in methods):
        return out
    ft_model, ft_scaler = models["Full FT"]
    if "WiSE-FT" in methods:
        t0 = time.perf_counter()
        out.wise = wise_curve(pt_state, ft_model, tokenizer, ft_scaler, wise_alphas, {"valid": valid, "test": test})
        best = min(out.wise, key=lambda r: r["valid_rmse"])
        out.wise_alpha = best["alpha"]
        record("WiSE-FT", wise_ft(pt_state, ft_model, out.wise_alpha), ft_scaler, best["valid_rmse"])
        out.convergence["WiSE-FT"] = combine_convergence({"Full FT": out.convergence["Full FT"]}, "built from Full FT")
        out.seconds["WiSE-FT"] = time.perf_counter() - t0
    if "Uniform soup" in methods or "Greedy soup" in methods:
        t0 = time.perf_counter()
        members, out.soup_members = [ft_model], ["Full FT"]
        for i, factor in enumerate(soup_lr_factors, start=1):
            scaled = {"lr_backbone": config.lr_backbone * factor, "lr_head": config.lr_head * factor}
            cfg = TrainConfig(**{**config.__dict__, "seed": config.seed + i, **scaled})
            model, res = train("Full FT", config=cfg)
            members.append(model)
            out.soup_members.append(f"Full FT (lr x{factor}, seed +{i})")
            out.histories[out.soup_members[-1]] = res.history
            out.convergence[out.soup_members[-1]] = fit_convergence(res)
        # the soup members share the Full FT scaler: same training labels, hence identical min-max scaling
        if "Uniform soup" in methods:
            soup = uniform_soup(members)
            record("Uniform soup", soup, ft_scaler, valid_rmse_of(soup, ft_scaler))
        if "Greedy soup" in methods:
            soup, ingredients, rows = greedy_soup(members, lambda m: valid_rmse_of(m, ft_scaler))
            out.soup = {"ingredients": ingredients, "rows": rows}
            record("Greedy soup", soup, ft_scaler, min(r["soup_score"] for r in rows if r["accepted"]))
        parts = {m: out.convergence[m] for m in out.soup_members}
        for soup_name in ("Uniform soup", "Greedy soup"):
            if soup_name in out.test_metrics:
                out.convergence[soup_name] = combine_convergence(parts, "built from the Full FT soup members")
        out.seconds["soups"] = time.perf_counter() - t0
    if "RoFt-Mol" in methods:
        t0 = time.perf_counter()
        roft = fit_roft_mol(
            pt_state, ft_model, tokenizer, valid[0], valid[1], ft_scaler, steps=roft_steps, lr=roft_lr,
            batch_size=max(8, config.batch_size), eval_every=max(1, roft_steps // 6), patience=3, seed=config.seed,
            device=device, progress=progress,
        )  # fmt: skip
        out.roft_alphas, out.roft_history, out.roft_best_step = roft.alphas, roft.history, roft.best_step
        alpha_fit = convergence(roft.history, patience=3, key="select_rmse")  # the patience passed above
        out.convergence["RoFt-Mol"] = combine_convergence(
            {"Full FT": out.convergence["Full FT"], "α fit": alpha_fit}, "built from Full FT and its α fit"
        )
        record("RoFt-Mol", roft.model, ft_scaler, roft.best_select_rmse)
        out.seconds["RoFt-Mol"] = time.perf_counter() - t0
    order = [m for m in (*TRAINED, *POST_HOC) if m in out.test_metrics]
    out.test_metrics = {m: out.test_metrics[m] for m in order}
    return out
