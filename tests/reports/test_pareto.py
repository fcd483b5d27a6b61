"""Pareto fronts (reports/pareto.py): lower cost and higher value are better."""

from __future__ import annotations

import math
import random

from edgebench.reports.pareto import dominates, pareto_front


def brute_force(points):
    valid = [i for i, p in enumerate(points) if p is not None and None not in p and not any(math.isnan(v) for v in p)]
    return sorted((i for i in valid if not any(dominates(points[j], points[i]) for j in valid if j != i)),
                  key=lambda i: (points[i][0], -points[i][1]))


def test_front_of_a_hand_made_set():
    pts = [
        (1.0, 0.90),  # 0 cheapest: on the front
        (2.0, 0.95),  # 1 more accurate for more cost: on the front
        (2.5, 0.93),  # 2 dominated by 1
        (3.0, 0.99),  # 3 on the front
        (4.0, 0.99),  # 4 same accuracy as 3, costs more: dominated
        (0.5, 0.50),  # 5 cheapest of all: on the front
        (5.0, 0.40),  # 6 dominated by everything cheaper
    ]
    assert pareto_front(pts) == [5, 0, 1, 3]


def test_identical_points_are_both_on_the_front_and_missing_values_are_ignored():
    pts = [(1.0, 0.9), (1.0, 0.9), None, (None, 0.99), (2.0, float("nan")), (0.5, 0.8), (1.0, 0.85)]
    assert pareto_front(pts) == [5, 0, 1]


def test_same_cost_keeps_only_the_most_accurate():
    assert pareto_front([(1.0, 0.8), (1.0, 0.9), (1.0, 0.85)]) == [1]


def test_empty_and_single():
    assert pareto_front([]) == []
    assert pareto_front([(3.0, 0.1)]) == [0]


def test_matches_brute_force_on_random_sets():
    rng = random.Random(7)
    for _ in range(200):
        n = rng.randint(1, 25)
        # a coarse grid makes ties on either axis common
        pts = [(rng.randint(0, 6) / 2, rng.randint(0, 6) / 6) for _ in range(n)]
        assert pareto_front(pts) == brute_force(pts)
