from __future__ import annotations

from conftest import TINY_SMILES

from molft_utils.training.mlm import MLMConfig, evaluate_mlm, train_mlm


def test_mlm_training_lowers_held_out_loss(tokenizer, tiny_mlm):
    smiles = TINY_SMILES * 20
    before = evaluate_mlm(tiny_mlm, tokenizer, TINY_SMILES * 4)["loss"]
    cfg = MLMConfig(max_steps=60, lr=3e-3, batch_size=8, mixed_precision="no")
    history = train_mlm(tiny_mlm, tokenizer, smiles, TINY_SMILES * 4, cfg, progress=False)
    after = history.rows[-1]["valid_loss"]
    assert after < before - 0.5
    assert history.steps == 60 and history.molecules_seen == 60 * 8


def test_interrupted_mlm_run_resumes_to_the_same_weights(tmp_path, tokenizer, tiny_mlm, monkeypatch):
    import copy

    import torch

    import molft_utils.training.mlm as mlm

    cfg = MLMConfig(max_steps=10, batch_size=8, checkpoint_every=5, mixed_precision="no")
    twin = copy.deepcopy(tiny_mlm)
    uninterrupted = train_mlm(tiny_mlm, tokenizer, TINY_SMILES * 10, [], cfg, progress=False)

    real_collate, calls = mlm._collate, {"n": 0}

    def failing_collate(*args):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt
        return real_collate(*args)

    monkeypatch.setattr(mlm, "_collate", failing_collate)
    try:
        train_mlm(twin, tokenizer, TINY_SMILES * 10, [], cfg, checkpoint_dir=tmp_path, progress=False)
    except KeyboardInterrupt:
        pass
    monkeypatch.setattr(mlm, "_collate", real_collate)
    assert torch.load(tmp_path / "last.pt", weights_only=False)["step"] == 5
    resumed = train_mlm(twin, tokenizer, TINY_SMILES * 10, [], cfg, checkpoint_dir=tmp_path, progress=False)
    assert resumed.steps == 10 and resumed.molecules_seen == uninterrupted.molecules_seen
    for a, b in zip(tiny_mlm.state_dict().values(), twin.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
