"""hakeeperd's failover service on three in-process nodes: real LCDs and engines, an in-memory kit, no network.

Each node's ``send`` calls the other node's handlers directly; the test sets
what each node sees (membership) and which restores fail.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from hakeeper.cluster.failover import Failover
from hakeeper.cluster.placement import Owner
from hakeeper.comm.paths import PathState
from hakeeper.comm.rpc import RemoteError
from hakeeper.comm.tls import Peer
from hakeeper.db import Lcd, State
from hakeeper.db.settings import detection_budget
from hakeeper.db.states import Init
from hakeeper.errors import CommunicationFailed, HakeeperError, NotFound
from hakeeper.recovery.engine import Engine
from tests.fakes import FakeKit, Script, build, fake_kits

NAMES = ("node1", "node2", "node3")
FAST = {"heartbeat_interval": "0.05", "takeover_delay": "0.15"}


class Cluster:
    def __init__(self, base: Path, settings: dict[str, str] | None = None) -> None:
        self.lcds: dict[str, Lcd] = {}
        self.kits: dict[str, FakeKit] = {}
        self.nodes: dict[str, Failover] = {}
        self.seen: dict[str, dict[str, PathState]] = {}
        self.frozen: set[str] = set()  # hakeeperd stopped (SIGSTOP): requests to it wait for their timeout
        self.unreachable: set[frozenset[str]] = set()  # pairs whose requests fail (a cut link; heartbeats go on)
        self.gates: dict[tuple[str, str, str], asyncio.Event] = {}  # (from, to, op): held until the event is set
        for name in NAMES:
            lcd = Lcd.open(base / name, node=name)
            for other in NAMES:
                if other != name:
                    lcd.create_node(other)
            lcd.set_settings(FAST | (settings or {}))
            build(lcd, [("web", "web-ip")])
            lcd.create_equivalency("web", "node2", node="node1", priority=1, other_priority=2)
            lcd.create_equivalency("web", "node3", node="node1", other_priority=3)
            kits, kit = fake_kits(lcd, Script())
            ready = asyncio.Event()
            ready.set()
            self.seen[name] = {o: PathState.ALIVE for o in NAMES if o != name}
            self.nodes[name] = Failover(lcd, Engine(lcd, kits), self._sender(name), self._view_of(name), ready)
            self.lcds[name], self.kits[name] = lcd, kit

    def _view_of(self, name: str) -> Any:
        return lambda: self.seen[name]

    def _sender(self, sender: str) -> Any:
        async def send(node: str, op: str, args: dict[str, Any], timeout: float) -> Any:
            gate = self.gates.get((sender, node, op))
            if gate is not None:  # this request arrives late: when the test lets it
                await asyncio.wait_for(gate.wait(), 30)
            elif frozenset((sender, node)) in self.unreachable:
                raise CommunicationFailed(f"cannot reach node {node!r}")
            if self.seen[sender].get(node) is not PathState.ALIVE:
                raise CommunicationFailed(f"cannot reach node {node!r}")
            if node in self.frozen:
                await asyncio.sleep(timeout)
                raise TimeoutError(f"{node} did not answer within {timeout} s")
            handler = self.nodes[node].handlers()[op]
            try:
                return await handler(Peer(sender, "198.18.0.1"), args)
            except HakeeperError as exc:  # as the message channel answers a refusal (comm.rpc)
                raise RemoteError(f"node {node}: {exc}", exc.exit_code) from None

        return send

    def cut(self, dead: str) -> None:
        for name in NAMES:
            if name != dead:
                self.seen[name][dead] = PathState.DEAD
                self.seen[dead][name] = PathState.DEAD

    def state(self, node: str, tag: str = "web") -> State:
        return self.lcds[node].resource(tag).state

    def holders(self) -> list[str]:
        return [n for n in NAMES if self.state(n) is State.ISP]

    def close(self) -> None:
        for failover in self.nodes.values():
            failover.close()
        for lcd in self.lcds.values():
            lcd.close()


@pytest.fixture(name="cluster")
def cluster_fixture(tmp_path: Path) -> Any:
    c = Cluster(tmp_path)
    asyncio.run(c.nodes["node1"].switchover("web"))  # claimed: node1 owns web under epoch 1
    yield c
    c.close()


def test_node_death_exactly_one_survivor_restores_and_the_isolated_node_stops(cluster: Cluster) -> None:
    cluster.cut("node1")

    async def everyone() -> None:
        await asyncio.gather(*(cluster.nodes[n].node_dead(o) for n in NAMES for o in NAMES if o != n
                               if cluster.seen[n][o] is PathState.DEAD))  # fmt: skip

    asyncio.run(everyone())
    assert cluster.holders() == ["node2"]
    assert cluster.nodes["node1"].quorum.lost
    assert cluster.state("node1", "web-ip") is State.OSU, "node1 lost quorum and took everything out of service"
    assert cluster.lcds["node2"].resource("web").reason == "failover from node1"


def test_a_node_that_said_it_stops_is_not_failed_over(cluster: Cluster) -> None:
    asyncio.run(cluster.nodes["node1"].leaving(switch_over=False))
    cluster.cut("node1")
    asyncio.run(cluster.nodes["node2"].node_dead("node1"))
    assert cluster.holders() == ["node1"], "lkstop -f leaves it running there; nobody takes it over"


def test_leaving_with_switch_over_hands_the_hierarchy_to_the_next_node(cluster: Cluster) -> None:
    asyncio.run(cluster.nodes["node1"].leaving(switch_over=True))
    assert cluster.holders() == ["node2"]
    assert cluster.nodes["node2"].departed == {"node1"}


def test_a_failed_restore_goes_on_to_the_next_node(cluster: Cluster) -> None:
    cluster.kits["node2"].script.fail_restore.add("web")
    cluster.cut("node1")
    asyncio.run(cluster.nodes["node2"].node_dead("node1"))
    asyncio.run(cluster.nodes["node3"].node_dead("node1"))
    assert cluster.holders() == ["node1", "node3"], "node1 is powered off, say: only its LCD still says ISP"
    assert cluster.state("node2", "web-ip") is State.OSU, "node2's partial restore was undone"


def test_a_resource_failure_moves_the_whole_hierarchy_down_the_priorities(cluster: Cluster) -> None:
    cluster.kits["node2"].script.fail_restore.add("web-ip")
    asyncio.run(cluster.nodes["node1"].resource_failed("web", "quickCheck: failed"))
    assert cluster.holders() == ["node3"]
    assert cluster.state("node1", "web-ip") is State.OSU, "the whole hierarchy left node1"


def test_no_node_left_is_an_alert_and_why_says_so(cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    for node in ("node2", "node3"):
        cluster.kits[node].script.fail_restore.add("web")
    asyncio.run(cluster.nodes["node1"].resource_failed("web", "quickCheck: failed"))
    assert cluster.holders() == []
    assert "no live node left to run it (tried node1, node2, node3)" in cluster.nodes["node1"].blocked["web"]
    assert "ALERT: web is out of service" in caplog.text


def test_a_failing_fence_blocks_the_takeover(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, {"fence_command": "/bin/false"})
    try:
        asyncio.run(cluster.nodes["node1"].engine.restore("web", reason="start"))
        cluster.cut("node1")
        asyncio.run(cluster.nodes["node2"].node_dead("node1"))
        assert cluster.state("node2") is State.OSU
        assert cluster.nodes["node2"].blocked["web"].startswith("fencing node1 failed (/bin/false exited 1)")
        cluster.lcds["node2"].set_settings({"fence_command": "/bin/true"})
        asyncio.run(cluster.nodes["node2"].node_dead("node1"))
        assert cluster.state("node2") is State.ISP
        assert "web" not in cluster.nodes["node2"].blocked
    finally:
        cluster.close()


def test_remote_verify_stands_down_while_a_peer_still_sees_the_node(cluster: Cluster) -> None:
    cluster.seen["node2"]["node1"] = PathState.DEAD  # only node2 lost node1 (its own link, say)
    asyncio.run(cluster.nodes["node2"].node_dead("node1"))
    assert cluster.holders() == ["node1"]


def test_switchover_and_automatic_switchback(cluster: Cluster) -> None:
    message = asyncio.run(cluster.nodes["node3"].switchover("web-ip"))
    assert message == "web in service on node3"
    assert cluster.holders() == ["node3"]
    assert cluster.state("node1", "web-ip") is State.OSU
    asyncio.run(cluster.nodes["node1"].node_alive("node3"))
    assert cluster.holders() == ["node3"], "INTELLIGENT: stays"
    for lcd in cluster.lcds.values():
        lcd.set_switchback("web", lcd.resource("web").switchback.__class__.AUTOMATIC)
    asyncio.run(cluster.nodes["node2"].node_alive("node3"))
    assert cluster.holders() == ["node2"], "AUTOMATIC: node2 has a higher priority than node3"
    asyncio.run(cluster.nodes["node3"].node_alive("node2"))
    assert cluster.holders() == ["node2"], "never to a lower priority"


def test_two_nodes_without_a_witness_do_not_take_over(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    try:
        assert cluster.nodes["node1"].quorum.advice() is None, "three nodes: a majority is possible"
        asyncio.run(cluster.nodes["node1"].engine.restore("web", reason="start"))
        cluster.cut("node1")
        cluster.cut("node3")  # node2 alone: 1 of 3
        asyncio.run(cluster.nodes["node2"].node_dead("node1"))
        assert cluster.state("node2") is State.OSU and cluster.nodes["node2"].quorum.lost
    finally:
        cluster.close()


FENCE_DUMMY = Path("/usr/sbin/fence_dummy")


def test_a_fence_agent_from_fence_agents_powers_the_dead_node_off_first(tmp_path: Path) -> None:
    if not FENCE_DUMMY.exists():
        pytest.skip(f"{FENCE_DUMMY} missing: install Debian's fence-agents package (apt-get install fence-agents)")
    plug = tmp_path / "node1.power"
    plug.write_text("on")
    command = f"{FENCE_DUMMY} --type=file --status-file={plug} -o off"
    cluster = Cluster(tmp_path / "nodes", {"fence_command": command})
    try:
        asyncio.run(cluster.nodes["node1"].engine.restore("web", reason="start"))
        cluster.cut("node1")
        asyncio.run(cluster.nodes["node2"].node_dead("node1"))
        assert plug.read_text() == "off", "fence_dummy powered node1's plug off"
        assert cluster.state("node2") is State.ISP
    finally:
        cluster.close()


def test_the_dead_node_s_name_goes_where_the_command_says(tmp_path: Path) -> None:
    record = tmp_path / "fenced"
    script = tmp_path / "fence"
    script.write_text(f'#!/bin/sh\necho "$@ $HAKEEPER_FENCE_NODE" > {record}\n')
    script.chmod(0o755)
    cluster = Cluster(tmp_path / "nodes", {"fence_command": f"{script} --plug={{node}} -o off"})
    try:
        cluster.cut("node1")
        asyncio.run(cluster.nodes["node2"].node_dead("node1"))
        assert record.read_text() == "--plug=node1 -o off node1\n"
    finally:
        cluster.close()


def test_a_decision_that_aged_while_fencing_is_taken_again_from_a_fresh_snapshot(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    script = tmp_path / "fence"
    wait = f"for i in $(seq 200); do [ -e {release} ] && exit 0; sleep 0.05; done"  # bounded: 10 s
    script.write_text(f"#!/bin/sh\ntouch {started}\n{wait}\nexit 1\n")
    script.chmod(0o755)
    cluster = Cluster(tmp_path / "nodes", {"fence_command": str(script)})
    try:
        cluster.cut("node1")

        async def scenario() -> None:
            failover = asyncio.create_task(cluster.nodes["node2"].node_dead("node1"))
            for _ in range(200):  # bounded: 10 s
                if started.exists() or failover.done():
                    break
                await asyncio.sleep(0.05)
            assert started.exists(), "node2 decided to take web over and fences node1"
            for tag in ("web", "web-ip"):  # meanwhile, web came in service on node3
                cluster.lcds["node3"].set_state(tag, State.ISP, "restored by the administrator")
            budget = detection_budget(cluster.lcds["node2"].settings())
            await asyncio.sleep(budget * 1.5)  # the fence outlasts the detection budget: the decision is stale
            release.touch()
            await failover

        with caplog.at_level(logging.INFO):
            asyncio.run(scenario())
        assert cluster.holders() == ["node3"], "taken again, the decision sees web in service on node3"
        assert "taken again" in caplog.text
    finally:
        cluster.close()


def test_confirmso_waits_for_lk_confirmso_and_its_timeout_decides(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "nodes", {"confirmso_timeout": "1", "confirmso_default": "block"})
    node2 = cluster.nodes["node2"]
    try:
        asyncio.run(cluster.nodes["node1"].engine.restore("web", reason="start"))
        cluster.lcds["node2"].create_flag("confirmso!node1")
        cluster.cut("node1")

        async def refused() -> None:
            failover = asyncio.create_task(node2.node_dead("node1"))
            for _ in range(200):  # bounded: until it waits
                if "node1" in node2.fencing.confirmations:
                    break
                await asyncio.sleep(0.01)
            assert node2.fencing.confirm("node1", False) == "failover from node1 refused"
            await failover

        asyncio.run(refused())
        assert cluster.state("node2") is State.OSU
        assert node2.blocked["web"] == "failover from node1 refused by lk_confirmso"
        asyncio.run(node2.node_dead("node1"))  # nobody answers: after 1 s, confirmso_default=block
        assert cluster.state("node2") is State.OSU
        assert "not confirmed within 1 s" in node2.blocked["web"]
        with pytest.raises(NotFound):
            node2.fencing.confirm("node1", True)
        cluster.lcds["node2"].set_settings({"confirmso_default": "proceed"})
        asyncio.run(node2.node_dead("node1"))
        assert cluster.state("node2") is State.ISP
        assert cluster.state("node3") is State.OSU, "node3 would not act: it was not asked"
    finally:
        cluster.close()


def test_a_two_node_majority_cluster_is_told_it_will_never_fail_over(tmp_path: Path) -> None:
    with Lcd.open(tmp_path / "a", node="node1") as lcd:
        lcd.create_node("node2")
        ready = asyncio.Event()
        failover = Failover(lcd, Engine(lcd, fake_kits(lcd)[0]), nowhere, dict, ready)
        assert "add a witness" in (failover.quorum.advice() or "")
        lcd.set_settings({"quorum_mode": "none"})
        assert failover.quorum.advice() is None


async def nowhere(node: str, op: str, args: dict[str, Any], timeout: float) -> Any:
    raise CommunicationFailed(f"cannot reach node {node!r}")


def test_at_start_the_highest_priority_live_node_alone_brings_a_hierarchy_in_service(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "nodes")
    try:

        async def everyone_boots() -> None:
            await asyncio.gather(*(cluster.nodes[n].boot() for n in NAMES))

        asyncio.run(everyone_boots())
        assert cluster.holders() == ["node1"], "AUTORES_ISP, in service nowhere: node1 (priority 1) restores it"
        asyncio.run(everyone_boots())
        assert cluster.holders() == ["node1"], "a second start changes nothing"
    finally:
        cluster.close()


def test_at_start_a_node_waits_for_peers_whose_heartbeats_start_late(tmp_path: Path) -> None:
    """On a busy machine the peers' heartbeat processes may start seconds after hakeeperd: no quorum at
    first is not a reason never to start the hierarchy."""
    cluster = Cluster(tmp_path / "nodes")
    try:
        for name in NAMES:
            cluster.seen[name] = {o: PathState.UNKNOWN for o in NAMES if o != name}

        async def late_heartbeats() -> None:
            boots = asyncio.gather(*(cluster.nodes[n].boot() for n in NAMES))
            await asyncio.sleep(0.5)  # past the takeover delay: the first look finds no quorum
            for name in NAMES:
                cluster.seen[name] = {o: PathState.ALIVE for o in NAMES if o != name}
            await boots

        asyncio.run(late_heartbeats())
        assert cluster.holders() == ["node1"]
    finally:
        cluster.close()


def test_at_start_a_hierarchy_that_runs_elsewhere_or_is_init_osu_is_left_alone(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "nodes")
    try:
        asyncio.run(cluster.nodes["node2"].engine.restore("web", reason="before"))
        asyncio.run(cluster.nodes["node1"].boot())
        assert cluster.holders() == ["node2"], "in service on node2: node1 leaves it there"
        asyncio.run(cluster.nodes["node2"].engine.remove("web-ip", reason="by hand"))
        for lcd in cluster.lcds.values():
            lcd.set_init("web", Init.INIT_OSU)
        asyncio.run(cluster.nodes["node1"].boot())
        assert cluster.holders() == [], "INIT_OSU waits for the administrator"
    finally:
        cluster.close()


# ---------------------------------------------------------------------- compound faults: one owner per hierarchy


def converged(failover: Failover) -> None:
    """One anti-entropy pass, and the removals and retries it started."""

    async def one_pass() -> None:
        await failover.anti.converge()
        await asyncio.gather(*failover._stops.values(), *failover._tasks)

    asyncio.run(one_pass())


def owner(cluster: Cluster, node: str) -> Any:
    return cluster.nodes[node].owner(cluster.nodes[node].hierarchy_of("web") or pytest.fail("no hierarchy"))


def test_a_switchover_racing_the_owner_s_death_leaves_one_node_serving(cluster: Cluster) -> None:
    """Issue 10, row 1: switchover to node3 while node1 (which serves) powers off and node2 fails it over."""
    cluster.cut("node1")

    async def race() -> None:
        await asyncio.gather(cluster.nodes["node3"].switchover("web"), cluster.nodes["node2"].node_dead("node1"),
                             cluster.nodes["node3"].node_dead("node1"), return_exceptions=True)  # fmt: skip

    asyncio.run(race())
    serving = [n for n in cluster.holders() if n != "node1"]  # node1 is off: only its LCD still says ISP
    assert len(serving) == 1, f"exactly one survivor serves, not {serving}"
    assert owner(cluster, serving[0]).node == serving[0]


def test_a_frozen_owner_is_unknown_not_nothing(cluster: Cluster) -> None:
    """Row 2: node1 serves but its hakeeperd is frozen (heartbeats go on); node3 dies: node2 must not restore web."""
    cluster.frozen.add("node1")
    for name in ("node1", "node2"):
        cluster.seen[name]["node3"] = PathState.DEAD
    asyncio.run(cluster.nodes["node2"].node_dead("node3"))
    assert cluster.holders() == ["node1"]
    converged(cluster.nodes["node2"])
    assert cluster.holders() == ["node1"], "a peer that does not answer runs something, for all we know"


def test_a_duplicate_is_removed_from_every_node_but_the_owner(cluster: Cluster) -> None:
    """Row 4: node2 took web over while node1's hakeeperd was away; node1 comes back still running it."""
    node2 = cluster.nodes["node2"]
    web = node2.hierarchy_of("web")
    assert web is not None
    cluster.cut("node1")
    asyncio.run(node2.node_dead("node1"))
    assert "node2" in cluster.holders()
    cluster.lcds["node1"].set_state("web", State.ISP, "still running: hakeeperd was SIGKILLed")  # the copy left
    cluster.lcds["node1"].set_state("web-ip", State.ISP, "still running")
    for name in NAMES:  # node1 is back
        for other in NAMES:
            if other != name:
                cluster.seen[name][other] = PathState.ALIVE
    converged(cluster.nodes["node1"])
    assert cluster.holders() == ["node2"], "node1 stopped its copy: node2 owns a newer epoch"


def test_an_abandoned_takeover_is_retried_by_the_anti_entropy_pass(cluster: Cluster) -> None:
    """Row 5: node2 abandoned its takeover (remote_verify); node1 then died for good and nobody acted on it."""
    cluster.cut("node1")
    cluster.lcds["node1"].set_state("web", State.OSU, "powered off")
    cluster.lcds["node1"].set_state("web-ip", State.OSU, "powered off")
    node2 = cluster.nodes["node2"]
    node2.dead_since["node1"] = 0.0  # long dead: its lease lapsed
    converged(cluster.nodes["node3"])
    assert cluster.holders() == [], "node3 is not the highest-priority live node"
    converged(node2)
    assert cluster.holders() == ["node2"]
    assert owner(cluster, "node2").node == "node2"


def test_the_anti_entropy_pass_leaves_a_dead_owner_s_hierarchy_to_the_failover_under_way(cluster: Cluster) -> None:
    cluster.cut("node1")
    for tag in ("web", "web-ip"):
        cluster.lcds["node1"].set_state(tag, State.OSU, "powered off")
    node2 = cluster.nodes["node2"]

    async def scenario() -> None:
        failover = asyncio.create_task(node2.node_dead("node1"))
        await asyncio.sleep(0)  # it runs: waiting out takeover_delay
        await node2.anti.converge()
        assert not node2._tasks, "no retry of web: the failover from node1 takes it"
        await failover

    asyncio.run(scenario())
    assert cluster.holders() == ["node2"]
    assert cluster.lcds["node2"].resource("web").reason == "failover from node1"
    assert owner(cluster, "node2").epoch == 2, "one claim, not a retry's and then the failover's"


def test_a_claim_without_a_majority_of_voters_restores_nothing(cluster: Cluster) -> None:
    """node2 sees node1 dead but node3 cannot be reached for the claim: quorum by heartbeats, no majority of votes."""
    cluster.cut("node1")
    cluster.frozen.add("node3")  # its heartbeats say ALIVE, its hakeeperd does not answer
    asyncio.run(cluster.nodes["node2"].node_dead("node1"))
    assert cluster.state("node2") is State.OSU
    assert "not claimed" in cluster.nodes["node2"].blocked["web"] or "did not" in cluster.nodes["node2"].blocked.get(
        "web", ""
    )


def test_a_voter_that_still_sees_the_owner_vetoes_its_takeover(cluster: Cluster) -> None:
    """Row 5, during the cut: node1<->node2 is cut, node3 sees both; node2's retry must not take web from node1."""
    cluster.seen["node2"]["node1"] = PathState.DEAD
    cluster.seen["node1"]["node2"] = PathState.DEAD
    node2 = cluster.nodes["node2"]
    node2.dead_since["node1"] = 0.0  # long dead, to node2
    converged(node2)
    assert cluster.holders() == ["node1"]
    assert "node3 sees node1 ALIVE" in node2.blocked["web"]
    assert owner(cluster, "node3").node != "node2", "node3 accepted nothing from node2"


def test_a_peer_s_heartbeat_digest_with_a_newer_epoch_stops_the_copy_here(cluster: Cluster) -> None:
    node1 = cluster.nodes["node1"]
    epoch = node1.runs_here()["web"]

    async def hear(runs: dict[str, int]) -> None:
        node1.peer_runs("node2", runs)
        await asyncio.gather(*node1._stops.values())

    asyncio.run(hear({"web": epoch}))
    assert cluster.state("node1") is State.ISP, "the same epoch is not a newer one"
    asyncio.run(hear({"web": epoch + 1}))
    assert cluster.state("node1") is State.OSU
    assert "in service on node2 under epoch" in cluster.lcds["node1"].resource("web").reason


def test_a_retry_from_a_dead_owner_fences_it_first_and_a_failing_fence_blocks_it(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, {"fence_command": "/bin/false"})
    try:
        asyncio.run(cluster.nodes["node1"].switchover("web"))
        cluster.cut("node1")
        for tag in ("web", "web-ip"):
            cluster.lcds["node1"].set_state(tag, State.OSU, "powered off")
        node2 = cluster.nodes["node2"]
        node2.dead_since["node1"] = 0.0
        converged(node2)
        assert cluster.holders() == [], "the anti-entropy pass does not restore around a failed fence"
        assert node2.blocked["web"].startswith("fencing node1 failed")
        assert "web" in node2.retries.due_at, "tried again later, with back-off"
        cluster.lcds["node2"].set_settings({"fence_command": "/bin/true"})
        node2.retries.due_at["web"] = (1, 0.0)  # due now
        converged(node2)
        assert cluster.holders() == ["node2"]
    finally:
        cluster.close()


@pytest.mark.parametrize("released_knows", [True, False], ids=["node1 refuses", "node2 confirms first"])
def test_two_switchovers_each_past_a_cut_link_leave_one_node_serving(cluster: Cluster, released_knows: bool) -> None:
    """node2's switchover waits for node1's release (node1<->node2 cut); meanwhile node3's switchover wins past
    a cut node2<->node3. When node2's release request reaches node1 at last, node2 must not restore beside node3:
    node1 refuses it (it voted for the newer claim); and should the released node not know the newer claim
    (a larger cluster: it was not in that majority), node2 finds its claim superseded at a majority first."""
    late = asyncio.Event()
    cluster.unreachable.add(frozenset(("node1", "node2")))  # requests only: the heartbeats say every node is ALIVE
    cluster.gates[("node2", "node1", "release")] = late  # node2's release request reaches node1 only later
    if not released_knows:
        node1 = cluster.nodes["node1"]
        node1.owner = lambda h: Owner(1, "node1")  # type: ignore[method-assign]

    async def race() -> None:
        first = asyncio.create_task(cluster.nodes["node2"].switchover("web"))
        for _ in range(500):  # bounded: until node2's claim (epoch 2) holds and it waits for node1
            if owner(cluster, "node3").node == "node2":
                break
            await asyncio.sleep(0.01)
        assert owner(cluster, "node3").node == "node2", "node2's claim held at node2 and node3"
        cluster.unreachable.add(frozenset(("node2", "node3")))  # node2 is cut off: node1 and node3 see it DEAD
        for name in ("node1", "node3"):
            cluster.seen[name]["node2"] = PathState.DEAD
            cluster.nodes[name].dead_since["node2"] = 0.0  # long ago: its lease lapsed
        await cluster.nodes["node3"].switchover("web")
        assert cluster.holders() == ["node3"]
        cluster.unreachable.clear()  # the links come back, and node2's release request with them
        for name in ("node1", "node3"):
            cluster.seen[name]["node2"] = PathState.ALIVE
        late.set()
        with pytest.raises(CommunicationFailed, match="newer than node2's 2" if released_knows else "superseded"):
            await first

    asyncio.run(asyncio.wait_for(race(), 60))
    assert cluster.holders() == ["node3"], "node2 restored web beside node3"


def test_a_failover_restores_as_a_takeover_from_the_dead_node_and_a_switchover_does_not(cluster: Cluster) -> None:
    """The IP kit skips its duplicate probe only when the restore says whom it took over from, and how we know."""
    cluster.cut("node1")
    asyncio.run(cluster.nodes["node2"].node_dead("node1"))
    assert cluster.holders() == ["node1", "node2"], "node1 is powered off, say: only its LCD still says ISP"
    taken = dict(cluster.kits["node2"].takeovers)
    assert set(taken) == {"web", "web-ip"}
    for tag, how in taken.items():
        assert how is not None and how.previous == ("node1",), tag
        assert "lease lapsed" in how.describe()
    asyncio.run(cluster.nodes["node3"].switchover("web"))
    assert dict(cluster.kits["node3"].takeovers) == {"web": None, "web-ip": None}, "a switchover keeps the probe"
