"""RDKit descriptors, their standardisation, and descriptor multi-task regression in the MLM loop."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import TINY_SMILES

from molft_utils.data.descriptors import DESCRIPTOR_NAMES, DescriptorScaler, descriptor_row, rdkit_descriptors
from molft_utils.training.mlm import DescriptorHead, MLMConfig, evaluate_descriptors, train_mlm


def test_descriptors_match_rdkit_and_are_cached(tmp_path):
    from rdkit import Chem
    from rdkit.Chem import Crippen, Descriptors

    values = rdkit_descriptors(TINY_SMILES, cache_dir=tmp_path)
    assert values.shape == (len(TINY_SMILES), len(DESCRIPTOR_NAMES))
    logp = values[:, DESCRIPTOR_NAMES.index("MolLogP")]
    expected = [Crippen.MolLogP(Chem.MolFromSmiles(s)) for s in TINY_SMILES]
    np.testing.assert_allclose(logp, expected, rtol=1e-5)
    weight = Descriptors.MolWt(Chem.MolFromSmiles(TINY_SMILES[2]))
    assert values[2, DESCRIPTOR_NAMES.index("MolWt")] == pytest.approx(weight)
    assert len(list(tmp_path.glob("desc-*.npy"))) == 1
    np.testing.assert_array_equal(rdkit_descriptors(TINY_SMILES, cache_dir=tmp_path), values)
    assert np.isnan(descriptor_row("not a smiles")).all()


def test_scaler_clips_drops_constant_columns_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.normal(size=(500, 3))
    values[0, 0] = 1e9  # an outlier is clipped, not allowed to dominate the scale
    values[:, 2] = 7.0  # constant: dropped
    values[5, 1] = np.nan
    scaler = DescriptorScaler.fit(values, names=["a", "b", "c"])
    assert scaler.names == ["a", "b"]
    z = scaler.transform(values, names=["a", "b", "c"])
    assert z.shape == (500, 2) and np.isfinite(z).all()
    assert abs(z[:, 0].std() - 1) < 0.05 and z[0, 0] < 4
    loaded = DescriptorScaler.load(scaler.save(tmp_path / "s.json"))
    np.testing.assert_array_equal(loaded.transform(values, names=["a", "b", "c"]), z)
    with pytest.raises(ValueError, match="missing"):
        scaler.transform(values[:, :2], names=["a", "c"])


def _targets(smiles):
    raw = rdkit_descriptors(smiles)
    return DescriptorScaler.fit(raw).transform(raw)


@pytest.mark.parametrize("mlm_weight", [1.0, 0.0])
def test_descriptor_regression_learns(tokenizer, tiny_mlm, mlm_weight):
    smiles = TINY_SMILES * 10
    targets = _targets(smiles)
    torch.manual_seed(0)
    head = DescriptorHead(tiny_mlm.config.hidden_size, targets.shape[1])
    valid = targets[: len(TINY_SMILES)]
    before = evaluate_descriptors(tiny_mlm, head, tokenizer, TINY_SMILES, valid, mixed_precision="no")
    cfg = MLMConfig(max_steps=80, lr=3e-3, batch_size=8, mixed_precision="no", mlm_weight=mlm_weight,
                    descriptor_weight=1.0, eval_every=40)  # fmt: skip
    history = train_mlm(tiny_mlm, tokenizer, smiles, TINY_SMILES, cfg, progress=False, descriptors=targets,
                        valid_descriptors=targets[: len(TINY_SMILES)], descriptor_head=head)  # fmt: skip
    after = history.rows[-1]
    assert after["valid_descriptor_mse"] < 0.7 * before["mse"]
    assert ("valid_loss" in after) == (mlm_weight > 0)


def test_descriptor_regression_needs_targets(tokenizer, tiny_mlm):
    with pytest.raises(ValueError, match="descriptor row"):
        train_mlm(tiny_mlm, tokenizer, TINY_SMILES, [], MLMConfig(max_steps=1, descriptor_weight=1.0), progress=False)


def test_interrupted_mtr_run_resumes_to_the_same_weights(tmp_path, tokenizer, tiny_mlm, monkeypatch):
    import molft_utils.training.mlm as mlm

    smiles = TINY_SMILES * 10
    targets = _targets(smiles)
    cfg = MLMConfig(max_steps=10, batch_size=8, checkpoint_every=5, mixed_precision="no", descriptor_weight=1.0)
    twin = copy.deepcopy(tiny_mlm)
    torch.manual_seed(1)
    head = DescriptorHead(tiny_mlm.config.hidden_size, targets.shape[1])
    twin_head = copy.deepcopy(head)
    train_mlm(tiny_mlm, tokenizer, smiles, [], cfg, progress=False, descriptors=targets, descriptor_head=head)

    real_collate, calls = mlm._collate, {"n": 0}

    def failing_collate(*args):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt
        return real_collate(*args)

    monkeypatch.setattr(mlm, "_collate", failing_collate)
    with pytest.raises(KeyboardInterrupt):
        train_mlm(twin, tokenizer, smiles, [], cfg, checkpoint_dir=tmp_path, progress=False, descriptors=targets,
                  descriptor_head=twin_head)  # fmt: skip
    monkeypatch.setattr(mlm, "_collate", real_collate)
    train_mlm(twin, tokenizer, smiles, [], cfg, checkpoint_dir=tmp_path, progress=False, descriptors=targets,
              descriptor_head=twin_head)  # fmt: skip
    for a, b in zip(tiny_mlm.state_dict().values(), twin.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    for a, b in zip(head.state_dict().values(), twin_head.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
