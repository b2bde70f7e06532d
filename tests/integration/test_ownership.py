"""One owner per hierarchy under compound faults (issue 10): the cases users met, each on the test LAN.

Three nodes run hakeeperd; ``web`` (a gen/app that answers with its node's name)
is extended to all of them (node1 priority 1, node2 2, node3 3). A client asks
every node every 10 ms who serves. Each test pairs two faults, or a fault with an
action under way, and asserts what users care about: never two nodes answering
in the same round, and the service back when a quorum exists.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hakeeper.db import State
from hakeeper.db.settings import defaults, detection_budget
from hakeeper.lab.cluster import HaCluster
from hakeeper.lab.lan import Lan
from hakeeper.lab.probe import Prober, Round, double_service, first_answer_from, served_by, servers
from hakeeper.lab.webapp import write_scripts
from tests.integration.test_failover import setup_web, state, targets

BUDGET = detection_budget(defaults())
DELAY = float(defaults()["takeover_delay"])
CONVERGE = 5 * float(defaults()["heartbeat_interval"])  # the anti-entropy period
SLACK = 3.0  # polling, process starts, a loaded CI machine


def serving_now(prober: Prober, name: str) -> float:
    prober.wait_for(lambda rounds: first_answer_from(rounds, name) is not None, 15, f"{name} serving")
    return time.monotonic()


def served_after(prober: Prober, names: tuple[str, ...], after: float, timeout: float = 20) -> list[Round]:
    return prober.wait_for(
        lambda r: any(first_answer_from(r, n, after=after) is not None for n in names), timeout, f"{names} serving"
    )


def doubles_after(rounds: list[Round], after: float) -> list[Round]:
    return [r for r in double_service(rounds) if r.t >= after]


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (hakeeperd's guard and heartbeat process)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def guard_of(pid: int) -> int:
    for child in children(pid):
        try:
            if b"hakeeper.guard" in Path(f"/proc/{child}/cmdline").read_bytes():
                return child
        except OSError:
            continue
    raise AssertionError(f"hakeeperd {pid} has no guard")


@pytest.mark.slow
@pytest.mark.parametrize("lag", [0.0, 0.2, 0.45])
def test_a_switchover_racing_a_power_off_of_the_holder_leaves_one_node_serving(
    ha_cluster: HaCluster, lan: Lan, tmp_path: Path, lag: float
) -> None:
    """Row 1: 'hakeeper switchover web --to node3' while node1, which serves, powers off (node2 fails it over)."""
    ha = ha_cluster
    setup_web(ha, tmp_path)
    result: list[subprocess.CompletedProcess[str]] = []
    with Prober(lan, targets(lan), tmp_path / "probe.jsonl") as prober:
        serving_now(prober, "node1")
        switch = threading.Thread(target=lambda: result.append(ha.command("node2", "hakeeper", "switchover", "web",
                                                                          "--to", "node3", timeout=120)))  # fmt: skip
        switch.start()
        time.sleep(lag)
        off = time.monotonic()
        lan.power_off(lan.node("node1"))
        served_after(prober, ("node2", "node3"), off)
        switch.join(150)
        assert not switch.is_alive(), "the switchover command returned"
        time.sleep(2 * (BUDGET + DELAY) + 2 * CONVERGE)  # time for a second copy to show
        rounds = prober.rounds()
    assert not double_service(rounds), f"two nodes answered: {served_by(rounds)}\n{ha.logs()}"
    on = [n for n in ("node2", "node3") if state(ha, n) is State.ISP]
    assert len(on) == 1, f"exactly one survivor runs web, not {on}\n{ha.logs()}"
    last = [name for _t, name in served_by(rounds)][-1]
    assert last == on[0], f"the client is served by {on[0]}"


@pytest.mark.slow
@pytest.mark.parametrize("frozen", [3.0, 4.2])
def test_a_frozen_holder_while_a_third_node_dies_is_unknown_not_nothing(
    ha_cluster: HaCluster, lan: Lan, tmp_path: Path, frozen: float
) -> None:
    """Row 2: node2 serves; its hakeeperd is frozen (heartbeats go on) below guard_timeout; node3 powers off."""
    ha = ha_cluster
    ha.ok("node1", "hakeeper", "settings", "guard_timeout=10")  # the guard feeds every 2.5 s: no kill below 7.5 s
    setup_web(ha, tmp_path)
    ha.ok("node2", "hakeeper", "switchover", "web")
    node2 = lan.node("node2")
    with Prober(lan, targets(lan), tmp_path / "probe.jsonl") as prober:
        serving_now(prober, "node2")
        node2.freeze(ha.procs["node2"].pid)
        froze = time.monotonic()
        try:
            lan.power_off(lan.node("node3"))
            time.sleep(max(0.0, frozen - (time.monotonic() - froze)))
        finally:
            node2.thaw(ha.procs["node2"].pid)
        time.sleep(2 * (BUDGET + DELAY) + 2 * CONVERGE + 1.0)
        rounds = prober.rounds()
    assert not double_service(rounds), f"two nodes answered: {served_by(rounds)}\n{ha.logs()}"
    assert servers(rounds) == ["node2"], ha.logs()
    assert state(ha, "node1") is State.OSU and state(ha, "node2") is State.ISP


@pytest.mark.slow
def test_a_duplicate_left_by_a_dead_daemon_and_guard_ends_when_the_daemon_is_back(
    ha_cluster: HaCluster, lan: Lan, tmp_path: Path
) -> None:
    """Row 4: hakeeperd and its guard SIGKILLed on node1 (no fencing: two serve); hakeeperd restarted there."""
    ha = ha_cluster
    setup_web(ha, tmp_path)
    node1 = lan.node("node1")
    with Prober(lan, targets(lan), tmp_path / "probe.jsonl") as prober:
        start = serving_now(prober, "node1")
        daemon = ha.procs["node1"].pid
        node1.kill_daemon(guard_of(daemon))  # the guard first: it would take web down when hakeeperd dies
        node1.kill_daemon(daemon)
        served_after(prober, ("node2",), start)  # node2 took it over; node1's copy still answers
        ha.start(node1)
        restarted = time.monotonic()
        ha.wait(lambda: state(ha, "node1") is State.OSU, 20, "node1 to take its copy out of service")
        ended = time.monotonic()
        time.sleep(2 * CONVERGE + 1.0)
        rounds = prober.rounds()
    log = ha.log("node1").split("hakeeperd serving")[-1]
    assert "owned by node2" in log or "under epoch 2 (its heartbeats say)" in log, log
    assert not doubles_after(rounds, ended + 0.1), "no second copy after node1 stopped its own"
    # hakeeperd's start (interpreter, catch-up), membership (the detection budget), one anti-entropy period.
    assert ended - restarted <= 2.0 + BUDGET + 1.0 + CONVERGE + SLACK, f"{ended - restarted:.2f} s"
    assert state(ha, "node2") is State.ISP


@pytest.mark.slow
def test_an_abandoned_takeover_is_retried_when_the_holder_then_dies(
    ha_cluster: HaCluster, lan: Lan, tmp_path: Path
) -> None:
    """Row 5: node1<->node2 cut for 4 s (node2's takeover is paused, then abandoned), then node1 powers off."""
    ha = ha_cluster
    setup_web(ha, tmp_path)
    node1, node2 = lan.node("node1"), lan.node("node2")
    with Prober(lan, targets(lan), tmp_path / "probe.jsonl") as prober:
        serving_now(prober, "node1")
        lan.partition([node1], [node2])  # node3 and the client still reach both
        time.sleep(4.0)
        assert not double_service(prober.rounds()), f"two nodes answered during the cut\n{ha.logs()}"
        off = time.monotonic()
        lan.power_off(node1)
        rounds = served_after(prober, ("node2", "node3"), off)
        lan.heal()
        time.sleep(2 * CONVERGE + 1.0)
        rounds = prober.rounds()
    back = min(t for t in (first_answer_from(rounds, n, after=off) for n in ("node2", "node3")) if t is not None)
    assert back - off <= BUDGET + DELAY + 2 * CONVERGE + SLACK, f"{back - off:.2f} s"
    assert not double_service(rounds), f"two nodes answered: {served_by(rounds)}\n{ha.logs()}"
    assert state(ha, "node2") is State.ISP and state(ha, "node3") is State.OSU


@pytest.mark.slow
def test_a_switchover_whose_holder_powers_off_mid_release_becomes_a_failover(
    ha_cluster: HaCluster, lan: Lan, tmp_path: Path
) -> None:
    """Row 9: a switchover to node2 while node1's remove is slow; node1 powers off 0.4 s in. The command returns."""
    ha = ha_cluster
    setup_web(ha, tmp_path)
    (ha.root("node1") / "slow-remove").touch()  # node1's remove now takes 5 s
    result: list[subprocess.CompletedProcess[str]] = []
    with Prober(lan, targets(lan), tmp_path / "probe.jsonl") as prober:
        serving_now(prober, "node1")
        asked = time.monotonic()
        switch = threading.Thread(target=lambda: result.append(ha.command("node2", "hakeeper", "switchover", "web",
                                                                          timeout=120)))  # fmt: skip
        switch.start()
        time.sleep(0.4)
        lan.power_off(lan.node("node1"))
        switch.join(60)
        assert not switch.is_alive(), "the switchover did not hang on the dead holder"
        rounds = served_after(prober, ("node2",), asked)
        time.sleep(2 * CONVERGE)
        rounds = prober.rounds()
    assert result and result[0].returncode == 0, (result, ha.logs())
    assert not double_service(rounds)
    assert state(ha, "node2") is State.ISP
    assert time.monotonic() - asked < 60


VIP = "198.18.0.50"


@pytest.mark.slow
def test_a_node_back_from_a_power_off_does_not_trust_a_check_another_node_answered(
    ha_cluster: HaCluster, lan: Lan, tmp_path: Path
) -> None:
    """Row 6: web's quickCheck asks the virtual address (which node2 holds); node1 comes back, then node2 dies."""
    ha = ha_cluster
    ha.ok("node1", "hakeeper", "create", "comm/ip", "-t", "vip", "-I", "INIT_OSU", f"address={VIP}/24")
    scripts = write_scripts(tmp_path / "webapp", 8080)
    asks_vip = tmp_path / "webapp" / "quickCheck-via-vip"  # the advice users followed: "ask the application itself"
    asks_vip.write_text(
        f'#!/bin/sh\nexec {sys.executable} -c "import urllib.request; '
        f"urllib.request.urlopen('http://{VIP}:8080/', timeout=1)\"\n"
    )
    asks_vip.chmod(0o755)
    params = [f"restore={scripts['restore']}", f"remove={scripts['remove']}", f"quickCheck={asks_vip}"]
    ha.ok("node1", "hakeeper", "create", "gen/app", "-t", "web", "-I", "INIT_OSU", "-Q", "120", *params)
    ha.ok("node1", "dep_create", "-p", "web", "-c", "vip")
    for backup in ("node2", "node3"):
        ha.ok("node1", "hakeeper", "extend", "-t", "web", "-s", backup, "-p", backup[-1])
    ha.ok("node1", "perform_action", "-t", "web", "-a", "restore")
    node1 = lan.node("node1")
    with Prober(lan, [(VIP, 8080)], tmp_path / "probe.jsonl") as prober:
        serving_now(prober, "node1")
        off = time.monotonic()
        lan.power_off(node1)
        served_after(prober, ("node2",), off)
        lan.power_on(node1)
        ha.start(node1)
        ha.wait(lambda: "caught up with" in ha.log("node1").split("hakeeperd serving")[-1], 20, "node1 started")
        ha.wait(ha.all_alive, 20, "node1 ALIVE again")
        assert state(ha, "node1") is State.OSU, "web's check was answered by node2, not by a server on node1"
        assert state(ha, "node1", "vip") is State.OSU
        again = time.monotonic()
        lan.power_off(lan.node("node2"))
        rounds = served_after(prober, ("node1", "node3"), again)
        time.sleep(2 * CONVERGE)
        rounds = prober.rounds()
    assert not double_service(rounds)
    back = min(t for t in (first_answer_from(rounds, n, after=again) for n in ("node1", "node3")) if t is not None)
    assert back - again <= BUDGET + DELAY + SLACK, f"{back - again:.2f} s"
