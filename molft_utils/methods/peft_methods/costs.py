"""Training time and peak memory of several fine-tuning methods measured in the same conditions.

Timing one method after another in a long-lived process, on a machine that other jobs share, mixes the methods
with whatever the machine did at that moment (the committed lesson-04 runs measured LoRA at 2.42x the seconds per
epoch of full fine-tuning on one seed and at 0.9-1.25x on the two others). :func:`interleaved_costs` therefore
measures one training epoch per method in **rounds**: every round measures every method once, in an order that
rotates from round to round, each in a fresh process (so that allocator state and run order do not matter), and
the per-method **median** over the rounds is reported. Load that drifts slowly hits every method alike; a short
burst hits one measurement, which the median discards.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from molft_utils.methods.peft_methods.probes import measure_epoch, training_memory_subprocess

__all__ = ["interleaved_costs", "round_orders"]

log = logging.getLogger(__name__)


def round_orders(names: Sequence[str], rounds: int) -> list[list[str]]:
    """The order of ``names`` in each of ``rounds`` rounds: rotated by one place per round.

    Over ``len(names)`` rounds every name takes every position once, so no method is always measured first
    (right after a process start or another job's burst).
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    names = list(names)
    if not names:
        return [[] for _ in range(rounds)]
    return [names[i % len(names):] + names[: i % len(names)] for i in range(rounds)]


def interleaved_costs(
    backbone: str | Path,
    jobs: Mapping[str, Mapping[str, Any]],
    smiles: Sequence[str],
    labels: Sequence[float],
    rounds: int = 3,
    batch_size: int = 32,
    seed: int = 0,
    threads: int = 1,
    fresh_process: bool = True,
    scale_to: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Seconds per training epoch and peak memory of every job, measured in interleaved rounds (medians).

    Parameters
    ----------
    backbone
        Folder of the encoder every job starts from.
    jobs
        Name → ``{"method": ..., "lr": ..., "settings": <Settings or None>}`` (e.g. the lesson's methods with their
        chosen rates, or LoRA variants).
    smiles, labels
        The molecules of the measured epoch (the same for every job).
    rounds
        Measurements per job; each round measures every job once (order rotated, :func:`round_orders`).
    fresh_process
        Measure each epoch in a new interpreter (:func:`~.probes.training_memory_subprocess`); ``False`` measures
        in this process (:func:`~.probes.measure_epoch`; faster, for smoke runs; memory then depends on what ran
        before).
    scale_to
        When given, ``seconds_per_epoch`` is the median scaled linearly to an epoch of ``scale_to`` molecules
        (e.g. the training split); the raw medians stay in ``seconds_median``.

    Returns
    -------
    dict
        Name → ``seconds`` and ``peak_mib`` (one value per round, in round order), ``seconds_median``,
        ``seconds_per_epoch``, ``peak_mib_median``, ``rounds``, ``molecules``, ``fresh_process`` and ``errors``.
    """
    smiles, labels = list(smiles), [float(y) for y in labels]
    if not smiles or len(smiles) != len(labels):
        raise ValueError("smiles and labels must be non-empty and of equal length")
    per: dict[str, dict[str, list]] = {name: {"seconds": [], "peak_mib": [], "errors": []} for name in jobs}
    for order in round_orders(list(jobs), rounds):
        for name in order:
            job = jobs[name]
            if fresh_process:
                out = training_memory_subprocess(
                    backbone, job["method"], smiles, labels, lr=float(job["lr"]), batch_size=batch_size, seed=seed,
                    threads=threads, settings=job.get("settings"),
                )
            else:
                try:
                    out = measure_epoch({
                        "backbone": str(backbone), "method": job["method"], "smiles": smiles, "labels": labels,
                        "lr": float(job["lr"]), "batch_size": batch_size, "seed": seed, "threads": threads,
                        "settings": job.get("settings"),
                    }) | {"error": None}
                except Exception as exc:  # a failed measurement must not end the lesson
                    out = {"error": f"{type(exc).__name__}: {exc}"}
            if out.get("error"):
                log.warning("cost measurement of %s failed: %s", name, out["error"])
                per[name]["errors"].append(out["error"])
                continue
            per[name]["seconds"].append(float(out["seconds"]))
            per[name]["peak_mib"].append(float(out["peak_mib"]))
    result = {}
    for name, values in per.items():
        sec = statistics.median(values["seconds"]) if values["seconds"] else float("nan")
        mem = statistics.median(values["peak_mib"]) if values["peak_mib"] else float("nan")
        result[name] = {
            "seconds": values["seconds"],
            "peak_mib": values["peak_mib"],
            "seconds_median": sec,
            "seconds_per_epoch": sec * scale_to / len(smiles) if scale_to else sec,
            "peak_mib_median": mem,
            "rounds": rounds,
            "molecules": len(smiles),
            "fresh_process": fresh_process,
            "errors": values["errors"],
        }
    return result

