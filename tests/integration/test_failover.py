"""Failover on the test LAN: a web app that answers with its node's name, a client probing every node every 10 ms.

Three nodes run hakeeperd; ``web`` (a gen/app resource) is extended to all of them
(node1 priority 1, node2 2, node3 3) and in service on node1. The faults are real:
power off, a partition by packet filters, a SIGKILLed server whose restore fails.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from hakeeper.comm.paths import PathState
from hakeeper.db import Lcd, State
from hakeeper.db.settings import defaults, detection_budget
from hakeeper.lab.cluster import HaCluster
from hakeeper.lab.lan import Lan
from hakeeper.lab.probe import Prober, Round, double_service, first_answer_from, outage, servers
from hakeeper.lab.webapp import write_scripts

PORT = 8080
BUDGET = detection_budget(defaults())  # heartbeat_interval x heartbeat_misses
DELAY = float(defaults()["takeover_delay"])
SLACK = 2.0  # polling, process start, the restore script, a loaded CI machine


def guarded(scripts: dict[str, Path], directory: Path) -> dict[str, Path]:
    """A restore that fails while ``$HAKEEPER_ROOT/broken`` exists (to make a node unable to run web), and a
    remove that first sleeps 5 s while ``$HAKEEPER_ROOT/slow-remove`` exists."""
    wrapper = directory / "restore-unless-broken"
    wrapper.write_text(f'#!/bin/sh\n[ -e "$HAKEEPER_ROOT/broken" ] && exit 1\nexec {scripts["restore"]} "$@"\n')
    wrapper.chmod(0o755)
    slow = directory / "remove-maybe-slowly"
    slow.write_text(f'#!/bin/sh\n[ -e "$HAKEEPER_ROOT/slow-remove" ] && sleep 5\nexec {scripts["remove"]} "$@"\n')
    slow.chmod(0o755)
    return {**scripts, "restore": wrapper, "remove": slow}


def setup_web(
    ha: HaCluster,
    tmp_path: Path,
    *,
    switchback: str = "INTELLIGENT",
    interval: int = 120,
    backups: tuple[str, ...] = ("node2", "node3"),
    init: str = "INIT_OSU",
) -> None:
    """web on node1 (priority 1) and its backups (node2 2, node3 3), in service on node1."""
    scripts = guarded(write_scripts(tmp_path / "webapp", PORT), tmp_path / "webapp")
    params = [f"restore={scripts['restore']}", f"remove={scripts['remove']}", f"quickCheck={scripts['quickCheck']}"]
    ha.ok("node1", "hakeeper", "create", "gen/app", "-t", "web", "-s", switchback, "-Q", str(interval),
       "-I", init, *params)  # fmt: skip
    for backup in backups:
        ha.ok("node1", "hakeeper", "extend", "-t", "web", "-s", backup, "-p", backup[-1])
    ha.ok("node1", "perform_action", "-t", "web", "-a", "restore")
    assert state(ha, "node1") is State.ISP


def state(ha: HaCluster, node: str, tag: str = "web") -> State:
    with Lcd.open(ha.root(node)) as lcd:
        return lcd.resource(tag).state


def targets(lan: Lan) -> list[tuple[str, int]]:
    return [(n.address, PORT) for n in lan.nodes]


def serving(prober: Prober, name: str) -> float:
    """Wait until ``name`` answers the client; the moment after (the start of a fault)."""
    prober.wait_for(lambda rounds: first_answer_from(rounds, name) is not None, 10, f"{name} serving")
    return time.monotonic()


def served_after(prober: Prober, name: str, start: float) -> list[Round]:
    """Wait until ``name`` answers the client after ``start``; the rounds so far."""
    return prober.wait_for(lambda r: first_answer_from(r, name, after=start) is not None, 20, f"{name} serving")


def restart(ha: HaCluster, lan: Lan, name: str) -> None:
    lan.power_on(lan.node(name))
    ha.start(lan.node(name))
    ha.wait(ha.all_alive, 20, f"{name} ALIVE again")


@pytest.mark.slow
def test_power_off_moves_web_to_node2_and_it_stays_there_when_node1_is_back(
    ha_cluster: HaCluster, lan: Lan, tmp_path: Path
) -> None:
    ha = ha_cluster
    setup_web(ha, tmp_path)
    with Prober(lan, targets(lan), tmp_path / "probe.jsonl") as prober:
        start = serving(prober, "node1")
        lan.power_off(lan.node("node1"))
        rounds = served_after(prober, "node2", start)
        served = first_answer_from(rounds, "node2", after=start)
        assert served is not None
        assert served - start <= BUDGET + DELAY + SLACK, f"{served - start:.2f} s"
        assert "has the highest live priority (2); restoring web" in ha.log("node2")
        assert state(ha, "node3") is State.OSU, f"exactly one node acts\n{ha.logs()}"
        restart(ha, lan, "node1")
        time.sleep(2 * (BUDGET + DELAY))  # time for a wrong switchback to show
        rounds = prober.rounds()
    assert not double_service(rounds), "answers from two nodes at once"
    assert servers(rounds) == ["node1", "node2"], "INTELLIGENT: web stays on node2"
    assert state(ha, "node1") is State.OSU and state(ha, "node2") is State.ISP
    why = ha.ok("node2", "hakeeper", "why", "web")
    assert why.startswith("web: in service on node2\n") and "failover from node1" in why, why
    assert "next: node1 (priority 1), if node2 fails" in why, why


@pytest.mark.slow
def test_automatic_switchback_moves_web_back_when_node1_returns(
    ha_cluster: HaCluster, lan: Lan, tmp_path: Path
) -> None:
    ha = ha_cluster
    setup_web(ha, tmp_path, switchback="AUTOMATIC")
    with Prober(lan, targets(lan), tmp_path / "probe.jsonl") as prober:
        lan.power_off(lan.node("node1"))
        start = time.monotonic()
        served_after(prober, "node2", start)
        back = time.monotonic()
        restart(ha, lan, "node1")
        rounds = served_after(prober, "node1", back)
        time.sleep(1.0)
        rounds = prober.rounds()
    assert not double_service(rounds), "answers from two nodes at once"
    assert servers(rounds) == ["node1", "node2", "node1"]
    assert "switchback AUTOMATIC moves it to node1" in ha.log("node1")
    assert state(ha, "node2") is State.OSU


@pytest.mark.slow
def test_a_partition_that_isolates_node1_never_serves_from_two_nodes(
    ha_cluster: HaCluster, lan: Lan, tmp_path: Path
) -> None:
    ha = ha_cluster
    setup_web(ha, tmp_path)
    node1 = lan.node("node1")
    with Prober(lan, targets(lan), tmp_path / "probe.jsonl") as prober:
        start = serving(prober, "node1")
        lan.partition([node1], [lan.node("node2"), lan.node("node3")])  # the client still reaches every node
        rounds = served_after(prober, "node2", start)
        ha.wait(lambda: state(ha, "node1") is State.OSU, 10, "node1 to take web out of service")
        time.sleep(1.0)
        rounds = prober.rounds()
    assert not double_service(rounds), "answers from two nodes at once"
    assert "quorum lost (sees 1 of 3 nodes): osu" in ha.log("node1")
    assert state(ha, "node2") is State.ISP and state(ha, "node3") is State.OSU
    assert outage(rounds, after=start) <= BUDGET + DELAY + SLACK


@pytest.mark.slow
def test_a_failed_local_recovery_moves_web_and_a_failed_restore_on_node2_goes_on_to_node3(
    ha_cluster: HaCluster, lan: Lan, tmp_path: Path
) -> None:
    ha = ha_cluster
    setup_web(ha, tmp_path, interval=1)
    for node in ("node1", "node2"):
        (ha.root(node) / "broken").touch()  # restore fails on node1 (local recovery) and on node2
    pid = int((ha.root("node1") / f"webapp-{PORT}.pid").read_text())
    os.kill(pid, 9)
    with Prober(lan, targets(lan), tmp_path / "probe.jsonl") as prober:
        rounds = prober.wait_for(lambda r: first_answer_from(r, "node3") is not None, 30, "node3 serving")
    assert not double_service(rounds)
    ha.wait(lambda: state(ha, "node3") is State.ISP, 5, "node3 to record web ISP")  # it answers a moment before
    assert "trying node2 (priority 2)" in ha.log("node1") and "trying node3 (priority 3)" in ha.log("node1")
    assert state(ha, "node2") is not State.ISP


@pytest.mark.slow
def test_fencing_runs_before_takeover_and_a_failing_fence_blocks_it(
    ha_cluster: HaCluster, lan: Lan, tmp_path: Path
) -> None:
    ha = ha_cluster
    setup_web(ha, tmp_path)
    record = tmp_path / "fenced"
    fence = tmp_path / "fence"
    fence.write_text(f'#!/bin/sh\necho "$1 $(cat /proc/uptime)" >> {record}\n[ ! -e {tmp_path}/fence-fails ]\n')
    fence.chmod(0o755)
    ha.ok("node1", "hakeeper", "settings", f"fence_command={fence} {{node}}")
    (tmp_path / "fence-fails").touch()
    with Prober(lan, targets(lan), tmp_path / "probe.jsonl") as prober:
        start = time.monotonic()
        lan.power_off(lan.node("node1"))
        ha.wait(record.exists, 10, "the fence agent to be called")
        time.sleep(2 * (BUDGET + DELAY))
        rounds = prober.rounds()
    assert first_answer_from(rounds, "node2", after=start) is None, "a failed fence blocks the takeover"
    assert record.read_text().split()[0] == "node1"
    why = ha.ok("node2", "hakeeper", "why", "web")
    assert "blocked: fencing node1 failed" in why, why
    assert state(ha, "node2") is State.OSU

    # With a fence that works: node1 is fenced, then web is restored on node2.
    (tmp_path / "fence-fails").unlink()
    record.unlink()
    restart(ha, lan, "node1")
    ha.wait(lambda: ha.node_seen_by("node2", "node1") is PathState.ALIVE, 10, "node1 back")
    ha.ok("node1", "perform_action", "-t", "web", "-a", "restore")
    with Prober(lan, targets(lan), tmp_path / "probe2.jsonl") as prober:
        start = time.monotonic()
        lan.power_off(lan.node("node1"))
        rounds = served_after(prober, "node2", start)
    fenced_at = float(record.read_text().split()[1])
    assert record.read_text().split()[0] == "node1"
    with open("/proc/uptime") as f:
        now = float(f.read().split()[0])
    served = first_answer_from(rounds, "node2", after=start)
    assert served is not None
    assert fenced_at <= now - (time.monotonic() - served), "fenced before node2 served"
    assert "fenced node1 with" in ha.log("node2")


@pytest.mark.slow
def test_sigkill_of_the_active_daemon_alone_never_serves_from_two_nodes(
    ha_cluster: HaCluster, lan: Lan, tmp_path: Path
) -> None:
    """keepalived's split brain after kill -9: here the guard takes web down before node2 takes over."""
    ha = ha_cluster
    setup_web(ha, tmp_path)
    node1 = lan.node("node1")
    with Prober(lan, targets(lan), tmp_path / "probe.jsonl") as prober:
        start = serving(prober, "node1")
        node1.kill_daemon(ha.procs["node1"].pid)
        rounds = served_after(prober, "node2", start)
        ha.start(node1)  # hakeeperd back on node1: it must not take web back, nor start it
        ha.wait(ha.all_alive, 20, "node1 ALIVE again")
        ha.wait(lambda: "caught up with node2, node3" in ha.log("node1").split("hakeeperd serving")[-1], 10, "start")
        time.sleep(1.0)
        rounds = prober.rounds()
    assert not double_service(rounds), "answers from two nodes at once"
    assert "guard: hakeeperd (pid" in ha.log("node1") and "guard: out of service: web" in ha.log("node1")
    assert servers(rounds) == ["node1", "node2"]
    assert state(ha, "node1") is State.OSU and state(ha, "node2") is State.ISP


@pytest.mark.slow
def test_a_hung_daemon_is_killed_by_its_guard_and_web_moves(ha_cluster: HaCluster, lan: Lan, tmp_path: Path) -> None:
    ha = ha_cluster
    setup_web(ha, tmp_path)
    ha.ok("node1", "hakeeper", "settings", "guard_timeout=1")
    node1 = lan.node("node1")
    with Prober(lan, targets(lan), tmp_path / "probe.jsonl") as prober:
        start = time.monotonic()
        node1.freeze(ha.procs["node1"].pid)  # SIGSTOP: its heartbeat process runs on; only the guard notices
        rounds = served_after(prober, "node2", start)
        time.sleep(0.5)
        rounds = prober.rounds()
    assert not double_service(rounds)
    assert "guard: hakeeperd (pid" in ha.log("node1") and "is silent: killing it" in ha.log("node1")
    assert state(ha, "node1") is State.OSU


@pytest.mark.slow
def test_two_nodes_and_a_witness_a_partition_never_serves_from_two_nodes(
    ha_cluster: HaCluster, lan: Lan, tmp_path: Path
) -> None:
    """node3 is a witness: web is on node1 and node2 only; node3 gives the majority to node2's side."""
    ha = ha_cluster
    ha.ok("node3", "flg_create", "-f", "witness")
    setup_web(ha, tmp_path, backups=("node2",))
    refused = ha.command("node1", "hakeeper", "extend", "-t", "web", "-s", "node3")
    assert refused.returncode != 0 and "node3 is a witness" in refused.stderr
    node1 = lan.node("node1")
    with Prober(lan, targets(lan), tmp_path / "probe.jsonl") as prober:
        start = serving(prober, "node1")
        lan.partition([node1], [lan.node("node2"), lan.node("node3")])
        served_after(prober, "node2", start)
        time.sleep(1.0)
        rounds = prober.rounds()
    assert not double_service(rounds), "answers from two nodes at once"
    assert "quorum lost (sees 1 of 3 nodes)" in ha.log("node1")
    assert state(ha, "node1") is State.OSU and state(ha, "node2") is State.ISP


QUORUM_PORTS = (7401, 7402, 7403)
LISTENER = """
import socket, sys, time
socks = []
for port in sys.argv[1:]:
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(port))); s.listen(64); socks.append(s)
time.sleep(600)  # the LAN kills it at the end; the backlog answers connects meanwhile
"""


@pytest.mark.slow
def test_tcp_remote_quorum_hosts_decide_a_partition(ha_cluster: HaCluster, lan: Lan, tmp_path: Path) -> None:
    """Quorum from hosts the nodes reach by TCP (LifeKeeper's tcp_remote): the client plays them."""
    ha = ha_cluster
    listener = lan.client.popen([sys.executable, "-c", LISTENER, *map(str, QUORUM_PORTS)])
    hosts = ",".join(f"{lan.client.address}:{port}" for port in QUORUM_PORTS)
    too_short = ha.command("node1", "hakeeper", "settings", "quorum_mode=tcp_remote", f"quorum_hosts={hosts}")
    assert too_short.returncode != 0 and "heartbeat_interval + quorum_timeout" in too_short.stderr
    ha.ok("node1", "hakeeper", "settings", "quorum_mode=tcp_remote", f"quorum_hosts={hosts}",
       "quorum_timeout=0.2", "takeover_delay=0.45")  # fmt: skip
    setup_web(ha, tmp_path, backups=("node2",))
    node1 = lan.node("node1")
    start = time.monotonic()
    lan.partition([node1], [lan.node("node2"), lan.node("node3"), lan.client])  # the quorum hosts too
    ha.wait(lambda: state(ha, "node2") is State.ISP, 20, "node2 to take web over")
    ha.wait(lambda: state(ha, "node1") is State.OSU, 10, "node1 to take web out of service")
    assert "quorum lost (reaches 0 of 3 quorum hosts)" in ha.log("node1")
    assert listener.poll() is None, "the quorum hosts listened all along"
    assert time.monotonic() - start < 20


@pytest.mark.slow
def test_a_cluster_that_starts_together_brings_an_autores_isp_hierarchy_in_service_once(
    ha_cluster: HaCluster, lan: Lan, tmp_path: Path
) -> None:
    """LifeKeeper's AUTORES_ISP: the whole cluster stops and starts; web comes back on node1, and only there."""
    ha = ha_cluster
    setup_web(ha, tmp_path, init="AUTORES_ISP")
    for name in reversed(ha.names):  # node1 last: its peers know it stops, and web leaves with it
        ha.ok(name, "lkstop")
        ha.procs[name].wait(30)
    assert [state(ha, n) for n in ha.names] == [State.OSU] * 3
    with Prober(lan, targets(lan), tmp_path / "probe.jsonl") as prober:
        for name in ha.names:
            ha.start(lan.node(name))
        rounds = served_after(prober, "node1", 0.0)
        ha.wait(ha.all_alive, 20, "every node ALIVE")
        time.sleep(1.0)
        rounds = prober.rounds()
    assert not double_service(rounds)
    assert servers(rounds) == ["node1"]
    assert "web: in service nowhere at start; node1 has the highest live priority (1)" in ha.log("node1")
    assert [state(ha, n) for n in ha.names] == [State.ISP, State.OSU, State.OSU]
