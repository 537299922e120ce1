"""Merging trained adapters into the base weights, and saving a plain checkpoint."""

from __future__ import annotations

from pathlib import Path

from peft import PeftModel

from molft_utils.models.backbone import RegressionModel

__all__ = ["merge_adapters", "merge_and_save"]


def merge_adapters(model: RegressionModel) -> RegressionModel:
    """Fold LoRA/DoRA/AdaLoRA/IA3 adapters into the base weights, in place.

    After merging ``model.backbone`` is the plain encoder again (``merge_and_unload``); for full
    fine-tuning and BitFit (no wrapper) the model is returned unchanged.
    """
    if isinstance(model.backbone, PeftModel):
        model.backbone = model.backbone.merge_and_unload()
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def merge_and_save(model: RegressionModel, path: str | Path, extra: dict | None = None) -> Path:
    """Merge the adapters into the backbone and save a plain :class:`RegressionModel` checkpoint.

    The result loads with :meth:`RegressionModel.load` without ``peft``. ``model`` itself is merged
    in place (its backbone is no longer a ``PeftModel`` afterwards).

    Parameters
    ----------
    model
        A model prepared by :func:`prepare` (any method) and trained.
    path
        Output folder.
    extra
        Metadata stored in ``regression.json`` next to ``{"merged_from": <peft type or None>}``.
    """
    peft_type = None
    if isinstance(model.backbone, PeftModel):
        peft_type = str(model.backbone.peft_config[model.backbone.active_adapter].peft_type.value)
    merge_adapters(model)
    return model.save(path, {"merged_from": peft_type} | (extra or {}))
