"""Who does what when a node or a resource fails: pure functions of the membership view.

Nothing here does I/O. Every node that sees the same cluster computes the same
answers from the same inputs — the nodes it sees alive, the priorities in the
equivalencies (replicated, so equal everywhere) and where each hierarchy is in
service — so exactly one node acts on a hierarchy, and tests can check that
without processes.

- :func:`quorum`: may this partition act at all?
- :func:`takeover`: a node was declared dead; where does each hierarchy it
  shared go?
- :func:`next_nodes`: a hierarchy failed here; where to try it next, in order.
- :func:`switchback`: a node came back; which AUTOMATIC hierarchies move to it?
- :func:`at_start`: the cluster starts; which hierarchies does this node bring in service?
- :func:`lone_at_start`: and which of those extended to no other node (they wait for nobody)?

Each decision is taken from one :class:`Snapshot`, read once and never changed;
one whose snapshot grew older than the detection budget before it acted is
taken again from a fresh one.

Every :class:`Decision` carries the one sentence the log prints about it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from hakeeper.db import graph
from hakeeper.db.model import Equivalency
from hakeeper.db.states import Switchback


@dataclass(frozen=True)
class View:
    """What one node sees of the cluster: every member (itself included), and those alive to it."""

    me: str
    nodes: frozenset[str]
    alive: frozenset[str]  # always holds ``me``

    @classmethod
    def of(cls, me: str, nodes: Iterable[str], alive: Iterable[str]) -> View:
        members = frozenset(nodes) | {me}
        return cls(me, members, (frozenset(alive) & members) | {me})


@dataclass(frozen=True)
class Quorum:
    ok: bool
    why: str


def quorum(mode: str, view: View, *, hosts: int = 0, hosts_reached: int = 0) -> Quorum:
    """Whether this node's partition may act: more than half of the members (or of the quorum hosts)."""
    if mode == "none":
        return Quorum(True, "quorum checking is off (quorum_mode=none)")
    if mode == "tcp_remote":
        if hosts == 0:
            return Quorum(False, "quorum_mode=tcp_remote but no quorum_hosts are set")
        ok = 2 * hosts_reached > hosts
        return Quorum(ok, f"reaches {hosts_reached} of {hosts} quorum hosts")
    if mode != "majority":
        raise ValueError(f"unknown quorum mode {mode!r}")
    seen, total = len(view.alive), len(view.nodes)
    ok = 2 * seen > total
    return Quorum(ok, f"sees {seen} of {total} nodes")


@dataclass(frozen=True)
class Hierarchy:
    """Resources connected by dependencies, moved together; ``priorities`` from its first root's equivalencies."""

    roots: tuple[str, ...]
    members: frozenset[str]
    priorities: Mapping[str, int]  # node -> priority (1 highest)
    switchback: Switchback = Switchback.INTELLIGENT

    @property
    def name(self) -> str:
        return "+".join(self.roots)

    def by_priority(self, among: Iterable[str]) -> list[tuple[int, str]]:
        """(priority, node) of the given nodes this hierarchy is extended to, highest priority first."""
        return sorted((self.priorities[n], n) for n in among if n in self.priorities)


def hierarchies(
    edges: Iterable[graph.Edge],
    equivalencies: Iterable[Equivalency],
    switchbacks: Mapping[str, Switchback] | None = None,
) -> list[Hierarchy]:
    """The extended hierarchies: connected resources of which at least one has equivalencies."""
    edge_list = list(edges)
    by_tag: dict[str, dict[str, int]] = {}
    for e in equivalencies:
        by_tag.setdefault(e.tag, {})[e.node] = e.priority
    found: list[Hierarchy] = []
    seen: set[str] = set()
    for tag in sorted(by_tag):
        if tag in seen:
            continue
        members = graph.hierarchy(edge_list, tag)
        seen |= members
        tops = tuple(graph.roots(edge_list, members))
        first = next((t for t in tops if t in by_tag), tag)
        switchback = (switchbacks or {}).get(first, Switchback.INTELLIGENT)
        found.append(Hierarchy(tops, frozenset(members), dict(by_tag[first]), switchback))
    return found


class Act(enum.Enum):
    RESTORE = "restore"  # this node restores the hierarchy
    ELSEWHERE = "elsewhere"  # another node does (or it is in service elsewhere): nothing to do here
    STUCK = "stuck"  # no live node can take it


@dataclass(frozen=True)
class Snapshot:
    """What one decision is taken from: read once, at ``taken`` (monotonic seconds), never changed after.

    ``placed``: what each node that answered runs (this node's own included);
    ``unknown``: the live peers that did not answer, whose holdings are unknown, never "nothing".
    """

    taken: float
    view: View
    hierarchies: tuple[Hierarchy, ...]
    placed: tuple[tuple[str, tuple[str, ...]], ...]
    unknown: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls,
        taken: float,
        view: View,
        hierarchies: Iterable[Hierarchy],
        in_service: Mapping[str, Iterable[str]],
        unknown: Iterable[str] = (),
    ) -> Snapshot:
        placed = tuple(sorted((node, tuple(sorted(tags))) for node, tags in in_service.items()))
        return cls(taken, view, tuple(hierarchies), placed, frozenset(unknown))

    @property
    def in_service(self) -> dict[str, tuple[str, ...]]:
        return dict(self.placed)

    def fresh(self, now: float, budget: float) -> bool:
        """Whether a decision taken from this snapshot may still act: no older than ``budget`` (detection's)."""
        return now - self.taken <= budget


@dataclass(frozen=True)
class Decision:
    hierarchy: Hierarchy
    act: Act
    target: str | None
    sentence: str


def where(h: Hierarchy, in_service: Mapping[str, Iterable[str]]) -> list[str]:
    """The nodes of ``in_service`` (node -> tags in service there) where some member of ``h`` is in service."""
    return sorted(n for n, tags in in_service.items() if h.members & set(tags))


def holders(h: Hierarchy, view: View, in_service: Mapping[str, Iterable[str]]) -> list[str]:
    """The live nodes where some member of ``h`` is in service."""
    return [n for n in where(h, in_service) if n in view.alive]


def takeover(
    dead: str,
    view: View,
    found: Iterable[Hierarchy],
    in_service: Mapping[str, Iterable[str]],
    *,
    dead_paths: int = 1,
) -> list[Decision]:
    """Where each hierarchy extended to ``dead`` goes: to its highest-priority live node, unless in service on one.

    A hierarchy in service nowhere alive goes there too (as LifeKeeper does), whether
    or not it ran on the dead node.
    """
    decisions = []
    cause = f"{dead} dead on all {dead_paths} path{'s' if dead_paths != 1 else ''}"
    for h in found:
        if dead not in h.priorities or dead in view.alive:
            continue
        held = holders(h, view, in_service)
        if held:
            decisions.append(Decision(h, Act.ELSEWHERE, held[0], f"{h.name}: {cause}; in service on {held[0]}, stays"))
            continue
        live = h.by_priority(view.alive)
        if not live:
            decisions.append(Decision(h, Act.STUCK, None, f"{h.name}: {cause}; no live node it is extended to"))
            continue
        priority, target = live[0]
        act = Act.RESTORE if target == view.me else Act.ELSEWHERE
        members = ", ".join(sorted(h.members))
        sentence = f"{h.name}: {cause}; {target} has the highest live priority ({priority}); restoring {members}"
        decisions.append(Decision(h, act, target, sentence))
    return decisions


def next_nodes(h: Hierarchy, view: View, *, failed: Iterable[str]) -> list[str]:
    """Where to try a hierarchy that failed on ``failed`` nodes: live nodes by priority, those excluded."""
    tried = set(failed)
    return [node for _priority, node in h.by_priority(view.alive) if node not in tried]


def after_failed_switch(h: Hierarchy, holder: str | None) -> list[str]:
    """A switchover's restore failed on the target: the nodes *not* to try, so that only the holder it came from
    is asked to take it back (none: it came from nowhere, and the command fails)."""
    return [n for n in h.priorities if n != holder] if holder else list(h.priorities)


def switchback(
    returned: str, view: View, found: Iterable[Hierarchy], in_service: Mapping[str, Iterable[str]]
) -> list[Decision]:
    """AUTOMATIC hierarchies that move to ``returned``: it is back, alive, and higher priority than their holder."""
    decisions = []
    for h in found:
        if h.switchback is not Switchback.AUTOMATIC or returned not in h.priorities or returned not in view.alive:
            continue
        held = holders(h, view, in_service)
        if not held or returned in held:
            continue
        holder = held[0]
        if h.priorities.get(holder, 10**9) <= h.priorities[returned]:
            continue  # never to a lower priority
        act = Act.RESTORE if returned == view.me else Act.ELSEWHERE
        sentence = (
            f"{h.name}: {returned} is back with priority {h.priorities[returned]}, higher than {holder}'s "
            f"({h.priorities.get(holder)}); switchback AUTOMATIC moves it to {returned}"
        )
        decisions.append(Decision(h, act, returned, sentence))
    return decisions


def at_start(
    view: View,
    found: Iterable[Hierarchy],
    in_service: Mapping[str, Iterable[str]],
    *,
    start: Iterable[str],
    owned: Iterable[str] = (),
) -> list[Decision]:
    """Hierarchies named in ``start`` (initialization AUTORES_ISP / INIT_ISP) that run on no live node:
    their highest-priority live node restores them, so a cluster that boots together starts each once.

    One that this node owns (it restarted before anyone saw it dead, so nobody
    took it over) it restores itself: the other nodes see an owner that is alive.
    """
    wanted, mine = set(start), set(owned)
    decisions = []
    for h in found:
        if h.name not in wanted or holders(h, view, in_service):
            continue
        live = h.by_priority(view.alive)
        if not live:
            continue
        priority, target = live[0]
        if h.name in mine and view.me in h.priorities:
            priority, target = h.priorities[view.me], view.me
        act = Act.RESTORE if target == view.me else Act.ELSEWHERE
        members = ", ".join(sorted(h.members))
        sentence = f"{h.name}: in service nowhere at start; {target} has the highest live priority ({priority}); "
        decisions.append(Decision(h, act, target, sentence + f"restoring {members}"))
    return decisions


def lone(
    edges: Iterable[graph.Edge], tags: Iterable[str], equivalencies: Iterable[Equivalency], me: str
) -> list[Hierarchy]:
    """The hierarchies extended to no other node: connected resources none of which has an equivalency to a node
    other than ``me`` (their priorities: ``me``'s, if it has any, else 1)."""
    edge_list = list(edges)
    elsewhere = {e.tag for e in equivalencies if e.node != me}
    found: list[Hierarchy] = []
    seen: set[str] = set()
    for tag in sorted(tags):
        if tag in seen:
            continue
        members = graph.hierarchy(edge_list, tag)
        seen |= members
        if members & elsewhere:
            continue
        found.append(Hierarchy(tuple(graph.roots(edge_list, members)), frozenset(members), {me: 1}))
    return found


def lone_at_start(
    me: str, found: Iterable[Hierarchy], in_service: Iterable[str], *, start: Iterable[str]
) -> list[Decision]:
    """Hierarchies extended to no other node (:func:`lone`) named in ``start`` and not in service here: this node
    restores them at once, as LifeKeeper starts a single-node hierarchy.

    They wait for no quorum and no ownership record: no other node has them, so
    none can run them (an extended hierarchy waits for both, see :func:`at_start`).
    """
    wanted, running = set(start), set(in_service)
    decisions = []
    for h in found:
        if h.name not in wanted or h.members & running or set(h.priorities) - {me}:
            continue
        members = ", ".join(sorted(h.members))
        sentence = f"{h.name}: in service nowhere at start and extended to no other node; restoring {members} here"
        decisions.append(Decision(h, Act.RESTORE, me, sentence))
    return decisions


# ---------------------------------------------------------------------- ownership (see cluster/placement.py)


class Claim(enum.Enum):
    """Why a node claims a hierarchy: what it may take it from."""

    FAILOVER = "failover"  # from an owner that is not alive
    START = "start"  # from nobody (or a dead owner) when the cluster starts
    TAKEOVER = "takeover"  # asked by the owner (or by a node it tried) after a failure there
    SWITCHOVER = "switchover"  # from any owner, who releases it first (or dies meanwhile)
    RETRY = "retry"  # anti-entropy: it runs nowhere and its owner is not alive, or is this node after a failure
    ADOPT = "adopt"  # it runs here and nobody owns it (made before ownership records, or restored by hand)


def may_claim(owner: str | None, claim: Claim, view: View, *, allowed: Iterable[str] = ()) -> str | None:
    """Why ``view.me`` may not take a hierarchy whose recorded owner is ``owner``; None when it may.

    The record read by the claim (a majority's), not a peer's answer, says who
    owns it. An owner that is alive keeps it, unless it asks (``allowed``: the
    requester of a takeover and the nodes it tried), or the claim is a
    switchover (the owner releases first). An owner that is not alive loses it:
    the claimant still waits for its lease to lapse before it restores.
    """
    if owner is None or owner == view.me or claim is Claim.SWITCHOVER or owner in set(allowed):
        return None
    if owner in view.alive:
        return f"{owner} owns it and is alive"
    if claim is Claim.ADOPT:
        return f"{owner} owns it"
    return None


class Verify(enum.Enum):
    PROCEED = "proceed"  # nobody still sees the node alive (or remote_verify is off)
    PAUSE = "pause"  # someone still sees it: ask again after a heartbeat interval
    ABANDON = "abandon"  # someone still saw it after every round: the anti-entropy pass decides later


def verify(seeing: Iterable[str], *, on: bool, round_: int, rounds: int) -> Verify:
    """remote_verify: whether a takeover from a dead node goes on, given the live peers that still see it alive."""
    if not on or not list(seeing):
        return Verify.PROCEED
    return Verify.PAUSE if round_ + 1 < rounds else Verify.ABANDON


def contenders(owner: str | None, previous: Iterable[str], me: str) -> tuple[str, ...]:
    """The nodes that may run a hierarchy whose newest record names ``owner``, taken from ``previous``.

    A record that a minority alone accepted can be picked up by a later claim,
    so its owner's claim may never have held, and the nodes it was taken from may
    still run the hierarchy: until the owner confirms the record (emptying
    ``previous``), every claim ends their leases too — even a claim by the owner.
    """
    return tuple(sorted({n for n in (owner, *previous) if n is not None and n != me}))


class Fix(enum.Enum):
    STOP = "stop"  # take it out of service here: another node owns a newer epoch
    CLAIM = "claim"  # claim it and restore it here: it runs nowhere and falls to this node


@dataclass(frozen=True)
class Repair:
    hierarchy: Hierarchy
    fix: Fix
    sentence: str


def converge(
    view: View,
    found: Iterable[Hierarchy],
    runs: Mapping[str, Mapping[str, int]],
    records: Mapping[str, tuple[int, str | None]],
    *,
    unknown: Iterable[str] = (),
    departed: Iterable[str] = (),
    retry: Iterable[str] = (),
    waiting: Iterable[str] = (),
    held: Mapping[str, int] | None = None,
) -> list[Repair]:
    """One anti-entropy pass on ``view.me``: which duplicates it stops, which hierarchies that run nowhere it claims.

    ``runs``: node -> {hierarchy: epoch it runs it under} for this node and every
    live peer that answered (``unknown``: live peers that did not; a hierarchy is
    "nowhere" only when every live node answered). A copy here stops when another
    node runs the hierarchy under a newer epoch (a record alone does not stop it:
    a record a minority accepted may never hold). ``records``: hierarchy ->
    (epoch, owner), the newest any voter knows — a hint that decides nothing
    alone: a repair that claims reads the majority's record again. ``retry``:
    hierarchies whose restore failed here, due for another try; ``waiting``: those
    whose next try is not due yet. ``held``: the epoch of this node's last claim
    that held, per hierarchy: a record naming this node under another epoch is a
    claim that did not finish (it is finished); one under that epoch, a
    hierarchy taken out of service on purpose or whose restore failed (left to
    ``retry``).
    """
    mine = runs.get(view.me, {})
    silent = set(unknown) & view.alive
    gone = set(departed)
    again, later = set(retry), set(waiting)
    ran = held or {}
    repairs = []
    for h in found:
        epoch, owner = records.get(h.name, (0, None))
        if h.name in mine:
            here = mine[h.name]
            newer = sorted((r[h.name], n) for n, r in runs.items() if n != view.me and r.get(h.name, -1) > here)
            if newer:
                e, n = newer[-1]
                sentence = f"{h.name}: in service on {n} under epoch {e} too, here under epoch {here}"
                repairs.append(Repair(h, Fix.STOP, sentence + ": taking it out of service here"))
            continue
        if silent or any(h.name in r for r in runs.values()) or view.me not in h.priorities or owner is None:
            continue
        if h.name in later:  # its next try is not due yet
            continue
        if owner == view.me:
            if h.name in again:
                sentence = f"{h.name}: runs nowhere since its restore failed here; trying again"
                repairs.append(Repair(h, Fix.CLAIM, sentence))
            elif ran.get(h.name) != epoch:
                sentence = f"{h.name}: runs nowhere; this node's claim of epoch {epoch} did not finish; finishing it"
                repairs.append(Repair(h, Fix.CLAIM, sentence))
            continue
        if owner in view.alive or owner in gone:
            continue
        live = h.by_priority(view.alive)
        if live and live[0][1] == view.me:
            sentence = f"{h.name}: runs nowhere and its owner {owner} is not alive; {view.me} has the highest live "
            repairs.append(Repair(h, Fix.CLAIM, sentence + f"priority ({live[0][0]}); claiming it"))
    return repairs
