"""The few-label protocol's budgets: nested label subsets, epoch ceilings per label budget, and the two halves of
validation (one for model selection, one for the post-hoc choices)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from molft_utils.training.train import TrainConfig

__all__ = ["ValidationHalves", "epoch_budget", "label_subset", "split_validation"]


def label_subset(train_indices: Sequence[int] | np.ndarray, n: int | str | None, seed: int) -> np.ndarray:
    """A fixed subset of ``n`` training indices per seed, nested across ``n``.

    The indices are put in a seed-determined random order (independent of the input order) and the
    first ``n`` are returned (sorted), so for one seed the 50-subset lies inside the 100-subset inside
    the 500-subset.

    Parameters
    ----------
    train_indices
        Indices of the full training split.
    n
        Number of labels; ``"all"`` or ``None`` for all.
    seed
        Seed of the order.
    """
    pool = np.sort(np.asarray(train_indices, dtype=int))
    if n is None or n == "all":
        return pool.copy()
    n = int(n)
    if not 0 < n <= len(pool):
        raise ValueError(f"n must be in 1..{len(pool)}, got {n}")
    order = np.random.default_rng(seed).permutation(len(pool))
    return np.sort(pool[order[:n]])


def epoch_budget(
    n_labels: int | str,
    budgets: Mapping[int | str, int],
    config: TrainConfig,
    patience: Mapping[int | str, int] | None = None,
) -> TrainConfig:
    """``config`` with the epoch ceiling (and, given ``patience``, the early-stopping patience) of label budget
    ``n_labels``.

    ``budgets`` maps a label budget to its ceiling in epochs (passes over the label subset). Fewer labels mean
    fewer optimisation steps per epoch, so the small budgets get the high ceilings; early stopping
    (``config.patience`` epochs without a better validation RMSE) ends most runs well before them. A budget
    missing from ``budgets`` is an error (no silent default). Keys may be ints or their strings (papermill passes
    dict parameters with string keys).

    ``patience`` maps a label budget to its patience in epochs: an epoch of 50 labels is a few optimisation steps,
    so the patience that suits an epoch of 3,000 labels would stop such a run on noise.
    """
    changes = {"epochs": _lookup(budgets, n_labels, "epoch budget")}
    if patience is not None:
        changes["patience"] = _lookup(patience, n_labels, "patience")
    return TrainConfig(**{**config.__dict__, **changes})


def _lookup(table: Mapping[int | str, int], n_labels: int | str, what: str) -> int:
    key = n_labels if n_labels in table else str(n_labels)
    if key not in table:
        raise KeyError(f"no {what} for {n_labels!r} labels (given for {sorted(map(str, table))})")
    value = int(table[key])
    if value < 1:
        raise ValueError(f"{what} for {n_labels!r} labels must be >= 1, got {value}")
    return value


@dataclass(frozen=True)
class ValidationHalves:
    """Indices into the validation part: ``select`` for model selection (early stopping, strength sweeps),
    ``post`` for post-hoc choices (WiSE-FT's α, the greedy soup, RoFt-Mol's α: fitted on ``post_fit``, its step
    chosen on ``post_select``). The four index sets are disjoint as stated (``post`` = ``post_fit`` ∪
    ``post_select``)."""

    select: np.ndarray
    post: np.ndarray
    post_fit: np.ndarray
    post_select: np.ndarray

    def sizes(self) -> dict[str, int]:
        return {k: int(len(getattr(self, k))) for k in ("select", "post", "post_fit", "post_select")}


def split_validation(n: int, seed: int, select_fraction: float = 0.5) -> ValidationHalves:
    """Split ``n`` validation molecules at random (by ``seed``) into a selection and a post-hoc half.

    The post-hoc half is split once more in two for RoFt-Mol (fit α on one quarter, choose the step on the other).
    """
    if n < 4:
        raise ValueError(f"need at least 4 validation molecules to split, got {n}")
    perm = np.random.default_rng(seed).permutation(n)
    n_sel = int(round(select_fraction * n))
    if not 2 <= n_sel <= n - 2:
        raise ValueError(f"select_fraction={select_fraction} leaves a part under 2 of {n} molecules")
    post = perm[n_sel:]
    half = len(post) // 2
    return ValidationHalves(np.sort(perm[:n_sel]), np.sort(post), np.sort(post[:half]), np.sort(post[half:]))
