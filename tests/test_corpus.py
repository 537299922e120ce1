from __future__ import annotations

import random

from rdkit import Chem

from molft_utils.models.tokenizer import split_smiles
from molft_utils.pretraining.corpus import augment, relabel_rings


def test_relabel_rings_keeps_the_molecule():
    s = "c1ccc2ccccc2c1C1CC1"
    out = relabel_rings(s, random.Random(3))
    assert Chem.CanonSmiles(out) == Chem.CanonSmiles(s)


def test_augment_is_deterministic_and_valid():
    smiles = ["CC(N)C(=O)O", "Nc1ccccc1", "CS(=O)c1ccccc1", "CC=CC", "Brc1ccncc1", "CCC(C)O"]
    for s in smiles:
        for seed in range(5):
            out = augment(s, seed)
            assert out == augment(s, seed)
            assert Chem.MolFromSmiles(out) is not None


def test_augment_produces_stereo_and_charged_tokens():
    tokens = set()
    for seed in range(60):
        for s in ["CC(N)C(=O)O", "Nc1ccc(Br)cc1", "CS(=O)c1ccncc1"]:
            tokens.update(split_smiles(augment(s, seed)))
    assert {"[C@H]", "[C@@H]", "[O-]", "[N+]", "I"} <= tokens
