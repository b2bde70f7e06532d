"""Failure detection on the test LAN: three hakeeperd nodes, two networks, real faults."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest

from hakeeper.comm.paths import PathState
from tests.harness.cluster import HaCluster
from tests.harness.lan import Lan

BUDGET = 0.8  # the default heartbeat_interval x heartbeat_misses
SLACK = 0.7  # polling, process scheduling, and the heartbeat ticker's quarter interval

TWO_NETWORKS = pytest.mark.parametrize("lan", [{"nodes": 3, "second_network": True}], indirect=True)


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
    lan.heal()
    ha_cluster.wait(ha_cluster.all_alive, 15, "every path ALIVE again after the partition heals")
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
    lan.power_on(node3)
    ha_cluster.start(node3)
    ha_cluster.wait(ha_cluster.all_alive, 20, "node3 ALIVE again after power on")


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
            assert ha_cluster.declared_dead(observer, other) == 0
