"""Which resources a restore or remove touches, and in which order: pure functions.

Following LifeKeeper, restoring a resource brings in service everything it
needs (all below it) and everything that needs it (all above it, with what
those need in turn); removing a
resource takes out of service everything above it first. ``only`` limits the
run to the resource itself (``perform_action -s``).

One exception to "parents first": when a node loses quorum, the
**network face** of what it runs (its virtual addresses, :func:`network_face`)
is removed first, all at once, and only then the rest in order. Removing an
address takes milliseconds; stopping an application may take seconds, and the
other nodes take over after a short, fixed wait (the lease). An application
that loses its address while it runs is being stopped anyway; what matters is
that no client reaches it any more once the lease runs out.

:func:`parents_to_stop` holds the rule that states stay true: a resource is
never ISP over one it needs that is not in service.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from hakeeper.db import Resource, State, graph

#: Kits whose resources are how clients reach a hierarchy (``app/type``): removing one cuts them off at once.
NETWORK_FACE_TYPES = frozenset({"comm/ip"})


def restore_set(edges: Iterable[graph.Edge], tag: str, *, only: bool = False) -> set[str]:
    """``tag``, everything above it, and everything any of those needs."""
    edge_list = list(edges)
    if only:
        return {tag}
    up = {tag} | graph.ancestors(edge_list, tag)
    return up | graph.reachable_from(graph.children_of(edge_list), up)


def remove_set(edges: Iterable[graph.Edge], tag: str, *, only: bool = False) -> set[str]:
    edge_list = list(edges)
    if only:
        return {tag}
    return {tag} | graph.ancestors(edge_list, tag)


def local_recovery_set(edges: Iterable[graph.Edge], tag: str) -> set[str]:
    """What local recovery without a recover action restarts: the failed resource and all above it."""
    return remove_set(edges, tag)


def is_network_face(resource: Resource, types: Iterable[str] = NETWORK_FACE_TYPES) -> bool:
    """Whether ``resource`` is how clients reach its hierarchy (a virtual address)."""
    return f"{resource.app}/{resource.type}" in set(types)


def network_face(resources: Iterable[Resource], types: Iterable[str] = NETWORK_FACE_TYPES) -> set[str]:
    """The resources to cut first when this node loses quorum: its virtual addresses not already OSU.

    Taken whatever their place in the hierarchy (they are usually children of the
    application) and removed together, in parallel, before anything else. A failed
    one (OSF) may still hold its address, so it is cut too (remove is a force action).
    """
    kinds = set(types)
    return {r.tag for r in resources if r.state is not State.OSU and is_network_face(r, kinds)}


def parents_to_stop(
    edges: Iterable[graph.Edge], states: Mapping[str, State], *, below: Collection[str] | None = None
) -> dict[str, str]:
    """Which ISP resources must go out of service because something below them is not in service.

    Returns each such resource with the one below it (a child, or a child's
    child…) that is not in service: the smallest tag, to name in the reason.
    A resource missing from ``states`` counts as not in service. ISU resources
    are unprotected and left alone, but what is above them is judged by what is
    below them all the same. ``below``: only what is above these counts (the
    resources a run acted on); None: every resource. Once every resource
    returned is out of service, no ISP resource has anything of ``below`` below
    it out of service.
    """
    edges = list(edges)
    scope = None if below is None else set(below)
    tags = set(states) | {t for edge in edges for t in edge}
    if not any(not states.get(t, State.ILLSTATE).in_service for t in (tags if scope is None else tags & scope)):
        return {}  # nothing down (the end of every run that succeeded): nothing to judge
    kids = graph.children_of(edges)
    out: dict[str, str] = {}
    for tag, state in states.items():
        if state is not State.ISP:
            continue
        under = graph.reachable(kids, tag)
        if scope is not None:
            under &= scope
        down = sorted(t for t in under if not states.get(t, State.ILLSTATE).in_service)
        if down:
            out[tag] = down[0]
    return out
