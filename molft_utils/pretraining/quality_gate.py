"""Quality gate of the embedded backbones: fine-tuned, linear probe, and random forests, one table.

For each backbone (v2, the default, and v1, MLM only) and each split (random seeds 0, 1, 2 and the
scaffold split) it fine-tunes a regression head with early stopping on validation, fits a linear probe
on the frozen features (:mod:`molft_utils.methods.probe`), and fits random forests on ECFP4, RDKit
descriptors and both (:mod:`molft_utils.methods.baselines`) on the same molecules. Every row is
``backbone, method, split, seed, rmse, r2`` (test metrics) plus the fine-tune's convergence record and
seconds; rows are appended to ``quality_gate.json`` in each model folder as they finish, so an
interrupted gate resumes where it stopped (a row is redone only if its configuration changed)::

    python -m molft_utils.pretraining.quality_gate            # all rows
    python -m molft_utils.pretraining.quality_gate --smoke    # a few molecules, writes nothing

Methods: ``finetuned``, ``linear_probe``, ``ecfp4_rf``, ``rdkit_rf``, ``ecfp4+rdkit_rf`` (forests do
not depend on the backbone and are listed once, with ``backbone = "-"``).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch

from molft_utils.core.records import environment_info, write_json_atomic
from molft_utils.data.loading import load_lipophilicity
from molft_utils.data.splits import get_split
from molft_utils.methods.baselines import random_forest_baseline
from molft_utils.methods.probe import linear_probe
from molft_utils.models.backbone import DEFAULT_BACKBONE, MLM_BACKBONE, RegressionModel, load_backbone
from molft_utils.pretraining.pretrain import write_model_card
from molft_utils.training.convergence import fit_convergence
from molft_utils.training.metrics import regression_metrics
from molft_utils.training.train import TrainConfig, fit, predict

__all__ = ["SPLITS", "gate_rows", "run_quality_gate"]

log = logging.getLogger(__name__)

#: (split kind, seed) of the gate.
SPLITS: tuple[tuple[str, int], ...] = (("random", 0), ("random", 1), ("random", 2), ("scaffold", 0))
FORESTS = ("ecfp4", "rdkit", "ecfp4+rdkit")


def _row_key(row: dict) -> tuple:
    return row["backbone"], row["method"], row["split"], row["seed"]


def gate_rows(
    backbones: dict[str, Path],
    splits: Sequence[tuple[str, int]] = SPLITS,
) -> list[tuple[str, str, str, int]]:
    """The planned rows ``(backbone, method, split, seed)``, most informative first (random seed 0 first)."""
    rows = []
    for kind, seed in splits:
        for name in backbones:
            rows.append((name, "finetuned", kind, seed))
            rows.append((name, "linear_probe", kind, seed))
        rows.extend(("-", f"{f}_rf", kind, seed) for f in FORESTS)
    return rows


def _one_row(
    df: pd.DataFrame,
    backbone: str,
    path: Path | None,
    method: str,
    kind: str,
    seed: int,
    config: TrainConfig,
    limit: int | None,
) -> dict:
    split = get_split(df, kind=kind, seed=seed)
    parts = {name: df.iloc[getattr(split, name)[:limit]] for name in ("train", "valid", "test")}
    smiles = {p: list(f.smiles) for p, f in parts.items()}
    labels = {p: f.label.to_numpy() for p, f in parts.items()}
    row: dict = {"backbone": backbone, "method": method, "split": kind, "seed": seed}
    t0 = time.time()
    if method.endswith("_rf"):
        pred = random_forest_baseline(smiles["train"], labels["train"], smiles["test"], seed=seed,
                                      features=method.removesuffix("_rf"))  # fmt: skip
        metrics = regression_metrics(labels["test"], pred)
    elif method == "linear_probe":
        probe = linear_probe(path, smiles, labels)
        metrics = probe["test"]
        row |= {"valid_rmse": probe["valid"]["rmse"], "alpha": probe["alpha"]}
    else:
        encoder, tokenizer = load_backbone(path)
        torch.manual_seed(seed)
        model = RegressionModel(encoder)
        cfg = TrainConfig(**{**asdict(config), "seed": seed})
        res = fit(model, tokenizer, smiles["train"], labels["train"].tolist(), smiles["valid"],
                  labels["valid"].tolist(), cfg, progress=False)  # fmt: skip
        metrics = regression_metrics(labels["test"], predict(model, tokenizer, smiles["test"], res.scaler))
        row |= {"valid_rmse": res.best_valid_rmse, "convergence": fit_convergence(res),
                "molecules_per_second": res.molecules_per_second}  # fmt: skip
    row |= {"rmse": metrics["rmse"], "r2": metrics["r2"], "mae": metrics["mae"], "seconds": time.time() - t0}
    return row


def run_quality_gate(
    config: TrainConfig,
    backbones: dict[str, Path] | None = None,
    out_dirs: Sequence[Path] = (DEFAULT_BACKBONE, MLM_BACKBONE),
    splits: Sequence[tuple[str, int]] = SPLITS,
    limit: int | None = None,
) -> dict:
    """Run every missing gate row; return the record (written to ``out_dirs`` unless ``limit`` is set)."""
    backbones = backbones or {"molft-roformer-small (v2)": DEFAULT_BACKBONE,
                              "molft-roformer-small-mlm (v1)": MLM_BACKBONE}  # fmt: skip
    description = (
        "Lipophilicity, random 80/10/10 splits (seeds 0-2) and the scaffold split (data/splits); test metrics. "
        f"finetuned: `molft_utils.training.train.fit`, at most {config.epochs} epochs, early stopping on "
        f"validation RMSE (patience {config.patience}), lr backbone {config.lr_backbone}, head {config.lr_head}, "
        f"batch {config.batch_size}; linear_probe: ridge on frozen mean-pooled features, penalty by "
        "leave-one-out on train; *_rf: 500-tree random forests on ECFP4 counts, RDKit descriptors, or both."
    )
    settings = {"train_config": asdict(config), "backbones": {k: str(v) for k, v in backbones.items()}}
    record = {"description": description, "settings": settings, "rows": [],
              "source": "`python -m molft_utils.pretraining.quality_gate`"}  # fmt: skip
    path0 = Path(out_dirs[0]) / "quality_gate.json"
    if limit is None and path0.exists():
        old = json.loads(path0.read_text())
        if old.get("settings") == settings:
            record["rows"] = old.get("rows", [])
    done = {_row_key(r) for r in record["rows"]}
    record["planned_rows"] = len(gate_rows(backbones, splits))
    df = load_lipophilicity()  # validated once (seconds), not per row
    for backbone, method, kind, seed in gate_rows(backbones, splits):
        if (backbone, method, kind, seed) in done:
            continue
        row = _one_row(df, backbone, backbones.get(backbone), method, kind, seed, config, limit)
        log.info("%s", {k: v for k, v in row.items() if k != "convergence"})
        record["rows"].append(row)
        record["environment"] = environment_info()
        if limit is None:
            for d in out_dirs:
                write_json_atomic(Path(d) / "quality_gate.json", record)
    if limit is None:
        for d in out_dirs:
            try:
                write_model_card(Path(d))
            except Exception:  # the rows are saved; the card can be rewritten with `pretrain card`
                log.exception("could not write the model card of %s", d)
    return record


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--smoke", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = TrainConfig(epochs=1 if a.smoke else a.epochs, patience=a.patience)
    splits = SPLITS[:1] if a.smoke else SPLITS
    run_quality_gate(cfg, splits=splits, limit=64 if a.smoke else None)


if __name__ == "__main__":
    main()
