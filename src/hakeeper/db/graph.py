"""Pure functions over the dependency graph of a hierarchy.

A dependency is an edge ``parent -> child``: the parent needs the child, so a
restore brings the child in service first and a remove takes the parent out of
service first. The LCD keeps the graph acyclic (the cycle check runs in the
write transaction of every new edge); an LCD damaged otherwise is found by
:func:`cyclic`. The functions here never touch the database, so the recovery
engine and the tests can use them on any snapshot.

Every order is deterministic: among resources that may go at the same time,
tags are taken in sorted order.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping

from hakeeper.errors import InternalError

Edge = tuple[str, str]  # (parent, child)
Adjacency = Mapping[str, Collection[str]]


def children_of(edges: Iterable[Edge]) -> dict[str, set[str]]:
    """Map each parent to the set of its direct children."""
    out: dict[str, set[str]] = defaultdict(set)
    for parent, child in edges:
        out[parent].add(child)
    return out


def parents_of(edges: Iterable[Edge]) -> dict[str, set[str]]:
    """Map each child to the set of its direct parents."""
    out: dict[str, set[str]] = defaultdict(set)
    for parent, child in edges:
        out[child].add(parent)
    return out


def reachable(adjacency: Adjacency, start: str) -> set[str]:
    """Every tag reachable from ``start`` following ``adjacency`` (``start`` itself excluded)."""
    return reachable_from(adjacency, (start,))


def reachable_from(adjacency: Adjacency, starts: Iterable[str]) -> set[str]:
    """Every tag reachable from any of ``starts`` in one or more steps (one walk for all of them)."""
    seen: set[str] = set()
    stack = [tag for start in starts for tag in adjacency.get(start, ())]
    while stack:
        tag = stack.pop()
        if tag not in seen:
            seen.add(tag)
            stack.extend(adjacency.get(tag, ()))
    return seen


def descendants(edges: Iterable[Edge], tag: str) -> set[str]:
    """All direct and indirect children of ``tag``."""
    return reachable(children_of(edges), tag)


def ancestors(edges: Iterable[Edge], tag: str) -> set[str]:
    """All direct and indirect parents of ``tag`` (its dependents)."""
    return reachable(parents_of(edges), tag)


def creates_cycle(edges: Iterable[Edge], parent: str, child: str) -> bool:
    """Whether adding ``parent -> child`` would close a cycle."""
    return parent == child or parent in descendants(edges, child)


def unordered(edges: Iterable[Edge], tags: Iterable[str], *, children_first: bool = True) -> set[str]:
    """The tags of ``tags`` that no order can reach: on a dependency cycle among them, or waiting on one.

    ``children_first``: a tag waits on its children (a restore's order), else on
    its parents (a remove's). Only edges between members of ``tags`` count.
    Empty when ``tags`` can be ordered.
    """
    members = set(tags)
    inner = {(p, c) for p, c in edges if p in members and c in members}
    waits_on = children_of(inner) if children_first else parents_of(inner)
    unblocks = parents_of(inner) if children_first else children_of(inner)
    pending = {tag: len(waits_on.get(tag, ())) for tag in members}
    ready = [tag for tag, count in pending.items() if count == 0]
    while ready:
        for nxt in unblocks.get(ready.pop(), ()):
            pending[nxt] -= 1
            if pending[nxt] == 0:
                ready.append(nxt)
    return {tag for tag, count in pending.items() if count > 0}


def cyclic(edges: Iterable[Edge], tags: Iterable[str]) -> list[str]:
    """The tags of ``tags`` on a dependency cycle among them (or between two cycles), sorted; empty if none."""
    edge_list = list(edges)
    members = set(tags)
    return sorted(unordered(edge_list, members) & unordered(edge_list, members, children_first=False))


def hierarchy(edges: Iterable[Edge], tag: str) -> set[str]:
    """The hierarchy ``tag`` belongs to: everything connected to it, ``tag`` included."""
    undirected: dict[str, set[str]] = defaultdict(set)
    for parent, child in edges:
        undirected[parent].add(child)
        undirected[child].add(parent)
    return reachable(undirected, tag) | {tag}


def roots(edges: Iterable[Edge], tags: Iterable[str]) -> list[str]:
    """The tags of ``tags`` that no other tag of ``tags`` depends on, sorted."""
    members = set(tags)
    has_parent = {child for parent, child in edges if parent in members and child in members}
    return sorted(members - has_parent)


def restore_levels(edges: Iterable[Edge], tags: Iterable[str]) -> list[list[str]]:
    """Group ``tags`` into levels for a restore: every child is in an earlier level than its parents.

    Only edges between members of ``tags`` count. Level 0 holds the resources
    that depend on nothing; each later level holds those whose children are
    all in earlier levels. Resources of one level are independent of each other.

    Raises :class:`InternalError` if the edges among ``tags`` hold a cycle.
    """
    members = set(tags)
    pending: dict[str, int] = dict.fromkeys(members, 0)  # tag -> children not yet placed
    dependents: dict[str, list[str]] = defaultdict(list)
    for parent, child in set(edges):
        if parent in members and child in members:
            pending[parent] += 1
            dependents[child].append(parent)
    level = sorted(tag for tag, count in pending.items() if count == 0)
    levels: list[list[str]] = []
    placed = 0
    while level:
        levels.append(level)
        placed += len(level)
        following: list[str] = []
        for tag in level:
            for parent in dependents[tag]:
                pending[parent] -= 1
                if pending[parent] == 0:
                    following.append(parent)
        level = sorted(following)
    if placed != len(members):
        stuck = sorted(tag for tag, count in pending.items() if count > 0)
        raise InternalError(f"dependency cycle among {', '.join(stuck[:5])}")
    return levels


def restore_order(edges: Iterable[Edge], tags: Iterable[str]) -> list[str]:
    """The order to restore ``tags`` one at a time: children before their parents.

    Among resources ready at the same moment the smallest tag goes first, so the
    order is a deterministic topological order (Kahn's algorithm with a heap).
    """
    members = set(tags)
    pending: dict[str, int] = dict.fromkeys(members, 0)
    dependents: dict[str, list[str]] = defaultdict(list)
    for parent, child in set(edges):
        if parent in members and child in members:
            pending[parent] += 1
            dependents[child].append(parent)
    ready = [tag for tag, count in pending.items() if count == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        tag = heapq.heappop(ready)
        order.append(tag)
        for parent in dependents[tag]:
            pending[parent] -= 1
            if pending[parent] == 0:
                heapq.heappush(ready, parent)
    if len(order) != len(members):
        stuck = sorted(tag for tag, count in pending.items() if count > 0)
        raise InternalError(f"dependency cycle among {', '.join(stuck[:5])}")
    return order


def remove_order(edges: Iterable[Edge], tags: Iterable[str]) -> list[str]:
    """The order to remove ``tags`` one at a time: parents before their children.

    It is exactly the reverse of :func:`restore_order`.
    """
    return restore_order(edges, tags)[::-1]


def rooted_at(edges: Iterable[Edge], tops: Iterable[str]) -> list[str]:
    """The hierarchies rooted at ``tops``: each top and the children that only they need.

    A child shared with a resource outside the result is left out (removing it
    would take that other resource with it). Returned in remove order.
    """
    edge_list = list(edges)
    kids = children_of(edge_list)
    parents = parents_of(edge_list)
    chosen = set(tops)
    candidates = set(chosen)
    for top in chosen:
        candidates |= reachable(kids, top)
    for tag in remove_order(edge_list, candidates):
        if tag not in chosen and parents.get(tag) and parents[tag] <= chosen:
            chosen.add(tag)
    return remove_order(edge_list, chosen)


def tree_lines(edges: Iterable[Edge], tags: Iterable[str]) -> list[tuple[int, str, bool]]:
    """How to show ``tags`` as an indented tree: ``(depth, tag, repeated)`` per line, roots first.

    Each root comes with its children below it, depth first, in sorted order.
    A child shared by several parents is shown under each of them, but only the
    first time with its own children (``repeated`` is True the other times), so
    the output stays linear in the size of the graph.
    """
    members = set(tags)
    kids: dict[str, list[str]] = {}
    for parent, child in edges:
        if parent in members and child in members:
            kids.setdefault(parent, []).append(child)
    for children in kids.values():
        children.sort()
    lines: list[tuple[int, str, bool]] = []
    shown: set[str] = set()
    for top in roots(((p, c) for p, cs in kids.items() for c in cs), members):
        stack = [(0, top)]
        while stack:
            depth, tag = stack.pop()
            if tag in shown:
                lines.append((depth, tag, True))
                continue
            shown.add(tag)
            lines.append((depth, tag, False))
            stack.extend((depth + 1, child) for child in reversed(kids.get(tag, [])))
    return lines
