"""A small ablation of backbone v2's pretraining objective, scored on Lipophilicity *validation*.

Each arm continues pretraining the MLM-only backbone (v1) for the same number of steps with one
setting of masking ratio and descriptor-loss weight (:mod:`molft_utils.pretraining.pretrain`,
``--init-from``), then is scored by a linear probe of its frozen features
(:mod:`molft_utils.methods.probe`) on the random split of seed 0: ridge fitted on the training
molecules, RMSE and R² on the validation molecules. The test molecules are never looked at. The
MLM-only arm at the same steps is the control for "more pretraining" versus "the descriptor
objective". ::

    python -m molft_utils.pretraining.ablation --steps 400        # runs missing arms, then scores all
    python -m molft_utils.pretraining.ablation --score-only

Arms run one after another as subprocesses with resumable checkpoints under ``runs/ablation/``; the
table is written to ``runs/ablation/ablation.json`` (copied into the model folder by the final run).
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from molft_utils.core.records import write_json_atomic
from molft_utils.core.settings import REPO_ROOT
from molft_utils.data.loading import load_lipophilicity
from molft_utils.data.splits import get_split
from molft_utils.methods.probe import linear_probe

__all__ = ["ARMS", "run_arm", "score"]

log = logging.getLogger(__name__)

#: name -> (masking ratio, MLM weight, descriptor weight)
ARMS: dict[str, tuple[float, float, float]] = {
    "mlm15": (0.15, 1.0, 0.0),
    "mlm15+desc1": (0.15, 1.0, 1.0),
    "mlm30+desc1": (0.30, 1.0, 1.0),
    "mlm15+desc3": (0.15, 1.0, 3.0),
    "desc1": (0.15, 0.0, 1.0),
}


def run_arm(name: str, steps: int, init_from: Path, root: Path, lr: float = 2e-4) -> Path:
    """Pretrain one arm (resumable) unless its ``pretraining.json`` exists; return its folder."""
    out = root / name
    if (out / "pretraining.json").exists():
        return out
    mask, mlm_w, desc_w = ARMS[name]
    cmd = [
        sys.executable, "-m", "molft_utils.pretraining.pretrain", "--init-from", str(init_from),
        "--out", str(out), "--checkpoint-dir", str(out / "checkpoint"), "--max-steps", str(steps),
        "--lr", str(lr), "--mlm-probability", str(mask), "--mlm-weight", str(mlm_w),
        "--descriptor-weight", str(desc_w), "--eval-every", str(max(steps // 4, 1)),
        "--checkpoint-every", "100",
    ]  # fmt: skip
    log.info("arm %s: %s", name, " ".join(cmd))
    subprocess.run(cmd, check=True, cwd=REPO_ROOT)
    return out


def score(folders: dict[str, Path], seed: int = 0) -> list[dict]:
    """Linear-probe validation metrics of each backbone folder (random split ``seed``)."""
    df = load_lipophilicity()
    split = get_split(df, kind="random", seed=seed)
    parts = {p: df.iloc[getattr(split, p)] for p in ("train", "valid")}
    rows = []
    for name, folder in folders.items():
        probe = linear_probe(folder, {p: list(f.smiles) for p, f in parts.items()},
                             {p: f.label.to_numpy() for p, f in parts.items()})  # fmt: skip
        row = {"arm": name, "probe_valid_rmse": probe["valid"]["rmse"], "probe_valid_r2": probe["valid"]["r2"],
               "probe_alpha": probe["alpha"]}  # fmt: skip
        record_path = folder / "pretraining.json"
        if record_path.exists():
            rec = json.loads(record_path.read_text())
            cfg = rec["mlm_config"]
            row |= {
                "mlm_probability": cfg["mlm_probability"],
                "mlm_weight": cfg.get("mlm_weight", 1.0),
                "descriptor_weight": cfg.get("descriptor_weight", 0.0),
                "steps": rec["history"]["steps"],
                "valid_mlm_loss": rec["final_valid"]["loss"] if cfg.get("mlm_weight", 1.0) > 0 else None,
                "valid_descriptor_r2": rec["final_valid"].get("descriptor_r2"),
                "wall_seconds": rec["wall_seconds_total"],
            }
        rows.append(row)
        log.info("%s", row)
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--arms", nargs="+", default=list(ARMS))
    p.add_argument("--init-from", type=Path, default=REPO_ROOT / "data/models/molft-roformer-small-mlm")
    p.add_argument("--root", type=Path, default=REPO_ROOT / "runs/ablation")
    p.add_argument("--score-only", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    folders = {"v1 (start, no further training)": a.init_from}
    for name in a.arms:
        if not a.score_only:
            run_arm(name, a.steps, a.init_from, a.root)
        if (a.root / name / "pretraining.json").exists():
            folders[name] = a.root / name
    rows = score(folders)
    write_json_atomic(a.root / "ablation.json", {"steps_per_arm": a.steps, "init_from": str(a.init_from),
                                                  "scored_on": "Lipophilicity random split seed 0, validation",
                                                  "rows": rows})  # fmt: skip


if __name__ == "__main__":
    main()
