"""Shared fixtures: a tiny randomly initialised backbone so unit tests run in seconds."""

from __future__ import annotations

import pytest
import torch
from transformers import RoFormerForMaskedLM

from molft_utils.core.settings import reload_settings
from molft_utils.models.tokenizer import build_tokenizer
from molft_utils.pretraining.pretrain import backbone_config


@pytest.fixture(autouse=True)
def _settings_from_the_environment():
    """Each test starts and ends with settings read from the environment (after monkeypatch has undone its changes,
    since autouse fixtures are torn down last)."""
    reload_settings()
    yield
    reload_settings()


TINY_SMILES = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "C[C@@H](N)C(=O)O", "O=[N+]([O-])c1ccccc1", "CCN(CC)CC"]


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


@pytest.fixture()
def tiny_mlm(tokenizer):
    torch.manual_seed(0)
    return RoFormerForMaskedLM(backbone_config(len(tokenizer), layers=1, hidden=32, heads=2, intermediate=64))
