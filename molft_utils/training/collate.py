"""The public collator: SMILES → token ids → a padded batch on a device.

Every module that feeds a :class:`~molft_utils.models.backbone.RegressionModel` (the fine-tuning loop
:func:`~molft_utils.training.train.fit`, embeddings, influence gradients, robust methods) uses these two functions,
so the loop and its callers always pad the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

__all__ = ["collate", "encode"]


def encode(tokenizer: PreTrainedTokenizerBase, smiles: Sequence[str]) -> list[list[int]]:
    """Token ids of each SMILES (truncated to the tokenizer's maximum length), unpadded."""
    return tokenizer(list(smiles), truncation=True)["input_ids"]


def collate(tokenizer: PreTrainedTokenizerBase, ids: list[list[int]], device: torch.device) -> dict[str, torch.Tensor]:
    """Pad ``ids`` to the longest sequence; ``{"input_ids", "attention_mask"}`` on ``device``."""
    batch = tokenizer.pad({"input_ids": ids}, return_tensors="pt")
    return {"input_ids": batch["input_ids"].to(device), "attention_mask": batch["attention_mask"].to(device)}
