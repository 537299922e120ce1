"""Length-bucketed batching: dynamic padding without wasting compute on pad tokens.

SMILES lengths vary (Lipophilicity: median 45 tokens, maximum 205). Padding every batch to the
longest sequence in a random batch wastes most of the compute on pad tokens. Bucketing sorts
a window of ``batch_size * bucket_batches`` shuffled examples by length, cuts it into batches of
similar length and shuffles the order of the batches, so every epoch still sees the data in a
random order while each batch pads only to a length close to its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["bucketed_batches", "sequential_batches"]


def bucketed_batches(
    lengths: Sequence[int],
    batch_size: int,
    rng: np.random.Generator,
    bucket_batches: int = 50,
    drop_last: bool = False,
) -> list[np.ndarray]:
    """Index batches of similar length, in random order.

    Parameters
    ----------
    lengths
        Token length of each example.
    batch_size
        Examples per batch.
    rng
        Random generator; the batches are a deterministic function of its state.
    bucket_batches
        How many batches' worth of examples are sorted together (1 = no bucketing).
    drop_last
        Drop a final batch smaller than ``batch_size`` in each window.

    Returns
    -------
    list of numpy.ndarray
        Every index appears in exactly one batch (unless ``drop_last`` dropped it).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    lengths = np.asarray(lengths)
    order = rng.permutation(len(lengths))
    window = batch_size * max(bucket_batches, 1)
    batches: list[np.ndarray] = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        for b in range(0, len(chunk), batch_size):
            batch = chunk[b : b + batch_size]
            if drop_last and len(batch) < batch_size:
                continue
            batches.append(batch)
    rng.shuffle(batches)
    return batches


def sequential_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Batches for evaluation: sorted by length (fast), covering every index once."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
