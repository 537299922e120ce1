"""Shared fixtures: a tiny randomly initialised backbone so unit tests run in seconds."""

from __future__ import annotations

import pytest
import torch
from transformers import RoFormerForMaskedLM

from molft_utils.pretrain import backbone_config
from molft_utils.tokenizer import build_tokenizer

TINY_SMILES = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "C[C@@H](N)C(=O)O", "O=[N+]([O-])c1ccccc1", "CCN(CC)CC"]


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


@pytest.fixture()
def tiny_mlm(tokenizer):
    torch.manual_seed(0)
    return RoFormerForMaskedLM(backbone_config(len(tokenizer), layers=1, hidden=32, heads=2, intermediate=64))
