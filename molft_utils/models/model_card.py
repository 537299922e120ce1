"""Render the embedded backbone's model card from the records its runs wrote.

Every number in the card is read from ``pretraining.json`` (written by
:mod:`molft_utils.pretraining.pretrain`) and, when present, ``quality_gate.json`` (fine-tuning results);
nothing is typed by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["PAIRS", "paired_interval", "render_model_card"]


def _fmt_int(n: float) -> str:
    return f"{int(n):,}"


def _f4(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _ablation_steps(model_dir: Path) -> int:
    return json.loads((model_dir / "ablation.json").read_text())["steps_per_arm"]


def _ablation_section(model_dir: Path) -> list[str]:
    path = model_dir / "ablation.json"
    if not path.exists():
        return []
    ab = json.loads(path.read_text())
    lines = [
        "",
        "## Ablation of the pretraining objective",
        "",
        f"Each arm continued pretraining `{Path(ab['init_from']).name}` for {ab['steps_per_arm']} steps (batch 128) "
        f"and was scored by a linear probe of its frozen features on {ab['scored_on']} (ridge fitted on the "
        "training molecules; the test molecules were not used). Architecture (depth × width) was not ablated: "
        "keeping v1's shape keeps fine-tuning throughput and the PEFT target modules unchanged.",
        "",
        "| arm | masking | MLM weight | descriptor weight | probe valid RMSE | probe valid R² | "
        "held-out MLM loss | held-out descriptor R² | minutes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in ab["rows"]:
        minutes = f"{r['wall_seconds'] / 60:.1f}" if r.get("wall_seconds") else "-"
        mask = f"{r['mlm_probability']:.0%}" if "mlm_probability" in r else "-"
        lines.append(
            f"| {r['arm']} | {mask} | {r.get('mlm_weight', '-')} | {r.get('descriptor_weight', '-')} | "
            f"{r['probe_valid_rmse']:.3f} | {r['probe_valid_r2']:.3f} | {_f4(r.get('valid_mlm_loss'))} | "
            f"{_f4(r.get('valid_descriptor_r2'))} | {minutes} |"
        )
    if ab.get("chosen"):
        lines += ["", f"Chosen for the full run: **{ab['chosen']}** ({ab.get('reason', 'lowest probe validation RMSE')})."]
    return lines


def _overlap_section(model_dir: Path) -> list[str]:
    path = model_dir / "overlap.json"
    if not path.exists():
        return []
    ov = json.loads(path.read_text())
    lines = [
        "",
        "## Overlap of the evaluation molecules with the pretraining corpus",
        "",
        f"Corpus: {ov['corpus_slice']}; matched by {ov['method']}. Pretraining used no labels, but a test molecule the",
        "encoder has read during pretraining is less of a test of generalisation.",
        "",
        "| part | molecules | in corpus (InChIKey) | same skeleton |",
        "|---|---:|---:|---:|",
    ]
    for name, r in ov["parts"].items():
        lines.append(f"| {name} | {r['n']} | {r['exact']} ({r['exact_fraction']:.1%}) | {r['skeleton']} |")
    return lines


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    m = sum(values) / len(values)
    if len(values) == 1:
        return f"{m:.3f}"
    sd = (sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return f"{m:.3f} ± {sd:.3f}"


def _gate_section(model_dir: Path) -> list[str]:
    path = model_dir / "quality_gate.json"
    lines = ["", "## Quality gate on Lipophilicity", ""]
    if not path.exists():
        return lines + ["Not measured yet for this checkpoint (`python -m molft_utils.pretraining.quality_gate`)."]
    gate = json.loads(path.read_text())
    rows = gate.get("rows")
    if rows is None:
        return lines + ["The gate record has an older format; rerun `python -m molft_utils.pretraining.quality_gate`."]
    lines += [
        gate["description"],
        "",
        "| backbone | method | random: test RMSE | random: test R² | seeds | scaffold: test RMSE | scaffold: test R² |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    keys = list(dict.fromkeys((r["backbone"], r["method"]) for r in rows))
    for b, m in keys:
        rnd = [r for r in rows if (r["backbone"], r["method"], r["split"]) == (b, m, "random")]
        sca = [r for r in rows if (r["backbone"], r["method"], r["split"]) == (b, m, "scaffold")]
        lines.append(
            f"| {b} | {m} | {_mean_sd([r['rmse'] for r in rnd])} | {_mean_sd([r['r2'] for r in rnd])} | {len(rnd)} | "
            f"{_mean_sd([r['rmse'] for r in sca])} | {_mean_sd([r['r2'] for r in sca])} |"
        )
    ft = [r for r in rows if r["method"] == "finetuned"]
    if ft:
        conv = [r for r in ft if r.get("convergence", {}).get("converged")]
        lines += [
            "",
            f"Fine-tunes converged (stopped early on validation, or last-window gain below the threshold): "
            f"{len(conv)} of {len(ft)}. Best epoch / epochs run: "
            + ", ".join(
                f"{r['backbone']} {r['split']} {r['seed']}: {r['convergence'].get('best_epoch')}/"
                f"{r['convergence'].get('epochs_run')}"
                for r in ft
                if r.get("convergence")
            )
            + ".",
        ]
    lines += _paired_section(rows)
    lines += _targets(rows)
    lines += _what_was_tried(model_dir, rows)
    missing = gate.get("planned_rows", 0) - len(rows)
    if missing > 0:
        lines += ["", f"**Incomplete**: {missing} planned rows have not run yet; the gate resumes where it stopped."]
    lines += ["", f"Source: {gate['source']}; per-run rows in quality_gate.json."]
    return lines


#: Paired comparisons of the card: (method row, reference row), each ``(backbone tag, method)``.
PAIRS = (
    (("(v2)", "finetuned"), ("(v1)", "finetuned")),
    (("(v2)", "linear_probe"), ("(v1)", "linear_probe")),
    (("(v2)", "finetuned"), ("-", "ecfp4_rf")),
    (("(v2)", "finetuned"), ("-", "rdkit_rf")),
    (("(v2)", "finetuned"), ("-", "ecfp4+rdkit_rf")),
    (("(v1)", "finetuned"), ("-", "ecfp4_rf")),
)


def paired_interval(diffs: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean of paired differences and its two-sided Student-t interval (NaN bounds for fewer than two)."""
    from scipy import stats

    n = len(diffs)
    mean = sum(diffs) / n
    if n < 2:
        return mean, float("nan"), float("nan")
    sd = (sum((d - mean) ** 2 for d in diffs) / (n - 1)) ** 0.5
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / n**0.5
    return mean, mean - half, mean + half


def _paired_section(rows: list[dict]) -> list[str]:
    """Paired test-RMSE differences over the random seeds (same split, same seed), with a t interval and verdict."""

    def seeds_of(tag: str, method: str) -> dict[int, float]:
        return {r["seed"]: r["rmse"] for r in rows if r["split"] == "random" and r["method"] == method
                and (r["backbone"] == "-" if tag == "-" else tag in r["backbone"])}  # fmt: skip

    table = []
    for (tag, method), (ref_tag, ref_method) in PAIRS:
        a, b = seeds_of(tag, method), seeds_of(ref_tag, ref_method)
        common = sorted(set(a) & set(b))
        if len(common) < 2:
            continue
        diffs = [a[s] - b[s] for s in common]
        mean, lo, hi = paired_interval(diffs)
        word = "better" if hi < 0 else "worse" if lo > 0 else "not distinguishable"
        name = f"{method} {tag}" if tag != "-" else method
        ref = f"{ref_method} {ref_tag}" if ref_tag != "-" else ref_method
        table.append(f"| {name} | {ref} | {mean:+.3f} | [{lo:+.3f}, {hi:+.3f}] | "
                     f"{sum(d < 0 for d in diffs)}/{len(diffs)} | {word} |")  # fmt: skip
    if not table:
        return []
    return [
        "",
        "Paired differences of test RMSE (method − reference, same random split and seed; negative is better), "
        "95 % Student-t interval over the seeds; the verdict is decided by the interval:",
        "",
        "| method | reference | mean Δ RMSE | 95 % CI | seeds better | verdict |",
        "|---|---|---:|---|---:|---|",
        *table,
    ]


def _what_was_tried(model_dir: Path, rows: list[dict]) -> list[str]:
    """For missed targets: the arms the ablation tried (from ablation.json) and the knobs it did not turn."""
    text = "\n".join(_targets(rows))
    path = model_dir / "ablation.json"
    if "missed" not in text or not path.exists():
        return []
    ab = json.loads(path.read_text())
    arms = ", ".join(r["arm"] for r in ab["rows"])
    return [
        "",
        f"Where a target is missed: the ablation tried the arms {arms} ({ab['steps_per_arm']} steps each, chosen "
        "by validation linear probe); the chosen arm then ran longer for this checkpoint. Not tried: depth × width, "
        "pretraining beyond the steps recorded above, and a larger or differently filtered corpus. Descriptor "
        "regression moved the frozen features (the linear-probe rows) more than the fine-tuned model (the "
        "finetuned rows), whose difference from v1 the paired table above measures.",
    ]


def _targets(rows: list[dict]) -> list[str]:
    """The backbone issue's targets, measured against v2 rows (where v2 rows exist)."""
    v2 = [r for r in rows if "(v2)" in r["backbone"]]
    if not v2:
        return []

    def pick(method: str, split: str, backbone_rows: list[dict]) -> dict[int, float]:
        return {r["seed"]: r for r in backbone_rows if r["method"] == method and r["split"] == split}

    ft, rf = pick("finetuned", "random", v2), pick("ecfp4_rf", "random", rows)
    out = ["", "Targets (v2):", ""]
    if len(ft) == 3:
        mean = sum(r["rmse"] for r in ft.values()) / 3
        out.append(f"- fine-tuned test RMSE ≤ 0.68 over random seeds 0-2: {mean:.3f} "
                   + ("(met)" if mean <= 0.68 else f"(missed by {mean - 0.68:.3f})"))
    else:
        out.append(f"- fine-tuned test RMSE ≤ 0.68 over random seeds 0-2: {len(ft)} of 3 seeds measured so far")
    common = sorted(set(ft) & set(rf))
    if common:
        wins = sum(ft[s]["rmse"] < rf[s]["rmse"] for s in common)
        state = "met" if wins == len(common) == 3 else ("missed" if len(common) == 3 else "incomplete")
        out.append(f"- lower than ECFP4 + RF on every seed: lower on {wins} of {len(common)} seeds ({state})")
    sca = pick("finetuned", "scaffold", v2)
    if sca:
        r = next(iter(sca.values()))["rmse"]
        out.append(f"- scaffold split ≤ 0.80: {r:.3f} " + ("(met)" if r <= 0.80 else f"(missed by {r - 0.80:.3f})"))
    probe = pick("linear_probe", "random", v2)
    if probe:
        r2 = sum(r["r2"] for r in probe.values()) / len(probe)
        out.append(f"- linear-probe R² ≥ 0.5: {r2:.3f} over {len(probe)} seed(s) "
                   + ("(met)" if r2 >= 0.5 else f"(missed by {0.5 - r2:.3f})"))
    return out


def render_model_card(model_dir: Path) -> str:
    """Return the Markdown model card for the backbone saved in ``model_dir``."""
    rec = json.loads((Path(model_dir) / "pretraining.json").read_text())
    arch = rec["architecture"]
    hist = rec["history"]
    corpus = rec["corpus"]
    final = rec["final_valid"]
    desc = rec.get("descriptors")
    cfg = rec["mlm_config"]
    if desc:
        title = f"# {rec['name']}: the embedded default backbone of molft (v2: MLM + descriptor regression)"
        objective = (
            "pretrained by this project with masked-language modelling **plus** multi-task regression of "
            f"{desc['n_descriptors']} standardised RDKit 2D descriptors from the mean-pooled representation "
            "(MolBERT's PhysChemPred, ChemBERTa-2's MTR)"
        )
    else:
        title = f"# {rec['name']}: the MLM-only embedded backbone of molft (v1)"
        objective = "pretrained by this project with masked-language modelling only (the MoLFormer objective)"
    lines = [
        title,
        "",
        "A small MoLFormer-style SMILES encoder (BERT-style transformer with rotary position embeddings,",
        f"`transformers` RoFormer classes) {objective}, so that every notebook runs offline.",
        'Load it by name: `load_backbone("' + rec["name"] + '")`. The real MoLFormer-XL stays one parameter away:',
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
        f"| molecules seen{' (this run)' if rec.get('init_from') else ''} | {_fmt_int(hist['molecules_seen'])} |",
        f"| tokens seen | {_fmt_int(hist['tokens_seen'])} |",
        f"| optimiser steps | {_fmt_int(hist['steps'])} (batch {rec['mlm_config']['batch_size']}, "
        f"AdamW lr {rec['mlm_config']['lr']}, cosine with {rec['mlm_config']['warmup_fraction']:.0%} warm-up) |",
        f"| masking | {rec['mlm_config']['mlm_probability']:.0%} of tokens; 80 % `<mask>`, 10 % random, 10 % kept |",
        *(
            [f"| started from | `{Path(rec['init_from']).name}` (continued pretraining: same tokenizer and architecture) |"]
            if rec.get("init_from")
            else []
        ),
        *(
            [
                f"| descriptor targets | {desc['n_descriptors']} of {desc['n_computed']} RDKit descriptors (the rest "
                f"near-constant on the slice), standardised by `{desc['scaler']}`, for the first "
                f"{_fmt_int(desc['n_molecules'])} training molecules |",
                f"| loss | {cfg.get('mlm_weight', 1.0)} × MLM + {cfg.get('descriptor_weight', 0.0)} × descriptor MSE |",
                f"| held-out descriptor R² | {final.get('descriptor_r2', float('nan')):.4f} (mean over descriptors, "
                "unmasked input) |",
            ]
            if desc
            else []
        ),
        f"| wall time | {hist['wall_seconds'] / 60:.1f} min training, {rec['wall_seconds_total'] / 60:.1f} min in all |",
        f"| hardware | {rec['hardware']['device']} ({rec['hardware']['cpu']}), {rec['hardware']['torch_threads']} threads, "
        f"autocast {rec['hardware']['autocast_dtype']}, torch {rec['hardware']['torch']} |",
        f"| held-out MLM loss | {final['loss']:.4f} (cross-entropy on masked tokens, {_fmt_int(final['n_tokens'])} tokens) |",
        f"| held-out MLM accuracy | {final['accuracy']:.4f} |",
        "",
        "Held-out curve (every evaluation of the run):",
        "",
        "| step | molecules seen | held-out loss | held-out accuracy | held-out descriptor R² |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in hist["rows"]:
        lines.append(
            f"| {row['step']} | {_fmt_int(row['molecules_seen'])} | {_f4(row.get('valid_loss'))} | "
            f"{_f4(row.get('valid_accuracy'))} | {_f4(row.get('valid_descriptor_r2'))} |"
        )
    lines += _ablation_section(Path(model_dir))
    lines += _overlap_section(Path(model_dir))
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
    lines += _gate_section(Path(model_dir))
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
        *([f"python -m molft_utils.pretraining.ablation --steps {_ablation_steps(Path(model_dir))}"]
          if (Path(model_dir) / "ablation.json").exists() else []),
        f"{rec['command']}",
        "python -m molft_utils.pretraining.quality_gate",
        "python -m molft_utils.pretraining.pretrain card   # rewrites this card from pretraining.json",
        "```",
        "",
    ]
    return "\n".join(lines)
