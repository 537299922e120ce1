"""RoFt-Mol: a learned layer-wise interpolation between the pretrained and the fine-tuned weights."""

from __future__ import annotations

import copy
import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from molft_utils.core.device import autocast, autocast_dtype, get_device, seed_everything
from molft_utils.core.progress import progress_bar
from molft_utils.methods.robust.groups import layer_groups
from molft_utils.methods.robust.penalties import _backbone_keys
from molft_utils.models.backbone import RegressionModel
from molft_utils.training.collate import collate, encode
from molft_utils.training.train import TargetScaler

__all__ = [
    "fit_roft_mol",
    "LayerwiseInterpolation",
    "RoftMolResult",
]

log = logging.getLogger(__name__)


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
