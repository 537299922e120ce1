"""The report's point labels: :func:`molft_utils.runs.report_figures.spread_labels` removes overlaps."""

from __future__ import annotations

from molft_utils.runs.report_figures import _plt, spread_labels


def _boxes(fig, labels):
    renderer = fig.canvas.get_renderer()
    return [t.get_window_extent(renderer) for t in labels]


def _overlapping_pairs(boxes) -> int:
    return sum(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


def test_labels_of_nearby_points_are_moved_apart() -> None:
    fig, ax = _plt().subplots(figsize=(4, 3))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 10)
    points = [(5.0, 5.0), (5.05, 5.02), (5.1, 5.04)]  # lora, dora, adalora: the same size, the same RMSE
    labels = [ax.annotate(n, p, textcoords="offset points", xytext=(6, 4)) for n, p in
              zip(("lora", "dora", "adalora"), points, strict=True)]  # fmt: skip
    fig.tight_layout()
    assert _overlapping_pairs(_boxes(fig, labels)) == 3
    moves = spread_labels(fig, labels)
    assert moves >= 2
    assert _overlapping_pairs(_boxes(fig, labels)) == 0
    assert [t.xy for t in labels] == points  # the labels still point at their points


def test_separate_labels_stay_where_they_are() -> None:
    fig, ax = _plt().subplots(figsize=(4, 3))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 10)
    labels = [ax.annotate("a", (1, 1), textcoords="offset points", xytext=(6, 4)),
              ax.annotate("b", (8, 8), textcoords="offset points", xytext=(6, 4))]  # fmt: skip
    fig.tight_layout()
    assert spread_labels(fig, labels) == 0
    assert [t.get_position() for t in labels] == [(6, 4), (6, 4)]
