"""Parameters and loss functions for influence: parameter subsets, flat vectors, the regression model as a pure
function of chosen parameters, and batches of tokenised SMILES.

Everything downstream (:mod:`.hessian`, :mod:`.solvers`, :mod:`.scores`) works on a generic
``loss_fn(params, batch) -> scalar`` where ``params`` is an ordered ``dict`` name → tensor.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch.func import functional_call
from transformers import PreTrainedTokenizerBase

from molft_utils.models.backbone import RegressionModel, mean_pool
from molft_utils.training.collate import encode

__all__ = [
    "Batch",
    "Collate",
    "HVP",
    "LossFn",
    "Params",
    "collate_smiles",
    "flatten",
    "regression_loss_fn",
    "regression_sample_loss_fn",
    "select_parameters",
    "unflatten",
]

Params = dict[str, torch.Tensor]
Batch = Mapping[str, torch.Tensor]
LossFn = Callable[[Params, Batch], torch.Tensor]
Collate = Callable[[np.ndarray], Batch]
HVP = Callable[[torch.Tensor], torch.Tensor]

_LAYER = re.compile(r"encoder\.layer\.(\d+)\.")


def select_parameters(
    model: torch.nn.Module, subset: str | int = "head", k: int = 1
) -> OrderedDict[str, torch.nn.Parameter]:
    """Choose the parameters whose influence is computed.

    Parameters
    ----------
    model
        A :class:`~molft_utils.models.backbone.RegressionModel` (names ``head.*`` and
        ``backbone.encoder.layer.{i}.*``).
    subset
        ``"head"`` (the regression head only), ``"last_k"`` (the last ``k`` encoder layers and the
        head), ``"last_<int>"`` such as ``"last_2"``, an ``int`` (same as ``"last_<int>"``), or
        ``"all"`` (every parameter with ``requires_grad``).
    k
        Number of encoder layers for ``subset="last_k"``.

    Returns
    -------
    OrderedDict
        Name → parameter, in ``model.named_parameters()`` order.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if isinstance(subset, str) and subset.startswith("last_"):
        subset = k if subset == "last_k" else int(subset.removeprefix("last_"))
    if subset == "all":
        chosen = named
    elif subset == "head":
        chosen = [(n, p) for n, p in named if n.startswith("head.")]
    elif isinstance(subset, int) and not isinstance(subset, bool):
        layers = sorted({int(m.group(1)) for n, _ in named if (m := _LAYER.search(n))})
        if subset < 0 or subset > len(layers):
            raise ValueError(f"cannot take the last {subset} of {len(layers)} encoder layers")
        keep = set(layers[len(layers) - subset :])
        chosen = [
            (n, p) for n, p in named if n.startswith("head.") or ((m := _LAYER.search(n)) and int(m.group(1)) in keep)
        ]
    else:
        raise ValueError(f"subset must be 'head', 'all', 'last_k', 'last_<int>' or an int, got {subset!r}")
    if not chosen:
        raise ValueError(f"subset {subset!r} selects no parameters")
    return OrderedDict(chosen)


def flatten(tensors: Mapping[str, torch.Tensor] | Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate tensors (dict values in order, or a sequence) into one flat vector."""
    values = tensors.values() if isinstance(tensors, Mapping) else tensors
    return torch.cat([t.reshape(-1) for t in values])


def unflatten(vector: torch.Tensor, like: Mapping[str, torch.Tensor]) -> Params:
    """Split a flat vector into tensors shaped like ``like`` (inverse of :func:`flatten`)."""
    out, start = {}, 0
    for name, t in like.items():
        out[name] = vector[start : start + t.numel()].view_as(t)
        start += t.numel()
    if start != vector.numel():
        raise ValueError(f"vector has {vector.numel()} entries, parameters need {start}")
    return out


def _detached(params: Mapping[str, torch.Tensor]) -> Params:
    return {n: p.detach() for n, p in params.items()}


# --------------------------------------------------------------------------------------------
# the regression model as a function of a parameter subset
# --------------------------------------------------------------------------------------------


def _additive_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # A ready 4D additive mask: transformers returns it as-is, which skips its data-dependent
    # "is there any padding?" check that vmap cannot trace (RoFormer uses eager attention).
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


def regression_sample_loss_fn(model: RegressionModel, params: Mapping[str, torch.Tensor]) -> LossFn:
    """Per-batch squared error of ``model`` as a pure function of the chosen parameters.

    The returned ``loss_fn(params, batch)`` evaluates the model with
    :func:`torch.func.functional_call` (parameters not in ``params`` stay fixed, detached), in
    float32 without autocast, and returns the **per-sample** losses ``(pred − y)²``, shape (B,).
    ``batch`` has ``input_ids``, ``attention_mask`` (B, T) and ``y`` (B,) on the scaled target.
    The model must be in eval mode when the function runs (dropout off); the public functions
    of this module take care of that.

    The backbone gets a ready 4D additive attention mask (``0`` / ``finfo.min``), which the
    project's RoFormer (eager attention) uses as-is; a 2D mask would make transformers check the
    mask's values in Python, which ``vmap`` cannot trace. Backbones with their own masking (the
    MoLFormer remote code) would need another adapter.
    """
    names = set(params)
    frozen = {n: p.detach() for n, p in model.named_parameters() if n not in names}
    buffers = dict(model.named_buffers())

    def per_sample(p: Params, batch: Batch) -> torch.Tensor:
        full = {**frozen, **buffers, **p}
        backbone = {n.removeprefix("backbone."): v for n, v in full.items() if n.startswith("backbone.")}
        head = {n.removeprefix("head."): v for n, v in full.items() if n.startswith("head.")}
        mask = batch["attention_mask"]
        with torch.autocast(device_type=mask.device.type, enabled=False):
            hidden = functional_call(
                model.backbone,
                backbone,
                args=(),
                kwargs={"input_ids": batch["input_ids"], "attention_mask": _additive_mask(mask, torch.float32)},
            ).last_hidden_state
            pred = functional_call(model.head, head, (mean_pool(hidden.float(), mask),)).squeeze(-1)
            return (pred - batch["y"]) ** 2

    return per_sample


def regression_loss_fn(model: RegressionModel, params: Mapping[str, torch.Tensor]) -> LossFn:
    """Mean squared error (the fine-tuning loss) of ``model`` as ``loss_fn(params, batch)``.

    See :func:`regression_sample_loss_fn`; this is its batch mean (a scalar).
    """
    per_sample = regression_sample_loss_fn(model, params)
    return lambda p, batch: per_sample(p, batch).mean()


def collate_smiles(
    tokenizer: PreTrainedTokenizerBase,
    smiles: Sequence[str],
    y_scaled: Sequence[float],
    device: torch.device | str = "cpu",
) -> Collate:
    """A ``collate(indices) -> batch`` over tokenised SMILES with scaled labels (dynamic padding)."""
    ids = encode(tokenizer, smiles)
    y = torch.as_tensor(np.asarray(y_scaled, dtype=np.float32))
    if len(ids) != len(y):
        raise ValueError(f"{len(ids)} SMILES but {len(y)} labels")

    def collate(idx: np.ndarray) -> Batch:
        padded = tokenizer.pad({"input_ids": [ids[i] for i in idx]}, return_tensors="pt")
        return {
            "input_ids": padded["input_ids"].to(device),
            "attention_mask": padded["attention_mask"].to(device),
            "y": y[torch.as_tensor(np.asarray(idx), dtype=torch.long)].to(device),
        }

    collate.lengths = np.array([len(x) for x in ids])  # type: ignore[attr-defined]
    return collate


def _chunks(n: int, size: int, lengths: np.ndarray | None = None) -> list[np.ndarray]:
    order = np.argsort(lengths, kind="stable") if lengths is not None else np.arange(n)
    return [order[i : i + size] for i in range(0, n, size)]
