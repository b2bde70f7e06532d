"""A simulated cluster under random faults: one owner at a time, and the service back once the faults stop.

Three nodes run one hierarchy (``web``, priorities node1 1, node2 2, node3 3) on a
simulated clock in steps of 50 ms. Each node's daemon is a small state machine
around the project's pure functions — the voter (:func:`placement.on_prepare`,
:func:`placement.on_accept`), who may claim (:func:`decide.may_claim`), where a dead
node's hierarchy goes (:func:`decide.takeover`), the anti-entropy pass
(:func:`decide.converge`) — wired as hakeeperd wires them: heartbeats make a peer
DEAD after 0.5 s of silence; a node that sees no majority stops serving (the lease);
a claim takes two steps (prepare, then accept), so other nodes act between its
phases; a voter asked to take the hierarchy from an owner that did not ask
vetoes unless it saw that owner DEAD for ``takeover_delay``; a node that accepts a
newer epoch owned by another stops its copy; the claimant restores only once
the previous owner released it or its lease lapsed, and, after a release, once
a majority still holds its claim (a later claim may have won at a majority the
released node was not part of).

Hypothesis picks the faults and their timing: links cut and healed (TCP: both
directions at once), nodes powered off and on, daemons frozen (their heartbeats
go on and their applications keep running; the guard kills a daemon frozen for
more than ``guard_timeout``, and cuts the node's clients off as soon as the
heartbeat process hears no majority while the daemon is frozen), switchovers
asked of any node. After every step: never two nodes serving. Once the faults stop (links healed, daemons thawed,
nodes on): exactly one node serves within a bound.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hakeeper.cluster import decide, placement
from hakeeper.cluster.decide import Act, Claim, Fix, Hierarchy, View
from hakeeper.cluster.placement import Ballot, Owner, Slot

NODES = ("node1", "node2", "node3")
WEB = Hierarchy(("web",), frozenset({"web"}), {"node1": 1, "node2": 2, "node3": 3})
STEP = 0.05  # s of simulated time per tick
BUDGET = 0.2  # heartbeat_interval x heartbeat_misses (the defaults: 0.05 s x 4)
DELAY = 0.15  # takeover_delay (the default)
GUARD = 5.0  # guard_timeout
CONVERGE = 0.5  # the anti-entropy period
WAIT = 10.0  # how long a claimant waits for the previous owner to be out of it
MAJORITY = placement.majority(len(NODES))


@dataclass
class ClaimRun:
    kind: Claim
    ballot: Ballot
    phase: str = "prepare"  # prepare -> accept -> wait
    current: Owner = placement.NOBODY
    epoch: int = 0
    started: float = 0.0
    tries: int = 1
    top: int = 0  # the highest epoch the promises showed
    permitted: set[str] = field(default_factory=set)  # nodes that let it go when asked
    asked: bool = False  # one released it when asked: the claim is confirmed before it restores


@dataclass
class Node:
    name: str
    up: bool = True
    frozen_at: float | None = None
    serving: int | None = None  # the epoch it runs web under
    won: int | None = None  # the epoch of its last claim that held
    retry: bool = False  # took web out of service for lost quorum: to try again when quorum is back
    slot: Slot = field(default_factory=Slot)
    heard: dict[str, float | None] = field(default_factory=dict)
    dead_since: dict[str, float] = field(default_factory=dict)
    handled_death: set[str] = field(default_factory=set)
    claim: ClaimRun | None = None
    rounds: int = 0
    next_pass: float = 0.0
    booted_at: float | None = None  # powered on and not yet through the start's decision

    @property
    def frozen(self) -> bool:
        return self.frozen_at is not None


@dataclass
class World:
    t: float = 0.0
    cut: set[frozenset[str]] = field(default_factory=set)
    nodes: dict[str, Node] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    lease_check: bool = True  # the voters' veto (off only to show that the checks can fail)
    guard_cut: bool = True  # the heartbeat process and the guard cut a frozen, isolated node (off: likewise)

    @classmethod
    def start(cls) -> World:
        w = cls()
        for n in NODES:
            w.nodes[n] = Node(n, heard={p: 0.0 for p in NODES if p != n})
        first = Slot(Ballot(1, "node1"), Ballot(1, "node1"), Owner(1, "node1"))
        for node in w.nodes.values():
            node.slot = first
        w.nodes["node1"].serving = w.nodes["node1"].won = 1
        return w

    # ------------------------------------------------------------------ the network

    def link(self, a: str, b: str) -> bool:
        """Heartbeats flow between a and b (both powered on, the link not cut)."""
        return self.nodes[a].up and self.nodes[b].up and frozenset((a, b)) not in self.cut

    def answers(self, a: str, b: str) -> bool:
        """b's hakeeperd answers a request from a."""
        return b == a or (self.link(a, b) and not self.nodes[b].frozen)

    def state(self, a: str, b: str) -> str:
        heard = self.nodes[a].heard.get(b)
        if heard is None:
            return "UNKNOWN"
        return "ALIVE" if self.t - heard <= BUDGET else "DEAD"

    def view(self, a: str) -> View:
        return View.of(a, NODES, [b for b in NODES if b != a and self.state(a, b) == "ALIVE"])

    # ------------------------------------------------------------------ one node's daemon

    def tick(self) -> None:
        self.t = round(self.t + STEP, 6)
        for a in NODES:
            for b in NODES:
                if a != b and self.link(a, b):
                    self.nodes[a].heard[b] = self.t
        for name in NODES:
            node = self.nodes[name]
            if node.up and node.frozen_at is not None and self.t - node.frozen_at > GUARD:
                self.log.append(f"{self.t:.2f} {name}: the guard kills the frozen daemon and stops web")
                self.power_off(name)
            elif node.up and node.frozen_at is not None and node.serving is not None and self.guard_cut:
                stale = self.t - node.frozen_at > STEP * 2  # no tick from the daemon for an interval
                if stale and not decide.quorum("majority", self.view(name)).ok:
                    self.log.append(f"{self.t:.2f} {name}: no majority, daemon frozen: the guard cuts web's address")
                    node.serving, node.retry = None, True  # thawed, the daemon brings it back (local recovery)
        order = list(NODES[int(self.t / STEP) % 3 :] + NODES[: int(self.t / STEP) % 3])
        for name in order:
            node = self.nodes[name]
            if node.up and not node.frozen:
                self.daemon(node)

    def daemon(self, node: Node) -> None:
        me = node.name
        for peer in NODES:
            if peer == me:
                continue
            if self.state(me, peer) == "DEAD":
                node.dead_since.setdefault(peer, self.t)
            else:
                node.dead_since.pop(peer, None)
                node.handled_death.discard(peer)
        view = self.view(me)
        if not decide.quorum("majority", view).ok:
            if node.serving is not None:
                self.log.append(f"{self.t:.2f} {me}: no quorum: stops web (the lease)")
                node.serving, node.retry = None, True
            if node.claim is not None and node.claim.phase != "wait":
                node.claim = None  # a claim that holds waits on (as _previous_gone does), restoring nothing
            return
        if node.claim is not None:
            self.advance(node)
            return
        if node.booted_at is not None and self.t - node.booted_at >= BUDGET + DELAY:
            self.boot(node, view)
            if node.claim is not None:
                return
        for peer, since in sorted(node.dead_since.items()):
            if peer in node.handled_death or self.t - since < DELAY:
                continue
            node.handled_death.add(peer)
            runs = {p: ["web"] for p in NODES if self.answers(me, p) and self.nodes[p].serving is not None}
            for d in decide.takeover(peer, view, [WEB], runs):
                if d.act is Act.RESTORE:
                    self.begin(node, Claim.FAILOVER)
                    return
        if self.t >= node.next_pass:
            node.next_pass = self.t + CONVERGE
            self.converge(node, view)

    def boot(self, node: Node, view: View) -> None:
        """At start (AUTORES_ISP): once every live peer answered, its highest-priority live node restores web."""
        me = node.name
        peers = [p for p in view.alive if p != me]
        if any(not self.answers(me, p) for p in peers):
            if self.t - (node.booted_at or self.t) > WAIT:
                node.booted_at = None  # gave up: the anti-entropy pass decides
            return
        node.booted_at = None
        runs = {p: ["web"] for p in [me, *peers] if self.nodes[p].serving is not None}
        owned = ["web"] if node.slot.value.node == me else []
        for d in decide.at_start(view, [WEB], runs, start=["web"], owned=owned):
            if d.act is Act.RESTORE:
                self.begin(node, Claim.START)

    def converge(self, node: Node, view: View) -> None:
        me = node.name
        peers = [p for p in view.alive if p != me]
        answering = [p for p in peers if self.answers(me, p)]
        runs: dict[str, dict[str, int]] = {}
        newest = node.slot
        for p in [me, *answering]:
            other = self.nodes[p]
            runs[p] = {"web": other.serving} if other.serving is not None else {}
            if other.slot.accepted > newest.accepted:
                newest = other.slot
        best = newest.value
        unknown = [p for p in peers if p not in answering]
        held = {"web": node.won} if node.won is not None else {}
        retry = ["web"] if node.retry else []
        records = {"web": (best.epoch, best.node)}
        for r in decide.converge(view, [WEB], runs, records, unknown=unknown, held=held, retry=retry):
            if r.fix is Fix.STOP:
                self.log.append(f"{self.t:.2f} {me}: {r.sentence}")
                node.serving = None
            else:
                self.begin(node, Claim.RETRY)

    def begin(self, node: Node, kind: Claim) -> None:
        node.rounds += 1
        node.claim = ClaimRun(kind, Ballot(node.rounds, node.name), started=self.t)
        self.log.append(f"{self.t:.2f} {node.name}: claims web ({kind.value})")

    def advance(self, node: Node) -> None:
        me, c = node.name, node.claim
        assert c is not None
        reachable = [v for v in NODES if self.answers(me, v)]
        if c.phase == "prepare":
            promised, refused = [], False
            for v in reachable:
                voter = self.nodes[v]
                voter.slot, answer = placement.on_prepare(voter.slot, c.ballot)
                node.rounds = max(node.rounds, answer.promised.round)
                refused = refused or not answer.ok
                if answer.ok:
                    promised.append(answer)
            if len(promised) < MAJORITY:
                self.again(node, c, refused)
                return
            c.current = max(promised, key=lambda a: a.accepted).value
            c.top = max(a.value.epoch for a in promised)
            if decide.may_claim(c.current.node, c.kind, self.view(me), allowed=c.permitted) is not None:
                node.claim = None
                return
            c.phase = "accept"
            return
        if c.phase == "accept":
            rivals = decide.contenders(c.current.node, c.current.previous, me)
            wanted = Owner(max(c.current.epoch, c.top) + 1, me, rivals)
            check = [n for n in rivals if n not in c.permitted] if c.kind is not Claim.SWITCHOVER else []
            if not self.lease_check:
                check = []
            took, refused, vetoed = 0, False, False
            for v in reachable:
                voter = self.nodes[v]
                if any(v == n or self.state(v, n) != "DEAD" for n in check) or any(
                    self.t - voter.dead_since.get(n, self.t) < DELAY for n in check
                ):
                    vetoed = True
                    continue  # it sees one of them, is one of them, or has not seen them DEAD for takeover_delay
                voter.slot, answer = placement.on_accept(voter.slot, c.ballot, wanted)
                node.rounds = max(node.rounds, answer.promised.round)
                refused = refused or not answer.ok
                if answer.ok:
                    took += 1
                    if v != me and voter.serving is not None and voter.serving < wanted.epoch:
                        self.log.append(f"{self.t:.2f} {v}: accepted epoch {wanted.epoch} of {me}: stops web")
                        voter.serving = None
            if took < MAJORITY:
                others = [n for n in c.current.previous if n != c.current.node and n not in c.permitted]
                asked = [n for n in others if self.answers(me, n)]
                if vetoed and asked and c.tries < placement.CLAIM_TRIES:
                    for n in asked:  # they let it go when asked, then the claim goes on without their veto
                        self.nodes[n].serving = None
                        c.permitted.add(n)
                    self.again(node, c, True)
                    return
                self.again(node, c, refused)
                return
            c.epoch, c.phase = wanted.epoch, "wait"
            node.won = wanted.epoch
            c.permitted |= set(check)  # the voters saw their leases lapse
        if node.slot.value.epoch > c.epoch:
            node.claim = None  # superseded while waiting
            return
        gone = True
        for previous in decide.contenders(c.current.node, c.current.previous, me):
            if previous in c.permitted:
                continue
            if self.answers(me, previous):
                self.nodes[previous].serving = None  # it releases web when asked
                c.permitted.add(previous)
                c.asked = True
            elif self.state(me, previous) != "DEAD" or self.t - node.dead_since.get(previous, self.t) < DELAY:
                gone = False
            elif self.lease_lapsed(me, previous):  # the voters agree that its lease lapsed
                c.permitted.add(previous)
            else:
                gone = False
        if gone and c.asked and self.confirm_ours(node, c) is not True:
            return  # superseded (the claim is dropped), or no majority to confirm it yet
        if gone:
            node.serving = c.epoch
            node.retry = False
            node.claim = None
            self.log.append(f"{self.t:.2f} {me}: serves web under epoch {c.epoch}")
        elif self.t - c.started > WAIT:
            node.claim, node.retry = None, True  # ours and out of service: try again later

    def confirm_ours(self, node: Node, c: ClaimRun) -> bool | None:
        """After a release, the claim must still be the record at a majority (as ``_same`` in failover.py).

        A release answers only for the node that released: a later claim may have
        won meanwhile at a majority that did not include this node. None: no
        majority answered; False: superseded (the claim is dropped).
        """
        me = node.name
        reachable = [v for v in NODES if self.answers(me, v)]
        node.rounds += 1
        ballot = Ballot(node.rounds, me)
        promised = []
        for v in reachable:
            voter = self.nodes[v]
            voter.slot, answer = placement.on_prepare(voter.slot, ballot)
            node.rounds = max(node.rounds, answer.promised.round)
            if answer.ok:
                promised.append(answer)
        if len(promised) < MAJORITY:
            return None
        best = max(promised, key=lambda a: a.accepted).value
        if (best.epoch, best.node) != (c.epoch, me):
            self.log.append(f"{self.t:.2f} {me}: superseded by {best} after the release: restores nothing")
            node.claim = None
            return False
        took = 0
        for v in reachable:
            voter = self.nodes[v]
            voter.slot, answer = placement.on_accept(voter.slot, ballot, best)
            took += answer.ok
        return True if took >= MAJORITY else None

    def lease_lapsed(self, me: str, previous: str) -> bool:
        """A majority of the voters me reaches has seen ``previous`` DEAD for takeover_delay."""
        agree = [
            v for v in NODES
            if self.answers(me, v) and v != previous and self.state(v, previous) == "DEAD"
            and self.t - self.nodes[v].dead_since.get(previous, self.t) >= DELAY
        ]  # fmt: skip
        return len(agree) >= MAJORITY or not self.lease_check

    def again(self, node: Node, c: ClaimRun, refused: bool) -> None:
        """A claim short of a majority: above the higher ballot met, a few times (as placement.claim does)."""
        if not refused or c.tries >= placement.CLAIM_TRIES:
            node.claim = None
            return
        node.rounds += 1
        c.ballot, c.phase, c.tries = Ballot(node.rounds, node.name), "prepare", c.tries + 1

    # ------------------------------------------------------------------ faults

    def power_off(self, name: str) -> None:
        node = self.nodes[name]
        node.up, node.frozen_at, node.serving, node.claim = False, None, None, None

    def power_on(self, name: str) -> None:
        node = self.nodes[name]
        if node.up:
            return
        node.up, node.claim, node.booted_at = True, None, self.t
        node.heard = {p: None for p in NODES if p != name}
        node.dead_since.clear()
        node.handled_death.clear()

    def serving(self) -> list[str]:
        return [n for n, node in self.nodes.items() if node.up and node.serving is not None]


faults = st.lists(
    st.one_of(
        st.tuples(st.just("tick"), st.integers(1, 40)),
        st.tuples(st.just("cut"), st.sampled_from(NODES), st.sampled_from(NODES)),
        st.tuples(st.just("heal"), st.sampled_from(NODES), st.sampled_from(NODES)),
        st.tuples(st.just("off"), st.sampled_from(NODES)),
        st.tuples(st.just("on"), st.sampled_from(NODES)),
        st.tuples(st.just("freeze"), st.sampled_from(NODES)),
        st.tuples(st.just("thaw"), st.sampled_from(NODES)),
        st.tuples(st.just("switchover"), st.sampled_from(NODES)),
    ),
    max_size=40,
)

SETTLE = 12.0  # s after the faults stop within which exactly one node must serve


def run(schedule: list[tuple[Any, ...]]) -> World:
    w = World.start()

    def check() -> None:
        on = w.serving()
        assert len(on) <= 1, f"two nodes serve at {w.t:.2f}: {on}\n" + "\n".join(w.log[-30:])

    for step in schedule:
        kind = step[0]
        if kind == "tick":
            for _ in range(step[1]):
                w.tick()
                check()
        elif kind == "cut" and step[1] != step[2]:
            w.cut.add(frozenset(step[1:]))
        elif kind == "heal":
            w.cut.discard(frozenset(step[1:]))
        elif kind == "off":
            w.power_off(step[1])
        elif kind == "on":
            w.power_on(step[1])
        elif kind == "freeze" and w.nodes[step[1]].up and not w.nodes[step[1]].frozen:
            w.nodes[step[1]].frozen_at = w.t
        elif kind == "thaw":
            w.nodes[step[1]].frozen_at = None
        elif kind == "switchover":
            node = w.nodes[step[1]]
            if node.up and not node.frozen and node.claim is None and node.serving is None:
                w.begin(node, Claim.SWITCHOVER)
        check()
    # The faults stop.
    w.cut.clear()
    for name in NODES:
        w.nodes[name].frozen_at = None
        w.power_on(name)
    stopped = w.t
    while w.t - stopped < SETTLE + 5.0:
        w.tick()
        check()
        if len(w.serving()) == 1 and w.t - stopped >= BUDGET + DELAY + CONVERGE:
            break
    assert len(w.serving()) == 1, f"nobody serves {w.t - stopped:.1f} s after the faults stopped\n" + "\n".join(
        w.log[-30:]
    )
    assert w.t - stopped <= SETTLE, f"web back only {w.t - stopped:.1f} s after the faults stopped"
    return w


@settings(
    max_examples=int(os.environ.get("HAKEEPER_MODEL_EXAMPLES", "2000")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(faults)
@example(  # two switchovers, each at a majority the other's link cut: the first must not restore over the second
    schedule=[("cut", "node1", "node2"), ("switchover", "node2"), ("tick", 2),
              ("cut", "node2", "node3"), ("switchover", "node3"), ("tick", 2)]
)  # fmt: skip
def test_one_owner_at_a_time_and_back_once_the_faults_stop(schedule: list[tuple[Any, ...]]) -> None:
    run(schedule)


def test_a_power_off_of_the_owner_fails_over_to_node2() -> None:
    w = run([("off", "node1"), ("tick", 30)])
    assert "node2: serves web under epoch 2" in "\n".join(w.log)


def test_the_model_sees_two_servers_when_a_frozen_isolated_node_is_not_cut() -> None:
    for cut, expected in ((False, ["node1", "node2"]), (True, ["node2"])):
        w = World.start()
        w.guard_cut = cut
        w.nodes["node1"].frozen_at = 0.0
        w.cut |= {frozenset(("node1", "node2")), frozenset(("node1", "node3"))}
        for _ in range(30):
            w.tick()
        assert sorted(w.serving()) == expected, (cut, w.log)


def test_the_model_sees_two_servers_without_the_voters_lease_check() -> None:
    """The check is not vacuous: node2, cut from node1 alone, serves beside it when voters do not veto."""
    for check, expected in ((False, ["node1", "node2"]), (True, ["node1"])):
        w = World.start()
        w.lease_check = check
        w.cut.add(frozenset(("node1", "node2")))
        for _ in range(30):
            w.tick()
        assert sorted(w.serving()) == expected, (check, w.log)
