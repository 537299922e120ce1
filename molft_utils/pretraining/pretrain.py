"""Pretrain the embedded default backbone: a small MoLFormer-style RoFormer on MOSES SMILES.

MoLFormer (Ross et al., 2022) is a BERT-style encoder with rotary position embeddings trained
with masked-language modelling on 1.1 B PubChem and ZINC SMILES. The embedded backbone keeps
the recipe (regex SMILES tokens, rotary positions, 15 % MLM with 80/10/10 replacement) at a size
that pretrains in about an hour on two CPU cores:

    python -m molft_utils.pretraining.corpus --out data/corpus --n-train 1000000
    python -m molft_utils.pretraining.pretrain --corpus data/corpus --out data/models/molft-roformer-small

``--checkpoint-dir`` makes the run resumable: start the same command again after an
interruption and it continues from the last checkpoint. ``python -m molft_utils.pretraining.pretrain card``
rewrites the model card from the saved ``pretraining.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import save_file
from transformers import AutoTokenizer, RoFormerConfig, RoFormerForMaskedLM

from molft_utils.core.device import autocast_dtype, get_device, seed_everything
from molft_utils.core.settings import REPO_ROOT
from molft_utils.data.descriptors import DESCRIPTOR_NAMES, DescriptorScaler, rdkit_descriptors
from molft_utils.data.loading import EXTERNAL_POOL, LIPOPHILICITY
from molft_utils.models.tokenizer import build_tokenizer, token_counts, unknown_token_rate
from molft_utils.training.mlm import DescriptorHead, MLMConfig, evaluate_descriptors, evaluate_mlm, train_mlm

__all__ = ["backbone_config", "pretrain"]

log = logging.getLogger(__name__)

ROOT = REPO_ROOT
DATA_FILES = {"lipophilicity": (LIPOPHILICITY, "smiles"), "external_pool": (EXTERNAL_POOL, "SMILES")}


def backbone_config(
    vocab_size: int, layers: int = 4, hidden: int = 256, heads: int = 4, intermediate: int = 1024
) -> RoFormerConfig:
    """RoFormer configuration of the embedded backbone (rotary positions, no learned positions)."""
    return RoFormerConfig(
        vocab_size=vocab_size,
        embedding_size=hidden,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=512,
        type_vocab_size=1,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        pad_token_id=0,
    )


def _read_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line]


def pretrain(args: argparse.Namespace, argv: Sequence[str] | None = None) -> dict:
    """Run pretraining as described by the parsed command-line ``args``; return the record.

    ``argv`` (the arguments ``args`` were parsed from; default ``sys.argv[1:]``) is recorded as the command.
    """
    seed_everything(args.seed)
    corpus = Path(args.corpus)
    train = _read_lines(corpus / "train.txt")
    valid = _read_lines(corpus / "valid.txt")
    valid_eval = valid[: args.n_valid_eval] if args.n_valid_eval else valid
    if args.init_from:
        # continued pretraining: same tokenizer and architecture as the starting model
        tokenizer = AutoTokenizer.from_pretrained(args.init_from)
        model = RoFormerForMaskedLM.from_pretrained(args.init_from)
    else:
        tokenizer = build_tokenizer(train[:200_000])
        model = RoFormerForMaskedLM(
            backbone_config(len(tokenizer), args.layers, args.hidden, args.heads, args.intermediate)
        )
    cfg = MLMConfig(
        max_steps=args.max_steps,
        lr=args.lr,
        batch_size=args.batch_size,
        warmup_fraction=args.warmup_fraction,
        eval_every=args.eval_every,
        checkpoint_every=args.checkpoint_every,
        mixed_precision=args.mixed_precision,
        seed=args.seed,
        mlm_probability=args.mlm_probability,
        mlm_weight=args.mlm_weight,
        descriptor_weight=args.descriptor_weight,
    )
    device = get_device(args.device)
    if cfg.descriptor_weight > 0:
        # descriptor targets exist for a fixed slice of the corpus; longer runs cycle over it
        train = train[: args.n_descriptor_molecules]
    n_needed = cfg.max_steps * cfg.batch_size
    if n_needed > len(train):
        log.warning(
            "%d molecules needed for %d steps, corpus has %d: more than one epoch", n_needed, cfg.max_steps, len(train)
        )
    train = train[: min(n_needed, len(train))]
    t0 = time.time()
    desc_kw: dict = {}
    scaler = None
    if cfg.descriptor_weight > 0:
        cache = corpus / "descriptors"
        raw = rdkit_descriptors(train, workers=args.descriptor_workers, cache_dir=cache, progress=True)
        scaler = DescriptorScaler.fit(raw)
        head = DescriptorHead(model.config.hidden_size, len(scaler.names))
        valid_raw = rdkit_descriptors(valid_eval, workers=args.descriptor_workers, cache_dir=cache)
        desc_kw = {
            "descriptors": scaler.transform(raw),
            "valid_descriptors": scaler.transform(valid_raw),
            "descriptor_head": head,
        }
        log.info("descriptor targets: %d molecules x %d descriptors (%.0f s)", len(train), len(scaler.names),
                 time.time() - t0)  # fmt: skip
    history = train_mlm(
        model,
        tokenizer,
        train,
        valid_eval,
        cfg,
        checkpoint_dir=Path(args.checkpoint_dir) if args.checkpoint_dir else None,
        device=device,
        **desc_kw,
    )
    final = evaluate_mlm(model, tokenizer, valid, mixed_precision=cfg.mixed_precision)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    if scaler is not None:
        scaler.save(out / "descriptor_scaler.json")
        head = desc_kw["descriptor_head"]
        save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(out / "descriptor_head.safetensors"))
        final |= {
            f"descriptor_{k}": v
            for k, v in evaluate_descriptors(
                model, head, tokenizer, valid_eval, desc_kw["valid_descriptors"], mixed_precision=cfg.mixed_precision
            ).items()
        }
    corpus_info = json.loads((corpus / "corpus.json").read_text())
    seen_tokens = token_counts(train)
    unk, unseen = {}, {}
    for name, (path, column) in DATA_FILES.items():
        smiles = pd.read_csv(path)[column].tolist()
        unk[name] = unknown_token_rate(tokenizer, smiles)
        counts = token_counts(smiles)
        unseen[name] = {t: c for t, c in counts.items() if seen_tokens[t] < 100}
    record = {
        "name": out.name,
        "command": " ".join(
            shlex.quote(a)
            for a in [
                sys.executable.split("/")[-1],
                "-m",
                "molft_utils.pretraining.pretrain",
                *(sys.argv[1:] if argv is None else argv),
            ]
        ),
        "architecture": model.config.to_dict() | {"model_type": "roformer"},
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "n_parameters_encoder": sum(p.numel() for p in model.roformer.parameters()),
        "vocab_size": len(tokenizer),
        "mlm_config": asdict(cfg),
        "history": history.to_dict(),
        "final_valid": final | {"n_molecules": len(valid)},
        "wall_seconds_total": time.time() - t0,
        "hardware": {
            "device": str(device),
            "autocast_dtype": str(autocast_dtype(device, cfg.mixed_precision)),
            "cpu": platform.processor() or platform.machine(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "corpus": corpus_info,
        "init_from": str(args.init_from) if args.init_from else None,
        "descriptors": None
        if scaler is None
        else {
            "n_molecules": len(train),
            "n_descriptors": len(scaler.names),
            "n_computed": len(DESCRIPTOR_NAMES),
            "scaler": "descriptor_scaler.json",
            "head": "descriptor_head.safetensors (linear, pooled representation -> standardised descriptors)",
        },
        "unknown_token_rate": unk,
        "rare_in_pretraining": unseen,
    }
    (out / "pretraining.json").write_text(json.dumps(record, indent=2) + "\n")
    try:
        write_model_card(out)
    except Exception:  # the weights and the record are saved; the card can be rewritten with `card`
        log.exception("could not write the model card; run `python -m molft_utils.pretraining.pretrain card`")
    return record


def write_model_card(model_dir: Path) -> Path:
    """Write ``README.md`` in ``model_dir`` from ``pretraining.json`` (and ``quality_gate.json``)."""
    from molft_utils.models.model_card import render_model_card

    card = render_model_card(model_dir)
    path = model_dir / "README.md"
    path.write_text(card)
    return path


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if argv[:1] == ["card"]:
        p = argparse.ArgumentParser(prog="python -m molft_utils.pretraining.pretrain card")
        p.add_argument("--model-dir", type=Path, default=ROOT / "data/models/molft-roformer-small")
        a = p.parse_args(argv[1:])
        print(write_model_card(a.model_dir))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corpus", default="data/corpus")
    p.add_argument("--out", default="data/models/molft-roformer-small")
    p.add_argument("--checkpoint-dir", default="runs/pretrain")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=1024)
    p.add_argument("--max-steps", type=int, default=6500)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup-fraction", type=float, default=0.04)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--n-valid-eval", type=int, default=2000)
    p.add_argument("--checkpoint-every", type=int, default=250)
    p.add_argument("--mixed-precision", default="auto")
    p.add_argument("--device", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init-from", default=None, help="continue pretraining from this backbone folder")
    p.add_argument("--mlm-probability", type=float, default=0.15)
    p.add_argument("--mlm-weight", type=float, default=1.0)
    p.add_argument("--descriptor-weight", type=float, default=0.0, help="weight of descriptor regression (MTR)")
    p.add_argument("--n-descriptor-molecules", type=int, default=200_000)
    p.add_argument("--descriptor-workers", type=int, default=2)
    record = pretrain(p.parse_args(argv), argv)
    log.info("done: %s", {k: record[k] for k in ("n_parameters", "final_valid", "wall_seconds_total")})


if __name__ == "__main__":
    main()
