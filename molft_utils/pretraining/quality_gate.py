"""Quality gate of the embedded backbone: pretrained vs random initialisation vs ECFP4 + RF.

Fine-tunes the backbone and the same architecture from random initialisation on the
Lipophilicity random split for several seeds with the Foundation training loop, fits ECFP4 +
RandomForest on the same splits, and writes ``quality_gate.json`` next to the backbone, from which
the model card's table is rendered::

    python -m molft_utils.pretraining.quality_gate --seeds 0 1 2

``--smoke`` runs a few molecules and one epoch (used by the tests).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from molft_utils.core.records import environment_info, write_json_atomic
from molft_utils.data.loading import load_lipophilicity
from molft_utils.data.splits import get_split
from molft_utils.methods.baselines import random_forest_baseline
from molft_utils.models.backbone import DEFAULT_BACKBONE, RegressionModel, load_backbone, random_init_like
from molft_utils.pretraining.pretrain import write_model_card
from molft_utils.training.metrics import aggregate, regression_metrics
from molft_utils.training.train import TrainConfig, fit, predict

__all__ = ["run_quality_gate"]

log = logging.getLogger(__name__)


def run_quality_gate(
    seeds: Sequence[int], config: TrainConfig, model_dir: Path = DEFAULT_BACKBONE, limit: int | None = None
) -> dict:
    """Fine-tune pretrained and random-init backbones and fit ECFP4 + RF for each seed.

    Returns the record written to ``model_dir / "quality_gate.json"`` (unless ``limit`` is set,
    which subsamples every split for smoke runs and writes nothing).
    """
    df = load_lipophilicity()
    per_method: dict[str, list[dict]] = {"pretrained + head": [], "random init + head": [], "ECFP4 + RandomForest": []}
    runs = []
    for seed in seeds:
        split = get_split(df, kind="random", seed=seed)
        parts = {name: df.iloc[getattr(split, name)[:limit]] for name in ("train", "valid", "test")}
        t0 = time.time()
        rf_pred = random_forest_baseline(
            parts["train"].smiles.tolist(), parts["train"].label.to_numpy(), parts["test"].smiles.tolist(), seed=seed
        )
        per_method["ECFP4 + RandomForest"].append(regression_metrics(parts["test"].label, rf_pred))
        for name, pretrained in (("pretrained + head", True), ("random init + head", False)):
            backbone, tokenizer = load_backbone(model_dir)
            torch.manual_seed(seed)
            if not pretrained:
                backbone = random_init_like(backbone)
            model = RegressionModel(backbone)
            cfg = TrainConfig(**{**asdict(config), "seed": seed})
            res = fit(
                model,
                tokenizer,
                parts["train"].smiles.tolist(),
                parts["train"].label.tolist(),
                parts["valid"].smiles.tolist(),
                parts["valid"].label.tolist(),
                cfg,
            )
            pred = predict(model, tokenizer, parts["test"].smiles.tolist(), res.scaler)
            metrics = regression_metrics(parts["test"].label, pred)
            per_method[name].append(metrics)
            runs.append(
                {
                    "seed": seed,
                    "method": name,
                    "best_epoch": res.best_epoch,
                    "epochs_run": len(res.history),
                    "molecules_per_second": res.molecules_per_second,
                    "test": metrics,
                }
            )
            log.info("seed %d %s: test RMSE %.3f (best epoch %d)", seed, name, metrics["rmse"], res.best_epoch)
        log.info("seed %d done in %.0f s", seed, time.time() - t0)
    record = {
        "description": (
            f"Lipophilicity, random 80/10/10 split (data/splits), seeds {list(seeds)}; fine-tuning with "
            f"`molft_utils.training.train.fit` ({config.epochs} epochs max, early stopping on validation RMSE, "
            f"lr backbone {config.lr_backbone}, lr head {config.lr_head}, batch {config.batch_size}); "
            "test metrics, mean ± sample std over seeds."
        ),
        "source": "`python -m molft_utils.pretraining.quality_gate`; per-run rows in quality_gate.json",
        "train_config": asdict(config),
        "methods": {m: aggregate(v) for m, v in per_method.items()},
        "runs": runs,
        "environment": environment_info(),
    }
    if limit is None:
        write_json_atomic(Path(model_dir) / "quality_gate.json", record)
        write_model_card(Path(model_dir))
    return record


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--model-dir", type=Path, default=DEFAULT_BACKBONE)
    p.add_argument("--smoke", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = TrainConfig(epochs=1 if a.smoke else a.epochs)
    record = run_quality_gate(a.seeds, cfg, a.model_dir, limit=64 if a.smoke else None)
    for method, stats in record["methods"].items():
        log.info("%s: RMSE %.3f ± %.3f (n=%d)", method, stats["rmse"]["mean"], stats["rmse"]["std"], stats["rmse"]["n"])


if __name__ == "__main__":
    main()
