"""Render the embedded backbone's model card from the records its runs wrote.

Every number in the card is read from ``pretraining.json`` (written by
:mod:`molft_utils.pretraining.pretrain`) and, when present, ``quality_gate.json`` (fine-tuning results);
nothing is typed by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["render_model_card"]


def _fmt_int(n: float) -> str:
    return f"{int(n):,}"


def render_model_card(model_dir: Path) -> str:
    """Return the Markdown model card for the backbone saved in ``model_dir``."""
    rec = json.loads((Path(model_dir) / "pretraining.json").read_text())
    arch = rec["architecture"]
    hist = rec["history"]
    corpus = rec["corpus"]
    final = rec["final_valid"]
    lines = [
        f"# {rec['name']}: the embedded default backbone of molft",
        "",
        "A small MoLFormer-style SMILES encoder (BERT-style transformer with rotary position embeddings,",
        "`transformers` RoFormer classes) pretrained by this project with masked-language modelling, so",
        "that every notebook runs offline. The real MoLFormer-XL stays one parameter away:",
        '`load_backbone("ibm/MoLFormer-XL-both-10pct")`.',
        "",
        "## Architecture",
        "",
        "| | |",
        "|---|---|",
        f"| layers × hidden × heads | {arch['num_hidden_layers']} × {arch['hidden_size']} × {arch['num_attention_heads']} |",
        f"| feed-forward width | {arch['intermediate_size']} |",
        "| positions | rotary (RoFormer), no learned position table |",
        f"| vocabulary | {rec['vocab_size']} tokens (MoLFormer SMILES regex) |",
        f"| parameters | {_fmt_int(rec['n_parameters'])} with the MLM head, "
        f"{_fmt_int(rec['n_parameters_encoder'])} in the encoder |",
        "",
        "## Pretraining",
        "",
        "| | |",
        "|---|---|",
        f"| corpus | MOSES training set ({_fmt_int(corpus['n_moses'])} SMILES from ZINC Clean Leads, MIT licence), "
        f"`{corpus['source']}` |",
        f"| corpus sha256 | `{corpus['sha256']}` |",
        f"| training slice | {_fmt_int(corpus['n_train'])} molecules after a seeded shuffle "
        f"({_fmt_int(corpus['n_train_changed'])} rewritten by augmentation) |",
        f"| held-out slice | {_fmt_int(corpus['n_valid'])} molecules, disjoint from training |",
        f"| molecules seen | {_fmt_int(hist['molecules_seen'])} |",
        f"| tokens seen | {_fmt_int(hist['tokens_seen'])} |",
        f"| optimiser steps | {_fmt_int(hist['steps'])} (batch {rec['mlm_config']['batch_size']}, "
        f"AdamW lr {rec['mlm_config']['lr']}, cosine with {rec['mlm_config']['warmup_fraction']:.0%} warm-up) |",
        f"| masking | {rec['mlm_config']['mlm_probability']:.0%} of tokens; 80 % `<mask>`, 10 % random, 10 % kept |",
        f"| wall time | {hist['wall_seconds'] / 60:.1f} min training, {rec['wall_seconds_total'] / 60:.1f} min in all |",
        f"| hardware | {rec['hardware']['device']} ({rec['hardware']['cpu']}), {rec['hardware']['torch_threads']} threads, "
        f"autocast {rec['hardware']['autocast_dtype']}, torch {rec['hardware']['torch']} |",
        f"| held-out MLM loss | {final['loss']:.4f} (cross-entropy on masked tokens, {_fmt_int(final['n_tokens'])} tokens) |",
        f"| held-out MLM accuracy | {final['accuracy']:.4f} |",
        "",
        "Held-out curve (every evaluation of the run):",
        "",
        "| step | molecules seen | held-out loss | held-out accuracy |",
        "|---:|---:|---:|---:|",
    ]
    for row in hist["rows"]:
        lines.append(
            f"| {row['step']} | {_fmt_int(row['molecules_seen'])} | {row['valid_loss']:.4f} | {row['valid_accuracy']:.4f} |"
        )
    unk = rec["unknown_token_rate"]
    lines += [
        "",
        "## Vocabulary coverage",
        "",
        "MOSES has no stereochemistry, no charged atoms and only C, N, O, S, F, Cl, Br, so `[C@@H]`,",
        "`[N+]`, `[O-]`, `/` and `\\`, common in Lipophilicity, never occur in it. Two measures close the gap:",
        "",
        "1. **A fixed vocabulary grammar**, not read off the task data: special tokens, the organic-subset",
        "   atoms, bond and branch symbols, ring labels `0`-`9` and `%10`-`%99`, and every bracket atom of",
        "   B, C, N, O, P, S, F, Cl, Br, I, Si, Se, H (and aromatic b, c, n, o, p, s, se) with no/`@`/`@@`",
        "   chirality, 0-3 hydrogens and charge 0/+/- (`molft_utils.models.tokenizer.bracket_atom_grammar`).",
        "2. **Chemistry-preserving augmentation** of half of the corpus (`molft_utils.pretraining.corpus.augment`): random",
        "   stereochemistry for unassigned centres and double bonds, ionisation as at pH 7.4, nitro groups,",
        "   charge-separated sulfoxides and N-oxides, bromine to iodine, and renamed ring-closure labels, so",
        "   that these tokens have trained embeddings. Edit probabilities: "
        + ", ".join(f"{k} {v}" for k, v in corpus["edits"].items())
        + ".",
        "",
        f"Unknown-token rate: Lipophilicity {unk['lipophilicity']:.4f}, external pool {unk['external_pool']:.4f}.",
        "",
        "Tokens of the task files seen fewer than 100 times in pretraining (token: occurrences in the task file);",
        "their embeddings are barely trained and are learned, if at all, during fine-tuning or domain-adaptive MLM:",
        "",
    ]
    for name, rare in rec["rare_in_pretraining"].items():
        rare_text = ", ".join(f"`{t}`: {c}" for t, c in sorted(rare.items(), key=lambda kv: -kv[1])) or "none"
        lines.append(f"- {name}: {rare_text}")
    gate_path = Path(model_dir) / "quality_gate.json"
    lines += ["", "## Quality gate: fine-tuning on Lipophilicity", ""]
    if gate_path.exists():
        gate = json.loads(gate_path.read_text())
        lines += [gate["description"], "", "| model | test RMSE | test R² | seeds |", "|---|---:|---:|---:|"]
        for method, stats in gate["methods"].items():
            lines.append(
                f"| {method} | {stats['rmse']['mean']:.3f} ± {stats['rmse']['std']:.3f} | "
                f"{stats['r2']['mean']:.3f} ± {stats['r2']['std']:.3f} | {stats['rmse']['n']} |"
            )
        last = [r for r in gate["runs"] if r["best_epoch"] == r["epochs_run"] == gate["train_config"]["epochs"]]
        lines += [
            "",
            "Best validation epoch per run: "
            + ", ".join(f"{r['method']} seed {r['seed']}: {r['best_epoch']}/{r['epochs_run']}" for r in gate["runs"])
            + ".",
        ]
        if last:
            lines.append(
                f"{len(last)} of {len(gate['runs'])} fine-tuning runs were still improving at the last epoch: "
                "this budget under-trains, and longer training would likely lower both transformer RMSEs."
            )
        lines += ["", f"Source: {gate['source']}"]
    else:
        lines.append(
            "Not measured yet: the fine-tuning comparison over three seeds has not been run for this checkpoint."
        )
    lines += [
        "",
        "## Intended use and limits",
        "",
        "A teaching backbone: small enough to fine-tune on two CPU cores in minutes. It has seen under a",
        "million drug-like ZINC molecules, about a thousandth of MoLFormer-XL's corpus; expect weaker",
        "representations than MoLFormer, especially for chemistry outside ZINC Clean Leads (metals, large",
        "natural products, boron, phosphorus, silicon and selenium compounds).",
        "",
        "## Licence",
        "",
        "Weights: MIT, as the MOSES corpus they were trained on and as this project.",
        "",
        "## Reproduce",
        "",
        "```bash",
        f"python -m molft_utils.pretraining.corpus --out data/corpus --n-train {corpus['n_train']} "
        f"--n-valid {corpus['n_valid']} --seed {corpus['seed']}",
        f"{rec['command']}",
        "python -m molft_utils.pretraining.pretrain card   # rewrites this card from pretraining.json",
        "```",
        "",
    ]
    return "\n".join(lines)
