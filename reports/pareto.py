"""Pareto fronts: the candidates no other candidate beats on both axes at once."""

from __future__ import annotations

from collections.abc import Sequence


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """``a`` costs no more and is worth no less than ``b``, and is strictly better on one of the two."""
    return a[0] <= b[0] and a[1] >= b[1] and (a[0] < b[0] or a[1] > b[1])


def pareto_front(points: Sequence[tuple[float, float] | None]) -> list[int]:
    """Indices of the non-dominated points, ordered by cost.

    Each point is ``(cost, value)``: lower cost is better (latency, memory, size), higher value is better
    (accuracy). ``None`` entries and points with a missing or NaN coordinate are ignored, so callers can
    pass one entry per row and index back into their rows. Identical points are all on the front: neither
    beats the other.
    """
    valid = [
        i for i, p in enumerate(points)
        if p is not None and p[0] is not None and p[1] is not None and p[0] == p[0] and p[1] == p[1]
    ]
    # Sweep by cost (ties: best value first); a point is on the front when its value beats everything
    # cheaper, or equals the best so far at the same cost as that best (an identical point).
    order = sorted(valid, key=lambda i: (points[i][0], -points[i][1]))
    front: list[int] = []
    best_value = float("-inf")
    best_point: tuple[float, float] | None = None
    for i in order:
        cost, value = points[i]
        if value > best_value:
            front.append(i)
            best_value, best_point = value, (cost, value)
        elif best_point is not None and (cost, value) == best_point:
            front.append(i)
    return front
