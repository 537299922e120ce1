"""Fine-tuning throughput benchmark: molecules per second for precision × batch size.

Times real optimisation steps of :class:`~molft_utils.models.RegressionModel` on Lipophilicity
training molecules with the same batching as :func:`molft_utils.train.fit` (length-bucketed,
padding to the longest molecule in the batch), after a warm-up::

    python -m molft_utils.benchmark --batch-sizes 32 64 128 --precisions no bf16 --steps 30

writes ``reports/benchmark/throughput.json`` (machine, threads, per-setting molecules/s). The README
quotes that file. Numbers depend on what else runs on the machine: run it on an idle one.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from molft_utils.core.device import autocast, autocast_dtype, get_device, seed_everything
from molft_utils.core.records import REPO_ROOT, environment_info, write_json_atomic
from molft_utils.data.loading import load_lipophilicity
from molft_utils.models.backbone import RegressionModel, load_backbone
from molft_utils.training.batching import bucketed_batches
from molft_utils.training.train import _encode, _pad

__all__ = ["measure_throughput", "run_benchmark"]

log = logging.getLogger(__name__)


def measure_throughput(
    model: RegressionModel,
    tokenizer,
    smiles: Sequence[str],
    batch_size: int,
    mixed_precision: str = "auto",
    steps: int = 30,
    warmup: int = 5,
    seed: int = 0,
) -> dict[str, float]:
    """Time ``steps`` AdamW training steps (after ``warmup`` untimed ones).

    Returns
    -------
    dict
        ``molecules_per_second``, ``seconds_per_step``, ``mean_tokens`` (padded tokens per molecule).
    """
    device = get_device()
    dtype = autocast_dtype(device, mixed_precision)
    seed_everything(seed)
    model.to(device).train()
    ids = _encode(tokenizer, smiles)
    batches = bucketed_batches([len(x) for x in ids], batch_size, np.random.default_rng(seed), 20)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    n_mol, padded, seconds = 0, 0, 0.0
    for i in range(warmup + steps):
        idx = batches[i % len(batches)]
        batch = _pad(tokenizer, [ids[j] for j in idx], device)
        target = torch.zeros(len(idx), device=device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with autocast(device, dtype):
            loss = torch.nn.functional.mse_loss(model(**batch).float(), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            seconds += time.perf_counter() - t0
            n_mol += len(idx)
            padded += batch["input_ids"].numel()
    return {
        "molecules_per_second": n_mol / seconds,
        "seconds_per_step": seconds / steps,
        "mean_tokens": padded / n_mol,
    }


def run_benchmark(
    batch_sizes: Sequence[int] = (32, 64, 128),
    precisions: Sequence[str] = ("no", "bf16"),
    steps: int = 30,
    model_name: str | None = None,
) -> dict:
    """Measure every (precision, batch size) pair on fresh copies of the backbone."""
    smiles = load_lipophilicity().smiles.tolist()
    rows = []
    for precision in precisions:
        for bs in batch_sizes:
            backbone, tokenizer = load_backbone(model_name)
            model = RegressionModel(backbone)
            res = measure_throughput(model, tokenizer, smiles, bs, precision, steps=steps)
            rows.append({"precision": precision, "batch_size": bs, **res})
            log.info("%s batch %d: %.0f molecules/s", precision, bs, res["molecules_per_second"])
    return {
        "model": model_name or "default",
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "device": str(get_device()),
        "steps": steps,
        "results": rows,
        "environment": environment_info(),
    }


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--precisions", nargs="+", default=["no", "bf16"])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--model", default=None)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "benchmark" / "throughput.json")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    record = run_benchmark(a.batch_sizes, a.precisions, a.steps, a.model)
    write_json_atomic(a.out, record)


if __name__ == "__main__":
    main()
