"""Frozen-feature extraction: the mean-pooled encoder states of a list of SMILES.

Used by diversity sampling (k-means on embeddings, :mod:`molft_utils.methods.selection`), the linear probe
(:mod:`molft_utils.methods.probe`) and the head's influence functions (:mod:`molft_utils.methods.head_influence`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from molft_utils.core.progress import progress_bar
from molft_utils.models.backbone import RegressionModel
from molft_utils.training.batching import sequential_batches
from molft_utils.training.collate import collate, encode

__all__ = ["embed_smiles"]


@torch.no_grad()
def embed_smiles(
    model: RegressionModel,
    tokenizer: PreTrainedTokenizerBase,
    smiles: Sequence[str],
    batch_size: int = 128,
    progress: bool = False,
) -> np.ndarray:
    """Mean-pooled encoder embeddings of ``smiles`` (``RegressionModel.embed``), in eval mode, float32.

    Batches are formed by sequence length (less padding); rows come back in the input order. The model's
    train/eval mode is restored afterwards.

    Parameters
    ----------
    model
        A :class:`~molft_utils.models.backbone.RegressionModel` (or anything with ``.embed(input_ids, attention_mask)``
        and parameters).
    tokenizer
        Its tokenizer.
    smiles
        Molecules to embed.
    batch_size
        Molecules per forward pass.
    progress
        Show a tqdm bar (``TQDM_DISABLE=1`` silences it).

    Returns
    -------
    np.ndarray
        Array ``(len(smiles), hidden)`` of dtype float32.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    device = next(model.parameters()).device
    ids = encode(tokenizer, smiles)
    batches = sequential_batches([len(x) for x in ids], batch_size)
    was_training = model.training
    model.eval()
    out: np.ndarray | None = None
    try:
        for idx in progress_bar(batches, progress=progress, desc="embed"):
            batch = collate(tokenizer, [ids[i] for i in idx], device)
            feats = model.embed(batch["input_ids"], batch["attention_mask"]).float().cpu().numpy()
            if out is None:
                out = np.empty((len(ids), feats.shape[1]), dtype=np.float32)
            out[idx] = feats
    finally:
        model.train(was_training)
    if out is None:
        raise ValueError("no SMILES to embed")
    return out
