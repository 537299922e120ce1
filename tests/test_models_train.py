from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_SMILES

from molft_utils.models.backbone import (
    BackboneUnavailableError,
    RegressionModel,
    load_backbone,
    mean_pool,
    random_init_like,
)
from molft_utils.training.train import TargetScaler, TrainConfig, fit, predict


def _toy_task():
    # label = number of heavy atoms / 10: learnable from tokens alone
    smiles = ["C" * n for n in range(1, 13)] + ["O" + "C" * n for n in range(1, 13)] + TINY_SMILES
    from rdkit import Chem

    y = [Chem.MolFromSmiles(s).GetNumHeavyAtoms() / 10 for s in smiles]
    return smiles, y


def test_default_backbone_loads_offline(monkeypatch):
    # no wall-clock assert: a busy machine is slow, not wrong
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    backbone, tok = load_backbone()
    enc = tok(["CCO"], return_tensors="pt")
    out = backbone(**enc).last_hidden_state
    assert out.shape == (1, 5, backbone.config.hidden_size)


def test_missing_backbone_gives_clear_error(tmp_path, monkeypatch):
    with pytest.raises(BackboneUnavailableError, match="config.json missing"):
        load_backbone(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the variable at import time; without this the test waits for network timeouts
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(BackboneUnavailableError, match="huggingface-cli download"):
        load_backbone("ibm/MoLFormer-XL-both-10pct")


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert mean_pool(hidden, torch.tensor([[1, 1, 0]])).item() == pytest.approx(2.0)


def test_random_init_differs_from_pretrained():
    backbone, _ = load_backbone()
    fresh = random_init_like(backbone)
    w0 = backbone.embeddings.word_embeddings.weight
    assert w0.shape == fresh.embeddings.word_embeddings.weight.shape
    assert not torch.allclose(w0, fresh.embeddings.word_embeddings.weight)


def test_target_scaler_round_trip():
    s = TargetScaler("minmax").fit([1.0, 3.0])
    assert s.transform([1.0, 3.0]).tolist() == [0.0, 1.0]
    assert TargetScaler.from_dict(s.to_dict()).inverse([0.5])[0] == pytest.approx(2.0)
    with pytest.raises(ValueError):
        TargetScaler("log")


def test_short_training_lowers_validation_error_and_is_reproducible(tiny_mlm, tokenizer, tmp_path):
    smiles, y = _toy_task()
    cfg = TrainConfig(epochs=15, batch_size=8, lr_backbone=3e-3, lr_head=3e-3, patience=15, mixed_precision="no")
    results, preds = [], []
    for _ in range(2):
        torch.manual_seed(0)
        model = RegressionModel(random_init_like(tiny_mlm.roformer))
        res = fit(model, tokenizer, smiles, y, smiles, y, cfg, progress=False)
        results.append(res)
        preds.append(predict(model, tokenizer, smiles, res.scaler))
    first = results[0].history
    assert results[0].best_valid_rmse < 0.6 * first[0]["valid_rmse"]
    np.testing.assert_array_equal(preds[0], preds[1])
    # save / load round trip gives the same predictions
    model.save(tmp_path / "m")
    again, _ = RegressionModel.load(tmp_path / "m")
    np.testing.assert_allclose(predict(again, tokenizer, smiles, results[1].scaler), preds[1], rtol=1e-5, atol=1e-6)


def test_molformer_is_loaded_pinned_with_remote_code_and_deterministic_eval(monkeypatch):
    import molft_utils.models.backbone as models

    calls = {}

    def fake_model(name, **kwargs):
        calls["model"] = (name, kwargs)
        return "backbone"

    def fake_tokenizer(name, **kwargs):
        calls["tokenizer"] = (name, kwargs)
        return "tokenizer"

    monkeypatch.setattr(models.AutoModel, "from_pretrained", fake_model)
    monkeypatch.setattr(models.AutoTokenizer, "from_pretrained", fake_tokenizer)
    assert load_backbone(models.MOLFORMER_ID) == ("backbone", "tokenizer")
    name, kwargs = calls["model"]
    assert name == models.MOLFORMER_ID and kwargs["trust_remote_code"] and kwargs["deterministic_eval"]
    assert kwargs["revision"] == models.MOLFORMER_REVISION == calls["tokenizer"][1]["revision"]
