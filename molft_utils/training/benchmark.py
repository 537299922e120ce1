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
without measuring. FLOPs counted: ``2·P·T`` per sequence forward for the ``P`` matmul weights of the
backbone at ``T`` padded tokens, plus ``4·layers·T²·hidden`` for the attention products, plus the
head; a training step is three times its forward (forward, input and weight gradients).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import platform
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from molft_utils.core.device import autocast, autocast_dtype, get_device, seed_everything
from molft_utils.core.records import REPO_ROOT, environment_info, write_json_atomic
from molft_utils.data.loading import load_lipophilicity
from molft_utils.models.backbone import RegressionModel, load_backbone
from molft_utils.training.batching import bucketed_batches, sequential_batches
from molft_utils.training.train import _encode, _pad, make_adamw

__all__ = [
    "ModelShape",
    "batch_flops",
    "format_table",
    "interleaved_speedup",
    "matmul_rate",
    "measure_inference",
    "measure_throughput",
    "model_shape",
    "parallel_throughput",
    "profile_training_step",
    "roofline_fraction",
    "run_benchmark",
    "update_readme",
]

log = logging.getLogger(__name__)

OUT = REPO_ROOT / "reports" / "benchmark" / "throughput.json"
SCHEMA = 2


class ModelShape:
    """What the FLOP count needs: the linear layers (in, out) of the backbone and head, layers, hidden size."""

    def __init__(self, linears: Sequence[tuple[int, int]], head: Sequence[tuple[int, int]], layers: int, hidden: int):
        self.linears = [tuple(x) for x in linears]
        self.head = [tuple(x) for x in head]
        self.layers, self.hidden = int(layers), int(hidden)

    @property
    def matmul_params(self) -> int:
        """Weights of the backbone's linear layers (applied to every token)."""
        return sum(i * o for i, o in self.linears)


def model_shape(model: RegressionModel) -> ModelShape:
    """The :class:`ModelShape` of a regression model (backbone linear layers, head, attention size)."""
    linears = [(m.in_features, m.out_features) for m in model.backbone.modules() if isinstance(m, nn.Linear)]
    head = [(m.in_features, m.out_features) for m in model.head.modules() if isinstance(m, nn.Linear)]
    cfg = model.backbone.config
    return ModelShape(linears, head, cfg.num_hidden_layers, cfg.hidden_size)


def batch_flops(shape: ModelShape, batch: int, tokens: int, training: bool) -> float:
    """Matmul FLOPs of one batch of ``batch`` sequences padded to ``tokens``.

    Forward: ``2·P·T`` per sequence for the backbone's linear layers, ``4·layers·T²·hidden`` for
    the attention products (``q kᵀ`` and ``probs · v``), ``2·Σ in·out`` for the head. Training
    counts three times the forward (the input and the weight gradients cost one forward each).
    """
    forward = batch * (
        2 * shape.matmul_params * tokens
        + 4 * shape.layers * tokens**2 * shape.hidden
        + 2 * sum(i * o for i, o in shape.head)
    )
    return float(3 * forward if training else forward)


def roofline_fraction(flops: float, seconds: float, rate_flops_per_s: float) -> float:
    """Achieved FLOP rate (``flops / seconds``) as a fraction of the measured matmul rate."""
    if seconds <= 0 or rate_flops_per_s <= 0:
        raise ValueError(f"seconds and rate must be positive, got {seconds} and {rate_flops_per_s}")
    return flops / seconds / rate_flops_per_s


def matmul_rate(
    linears: Sequence[tuple[int, int]], tokens: int, dtype: torch.dtype, training: bool, repeats: int = 5
) -> float:
    """FLOP/s of the model's linear-layer products at ``tokens`` rows (median of ``repeats``).

    Every distinct (in, out) shape is weighted by how often it occurs; training adds the two
    backward products (``dY·Wᵀ`` and ``Xᵀ·dY``).
    """
    counts: dict[tuple[int, int], int] = {}
    for s in linears:
        counts[s] = counts.get(s, 0) + 1
    products = []
    for (k, n), c in counts.items():
        x, w, dy = (
            torch.randn(tokens, k, dtype=dtype),
            torch.randn(k, n, dtype=dtype),
            torch.randn(tokens, n, dtype=dtype),
        )
        products.append((lambda x=x, w=w: x @ w, c))
        if training:
            products.append((lambda dy=dy, w=w: dy @ w.T, c))
            products.append((lambda x=x, dy=dy: x.T @ dy, c))
    flops = sum(2 * tokens * k * n * c * (3 if training else 1) for (k, n), c in counts.items())
    for f, _ in products:  # warm-up
        f()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for f, c in products:
            for _ in range(c):
                f()
        times.append(time.perf_counter() - t0)
    return flops / statistics.median(times)


def _train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: dict, device, dtype) -> None:
    """One step as :func:`~molft_utils.train.fit` takes it: autocast forward, MSE to zeros, clip, AdamW."""
    n = batch["input_ids"].shape[0]
    with autocast(device, dtype):
        loss = torch.nn.functional.mse_loss(model(**batch).float(), torch.zeros(n, device=device))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


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
    """Time ``steps`` training steps as :func:`~molft_utils.train.fit` takes them (after ``warmup``).

    Returns
    -------
    dict
        ``molecules_per_second``, ``seconds_per_step``, ``mean_tokens`` (padded tokens per
        molecule), ``flops`` (matmul FLOPs of the timed steps) and ``seconds``.
    """
    device = get_device()
    dtype = autocast_dtype(device, mixed_precision)
    seed_everything(seed)
    model.to(device).train()
    shape = model_shape(model)
    ids = _encode(tokenizer, smiles)
    batches = bucketed_batches([len(x) for x in ids], batch_size, np.random.default_rng(seed), 20)
    optimizer = make_adamw([{"params": list(model.parameters()), "lr": 1e-5}], 0.01)
    n_mol, padded, seconds, flops = 0, 0, 0.0, 0.0
    for i in range(warmup + steps):
        idx = batches[i % len(batches)]
        batch = _pad(tokenizer, [ids[j] for j in idx], device)
        _sync(device)
        t0 = time.perf_counter()
        _train_step(model, optimizer, batch, device, dtype)
        _sync(device)
        if i >= warmup:
            seconds += time.perf_counter() - t0
            n_mol += len(idx)
            padded += batch["input_ids"].numel()
            flops += batch_flops(shape, *batch["input_ids"].shape, training=True)
    return {
        "molecules_per_second": n_mol / seconds,
        "seconds_per_step": seconds / steps,
        "mean_tokens": padded / n_mol,
        "flops": flops,
        "seconds": seconds,
    }


@torch.no_grad()
def measure_inference(
    model: RegressionModel,
    tokenizer,
    smiles: Sequence[str],
    batch_size: int,
    mixed_precision: str = "auto",
    max_molecules: int = 2048,
    warmup: int = 3,
) -> dict[str, float]:
    """Time prediction as :func:`~molft_utils.train.predict` batches it (sorted by length)."""
    device = get_device()
    dtype = autocast_dtype(device, mixed_precision)
    model.to(device).eval()
    shape = model_shape(model)
    ids = _encode(tokenizer, smiles[:max_molecules])
    batches = sequential_batches([len(x) for x in ids], batch_size)
    for idx in batches[:warmup]:
        with autocast(device, dtype):
            model(**_pad(tokenizer, [ids[j] for j in idx], device))
    n_mol, padded, seconds, flops = 0, 0, 0.0, 0.0
    for idx in batches:
        batch = _pad(tokenizer, [ids[j] for j in idx], device)
        _sync(device)
        t0 = time.perf_counter()
        with autocast(device, dtype):
            model(**batch).float().cpu()
        _sync(device)
        seconds += time.perf_counter() - t0
        n_mol += len(idx)
        padded += batch["input_ids"].numel()
        flops += batch_flops(shape, *batch["input_ids"].shape, training=False)
    return {
        "molecules_per_second": n_mol / seconds,
        "seconds_per_step": seconds / len(batches),
        "mean_tokens": padded / n_mol,
        "flops": flops,
        "seconds": seconds,
    }


def interleaved_speedup(
    make_model,
    tokenizer,
    smiles: Sequence[str],
    batch_size: int,
    mixed_precision: str = "bf16",
    blocks: int = 7,
    steps_per_block: int = 4,
    seed: int = 0,
) -> dict[str, float]:
    """Fast over eager path, timed in alternating blocks on the same batches (median of block ratios).

    ``make_model(fast)`` builds a fresh :class:`RegressionModel`. Alternating blocks of
    ``steps_per_block`` training steps (and as many inference batches) keeps the ratio meaningful
    while other jobs share the machine; each block's ratio compares neighbours in time.
    """
    device = get_device()
    dtype = autocast_dtype(device, mixed_precision)
    ids = _encode(tokenizer, smiles)
    batches = bucketed_batches([len(x) for x in ids], batch_size, np.random.default_rng(seed), 20)
    models = {}
    for impl in ("fast", "eager"):
        seed_everything(seed)
        m = make_model(impl == "fast").to(device).train()
        models[impl] = (m, make_adamw([{"params": list(m.parameters()), "lr": 1e-5}], 0.01))

    def train_block(impl: str, start: int) -> float:
        m, opt = models[impl]
        m.train()
        t0 = time.perf_counter()
        for i in range(start, start + steps_per_block):
            idx = batches[i % len(batches)]
            _train_step(m, opt, _pad(tokenizer, [ids[j] for j in idx], device), device, dtype)
        _sync(device)
        return time.perf_counter() - t0

    @torch.no_grad()
    def infer_block(impl: str, start: int) -> float:
        m = models[impl][0].eval()
        t0 = time.perf_counter()
        for i in range(start, start + steps_per_block):
            idx = batches[i % len(batches)]
            with autocast(device, dtype):
                m(**_pad(tokenizer, [ids[j] for j in idx], device)).float().cpu()
        _sync(device)
        return time.perf_counter() - t0

    out = {}
    for mode, block in (("train", train_block), ("infer", infer_block)):
        for impl in models:  # warm-up
            block(impl, 0)
        ratios = []
        for b in range(blocks):
            start = b * steps_per_block
            order = ("fast", "eager") if b % 2 == 0 else ("eager", "fast")
            t = {impl: block(impl, start) for impl in order}
            ratios.append(t["eager"] / t["fast"])
        out[mode] = statistics.median(ratios)
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
        "cpu": _cpu_name(),
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


#: Profiler op name → the kind of work it is (every other op counts as "other").
OP_KINDS = {
    "aten::mm": "matmul", "aten::addmm": "matmul", "aten::bmm": "matmul",
    "aten::copy_": "casts and copies", "aten::_to_copy": "casts and copies",
    "aten::random_": "dropout masks", "aten::bernoulli_": "dropout masks", "aten::bitwise_and": "dropout masks",
    "aten::ge": "dropout masks",
    "aten::mul": "elementwise", "aten::add": "elementwise", "aten::div": "elementwise", "aten::cat": "elementwise",
    "aten::neg": "elementwise", "aten::sub": "elementwise", "aten::masked_fill": "elementwise",
    "aten::gelu": "activations", "aten::gelu_backward": "activations", "aten::relu": "activations",
    "aten::threshold_backward": "activations",
    "aten::_softmax": "softmax", "aten::_softmax_backward_data": "softmax",
    "aten::native_layer_norm": "layer norm", "aten::native_layer_norm_backward": "layer norm",
    "aten::_fused_adamw_": "optimiser", "aten::linalg_vector_norm": "optimiser",
    "aten::sum": "reductions", "aten::mean": "reductions",
    "aten::empty": "allocation", "aten::empty_strided": "allocation", "aten::zero_": "allocation",
}  # fmt: skip


def profile_training_step(
    model: RegressionModel, tokenizer, smiles: Sequence[str], batch_size: int = 32, steps: int = 10, warmup: int = 3
) -> dict:
    """Where a bf16 training step spends its CPU time (``torch.profiler``, self time per op).

    Returns
    -------
    dict
        ``kinds``: share of self CPU time per kind of work (:data:`OP_KINDS`); ``ops``: the 15 ops with the most
        self time (share, calls per step); ``steps``, ``batch_size`` and ``seconds_per_step`` under the profiler
        (slower than unprofiled steps: compare shares, not times).
    """
    from torch.profiler import ProfilerActivity, profile

    device = get_device()
    dtype = autocast_dtype(device, "auto")
    seed_everything(0)
    model.to(device).train()
    ids = _encode(tokenizer, smiles)
    batches = bucketed_batches([len(x) for x in ids], batch_size, np.random.default_rng(0), 20)
    optimizer = make_adamw([{"params": list(model.parameters()), "lr": 1e-5}], 0.01)

    def step(i: int) -> None:
        idx = batches[i % len(batches)]
        _train_step(model, optimizer, _pad(tokenizer, [ids[j] for j in idx], device), device, dtype)

    for i in range(warmup):
        step(i)
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(warmup, warmup + steps):
            step(i)
    seconds = time.perf_counter() - t0
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    kinds: dict[str, float] = {}
    for e in events:
        kind = OP_KINDS.get(e.key, "other")
        kinds[kind] = kinds.get(kind, 0.0) + e.self_cpu_time_total / total
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:15]
    return {
        "batch_size": batch_size,
        "steps": steps,
        "precision": str(dtype).removeprefix("torch.") if dtype is not None else "fp32",
        "seconds_per_step": seconds / steps,
        "kinds": dict(sorted(kinds.items(), key=lambda kv: -kv[1])),
        "ops": [{"op": e.key, "share": e.self_cpu_time_total / total, "calls_per_step": e.count / steps} for e in top],
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
