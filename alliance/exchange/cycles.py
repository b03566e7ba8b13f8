"""Profitable cycles in a graph of exchange rates, in exact arithmetic.

An edge u → v gains `factor` = rate × (1 − fee percent): what a large exchange returns
per point. Fixed fees and flooring only lose points, and lose less the larger the
amount, so a cycle whose factors multiply to more than 1 pays at a large enough amount,
and one whose product is at most 1 never does. Rates are refused exactly when they
close a cycle with product > 1 (a product of exactly 1 returns at most what went in).
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Mapping, Sequence
from fractions import Fraction
from typing import TypeVar

N = TypeVar("N", bound=Hashable)


def profitable_cycle(edges: Mapping[tuple[N, N], Fraction]) -> list[N] | None:
    """A cycle [a, b, …, a] whose factors multiply to more than 1, or None.

    Bellman-Ford over products from a virtual source joined to every node: after
    |nodes| rounds, a node still improving lies behind a profitable cycle; walking its
    predecessors |nodes| steps lands inside the cycle."""
    nodes = sorted({node for edge in edges for node in edge}, key=repr)
    best: dict[N, Fraction] = dict.fromkeys(nodes, Fraction(1))
    before: dict[N, N] = {}
    improved: N | None = None
    for _ in range(len(nodes)):
        improved = None
        for (u, v), factor in edges.items():
            gain = best[u] * factor
            if gain > best[v]:
                best[v] = gain
                before[v] = u
                improved = v
        if improved is None:
            return None
    if improved is None:  # no edges at all
        return None
    node = improved
    for _ in range(len(nodes)):
        node = before[node]
    cycle = [node]
    step = before[node]
    while step != node:
        cycle.append(step)
        step = before[step]
    cycle.append(node)
    cycle.reverse()
    return cycle


def cycle_product(edges: Mapping[tuple[N, N], Fraction], cycle: Sequence[N]) -> Fraction:
    product = Fraction(1)
    for u, v in itertools.pairwise(cycle):
        product *= edges[(u, v)]
    return product
