"""PEFT measurements: peak memory, inference time, parameter budgets without weights, training memory in
a fresh process."""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from molft_utils.methods.peft_methods.setup import METHODS, PEFT_METHODS, Settings, prepare
from molft_utils.models.backbone import RegressionModel
from molft_utils.training.train import TargetScaler, predict

__all__ = [
    "encoder_without_weights",
    "inference_seconds",
    "measure_epoch",
    "parameter_budget",
    "peak_memory",
    "PeakMemory",
    "training_memory_subprocess",
]

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# measurements
# ---------------------------------------------------------------------------------------------


def _rss_bytes() -> int | None:
    statm = Path("/proc/self/statm")
    if not statm.exists():
        return None
    return int(statm.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass
class PeakMemory:
    """Result of :func:`peak_memory`: peak memory increase in MiB while the block ran.

    Attributes
    ----------
    peak_mib
        Peak increase over the level at entry (``nan`` when not measurable).
    baseline_mib
        The level at entry (CUDA: allocated tensors; CPU: process resident set size).
    source
        ``"cuda"``, ``"rss"`` or ``"unavailable"``.
    samples
        Number of RSS samples taken (CPU only).
    """

    peak_mib: float = float("nan")
    baseline_mib: float = float("nan")
    source: str = "unavailable"
    samples: int = 0


@contextlib.contextmanager
def peak_memory(device: torch.device | str | None = None, interval: float = 0.005) -> Iterator[PeakMemory]:
    """Measure the peak memory increase of the ``with`` block.

    On CUDA the peak is ``torch.cuda.max_memory_allocated`` (exact, tensors only). On CPU a
    background thread samples the resident set size from ``/proc/self/statm`` every ``interval``
    seconds and the peak increase over the value at entry is reported.

    Limitations of the CPU number: it is the whole process (other threads, Python objects, the
    allocator's caches), it can miss spikes shorter than ``interval``, and memory freed before the
    block but still held by the allocator makes the increase look smaller; compare methods in
    fresh processes, or at least in the same order, for a fair comparison. Linux only (``nan``
    elsewhere).

    Examples
    --------
    >>> with peak_memory() as mem:          # doctest: +SKIP
    ...     fit(setup.model, tokenizer, ...)
    >>> mem.peak_mib                       # doctest: +SKIP
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    result = PeakMemory()
    mib = 1024.0**2
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        result.baseline_mib, result.source = base / mib, "cuda"
        try:
            yield result
        finally:
            torch.cuda.synchronize(device)
            result.peak_mib = (torch.cuda.max_memory_allocated(device) - base) / mib
        return
    base = _rss_bytes()
    if base is None:
        log.warning("peak_memory: /proc/self/statm not available, CPU memory not measured")
        yield result
        return
    result.baseline_mib, result.source = base / mib, "rss"
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            rss = _rss_bytes() or 0
            peak[0] = max(peak[0], rss)
            result.samples += 1
            stop.wait(interval)

    thread = threading.Thread(target=sample, name="peak_memory", daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join()
        peak[0] = max(peak[0], _rss_bytes() or 0)
        result.peak_mib = (peak[0] - base) / mib


def inference_seconds(
    model: RegressionModel,
    tokenizer: PreTrainedTokenizerBase,
    smiles: Sequence[str],
    batch_size: int = 128,
    repeats: int = 3,
    mixed_precision: str = "auto",
) -> float:
    """Median wall time in seconds to predict ``smiles`` (tokenisation included), after one warm-up.

    Use it to compare an adapter model before and after :func:`merge_adapters` (unmerged LoRA adds
    two small matrix products per adapted layer; merged it costs the same as the base model).
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    scaler = TargetScaler("none")
    predict(model, tokenizer, smiles[: min(len(smiles), batch_size)], scaler, batch_size, mixed_precision)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predict(model, tokenizer, smiles, scaler, batch_size, mixed_precision)
        times.append(time.perf_counter() - t0)
    return float(statistics.median(times))


# ---------------------------------------------------------------------------------------------
# parameter budgets without weights, memory in a fresh process, Pareto figure (notebook 04)
# ---------------------------------------------------------------------------------------------


def encoder_without_weights(
    num_layers: int = 12,
    hidden: int = 768,
    heads: int = 12,
    intermediate: int = 3072,
    vocab_size: int = 2362,
    max_positions: int = 512,
) -> nn.Module:
    """A RoFormer encoder with the given shapes on the ``meta`` device (no weights).

    Used to *compute* (not measure) parameter budgets of a larger model, e.g. MoLFormer-XL's
    published shape (12 layers, hidden 768, 12 heads). Module names match MoLFormer's
    (``encoder.layer.{i}.attention.self.{query,key,value}``, ``intermediate.dense``, ``output.dense``),
    so :func:`prepare` targets the same projections. MoLFormer's linear attention adds only small
    feature-map parameters, which this stand-in does not have.
    """
    from transformers import RoFormerConfig, RoFormerModel

    config = RoFormerConfig(
        vocab_size=vocab_size,
        embedding_size=hidden,
        hidden_size=hidden,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=max_positions,
    )
    with torch.device("meta"):
        return RoFormerModel(config)


def parameter_budget(
    backbone: nn.Module,
    methods: Sequence[str] = METHODS,
    settings: dict[str, Settings] | None = None,
    total_steps: int = 1000,
) -> list[dict[str, Any]]:
    """Trainable-parameter counts of every method for ``backbone`` (which is not modified).

    Each method is applied to a deep copy of ``backbone`` inside a fresh
    :class:`~molft_utils.models.backbone.RegressionModel`; works on ``meta``-device encoders from
    :func:`encoder_without_weights`.

    Returns
    -------
    list of dict
        Per method: ``n_trainable``, ``n_trainable_backbone``, ``n_total``, ``n_head``,
        ``n_backbone`` (base encoder parameters, adapters excluded), ``percent_trainable`` (of
        everything, head included, as peft counts) and ``percent_backbone`` (trainable encoder
        parameters relative to the base encoder).
    """
    import copy

    settings = settings or {}
    rows = []
    n_backbone = sum(p.numel() for p in backbone.parameters())
    on_meta = next(backbone.parameters()).device.type == "meta"
    for method in methods:
        encoder = copy.deepcopy(backbone)
        if on_meta:
            # peft treats meta tensors specially (e.g. AdaLoRA's ranknum becomes trainable); uninitialised
            # CPU memory is allocated instead, which is fast and enough for counting
            encoder = encoder.to_empty(device="cpu")
        reg = RegressionModel(encoder)
        setup = prepare(reg, method, settings.get(method), total_steps=total_steps)
        n_head = setup.n_trainable - setup.n_trainable_backbone
        rows.append(
            {
                "method": method,
                "n_trainable": setup.n_trainable,
                "n_trainable_backbone": setup.n_trainable_backbone,
                "n_head": n_head,
                "n_backbone": n_backbone,
                "n_total": setup.n_total,
                "percent_trainable": setup.percent_trainable,
                "percent_backbone": 100.0 * setup.n_trainable_backbone / n_backbone,
            }
        )
    return rows


def measure_epoch(job: dict[str, Any]) -> dict[str, Any]:
    """Load ``job["backbone"]``, prepare ``job["method"]`` and train one epoch on ``job["smiles"]``, measuring it.

    The body of :func:`training_memory_subprocess` (run in a fresh process there) and of the in-process
    measurements of :func:`~molft_utils.methods.peft_methods.costs.interleaved_costs`. ``job`` holds
    ``backbone``, ``method``, ``smiles``, ``labels``, ``lr``, ``batch_size``, ``seed``, ``threads`` and optionally
    ``settings`` (the method's settings dataclass; default settings when absent or ``None``).

    Returns
    -------
    dict
        ``peak_mib`` (peak memory increase while training, :func:`peak_memory`), ``baseline_mib``, ``samples``,
        ``seconds`` (training seconds of the epoch, validation excluded, as ``fit`` records them), ``steps``
        (optimiser steps) and ``source`` (``"cuda"`` or ``"rss"``).
    """
    from molft_utils.models.backbone import load_backbone
    from molft_utils.training.train import TrainConfig, fit

    torch.set_num_threads(job["threads"])
    torch.manual_seed(job["seed"])
    backbone, tokenizer = load_backbone(job["backbone"])
    model = RegressionModel(backbone)
    steps_per_epoch = -(-len(job["smiles"]) // job["batch_size"])
    setup = prepare(model, job["method"], job.get("settings"), total_steps=steps_per_epoch)
    config = TrainConfig(epochs=1, batch_size=job["batch_size"], lr_backbone=job["lr"], patience=1, seed=job["seed"])
    n_valid = min(len(job["smiles"]), job["batch_size"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with peak_memory(device, interval=0.002) as mem:
        res = fit(
            setup.model, tokenizer, job["smiles"], job["labels"], job["smiles"][:n_valid],
            job["labels"][:n_valid], config, hooks=setup.hooks, progress=False,
        )
    return {"peak_mib": mem.peak_mib, "baseline_mib": mem.baseline_mib, "samples": mem.samples,
            "seconds": float(res.history[0]["seconds"]), "steps": steps_per_epoch, "source": mem.source}


def _memory_child(queue: Any, job: dict[str, Any]) -> None:  # pragma: no cover - runs in a subprocess
    """Subprocess body of :func:`training_memory_subprocess`."""
    import resource

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the child's stderr lands in the notebook: no "Loading weights" bars
    try:
        out = measure_epoch(job)
        out["maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
        queue.put(out | {"error": None})
    except Exception as exc:  # report instead of hanging the parent
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def training_memory_subprocess(
    backbone: str | Path,
    method: str,
    smiles: Sequence[str],
    labels: Sequence[float],
    lr: float = 1e-4,
    batch_size: int = 32,
    seed: int = 0,
    threads: int = 1,
    timeout: float = 600.0,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Peak CPU memory of one short training epoch of ``method``, measured in a fresh process.

    In one long-lived process the resident set size depends on what ran before (the allocator keeps
    freed memory), so :func:`peak_memory` numbers are order-dependent. Here every method starts in a
    new ``spawn``-ed interpreter: it loads ``backbone`` (a folder for
    :func:`~molft_utils.models.backbone.load_backbone`), prepares ``method`` and trains one epoch on
    ``smiles``; the peak RSS increase over the level after loading is reported (sampled every 2 ms,
    so it can still miss very short spikes), together with the process's lifetime ``maxrss``.

    ``settings`` (the method's settings dataclass) replaces the defaults, e.g. a LoRA rank.

    Returns
    -------
    dict
        ``peak_mib`` (increase during training), ``baseline_mib`` (RSS after loading),
        ``maxrss_mib``, ``samples``, ``steps``, ``seconds`` (training seconds of the epoch, measured in the
        child); ``error`` is None or the child's exception.
    """
    import multiprocessing as mp

    PEFT_METHODS.check(method)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    job = {
        "backbone": str(backbone), "method": method, "smiles": list(smiles), "labels": [float(y) for y in labels],
        "lr": float(lr), "batch_size": int(batch_size), "seed": int(seed), "threads": int(threads),
        "settings": settings,
    }
    proc = ctx.Process(target=_memory_child, args=(queue, job), daemon=True)
    proc.start()
    try:
        result = queue.get(timeout=timeout)
    except Exception as exc:  # queue.Empty on timeout
        result = {"error": f"no result from the measuring process ({type(exc).__name__})"}
    proc.join(timeout=30)
    if proc.is_alive():
        proc.terminate()
        proc.join()
    if result.get("error"):
        log.warning("memory measurement of %s failed: %s", method, result["error"])
        result.setdefault("peak_mib", float("nan"))
        result.setdefault("seconds", float("nan"))
    return result
