"""Which resources a restore or remove touches, and in which order: pure functions.

Following LifeKeeper, restoring a resource brings in service everything it
needs (all below it) and everything that needs it (all above it, with what
those need in turn); removing a
resource takes out of service everything above it first. ``only`` limits the
run to the resource itself (``perform_action -s``).
"""

from __future__ import annotations

from collections.abc import Iterable

from hakeeper.db import graph


def restore_set(edges: Iterable[graph.Edge], tag: str, *, only: bool = False) -> set[str]:
    """``tag``, everything above it, and everything any of those needs."""
    edge_list = list(edges)
    if only:
        return {tag}
    kids = graph.children_of(edge_list)
    up = {tag} | graph.ancestors(edge_list, tag)
    needed = set(up)
    for member in up:
        needed |= graph.reachable(kids, member)
    return needed


def remove_set(edges: Iterable[graph.Edge], tag: str, *, only: bool = False) -> set[str]:
    edge_list = list(edges)
    if only:
        return {tag}
    return {tag} | graph.ancestors(edge_list, tag)


def local_recovery_set(edges: Iterable[graph.Edge], tag: str) -> set[str]:
    """What local recovery without a recover action restarts: the failed resource and all above it."""
    return remove_set(edges, tag)
