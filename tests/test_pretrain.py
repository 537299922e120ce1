"""The pretraining command end to end at toy size: a loadable backbone, its record and its model card."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from molft_utils.data.loading import LIPOPHILICITY
from molft_utils.models.backbone import DEFAULT_BACKBONE, load_backbone
from molft_utils.models.model_card import render_model_card
from molft_utils.pretraining.pretrain import main


def _tiny_corpus(folder: Path) -> Path:
    smiles = pd.read_csv(LIPOPHILICITY)["smiles"].tolist()
    folder.mkdir()
    (folder / "train.txt").write_text("\n".join(smiles[:48]) + "\n")
    (folder / "valid.txt").write_text("\n".join(smiles[48:64]) + "\n")
    # the corpus record of the committed backbone stands in for the one corpus.py writes
    corpus = json.loads((DEFAULT_BACKBONE / "pretraining.json").read_text())["corpus"]
    (folder / "corpus.json").write_text(json.dumps(corpus))
    return folder


def test_tiny_pretraining_run_saves_backbone_record_and_card(tmp_path: Path) -> None:
    corpus = _tiny_corpus(tmp_path / "corpus")
    out = tmp_path / "tiny-backbone"
    argv = [
        "--corpus", str(corpus), "--out", str(out), "--checkpoint-dir", str(tmp_path / "checkpoint"),
        "--layers", "1", "--hidden", "32", "--heads", "2", "--intermediate", "64",
        "--max-steps", "3", "--batch-size", "8", "--eval-every", "0", "--n-valid-eval", "8",
        "--checkpoint-every", "0", "--mixed-precision", "no", "--descriptor-weight", "1.0",
        "--descriptor-workers", "1",
    ]  # fmt: skip
    main(argv)

    record = json.loads((out / "pretraining.json").read_text())
    assert record["name"] == "tiny-backbone" and record["history"]["steps"] == 3
    assert record["command"].endswith("molft_utils.pretraining.pretrain " + " ".join(argv))  # what was run
    assert record["architecture"]["num_hidden_layers"] == 1 and record["architecture"]["hidden_size"] == 32
    assert record["descriptors"]["n_molecules"] == 24  # 3 steps x batch 8: the slice the run used
    assert set(record["unknown_token_rate"]) == {"lipophilicity", "external_pool"}
    assert (out / "descriptor_head.safetensors").is_file() and (out / "descriptor_scaler.json").is_file()

    backbone, tokenizer = load_backbone(str(out))
    assert sum(p.numel() for p in backbone.parameters()) == record["n_parameters_encoder"]
    assert len(tokenizer) == record["vocab_size"]
    assert (out / "README.md").read_text() == render_model_card(out)  # the card came from this record
