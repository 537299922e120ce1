"""Post-hoc combinations of finished weights: WiSE-FT (weight interpolation) and model soups (uniform, greedy)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence

import torch

from molft_utils.methods.robust.penalties import _backbone_keys
from molft_utils.models.backbone import RegressionModel

__all__ = ["greedy_soup", "interpolate_models", "interpolate_state", "uniform_soup", "wise_ft"]


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


def interpolate_models(start: RegressionModel, end: RegressionModel, alpha: float) -> RegressionModel:
    """WiSE-FT between two whole models: every weight, head included, ``(1 − α)·start + α·end`` (eval mode).

    Meant for an ``end`` fine-tuned *from* ``start`` (Wortsman et al.: the zero-shot model and its fine-tuned
    version; here the linear-probed model and the LP-FT model trained from it), so that both heads share
    one initialisation and α = 0 is a working model, not a pretrained encoder under a head it never saw.
    """
    model = copy.deepcopy(end)
    model.load_state_dict(interpolate_state(start.state_dict(), end.state_dict(), alpha))
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
