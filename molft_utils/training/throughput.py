"""How fast a training step and a prediction run, and where a step's time goes: the benchmark's measurements.

* :func:`batch_flops` counts a batch's matmul FLOPs (:class:`ModelShape`, :func:`model_shape`): ``2·P·T`` per
  sequence forward for the ``P`` matmul weights of the backbone at ``T`` padded tokens, plus
  ``4·layers·T²·hidden`` for the attention products, plus the head; a training step is three times its forward.
* :func:`matmul_rate` times the model's linear-layer products alone: the *roofline* FLOP rate of this machine at
  this moment; :func:`roofline_fraction` relates a step to it.
* :func:`measure_throughput` and :func:`measure_inference` time training steps (:func:`train_step`, as
  :func:`~molft_utils.training.train.fit` takes them) and predictions; :func:`interleaved_speedup` compares the
  fast and the eager compute path in alternating blocks; :func:`profile_training_step` splits a step's CPU time by
  kind of work (``torch.profiler``).

:mod:`molft_utils.training.benchmark` runs them over batch sizes and precisions and writes the record.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from molft_utils.core.device import autocast, autocast_dtype, get_device, seed_everything
from molft_utils.models.backbone import RegressionModel
from molft_utils.training.batching import bucketed_batches, sequential_batches
from molft_utils.training.collate import collate, encode
from molft_utils.training.train import make_adamw

__all__ = [
    "OP_KINDS",
    "ModelShape",
    "batch_flops",
    "interleaved_speedup",
    "matmul_rate",
    "measure_inference",
    "measure_throughput",
    "model_shape",
    "profile_training_step",
    "roofline_fraction",
    "train_step",
]


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


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: dict, device, dtype) -> None:
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
    ids = encode(tokenizer, smiles)
    batches = bucketed_batches([len(x) for x in ids], batch_size, np.random.default_rng(seed), 20)
    optimizer = make_adamw([{"params": list(model.parameters()), "lr": 1e-5}], 0.01)
    n_mol, padded, seconds, flops = 0, 0, 0.0, 0.0
    for i in range(warmup + steps):
        idx = batches[i % len(batches)]
        batch = collate(tokenizer, [ids[j] for j in idx], device)
        _sync(device)
        t0 = time.perf_counter()
        train_step(model, optimizer, batch, device, dtype)
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
    ids = encode(tokenizer, smiles[:max_molecules])
    batches = sequential_batches([len(x) for x in ids], batch_size)
    for idx in batches[:warmup]:
        with autocast(device, dtype):
            model(**collate(tokenizer, [ids[j] for j in idx], device))
    n_mol, padded, seconds, flops = 0, 0, 0.0, 0.0
    for idx in batches:
        batch = collate(tokenizer, [ids[j] for j in idx], device)
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
    ids = encode(tokenizer, smiles)
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
            train_step(m, opt, collate(tokenizer, [ids[j] for j in idx], device), device, dtype)
        _sync(device)
        return time.perf_counter() - t0

    @torch.no_grad()
    def infer_block(impl: str, start: int) -> float:
        m = models[impl][0].eval()
        t0 = time.perf_counter()
        for i in range(start, start + steps_per_block):
            idx = batches[i % len(batches)]
            with autocast(device, dtype):
                m(**collate(tokenizer, [ids[j] for j in idx], device)).float().cpu()
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
    ids = encode(tokenizer, smiles)
    batches = bucketed_batches([len(x) for x in ids], batch_size, np.random.default_rng(0), 20)
    optimizer = make_adamw([{"params": list(model.parameters()), "lr": 1e-5}], 0.01)

    def step(i: int) -> None:
        idx = batches[i % len(batches)]
        train_step(model, optimizer, collate(tokenizer, [ids[j] for j in idx], device), device, dtype)

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
