"""SMILES tokenizer: the MoLFormer regex, built with Hugging Face ``tokenizers``.

MoLFormer (Ross et al., 2022) splits SMILES with the regular expression of Schwaller et al.
(2019): bracket atoms such as ``[C@@H]`` or ``[O-]`` are one token, two-letter organic atoms
(``Cl``, ``Br``) are one token, everything else is one character, and ring-closure labels
``%10``-``%99`` are one token. This module builds that tokenizer as a
:class:`transformers.PreTrainedTokenizerFast` so it pads, truncates, saves and loads like any
Hugging Face tokenizer.

Examples
--------
>>> tok = build_tokenizer(["CCO", "c1ccccc1"])
>>> tok.convert_ids_to_tokens(tok("CCO")["input_ids"])
['<bos>', 'C', 'C', 'O', '<eos>']
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

__all__ = [
    "SMILES_REGEX",
    "SPECIAL_TOKENS",
    "bracket_atom_grammar",
    "build_tokenizer",
    "load_tokenizer",
    "split_smiles",
    "token_counts",
    "unknown_token_rate",
]

#: The SMILES regular expression used by MoLFormer (from Schwaller et al., 2019).
SMILES_REGEX = (
    r"(\[[^\]]+]|Br?|Cl?|N|O|S|P|F|I|b|c|n|o|s|p|\(|\)|\.|=|#|-|\+|\\|\/|:|~|@|\?|>|\*|\$"
    r"|\%[0-9]{2}|[0-9])"
)
_SMILES_RE = re.compile(SMILES_REGEX)

#: Special tokens, in id order (ids 0..4).
SPECIAL_TOKENS = {
    "pad_token": "<pad>",
    "unk_token": "<unk>",
    "bos_token": "<bos>",
    "eos_token": "<eos>",
    "mask_token": "<mask>",
}

_ORGANIC = ["B", "C", "N", "O", "P", "S", "F", "Cl", "Br", "I", "b", "c", "n", "o", "p", "s"]
_SYNTAX = ["(", ")", ".", "=", "#", "-", "+", "\\", "/", ":", "~", "@", "?", ">", "*", "$"]
_RING_LABELS = [str(d) for d in range(10)] + [f"%{d}" for d in range(10, 100)]


def split_smiles(smiles: str) -> list[str]:
    """Split one SMILES string into tokens with :data:`SMILES_REGEX`.

    Characters that the regex does not match are dropped by ``re.findall``; use
    :func:`unknown_token_rate` to check a data set, which goes through the real tokenizer.
    """
    return _SMILES_RE.findall(smiles)


def token_counts(smiles: Iterable[str]) -> Counter[str]:
    """Count regex tokens over many SMILES strings."""
    counts: Counter[str] = Counter()
    for s in smiles:
        counts.update(split_smiles(s))
    return counts


def bracket_atom_grammar() -> list[str]:
    """Enumerate the bracket atoms that drug-like SMILES use.

    The grammar is fixed in advance, not read off any data set: the elements of organic
    chemistry (aliphatic and aromatic), no/``@``/``@@`` chirality, 0-3 hydrogens and charge
    0/+/-. It lets the vocabulary cover stereocentres and charged atoms (``[C@@H]``, ``[N+]``,
    ``[O-]``) that a corpus without them (MOSES) never shows.

    Returns
    -------
    list of str
        Bracket tokens such as ``"[C@@H]"``, sorted, without duplicates.
    """
    aliphatic = ["B", "C", "N", "O", "P", "S", "F", "Cl", "Br", "I", "Si", "Se", "H"]
    aromatic = ["b", "c", "n", "o", "p", "s", "se"]
    chirality = ["", "@", "@@"]
    hydrogens = ["", "H", "H2", "H3"]
    charges = ["", "+", "-"]
    tokens = set()
    for element, chiral, h, q in itertools.product(aliphatic + aromatic, chirality, hydrogens, charges):
        if element == "H" and (chiral or h):
            continue
        if element in aromatic and h in ("H2", "H3"):
            continue
        tokens.add(f"[{element}{chiral}{h}{q}]")
    return sorted(tokens)


def _vocabulary(corpus_tokens: Iterable[str]) -> dict[str, int]:
    """Special tokens, then the fixed SMILES grammar, then any corpus tokens not yet in it."""
    vocab: dict[str, int] = {}
    for tok in itertools.chain(
        SPECIAL_TOKENS.values(), _ORGANIC, _SYNTAX, _RING_LABELS, bracket_atom_grammar(), corpus_tokens
    ):
        vocab.setdefault(tok, len(vocab))
    return vocab


def build_tokenizer(corpus: Iterable[str] = (), model_max_length: int = 256) -> PreTrainedTokenizerFast:
    """Build the SMILES tokenizer.

    Parameters
    ----------
    corpus
        SMILES whose tokens are added to the vocabulary after the fixed grammar (special
        tokens, organic-subset atoms, bond and branch symbols, ring labels ``0``-``%99`` and
        :func:`bracket_atom_grammar`). Tokens are added in order of decreasing frequency.
    model_max_length
        Length, in tokens including ``<bos>``/``<eos>``, at which ``truncation=True`` cuts.

    Returns
    -------
    transformers.PreTrainedTokenizerFast
        Adds ``<bos>`` and ``<eos>`` around every SMILES; pads with ``<pad>`` (id 0).
    """
    extra = [tok for tok, _ in token_counts(corpus).most_common()]
    vocab = _vocabulary(extra)
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(SMILES_REGEX), behavior="isolated")
    bos, eos = SPECIAL_TOKENS["bos_token"], SPECIAL_TOKENS["eos_token"]
    core.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} $B {eos}",
        special_tokens=[(bos, vocab[bos]), (eos, vocab[eos])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        model_max_length=model_max_length,
        padding_side="right",
        **SPECIAL_TOKENS,
    )


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Load a tokenizer saved with ``save_pretrained`` (for example a backbone folder)."""
    return PreTrainedTokenizerFast.from_pretrained(str(path))


def unknown_token_rate(tokenizer: PreTrainedTokenizerFast, smiles: Iterable[str]) -> float:
    """Fraction of non-special tokens that the tokenizer maps to ``<unk>``.

    Characters that no regex alternative matches become their own pieces and count as unknown,
    so a rate of 0 means every character of every SMILES has a vocabulary entry.
    """
    smiles = list(smiles)
    if not smiles:
        raise ValueError("unknown_token_rate needs at least one SMILES string")
    unk = tokenizer.unk_token_id
    specials = set(tokenizer.all_special_ids) - {unk}
    n_unknown = n_total = 0
    for ids in tokenizer(smiles, add_special_tokens=False)["input_ids"]:
        body = [i for i in ids if i not in specials]
        n_total += len(body)
        n_unknown += sum(i == unk for i in body)
    return n_unknown / max(n_total, 1)
