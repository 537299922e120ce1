"""The public collator: SMILES → token ids → a padded batch on a device.

Every module that feeds a :class:`~molft_utils.models.backbone.RegressionModel` outside :func:`fit` (embeddings,
influence gradients, robust methods) uses these two functions instead of the fine-tuning loop's private helpers.
They delegate to :mod:`molft_utils.training.train`, so the loop and its callers always pad the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from molft_utils.training import train as _train

__all__ = ["collate", "encode"]


def encode(tokenizer: PreTrainedTokenizerBase, smiles: Sequence[str]) -> list[list[int]]:
    """Token ids of each SMILES (truncated to the tokenizer's maximum length), unpadded."""
    return _train._encode(tokenizer, smiles)


def collate(tokenizer: PreTrainedTokenizerBase, ids: list[list[int]], device: torch.device) -> dict[str, torch.Tensor]:
    """Pad ``ids`` to the longest sequence; ``{"input_ids", "attention_mask"}`` on ``device``."""
    return _train._pad(tokenizer, ids, device)
