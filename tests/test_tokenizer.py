from __future__ import annotations

import pandas as pd
import pytest

from molft_utils.data.loading import EXTERNAL_POOL, LIPOPHILICITY
from molft_utils.models.backbone import DEFAULT_BACKBONE
from molft_utils.models.tokenizer import build_tokenizer, load_tokenizer, split_smiles, unknown_token_rate


def test_regex_round_trip_on_both_data_files():
    for path, col in [(LIPOPHILICITY, "smiles"), (EXTERNAL_POOL, "SMILES")]:
        for s in pd.read_csv(path)[col]:
            assert "".join(split_smiles(s)) == s


def test_bracket_atoms_and_two_letter_atoms_are_single_tokens():
    assert split_smiles("C[C@@H](Cl)Br%10") == ["C", "[C@@H]", "(", "Cl", ")", "Br", "%10"]


def test_special_tokens_padding_truncation(tokenizer):
    enc = tokenizer(["CCO", "c1ccccc1"], padding=True)
    toks = tokenizer.convert_ids_to_tokens(enc["input_ids"][0])
    assert toks[:5] == ["<bos>", "C", "C", "O", "<eos>"]
    assert toks[5:] == ["<pad>"] * 5 and enc["attention_mask"][0] == [1] * 5 + [0] * 5
    assert tokenizer.pad_token_id == 0
    assert len(tokenizer("C" * 1000, truncation=True)["input_ids"]) == tokenizer.model_max_length


def test_save_load_round_trip(tmp_path, tokenizer):
    tokenizer.save_pretrained(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again("C[C@@H](N)C(=O)[O-]")["input_ids"] == tokenizer("C[C@@H](N)C(=O)[O-]")["input_ids"]
    assert again.mask_token == "<mask>"


def test_unknown_rate_counts_unmatched_characters(tokenizer):
    assert unknown_token_rate(tokenizer, ["CCO"]) == 0.0
    assert unknown_token_rate(tokenizer, ["[Xe]C"]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        unknown_token_rate(tokenizer, [])


@pytest.mark.parametrize("tok_source", ["grammar", "embedded"])
def test_zero_unknown_tokens_on_both_data_files(tok_source):
    tok = build_tokenizer() if tok_source == "grammar" else load_tokenizer(DEFAULT_BACKBONE)
    for path, col in [(LIPOPHILICITY, "smiles"), (EXTERNAL_POOL, "SMILES")]:
        assert unknown_token_rate(tok, pd.read_csv(path)[col]) == 0.0
