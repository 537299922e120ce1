"""Target modules by role: the self-attention and feed-forward projections of an encoder, found in its module tree
(the same call works for the embedded RoFormer and for MoLFormer-XL)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from molft_utils.methods.peft_methods.settings import AdaLoraSettings, LoraSettings

__all__ = ["NoTargetModulesError", "attention_targets", "feedforward_targets", "lora_targets"]

_ATTENTION_ROLES = {"query": ("query", "q_proj"), "key": ("key", "k_proj"), "value": ("value", "v_proj")}


class NoTargetModulesError(ValueError):
    """No module of the requested role was found in the backbone."""


def _linear_children(module: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in module.named_children() if isinstance(m, nn.Linear)}


def attention_targets(backbone: nn.Module, roles: Sequence[str] = ("query", "key", "value")) -> list[str]:
    """Full names of the self-attention projections of ``backbone``.

    A module whose linear children are named ``query``/``key``/``value`` (BERT, RoFormer,
    MoLFormer: ``encoder.layer.{i}.attention.self.query``) or ``q_proj``/``k_proj``/``v_proj`` is a
    self-attention block; the requested projections of every such block are returned.

    Parameters
    ----------
    backbone
        The encoder (not wrapped by peft).
    roles
        Any of ``"query"``, ``"key"``, ``"value"``.

    Raises
    ------
    NoTargetModulesError
        When no self-attention projection is found.
    """
    unknown = set(roles) - set(_ATTENTION_ROLES)
    if unknown or not roles:
        raise ValueError(f"roles must be a non-empty subset of {tuple(_ATTENTION_ROLES)}, got {tuple(roles)}")
    found: list[str] = []
    for name, module in backbone.named_modules():
        linears = _linear_children(module)
        for spelling in range(2):
            names = {role: _ATTENTION_ROLES[role][spelling] for role in _ATTENTION_ROLES}
            if all(n in linears for n in names.values()):
                found += [f"{name}.{names[role]}" if name else names[role] for role in roles]
    if not found:
        raise NoTargetModulesError(
            f"no self-attention projections (query/key/value or q_proj/k_proj/v_proj linear layers) found in "
            f"{type(backbone).__name__}"
        )
    return found


def feedforward_targets(backbone: nn.Module, part: str = "both") -> list[str]:
    """Full names of the feed-forward projections of every transformer layer of ``backbone``.

    A transformer layer is recognised as a module with an ``intermediate`` child holding a linear
    ``dense`` (the up-projection, hidden → intermediate) and an ``output`` child holding a linear
    ``dense`` (the down-projection, intermediate → hidden). The attention output projection
    (``attention.output.dense``) lives one level deeper, under ``attention``, and is therefore never
    returned.

    Parameters
    ----------
    backbone
        The encoder (not wrapped by peft).
    part
        ``"up"`` (``intermediate.dense``), ``"down"`` (the layer's ``output.dense``) or ``"both"``.

    Raises
    ------
    NoTargetModulesError
        When no feed-forward block is found.
    """
    if part not in ("up", "down", "both"):
        raise ValueError(f"part must be 'up', 'down' or 'both', got {part!r}")
    found: list[str] = []
    for name, module in backbone.named_modules():
        children = dict(module.named_children())
        up = children.get("intermediate")
        down = children.get("output")
        if up is None or down is None:
            continue
        up_dense, down_dense = getattr(up, "dense", None), getattr(down, "dense", None)
        if not (isinstance(up_dense, nn.Linear) and isinstance(down_dense, nn.Linear)):
            continue
        if up_dense.out_features != down_dense.in_features:
            continue
        prefix = f"{name}." if name else ""
        if part in ("up", "both"):
            found.append(f"{prefix}intermediate.dense")
        if part in ("down", "both"):
            found.append(f"{prefix}output.dense")
    if not found:
        raise NoTargetModulesError(
            "no feed-forward block (intermediate.dense + output.dense linear layers) found in "
            f"{type(backbone).__name__}"
        )
    return found


def lora_targets(backbone: nn.Module, settings: LoraSettings | AdaLoraSettings) -> list[str]:
    """The attention projections of ``settings.roles`` plus, when ``settings.feedforward`` asks, the FFN ones."""
    targets = attention_targets(backbone, settings.roles)
    ff = getattr(settings, "feedforward", "none")
    if ff != "none":
        targets += feedforward_targets(backbone, ff)
    return targets
