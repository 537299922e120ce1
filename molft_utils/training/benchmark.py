"""Fine-tuning and inference throughput, with the machine's own matmul roofline measured in the same run.

``python -m molft_utils.training.benchmark`` (its log is time-stamped; keep it under ~4 minutes with ``--steps``)

1. times bf16 and fp32 matrix products of the model's shapes (forward and both backward products
   of every linear layer, at each batch size's token count): the *roofline* FLOP rate;
2. times real AdamW training steps of :class:`~molft_utils.models.RegressionModel` on
   Lipophilicity molecules, batched as :func:`molft_utils.train.fit` batches them, and inference
   as :func:`molft_utils.train.predict` does, at batch 16/32/64/128;
3. prints molecules/s and the fraction of the roofline (achieved matmul FLOP/s ÷ the measured
   matmul rate) for each, plus the speed-up of the fast compute path over transformers' eager one
   at batch 32 (bf16, same run, alternating blocks so that other jobs on the machine affect both);
4. writes ``reports/benchmark/throughput.json`` (schema 2; the per-row keys of schema 1 are kept).

``python -m molft_utils.training.benchmark --table`` prints the README's Markdown table from that file
without measuring. The measurements themselves (FLOP count, roofline, timed steps, profile) are
:mod:`molft_utils.training.throughput`'s; FLOPs counted: ``2·P·T`` per sequence forward for the ``P`` matmul
weights of the backbone at ``T`` padded tokens, plus ``4·layers·T²·hidden`` for the attention products, plus the
head; a training step is three times its forward (forward, input and weight gradients).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from molft_utils.core.device import get_device
from molft_utils.core.machine import cpu_name, machine_info
from molft_utils.core.records import REPO_ROOT, environment_info, write_json_atomic
from molft_utils.data.loading import load_lipophilicity
from molft_utils.models.backbone import RegressionModel, load_backbone
from molft_utils.training.throughput import (
    interleaved_speedup,
    matmul_rate,
    measure_inference,
    measure_throughput,
    model_shape,
    profile_training_step,
    roofline_fraction,
)

__all__ = [
    "README_END",
    "README_START",
    "format_table",
    "parallel_throughput",
    "run_benchmark",
    "update_readme",
]

log = logging.getLogger(__name__)

OUT = REPO_ROOT / "reports" / "benchmark" / "throughput.json"
SCHEMA = 2


_DTYPES = {"bf16": torch.bfloat16, "no": torch.float32}


def run_benchmark(
    batch_sizes: Sequence[int] = (16, 32, 64, 128),
    precisions: Sequence[str] = ("bf16", "no"),
    steps: int = 30,
    model_name: str | None = None,
    compare_batch: int | None = 32,
    inference_molecules: int = 2048,
) -> dict:
    """Roofline, training and inference throughput for every (precision, batch size), in one run.

    ``compare_batch`` also times transformers' eager RoFormer path (``RegressionModel(fast=False)``)
    against the fast one at that batch size in bf16, in alternating blocks
    (:func:`interleaved_speedup`), for the speed-up measured in the same run.
    """
    smiles = load_lipophilicity().smiles.tolist()
    backbone0, tokenizer = load_backbone(model_name)
    shape = model_shape(RegressionModel(backbone0))
    rows, roofline = [], {}
    for precision in precisions:
        dtype = _DTYPES.get(precision, torch.float32)
        for bs in batch_sizes:
            for impl in ["fast"]:
                for mode in ("train", "infer"):
                    backbone, _ = load_backbone(model_name)
                    model = RegressionModel(backbone, fast=impl == "fast")
                    if mode == "train":
                        res = measure_throughput(model, tokenizer, smiles, bs, precision, steps=steps)
                    else:
                        res = measure_inference(model, tokenizer, smiles, bs, precision, inference_molecules)
                    tokens = round(bs * res["mean_tokens"])
                    key = f"{precision}/{mode}/{tokens}"
                    if key not in roofline:
                        roofline[key] = matmul_rate(shape.linears, tokens, dtype, training=mode == "train")
                    rate = roofline[key]
                    frac = roofline_fraction(res["flops"], res["seconds"], rate)
                    rows.append(
                        {
                            "mode": mode,
                            "implementation": impl,
                            "precision": precision,
                            "batch_size": bs,
                            "molecules_per_second": res["molecules_per_second"],
                            "seconds_per_step": res["seconds_per_step"],
                            "mean_tokens": res["mean_tokens"],
                            "gflop_per_molecule": res["flops"] / (res["molecules_per_second"] * res["seconds"]) / 1e9,
                            "achieved_gflops": res["flops"] / res["seconds"] / 1e9,
                            "roofline_gflops": rate / 1e9,
                            "roofline_fraction": frac,
                        }
                    )
                    log.info(
                        "%-5s %-5s %-4s batch %3d: %6.0f molecules/s, %5.1f GFLOP/s of %5.1f (%.0f %% of roofline)",
                        mode, impl, precision, bs, res["molecules_per_second"], res["flops"] / res["seconds"] / 1e9,
                        rate / 1e9, 100 * frac,
                    )  # fmt: skip
    speedups = {}
    if compare_batch:
        speedups = interleaved_speedup(
            lambda fast: RegressionModel(load_backbone(model_name)[0], fast=fast), tokenizer, smiles, compare_batch
        )
        log.info("fast over eager, bf16 batch %d, interleaved: %s", compare_batch, speedups)
    return {
        "schema": SCHEMA,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "model": model_name or "default",
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu": cpu_name(),
        "machine": machine_info(),
        "torch": torch.__version__,
        "device": str(get_device()),
        "steps": steps,
        "matmul_params": shape.matmul_params,
        "roofline_note": "FLOP/s of the model's linear-layer matmuls (forward, plus both backward products for "
        "train) at each row's token count, measured in this run",
        "speedup_fast_over_eager_bf16": {"batch_size": compare_batch, **speedups},
        "results": rows,
        "environment": environment_info(),
    }


def parallel_throughput(processes: int, batch_size: int = 32, steps: int = 30, model_name: str | None = None) -> dict:
    """Aggregate bf16 training throughput of ``processes`` benchmark processes run at the same time.

    Each child gets ``cpu_count // processes`` threads — what ``python -m molft_utils.runs.batch --jobs N`` gives
    each of its jobs — and times ``steps`` training steps at ``batch_size``. Their start is staggered by their
    imports only, so the timed steps overlap; the sum of their molecules/s is the machine's throughput with N jobs.
    """
    import json
    import subprocess
    import sys
    import tempfile

    threads = max(1, (os.cpu_count() or 1) // processes)
    with tempfile.TemporaryDirectory() as tmp:
        outs = [Path(tmp) / f"p{i}.json" for i in range(processes)]
        cmd = [sys.executable, "-m", "molft_utils.training.benchmark", "--batch-sizes", str(batch_size),
               "--precisions", "bf16", "--steps", str(steps), "--compare-batch", "0", "--threads", str(threads),
               "--inference-molecules", "256"] + (["--model", model_name] if model_name else [])  # fmt: skip
        children = [subprocess.Popen([*cmd, "--out", str(o)], stdout=subprocess.DEVNULL) for o in outs]
        codes = [c.wait() for c in children]
        if any(codes):
            raise RuntimeError(f"a benchmark child failed (exit codes {codes})")
        rates = [
            next(r["molecules_per_second"] for r in json.loads(o.read_text())["results"] if r["mode"] == "train")
            for o in outs
        ]
    return {"processes": processes, "threads_each": threads, "batch_size": batch_size,
            "molecules_per_second_each": rates, "molecules_per_second_total": float(sum(rates))}  # fmt: skip


def format_table(record: dict) -> str:
    """The README's Markdown table from a schema-2 record (``reports/benchmark/throughput.json``)."""
    if record.get("schema") != SCHEMA:
        raise ValueError(f"expected a schema-{SCHEMA} benchmark record, got schema {record.get('schema', 1)}")
    lines = [
        "| mode | precision | batch | molecules/s | GFLOP/s | roofline GFLOP/s | fraction of roofline |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in record["results"]:
        if r.get("implementation", "fast") != "fast":
            continue
        lines.append(
            f"| {r['mode']} | {'bf16' if r['precision'] == 'bf16' else 'fp32'} | {r['batch_size']} | "
            f"{r['molecules_per_second']:.0f} | {r['achieved_gflops']:.0f} | {r['roofline_gflops']:.0f} | "
            f"{r['roofline_fraction']:.0%} |"
        )
    sp = record.get("speedup_fast_over_eager_bf16", {})
    parts = [f"{m} {sp[m]:.2f}×" for m in ("train", "infer") if m in sp]
    if parts:
        lines.append("")
        lines.append(
            f"Fast path over transformers' eager RoFormer, bf16 batch {sp['batch_size']}, same run, alternating "
            f"blocks (median ratio): {', '.join(parts)}."
        )
    par = record.get("parallel")
    if par:
        one = next((r for r in record["results"] if r["mode"] == "train" and r["precision"] == "bf16"
                    and r["batch_size"] == par["batch_size"]), None)  # fmt: skip
        versus = (
            (
                f", against {one['molecules_per_second']:.0f} for one process with {record['torch_threads']} "
                f"threads ({par['molecules_per_second_total'] / one['molecules_per_second']:.2f}×)"
            )
            if one
            else ""
        )
        lines.append("")
        lines.append(
            f"{par['processes']} training processes at once ({par['threads_each']} thread(s) each, bf16 batch "
            f"{par['batch_size']}, as `batch --jobs {par['processes']}` runs seeds): "
            f"{par['molecules_per_second_total']:.0f} molecules/s in all{versus}."
        )
    prof = record.get("profile")
    if prof:
        shares = ", ".join(f"{kind} {share:.0%}" for kind, share in prof["kinds"].items() if share >= 0.01)
        lines.append("")
        lines.append(
            f"Where a {prof['precision']} training step at batch {prof['batch_size']} spends its CPU time "
            f"(`torch.profiler`, self time, {prof['steps']} steps): {shares}."
        )
    lines.append("")
    lines.append(
        f"Measured {record['date']} on {record['cpu']} ({record['torch_threads']} threads, torch {record['torch']})."
    )
    return "\n".join(lines)


README_START = "<!-- benchmark-table:start (python -m molft_utils.training.benchmark --table --readme README.md) -->"
README_END = "<!-- benchmark-table:end -->"


def update_readme(path: Path, table: str) -> None:
    """Replace the text between the README's benchmark-table markers with ``table``."""
    text = path.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"{path}: benchmark-table markers not found (expected {README_START!r} ... {README_END!r})")
    path.write_text(text[: start + len(README_START)] + "\n" + table + "\n" + text[end:])


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32, 64, 128])
    p.add_argument("--precisions", nargs="+", default=["bf16", "no"], help="bf16 and/or no (fp32)")
    p.add_argument("--steps", type=int, default=30, help="timed training steps per setting")
    p.add_argument("--inference-molecules", type=int, default=2048)
    p.add_argument("--compare-batch", type=int, default=32, help="batch size also timed with the eager path")
    p.add_argument("--quick", action="store_true", help="batch 16 and 32, bf16, 5 steps, 256 molecules (tests)")
    p.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: MOLFT_NUM_THREADS, else all cores)"
    )
    p.add_argument("--model", default=None)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--table", action="store_true", help="print the Markdown table of --out and exit")
    p.add_argument("--readme", type=Path, default=None, help="with --table: also write it into this README")
    p.add_argument(
        "--parallel",
        type=int,
        default=0,
        metavar="N",
        help="also time N benchmark processes at once (cpu_count // N threads each, as batch --jobs N gives)",
    )
    p.add_argument(
        "--profile", action="store_true", help="also profile bf16 training steps at batch 32 (written to the record)"
    )
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if a.table:
        import json

        table = format_table(json.loads(a.out.read_text()))
        print(table)
        if a.readme is not None:
            update_readme(a.readme, table)
        return
    torch.set_num_threads(a.threads or int(os.environ.get("MOLFT_NUM_THREADS") or os.cpu_count() or 1))
    if a.quick:
        a.batch_sizes, a.precisions, a.steps, a.inference_molecules = [16, 32], ["bf16"], 5, 256
    record = run_benchmark(a.batch_sizes, a.precisions, a.steps, a.model, a.compare_batch, a.inference_molecules)
    if a.parallel > 1:
        record["parallel"] = parallel_throughput(a.parallel, 32, a.steps, a.model)
        log.info("%d processes at once: %s", a.parallel, record["parallel"])
    if a.profile:
        backbone, tokenizer = load_backbone(a.model)
        smiles = load_lipophilicity().smiles.tolist()
        steps = 5 if a.quick else 10
        record["profile"] = profile_training_step(RegressionModel(backbone), tokenizer, smiles, 32, steps)
        log.info("training step, bf16 batch 32, self CPU time by kind: %s",
                 {k: f"{v:.0%}" for k, v in record["profile"]["kinds"].items()})  # fmt: skip
    write_json_atomic(a.out, record)
    print(format_table(record))


if __name__ == "__main__":
    main()
