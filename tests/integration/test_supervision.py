"""hakeeperd's services dying for real: each kind of death injected into a running daemon.

hakeeperd runs with ``HAKEEPER_TEST_FAULTS=1`` and the control command
``_fault SERVICE`` raises an exception inside that service (hakeeper.supervise).
A restartable service is logged with its traceback and restarted, and the node
goes on serving and heartbeating; one that dies too often, or a service the node
cannot live without, ends hakeeperd with exit 70 — in a cluster only after the
guard has taken the node's resources out of service, so that the peers take
over from a node that serves nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hakeeper.control import forward_to_daemon
from hakeeper.daemon import FATAL_EXIT
from hakeeper.db import State
from hakeeper.lab.cluster import ALIVE_TIMEOUT, HaCluster
from hakeeper.lab.lan import Lan
from hakeeper.lab.probe import Prober, double_service, first_answer_from, servers
from hakeeper.supervise import FAULTS_ENV
from tests.integration.test_daemon import Node, alive, create_web, serving, wait_for
from tests.integration.test_failover import serving as served_by_node
from tests.integration.test_failover import setup_web, state, targets

EXIT_TIMEOUT = 60.0  # bounds on waiting, never assertions on how long something took
TRACEBACK = f"hakeeper.supervise.InjectedFault: fault injected into the {{}} service (test-only, {FAULTS_ENV}=1)"


def inject(root: Path, service: str, *, timeout: float = 30.0) -> None:
    """Make ``service`` fail in the hakeeperd of ``root`` (retried while it is between two runs)."""
    deadline = time.monotonic() + timeout
    while True:
        answer = forward_to_daemon(root, "_fault", [service])
        assert answer is not None, "hakeeperd is not running"
        if answer.code == 0:
            return
        assert "is not running now" in answer.err and time.monotonic() < deadline, answer.err
        time.sleep(0.05)


def restarted(log: str, service: str) -> int:
    return log.count(f"the {service} service starts again")


def restarted_once(ha: HaCluster, node: str, service: str) -> Callable[[], bool]:
    return lambda: restarted(ha.log(node), service) == 1


# ---------------------------------------------------------------------- a node without a cluster


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Node, subprocess.Popen[bytes]]]:
    """hakeeperd in the foreground (its exit code is the test's), faults on, with no cluster: no guard."""
    node = Node(tmp_path / "state")
    node.root.mkdir()
    node.env[FAULTS_ENV] = "1"
    with open(node.root / "hakeeperd.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from hakeeper.cli.daemon import hakeeperd; hakeeperd()", "--root", str(node.root)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=node.env,
        )  # fmt: skip
    try:
        wait_for(lambda: forward_to_daemon(node.root, "_ping", []) is not None, 30, "hakeeperd to answer")
        yield node, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        web = node.web_pid()
        if web is not None and alive(web):
            os.kill(web, signal.SIGKILL)


@pytest.mark.slow
def test_a_monitor_that_dies_is_logged_restarted_and_checks_again(
    daemon: tuple[Node, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    node, proc = daemon
    port = create_web(node, tmp_path)
    node.run("perform_action", "-t", "web", "-a", "restore")
    inject(node.root, "monitor")
    wait_for(lambda: restarted(node.log(), "monitor") == 1, 30, "the monitor to start again")
    log = node.log()
    assert "ERROR hakeeper.supervise: the monitor service failed after" in log
    assert "; restarting it in 0.5 s (restart 1 of at most 5 within 300 s)" in log
    assert TRACEBACK.format("monitor") in log, "the death is logged with its traceback"
    first = node.web_pid()
    assert first is not None
    os.kill(first, signal.SIGKILL)  # the restarted monitor must notice
    wait_for(lambda: node.web_pid() not in (None, first) and serving(port), 30, "quickCheck to restart the server")
    assert proc.poll() is None, "hakeeperd runs on"


@pytest.mark.slow
def test_a_service_that_keeps_dying_escalates_and_hakeeperd_exits_70(
    daemon: tuple[Node, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    """Five restarts within 300 s are allowed; the sixth death is fatal. Alone, there is no guard: web stays."""
    node, proc = daemon
    port = create_web(node, tmp_path)
    node.run("perform_action", "-t", "web", "-a", "restore")
    for death in range(1, 6):
        inject(node.root, "monitor")
        wait_for(lambda death=death: restarted(node.log(), "monitor") == death, 60, f"restart {death}")
    inject(node.root, "monitor")
    assert proc.wait(timeout=EXIT_TIMEOUT) == FATAL_EXIT
    log = node.log()
    assert "CRITICAL hakeeper.supervise: the monitor service failed after" in log
    assert "6 deaths within 300 s; giving up on it" in log
    assert log.count(TRACEBACK.format("monitor")) == 6
    assert f"CRITICAL hakeeper.daemon: hakeeperd stopped (exit {FATAL_EXIT}): the monitor service failed" in log
    assert "no guard on a node without a cluster: what is in service here stays so" in log
    assert serving(port), "without peers nobody else would serve it: a failed daemon leaves it, as a crash would"
    assert not (node.root / "hakeeperd.sock").exists()


# ---------------------------------------------------------------------- in a cluster


@pytest.fixture(name="ha")
def faulty_cluster(lan: Lan, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> HaCluster:
    """hakeeperd on every node of ``lan`` with fault injection on; every path ALIVE."""
    monkeypatch.setenv(FAULTS_ENV, "1")
    ha = HaCluster(lan, tmp_path)
    ha.start_all()
    ha.wait(ha.all_alive, ALIVE_TIMEOUT, "every path ALIVE on every node")
    return ha


@pytest.mark.slow
def test_restartable_services_that_die_come_back_and_the_node_keeps_serving_and_heartbeating(
    ha: HaCluster, lan: Lan, tmp_path: Path
) -> None:
    setup_web(ha, tmp_path, interval=1)
    root = ha.root("node1")
    for service in ("messages", "catch-up", "anti-entropy", "monitor", "replication"):
        inject(root, service)
        ha.wait(restarted_once(ha, "node1", service), 30, f"{service} to start again")
        assert TRACEBACK.format(service) in ha.log("node1"), f"{service}: its death is logged with its traceback"
    # The message listener is back: node2's hakeeperd runs a command on node1 through it.
    assert ha.ok("node2", "lcdremexec", "-d", "node1", "--", "echo", "heard").strip() == "heard"
    assert ha.procs["node1"].poll() is None
    assert state(ha, "node1") is State.ISP
    with Prober(lan, targets(lan), tmp_path / "probe.jsonl") as prober:
        served_by_node(prober, "node1")
    for peer in ("node2", "node3"):
        assert ha.declared_dead(peer, "node1") == 0, f"{peer} never lost node1's heartbeats"
    assert ha.all_alive()
    assert "CRITICAL" not in ha.log("node1")


@pytest.mark.slow
@pytest.mark.parametrize("service", ["heartbeats", "guard"])
def test_a_service_the_node_cannot_live_without_ends_hakeeperd_and_the_guard_hands_web_over(
    ha: HaCluster, lan: Lan, tmp_path: Path, service: str
) -> None:
    setup_web(ha, tmp_path)
    with Prober(lan, targets(lan), tmp_path / "probe.jsonl") as prober:
        start = served_by_node(prober, "node1")
        inject(ha.root("node1"), service)
        assert ha.procs["node1"].wait(timeout=EXIT_TIMEOUT) == FATAL_EXIT
        rounds = prober.wait_for(lambda r: first_answer_from(r, "node2", after=start) is not None, 30, "node2")
        served = first_answer_from(rounds, "node2", after=start)
        assert served is not None
        rounds = prober.wait_past(served + 0.5, timeout=30)  # rounds after the takeover, for a double service to show
    log = ha.log("node1")
    assert f"CRITICAL hakeeper.supervise: the {service} service failed after" in log
    assert "hakeeperd cannot run without it" in log and TRACEBACK.format(service) in log
    assert f"hakeeperd stopped (exit {FATAL_EXIT}): the {service} service failed (InjectedFault" in log
    assert "guard: hakeeperd (pid" in log and "guard: out of service: web" in log, "the guard acted"
    # The order that keeps web off two nodes without a race: the guard is done before the heartbeats stop.
    assert log.index("guard: out of service: web") < log.rindex("exits: hakeeperd is gone")
    assert not double_service(rounds), "answers from two nodes at once"
    assert servers(rounds) == ["node1", "node2"]
    assert state(ha, "node1") is State.OSU and state(ha, "node2") is State.ISP
    assert "says it is stopping" not in ha.log("node2"), "a failed node is not a node that leaves: peers take over"
