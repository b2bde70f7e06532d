"""The lease on the test LAN: a node cut off from the others stops being reachable before they take over.

Three nodes; ``vip`` (comm/ip) below ``web`` (gen/app, a server that answers with its node's name and goes
on serving for a second after SIGTERM: an application that takes time to stop), extended to node2 and node3,
in service on node1. A partition isolates node1 from node2 and node3 (the client still reaches every node).

The client plays the worst user the lease must hold for: one whose neighbour entry for the VIP stays on
node1's MAC (a router that ignores gratuitous ARP, a static entry), so it reaches node1 for as long as node1
holds the address. The prober asks the VIP (through node1) and node2's and node3's own addresses every
10 ms: a round answered by two nodes is a double service. node1 must have cut the VIP before node2 serves.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hakeeper.db import Lcd, State
from hakeeper.lab.cluster import HaCluster
from hakeeper.lab.lan import Lan
from hakeeper.lab.probe import Prober, double_service, first_answer_from, served_by
from hakeeper.lab.webapp import write_scripts

pytestmark = pytest.mark.needs_root

VIP = "198.18.0.50"
PORT = 8080
STOP_DELAY = 1.0  # s web goes on serving after SIGTERM: its remove takes that long


def state(ha: HaCluster, node: str, tag: str) -> State:
    with Lcd.open(ha.root(node)) as lcd:
        return lcd.resource(tag).state


def setup(ha: HaCluster, lan: Lan, tmp_path: Path) -> list[tuple[str, int]]:
    """vip below a slowly stopping web on node1, extended to node2 and node3; the client pinned to node1's MAC."""
    node1, node2, node3, client = lan.node("node1"), lan.node("node2"), lan.node("node3"), lan.client
    ha.ok("node1", "hakeeper", "create", "comm/ip", "-t", "vip", "-I", "INIT_OSU", f"address={VIP}/24")
    scripts = write_scripts(tmp_path / "webapp", PORT, stop_delay=STOP_DELAY)
    params = [f"{name}={scripts[name]}" for name in ("restore", "remove", "quickCheck")]
    ha.ok("node1", "hakeeper", "create", "gen/app", "-t", "web", "-I", "INIT_OSU", *params)
    ha.ok("node1", "dep_create", "-p", "web", "-c", "vip")
    for backup in ("node2", "node3"):
        ha.ok("node1", "hakeeper", "extend", "-t", "web", "-s", backup, "-p", backup[-1])
    ha.ok("node1", "perform_action", "-t", "web", "-a", "restore")
    assert state(ha, "node1", "vip") is State.ISP and state(ha, "node1", "web") is State.ISP
    client.run(["ip", "neigh", "replace", VIP, "lladdr", node1.mac, "dev", "eth0", "nud", "permanent"], check=True)
    return [(VIP, PORT), (node2.address, PORT), (node3.address, PORT)]


@pytest.mark.slow
def test_an_isolated_node_cuts_its_vip_before_the_others_take_over_although_web_stops_slowly(
    ha_cluster: HaCluster, lan: Lan, tmp_path: Path
) -> None:
    ha = ha_cluster
    node1, node2, node3 = lan.node("node1"), lan.node("node2"), lan.node("node3")
    targets = setup(ha, lan, tmp_path)
    with Prober(lan, targets, tmp_path / "probe.jsonl") as prober:
        prober.wait_for(lambda r: first_answer_from(r, "node1") is not None, 10, "node1 serving the VIP")
        start = time.monotonic()
        lan.partition([node1], [node2, node3])
        prober.wait_for(lambda r: first_answer_from(r, "node2", after=start) is not None, 20, "node2 serving")
        ha.wait(lambda: state(ha, "node1", "web") is State.OSU, 10, "node1 to take web out of service")
        time.sleep(0.5)
        rounds = prober.rounds()
    log = ha.log("node1")
    assert not double_service(rounds), f"answers from two nodes at once: {served_by(rounds)}"
    took_over = first_answer_from(rounds, "node2", after=start)
    assert took_over is not None
    assert first_answer_from(rounds, "node1", after=took_over) is None, f"node1 after node2: {served_by(rounds)}"
    assert "quorum lost (sees 1 of 3 nodes): osu" in log
    # The heartbeat process cuts the VIP itself the moment it hears no majority, however late hakeeperd
    # is on a busy machine; hakeeperd checks the lease against that cut (or its own, when it was first).
    assert "heartbeat: no majority heard: cut vip in" in log, log
    assert "clients cut in" in log and "(vip removed first), within the" in log, log
    assert "ALERT" not in log, log
    assert state(ha, "node1", "vip") is State.OSU and state(ha, "node2", "web") is State.ISP
    why = ha.ok("node1", "hakeeper", "why", "web")
    assert "lease: after a quorum loss vip is removed first (last took" in why, why
    assert "warning" not in why, why


@pytest.mark.slow
def test_a_frozen_daemon_on_an_isolated_node_has_its_vip_cut_by_the_guard(
    ha_cluster: HaCluster, lan: Lan, tmp_path: Path
) -> None:
    """hakeeperd frozen (SIGSTOP) on node1, then node1 isolated: the heartbeat process and the guard cut the VIP."""
    ha = ha_cluster
    ha.ok("node1", "hakeeper", "settings", "guard_timeout=10")  # the guard's own timeout does not come into it
    node1, node2, node3 = lan.node("node1"), lan.node("node2"), lan.node("node3")
    targets = setup(ha, lan, tmp_path)
    daemon = ha.procs["node1"].pid
    with Prober(lan, targets, tmp_path / "probe.jsonl") as prober:
        prober.wait_for(lambda r: first_answer_from(r, "node1") is not None, 10, "node1 serving the VIP")
        node1.freeze(daemon)
        try:
            start = time.monotonic()
            lan.partition([node1], [node2, node3])
            prober.wait_for(lambda r: first_answer_from(r, "node2", after=start) is not None, 20, "node2 serving")
            time.sleep(1.0)
            rounds = prober.rounds()
        finally:
            node1.thaw(daemon)
    log = ha.log("node1")
    assert not double_service(rounds), f"answers from two nodes at once: {served_by(rounds)}\n{log}"
    took_over = first_answer_from(rounds, "node2", after=start)
    assert took_over is not None
    assert first_answer_from(rounds, "node1", after=took_over) is None, f"node1 after node2: {served_by(rounds)}"
    assert "the guard cuts the virtual addresses" in log and "guard: cut vip in" in log, log
