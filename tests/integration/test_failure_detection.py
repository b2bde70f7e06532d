"""Failure detection on the test LAN: three hakeeperd nodes, two networks, real faults."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hakeeper.comm.paths import PathState
from hakeeper.db import Lcd
from hakeeper.db.settings import defaults, detection_budget
from hakeeper.lab.cluster import HaCluster
from hakeeper.lab.lan import Lan

BUDGET = detection_budget(defaults())  # heartbeat_interval x heartbeat_misses
SLACK = 0.7  # polling, process scheduling, and the heartbeat ticker's quarter interval

TWO_NETWORKS = pytest.mark.parametrize("lan", [{"nodes": 3, "second_network": True}], indirect=True)


def settings(ha: HaCluster, node: str, *assignments: str) -> subprocess.CompletedProcess[str]:
    argv = [str(Path(sys.executable).parent / "hakeeper"), "settings", *assignments]
    return subprocess.run(argv, env=ha.env(node), capture_output=True, text=True, timeout=60, check=False)


def misses(ha: HaCluster, node: str) -> int:
    with Lcd.open(ha.root(node)) as lcd:
        return int(lcd.settings()["heartbeat_misses"])


def sees_dead(ha_cluster: HaCluster, observer: str, other: str) -> Callable[[], bool]:
    return lambda: ha_cluster.node_seen_by(observer, other) is PathState.DEAD


@pytest.mark.slow
@TWO_NETWORKS
def test_one_cut_path_is_dead_and_nothing_else_happens(ha_cluster: HaCluster, lan: Lan) -> None:
    node3 = lan.node("node3")
    lan.link_down(node3, "eth1")
    cut = [k for k in ha_cluster.paths_seen_by("node1") if k.startswith("node3/198.18.1.")]
    assert len(cut) == 1
    ha_cluster.wait(lambda: ha_cluster.paths_seen_by("node1")[cut[0]] is PathState.DEAD, 5, "the eth1 path DEAD")
    time.sleep(BUDGET * 2)
    for observer in ("node1", "node2"):
        assert ha_cluster.node_seen_by(observer, "node3") is PathState.ALIVE, "one path left: node3 is alive"
        assert ha_cluster.declared_dead(observer, "node3") == 0
    assert ha_cluster.paths_seen_by("node1")["node3/198.18.0.11/198.18.0.13"] is PathState.ALIVE
    lan.link_up(node3, "eth1")
    ha_cluster.wait(lambda: ha_cluster.paths_seen_by("node1")[cut[0]] is PathState.ALIVE, 10, "the eth1 path back")


@pytest.mark.slow
@TWO_NETWORKS
def test_a_partitioned_node_is_declared_dead_by_both_others_within_the_budget(ha_cluster: HaCluster, lan: Lan) -> None:
    node3 = lan.node("node3")
    start = time.monotonic()
    lan.partition([node3], [lan.node("node1"), lan.node("node2")])
    for observer in ("node1", "node2"):
        when = ha_cluster.wait(sees_dead(ha_cluster, observer, "node3"), 10, f"{observer}: node3 DEAD")
        assert when - start <= BUDGET + SLACK, f"{observer} took {when - start:.2f} s"
        assert ha_cluster.node_seen_by(observer, "node1" if observer == "node2" else "node2") is PathState.ALIVE
    # node3's own timers run apart from the others': it sees them dead within the same budget.
    when = ha_cluster.wait(sees_dead(ha_cluster, "node3", "node1"), 10, "node3: node1 DEAD")
    assert when - start <= BUDGET + SLACK, f"node3 took {when - start:.2f} s"
    # A cluster-wide change while node3 is away: heartbeat timing, which node3 must share to be ALIVE again.
    done = settings(ha_cluster, "node1", "heartbeat_misses=6")
    assert (done.returncode, done.stderr) == (0, "")
    assert [misses(ha_cluster, n) for n in ("node1", "node2", "node3")] == [6, 6, defaults()["heartbeat_misses"]]
    lan.heal()
    ha_cluster.wait(lambda: misses(ha_cluster, "node3") == 6, 15, "node3 to catch up on the change")
    ha_cluster.wait(ha_cluster.all_alive, 20, "every path ALIVE again after the partition heals")
    time.sleep(BUDGET * 2)
    assert ha_cluster.all_alive(), "and it stays so: node3 heartbeats with the new timing"
    assert ha_cluster.declared_dead("node1", "node3") == 1


@pytest.mark.slow
@TWO_NETWORKS
def test_a_powered_off_node_is_declared_dead_and_alive_when_back(ha_cluster: HaCluster, lan: Lan) -> None:
    node3 = lan.node("node3")
    start = time.monotonic()
    lan.power_off(node3)
    for observer in ("node1", "node2"):
        when = ha_cluster.wait(sees_dead(ha_cluster, observer, "node3"), 10, f"{observer}: node3 DEAD")
        assert when - start <= BUDGET + SLACK, f"{observer} took {when - start:.2f} s"
    done = settings(ha_cluster, "node2", "confirmso_timeout=300")
    assert (done.returncode, done.stderr) == (0, "")
    own = settings(ha_cluster, "node2", "shutdown_strategy=Switch Over Resources")  # node2's alone
    assert (own.returncode, own.stderr) == (0, "")
    with Lcd.open(ha_cluster.root("node1")) as lcd:
        assert lcd.settings()["confirmso_timeout"] == 300, "a cluster setting reaches every live node"
        assert lcd.shutdown_strategy == "Do Not Switch Over Resources", "node2's shutdown strategy is its own"
    lan.power_on(node3)
    ha_cluster.start(node3)
    ha_cluster.wait(ha_cluster.all_alive, 20, "node3 ALIVE again after power on")
    ha_cluster.wait(lambda: "caught up with node1, node2" in ha_cluster.log("node3"), 10, "node3's catch-up at start")
    with Lcd.open(ha_cluster.root("node3")) as lcd:
        assert lcd.settings()["confirmso_timeout"] == 300, "node3 caught up when it started"
        assert lcd.shutdown_strategy == "Do Not Switch Over Resources", "and did not take node2's own setting"


@pytest.mark.slow
@TWO_NETWORKS
def test_a_sigkilled_daemon_goes_silent(ha_cluster: HaCluster, lan: Lan) -> None:
    """Killing hakeeperd ends its heartbeat process too (its pipe closes): the peers see the node go."""
    node3 = lan.node("node3")
    node3.kill_daemon(ha_cluster.procs["node3"].pid)
    ha_cluster.wait(lambda: ha_cluster.node_seen_by("node1", "node3") is PathState.DEAD, 10, "node3 DEAD after kill -9")
    ha_cluster.wait(lambda: len(node3.pids()) == 1, 5, "no heartbeat process left in node3 (only the holder)")


STRESS_SECONDS = 120
HOG_NICE = int(os.environ.get("HK_HOG_NICE", "-15"))  # above every normal process: only real-time priority wins


@pytest.mark.slow
@TWO_NETWORKS
def test_full_cpu_and_jitter_for_two_minutes_declare_nobody_dead(ha_cluster: HaCluster, lan: Lan) -> None:
    """Every core busy, 20 ms +- 10 ms on every link of both networks: heartbeats still get through."""
    for iface in ("eth0", "eth1"):
        lan.netem(None, delay_ms=20, jitter_ms=10, iface=iface, seed=7)
    hogs = lan.cpu_hog(STRESS_SECONDS + 10, processes=2 * len(os.sched_getaffinity(0)), nice=HOG_NICE)
    try:
        assert hogs.running
        deadline = time.monotonic() + STRESS_SECONDS
        while time.monotonic() < deadline:  # bounded: 2 minutes of checks every second
            for observer in ha_cluster.names:
                for other in ha_cluster.names:
                    if other != observer:
                        assert ha_cluster.node_seen_by(observer, other) is PathState.ALIVE, (
                            f"{observer} lost {other} under load\n{ha_cluster.logs()}"
                        )
            time.sleep(1.0)
        assert hogs.running, "the load lasted the whole test"
    finally:
        hogs.stop()
    for observer in ha_cluster.names:
        for other in ha_cluster.names:
            assert ha_cluster.declared_dead(observer, other) == 0, (
                f"{observer} declared {other} dead\n{ha_cluster.logs()}"
            )


@pytest.mark.slow
@TWO_NETWORKS
def test_a_cable_out_for_less_than_the_budget_leaves_its_path_alive(ha_cluster: HaCluster, lan: Lan) -> None:
    """Out for 40 % of the budget: TCP would take a second to resend and the kernel to re-learn the MAC."""
    node1 = lan.node("node1")
    # what came before: at start, a path not heard yet is DEAD once a budget passed (0.2 s by default)
    before = {observer: len(ha_cluster.log(observer)) for observer in ("node2", "node3")}
    for _ in range(5):  # bounded: 5 pulls
        lan.link_down(node1, "eth1")
        time.sleep(0.4 * BUDGET)
        lan.link_up(node1, "eth1")
        time.sleep(1.0)
    for observer in ("node2", "node3"):
        log = ha_cluster.log(observer)[before[observer] :]
        dead = [line for line in log.splitlines() if "path node1/" in line and "DEAD" in line]
        assert dead == [], f"{observer}: {dead}"
    assert ha_cluster.all_alive()


FLAP_SECONDS = 25


@pytest.mark.slow
@TWO_NETWORKS
def test_cables_pulled_in_turn_so_that_one_is_always_in_declare_nobody_dead(ha_cluster: HaCluster, lan: Lan) -> None:
    """node1's two cables out in turn for 0.2-0.4 s each, never both: every path drops briefly, no node dies."""
    node1 = lan.node("node1")
    rng = random.Random(10)
    pulls = 0
    deadline = time.monotonic() + FLAP_SECONDS
    try:
        while time.monotonic() < deadline:  # bounded: FLAP_SECONDS of pulls
            for iface in ("eth0", "eth1"):
                lan.link_down(node1, iface)
                time.sleep(rng.uniform(0.2, 0.4))
                lan.link_up(node1, iface)
                pulls += 1
    finally:
        lan.link_up(node1, "eth0")
        lan.link_up(node1, "eth1")
    deaths = {
        (observer, other): ha_cluster.declared_dead(observer, other)
        for observer in ha_cluster.names
        for other in ha_cluster.names
        if other != observer
    }
    assert pulls > 40
    assert sum(deaths.values()) == 0, f"declared dead: {deaths}\n{ha_cluster.logs()}"
    ha_cluster.wait(ha_cluster.all_alive, 10, "every path ALIVE after the last pull")
