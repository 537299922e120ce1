"""The learning-rate sweep's grid rule: when the best rate sits at an edge of the rates tried, try one beyond it.

A sweep ranks a method's candidate rates on validation. If the best candidate is the largest (or smallest) of the
grid, the optimum may lie outside the grid and the method would be judged at a rate that understates it; lesson
04 then trains the next rate beyond that edge, on the grid's own spacing, a bounded number of times.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["rate_beyond"]

_LADDER_UP = {1: 3.0, 3: 10 / 3}  # the factor to the next rung: 1 -> 3 -> 10 -> 30 ...
_LADDER_DOWN = {1: 10 / 3, 3: 3.0}  # the divisor to the rung below: 1 -> 0.3, 3 -> 1


def _mantissa(rate: float) -> float:
    return rate / 10 ** math.floor(math.log10(rate) + 1e-9)


def _on_ladder(rate: float) -> int | None:
    """1 or 3 when ``rate`` is 1·10^k or 3·10^k (to rounding), else None."""
    m = _mantissa(rate)
    return next((step for step in _LADDER_UP if math.isclose(m, step, rel_tol=1e-6)), None)


def rate_beyond(grid: Sequence[float], upward: bool) -> float:
    """The next learning rate past the top (``upward``) or the bottom of ``grid``, on the grid's spacing.

    A grid on the 1-3-10 ladder (``1e-4, 3e-4``, ...) continues it: ``3e-4`` -> ``1e-3`` upward,
    ``1e-4`` -> ``3e-5`` downward. Any other grid continues its mean geometric step.

    Raises
    ------
    ValueError
        With fewer than two distinct positive rates (no spacing to continue).
    """
    rates = sorted({float(r) for r in grid})
    if len(rates) < 2 or rates[0] <= 0:
        raise ValueError(f"need at least two distinct positive rates to continue a grid, got {list(grid)}")
    edge = rates[-1] if upward else rates[0]
    if all(_on_ladder(r) for r in rates):
        rung = _on_ladder(edge)
        return float(f"{(edge * _LADDER_UP[rung] if upward else edge / _LADDER_DOWN[rung]):.1g}")
    ratio = (rates[-1] / rates[0]) ** (1 / (len(rates) - 1))
    return edge * ratio if upward else edge / ratio
