"""Failover decisions are pure: every node that sees the same cluster picks the same single actor."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hakeeper.cluster.decide import (
    Act,
    Hierarchy,
    View,
    hierarchies,
    lone,
    lone_at_start,
    next_nodes,
    quorum,
    switchback,
    takeover,
)
from hakeeper.db.model import Equivalency
from hakeeper.db.states import Switchback

NODES = ["node1", "node2", "node3"]


def web(priorities: dict[str, int], switch: Switchback = Switchback.INTELLIGENT) -> Hierarchy:
    return Hierarchy(("web",), frozenset({"web", "web-ip"}), priorities, switch)


def test_majority_needs_more_than_half() -> None:
    assert quorum("majority", View.of("node2", NODES, ["node3"])).ok
    assert not quorum("majority", View.of("node1", NODES, [])).ok
    assert quorum("majority", View.of("node1", NODES, [])).why == "sees 1 of 3 nodes"
    two = View.of("node1", ["node1", "node2"], [])
    assert not quorum("majority", two).ok, "a two-node cluster cannot outvote a partition without a witness"
    assert quorum("none", two).ok
    assert quorum("tcp_remote", two, hosts=3, hosts_reached=2).ok
    assert not quorum("tcp_remote", two, hosts=2, hosts_reached=1).ok
    assert not quorum("tcp_remote", two).ok


def test_the_highest_live_priority_restores_and_says_why() -> None:
    h = web({"node1": 1, "node2": 2, "node3": 3})
    view = View.of("node2", NODES, ["node3"])
    [decision] = takeover("node1", view, [h], {}, dead_paths=2)
    assert (decision.act, decision.target) == (Act.RESTORE, "node2")
    assert decision.sentence == (
        "web: node1 dead on all 2 paths; node2 has the highest live priority (2); restoring web, web-ip"
    )
    [other] = takeover("node1", View.of("node3", NODES, ["node2"]), [h], {})
    assert (other.act, other.target) == (Act.ELSEWHERE, "node2")


def test_a_hierarchy_in_service_on_a_live_node_stays() -> None:
    h = web({"node1": 1, "node2": 2, "node3": 3})
    [decision] = takeover("node1", View.of("node2", NODES, ["node3"]), [h], {"node3": ["web-ip"]})
    assert (decision.act, decision.target) == (Act.ELSEWHERE, "node3")
    assert "in service on node3, stays" in decision.sentence


def test_nothing_to_do_for_a_hierarchy_not_extended_to_the_dead_node() -> None:
    h = web({"node2": 1, "node3": 2})
    assert takeover("node1", View.of("node2", NODES, ["node3"]), [h], {}) == []


def test_no_live_node_left_is_stuck() -> None:
    h = web({"node1": 1, "node3": 2})
    [decision] = takeover("node1", View.of("node2", NODES, []), [h], {})
    assert decision.act is Act.STUCK


def test_next_nodes_skip_the_failed_ones_in_priority_order() -> None:
    h = web({"node1": 1, "node2": 3, "node3": 2})
    view = View.of("node1", NODES, ["node2", "node3"])
    assert next_nodes(h, view, failed=["node1"]) == ["node3", "node2"]
    assert next_nodes(h, view, failed=["node1", "node3"]) == ["node2"]
    assert next_nodes(h, View.of("node1", NODES, ["node2"]), failed=["node1"]) == ["node2"]


def test_automatic_switchback_only_to_a_higher_priority() -> None:
    auto = web({"node1": 1, "node2": 2, "node3": 3}, Switchback.AUTOMATIC)
    view = View.of("node1", NODES, ["node2", "node3"])
    [decision] = switchback("node1", view, [auto], {"node2": ["web"]})
    assert (decision.act, decision.target) == (Act.RESTORE, "node1")
    assert switchback("node3", View.of("node3", NODES, ["node2"]), [auto], {"node2": ["web"]}) == []
    intelligent = web({"node1": 1, "node2": 2})
    assert switchback("node1", view, [intelligent], {"node2": ["web"]}) == []


def test_hierarchies_group_connected_resources_under_their_roots() -> None:
    edges = [("web", "web-ip"), ("web", "data"), ("db", "data"), ("solo", "solo-ip")]
    eqv = [Equivalency("web", "node1", 1, "web"), Equivalency("web", "node2", 2, "web"),
           Equivalency("solo", "node2", 1, "solo")]  # fmt: skip
    found = hierarchies(edges, eqv, {"web": Switchback.AUTOMATIC})
    assert [(h.roots, sorted(h.members), dict(h.priorities)) for h in found] == [
        (("solo",), ["solo", "solo-ip"], {"node2": 1}),
        (("db", "web"), ["data", "db", "web", "web-ip"], {"node1": 1, "node2": 2}),
    ]
    assert found[1].switchback is Switchback.AUTOMATIC


def test_a_hierarchy_extended_to_no_other_node_starts_here_at_once() -> None:
    """LifeKeeper's single-node hierarchy: AUTORES_ISP brings it in service at start, waiting for nobody."""
    edges = [("web", "web-ip"), ("db", "disk"), ("app", "app-ip")]
    tags = ["web", "web-ip", "db", "disk", "app", "app-ip", "solo"]
    eqv = [
        Equivalency("db", "node1", 1, "db"),
        Equivalency("db", "node2", 2, "db"),  # extended: not lone
        Equivalency("app", "node1", 1, "app"),
    ]  # only this node: lone all the same
    found = lone(edges, tags, eqv, "node1")
    assert [(h.roots, sorted(h.members)) for h in found] == [
        (("app",), ["app", "app-ip"]),
        (("solo",), ["solo"]),
        (("web",), ["web", "web-ip"]),
    ]
    decisions = lone_at_start("node1", found, ["app-ip"], start=["web", "app", "solo", "db"])
    assert [(d.hierarchy.name, d.act, d.target) for d in decisions] == [
        ("solo", Act.RESTORE, "node1"),
        ("web", Act.RESTORE, "node1"),
    ], "app runs partly (app-ip ISP): left as it is, like an extended hierarchy in service"
    assert decisions[1].sentence == (
        "web: in service nowhere at start and extended to no other node; restoring web, web-ip here"
    )
    assert lone_at_start("node1", found, [], start=["app"])[0].hierarchy.name == "app"
    assert lone_at_start("node1", found, [], start=[]) == [], "INIT_OSU (not in start) waits for the administrator"


def test_a_hierarchy_extended_to_another_node_is_never_lone() -> None:
    """The rule for extended hierarchies is not weakened: even alone, node1 does not start db by itself."""
    eqv = [Equivalency("db", "node1", 1, "db"), Equivalency("db", "node2", 2, "db")]
    assert lone([("db", "disk")], ["db", "disk"], eqv, "node1") == []
    assert lone([("db", "disk")], ["db", "disk"], [Equivalency("disk", "node2", 1, "disk")], "node1") == []
    extended = Hierarchy(("db",), frozenset({"db", "disk"}), {"node1": 1, "node2": 2})
    assert lone_at_start("node1", [extended], [], start=["db"]) == []


@settings(max_examples=300, deadline=None)
@given(
    nodes=st.integers(min_value=2, max_value=6),
    data=st.data(),
)
def test_every_survivor_agrees_on_exactly_one_actor(nodes: int, data: st.DataObject) -> None:
    names = [f"node{i}" for i in range(1, nodes + 1)]
    dead = data.draw(st.sampled_from(names))
    survivors = [n for n in names if n != dead]
    found = []
    for index in range(data.draw(st.integers(min_value=1, max_value=4))):
        on = data.draw(st.lists(st.sampled_from(names), min_size=1, unique=True))
        priorities = data.draw(st.permutations(range(1, len(on) + 1)))
        found.append(Hierarchy((f"h{index}",), frozenset({f"h{index}"}), dict(zip(on, priorities, strict=True))))
    in_service = {n: data.draw(st.lists(st.sampled_from([h.roots[0] for h in found]), unique=True)) for n in names}
    views = {n: View.of(n, names, survivors) for n in survivors}
    actors: dict[str, list[str]] = {h.name: [] for h in found}
    for node, view in views.items():
        for decision in takeover(dead, view, found, in_service):
            if decision.act is Act.RESTORE:
                actors[decision.hierarchy.name].append(node)
    for h in found:
        held = [n for n in survivors if h.roots[0] in in_service[n]]
        can = [n for n in survivors if n in h.priorities]
        expected = 1 if dead in h.priorities and not held and can else 0
        assert len(actors[h.name]) == expected, (h, actors[h.name], held)
        if expected:
            assert actors[h.name][0] == min(can, key=lambda n: h.priorities[n])


def test_remote_verify_goes_on_pauses_or_abandons() -> None:
    from hakeeper.cluster.decide import Verify, verify

    assert verify([], on=True, round_=0, rounds=20) is Verify.PROCEED
    assert verify(["node3"], on=False, round_=0, rounds=20) is Verify.PROCEED, "remote_verify off"
    assert verify(["node3"], on=True, round_=0, rounds=20) is Verify.PAUSE
    assert verify(["node3"], on=True, round_=19, rounds=20) is Verify.ABANDON


def test_contenders_are_the_owner_and_the_unconfirmed_previous_owners_but_never_me() -> None:
    from hakeeper.cluster.decide import contenders

    assert contenders("node1", (), "node2") == ("node1",)
    assert contenders("node2", ("node1",), "node2") == ("node1",), "my own unconfirmed record: node1 may still run it"
    assert contenders("node2", (), "node2") == (), "my own confirmed record"
    assert contenders("node3", ("node1", "node2"), "node2") == ("node1", "node3")
    assert contenders(None, (), "node2") == ()


def test_converge_stops_an_older_copy_and_claims_what_runs_nowhere_from_a_dead_owner() -> None:
    from hakeeper.cluster.decide import Fix, Hierarchy, View, converge

    web = Hierarchy(("web",), frozenset({"web"}), {"node1": 1, "node2": 2, "node3": 3})
    both = View.of("node1", ["node1", "node2", "node3"], ["node2", "node3"])
    stop = converge(both, [web], {"node1": {"web": 1}, "node2": {"web": 2}, "node3": {}}, {"web": (2, "node2")})
    assert [r.fix for r in stop] == [Fix.STOP]
    keep = converge(both, [web], {"node1": {"web": 2}, "node2": {"web": 1}, "node3": {}}, {"web": (2, "node1")})
    assert keep == [], "the newer copy stays; the older one is the other node's to stop"
    alone = View.of("node2", ["node1", "node2", "node3"], ["node3"])
    runs: dict[str, dict[str, int]] = {"node2": {}, "node3": {}}
    claim = converge(alone, [web], runs, {"web": (1, "node1")})
    assert [r.fix for r in claim] == [Fix.CLAIM], "node1 is dead, node2 is the highest live priority"
    assert converge(alone, [web], runs, {"web": (1, "node1")}, unknown=["node3"]) == [], "unknown is not nothing"
    assert converge(alone, [web], runs, {"web": (1, "node1")}, departed=["node1"]) == [], "node1 stopped on purpose"
    assert converge(alone, [web], runs, {"web": (1, None)}) == [], "nobody owns it: left to the administrator"
    mine = converge(alone, [web], runs, {"web": (3, "node2")}, held={"web": 2})
    assert [r.fix for r in mine] == [Fix.CLAIM], "node2's claim of epoch 3 did not finish"
    assert converge(alone, [web], runs, {"web": (3, "node2")}, held={"web": 3}) == [], "taken out on purpose"
    assert converge(alone, [web], runs, {"web": (3, "node2")}, held={"web": 3}, waiting=["web"]) == []


def test_may_claim_from_a_live_owner_only_by_switchover_or_when_asked() -> None:
    from hakeeper.cluster.decide import Claim, View, may_claim

    view = View.of("node2", ["node1", "node2", "node3"], ["node1", "node3"])
    assert may_claim("node1", Claim.FAILOVER, view) == "node1 owns it and is alive"
    assert may_claim("node1", Claim.SWITCHOVER, view) is None
    assert may_claim("node1", Claim.TAKEOVER, view, allowed=["node1"]) is None
    assert may_claim("node2", Claim.RETRY, view) is None and may_claim(None, Claim.START, view) is None
    dead = View.of("node2", ["node1", "node2", "node3"], ["node3"])
    assert may_claim("node1", Claim.FAILOVER, dead) is None, "its lease is the voters' to check"


def test_a_failed_switchover_goes_back_to_where_it_came_from_only() -> None:
    from hakeeper.cluster.decide import Hierarchy, View, after_failed_switch, next_nodes

    web = Hierarchy(("web",), frozenset({"web"}), {"node1": 1, "node2": 2, "node3": 3})
    view = View.of("node3", ["node1", "node2", "node3"], ["node1", "node2"])
    assert next_nodes(web, view, failed=after_failed_switch(web, "node2")) == ["node2"]
    assert next_nodes(web, view, failed=after_failed_switch(web, None)) == []


def test_a_snapshot_cannot_change_under_its_decision_and_says_when_it_is_stale() -> None:
    from hakeeper.cluster.decide import Snapshot, View

    where = {"node2": ["web"], "node1": []}
    snap = Snapshot.of(10.0, View.of("node1", ["node1", "node2"], ["node2"]), [], where, unknown=["node3"])
    where["node2"].append("db")  # the caller's own lists change later: the snapshot does not
    assert snap.in_service == {"node1": (), "node2": ("web",)}
    snap.in_service["node1"] = ("db",)  # nor through what it hands out
    assert snap.in_service["node1"] == ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.taken = 11.0  # type: ignore[misc]
    assert snap.fresh(10.5, 0.5) and not snap.fresh(10.51, 0.5)
    assert snap.unknown == {"node3"}
