"""Parameter groups of a :class:`~molft_utils.models.backbone.RegressionModel`: one per layer (RoFt-Mol) and the
coarse blocks that surgical fine-tuning trains."""

from __future__ import annotations

import re
from collections import OrderedDict

import numpy as np

from molft_utils.models.backbone import RegressionModel

__all__ = ["COARSE_GROUPS", "coarse_groups", "layer_groups"]

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
