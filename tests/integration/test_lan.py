"""The test LAN itself: every later integration test trusts that its nodes are separate machines, that
its faults are real, and that it leaves nothing behind. Each test here fails if the lab lies."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hakeeper.lab import NEEDS_ROOT, LabError, Lan, LanUnavailable, NodeDown, cleanup_stale, procs
from hakeeper.lab.shell import read_line
from tests.lan_fixtures import lan_fixture, make_lan_fixture, needs_lan_fixture, start_or_skip  # noqa: F401

pytestmark = pytest.mark.needs_root

REPO = Path(__file__).resolve().parents[2]
QUICK = 0.5  # s to wait for an answer that must not come (the LAN answers in well under 1 ms)
PATIENT = 3.0  # s to wait for an answer that must come (covers ARP retries after a fault ends)

# a LAN owned by a child process: it reports what it made, then waits to be signalled. Its state file
# goes to the test's own directory, so that a test run in parallel does not clean it up first.
CHILD = """
import json, sys, time
from hakeeper.lab import Lan
with Lan(nodes=2, state_dir=sys.argv[1]) as lan:
    lan.nodes[0].popen(["sleep", "300"])
    lan.nodes[1].run(["sh", "-c", "setsid sleep 300 </dev/null >/dev/null 2>&1 &"])
    pids = sorted(pid for host in lan.hosts for pid in host.pids())
    print(json.dumps({"namespaces": lan.namespaces, "state": str(lan.state_file), "pids": pids}), flush=True)
    time.sleep(30)
"""

TCP_SERVER = """
import hashlib, socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 5001))
s.listen(1)
s.settimeout(20)
print("listening", flush=True)
c, _ = s.accept()
c.settimeout(20)
h = hashlib.sha256()
for _ in range(100_000):
    b = c.recv(1 << 16)
    if not b:
        break
    h.update(b)
print(h.hexdigest(), flush=True)
"""

TCP_CLIENT = """
import socket, sys
data = bytes(range(256)) * (4 << 12)
with socket.create_connection((sys.argv[1], 5001), timeout=20) as c:
    c.sendall(data)
"""
TCP_DATA = hashlib.sha256(bytes(range(256)) * (4 << 12)).hexdigest()  # 4 MiB


def ip_netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True, timeout=10).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def busy_fraction(seconds: float) -> float:
    """Share of all CPU time that was not idle during the next ``seconds``."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return sum(values), values[3] + values[4]  # total, idle + iowait

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


class ChildLan:
    """A LAN built by another Python process (which a test then signals or kills).

    As a context manager it makes sure, whatever the test did, that the child is gone and its LAN removed.
    """

    def __init__(self, tmp_path: Path) -> None:
        self.state_dir = tmp_path
        self.stderr = tmp_path / "child.stderr"
        with self.stderr.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", CHILD, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, stderr=err, text=True
            )
        assert self.proc.stdout is not None
        line = read_line(self.proc.stdout.fileno(), time.monotonic() + 20)
        if not line:
            self.end()
            raise AssertionError(f"the child did not build its LAN: {self.stderr.read_text()}")
        self.made: dict[str, Any] = json.loads(line)

    def end(self, sig: int = signal.SIGKILL) -> str:
        """Signal the child, wait for it (its node processes may still hold the stdout pipe), return stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=10)
            assert self.proc.stdout is not None
            self.proc.stdout.close()
        return self.stderr.read_text()

    def __enter__(self) -> ChildLan:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.end()
        cleanup_stale(self.state_dir)


def assert_gone(made: dict[str, Any]) -> None:
    """No namespace, process or state file of what a LAN reported it made remains."""
    assert not set(made["namespaces"]) & ip_netns_names()
    assert not [pid for pid in made["pids"] if procs.alive(pid)]
    assert not Path(made["state"]).exists()


# ---- topology -----------------------------------------------------------------------------------------


def test_nodes_and_client_reach_each_other_on_network_a_and_nothing_lands_in_the_root_namespace(lan):
    node2 = lan.nodes[1]
    assert [n.address for n in lan.hosts] == ["198.18.0.11", "198.18.0.12", "198.18.0.13", "198.18.0.100"]
    for host in lan.hosts:
        others = [h.address for h in lan.hosts if h is not host]
        assert host.reachable(others, timeout=PATIENT) == dict.fromkeys(others, True), host.name
    eth0 = node2.run(["ip", "addr", "show", "eth0"]).stdout
    assert f"inet {node2.address}/24 brd 198.18.0.255" in eth0
    assert "inet6" not in eth0  # no IPv6 on the wire: only 198.18.0.0/15 ...
    assert "inet6 ::1/128" in node2.run(["ip", "addr", "show", "lo"]).stdout  # ... but localhost has ::1
    # the root namespace has none of the LAN's addresses or interfaces
    root = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, check=True, timeout=10).stdout
    root += subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True, timeout=10).stdout
    assert "198.18." not in root
    assert "02:68:6b" not in root


@pytest.mark.parametrize("lan", [{"nodes": 2, "second_network": True}], indirect=True, ids=["two-networks"])
def test_the_second_network_is_a_path_of_its_own(lan):
    node1, node2 = lan.nodes
    assert node1.addresses == {"eth0": "198.18.0.11", "eth1": "198.18.1.11"}
    assert lan.client.addresses["eth1"] == "198.18.1.100"
    b_side = [node2.addresses["eth1"], lan.client.addresses["eth1"]]
    assert node1.reachable(b_side, timeout=PATIENT) == dict.fromkeys(b_side, True)

    lan.link_down(node1, "eth0")
    assert node2.reachable([node1.address, node1.addresses["eth1"]], timeout=QUICK) == {
        node1.address: False,
        node1.addresses["eth1"]: True,
    }
    lan.link_up(node1, "eth0")
    assert node2.can_reach(node1.address, timeout=PATIENT)


@pytest.mark.parametrize(
    "lan", [{"nodes": 2, "second_network": True, "ipv6": True}], indirect=True, ids=["ipv6-two-networks"]
)
def test_with_ipv6_every_host_has_an_address_of_2001_2_and_no_other_ipv6_address(lan):
    node1, node2 = lan.nodes
    assert [h.address6 for h in lan.hosts] == ["2001:2::11", "2001:2::12", "2001:2::100"]
    assert node1.ifaces["eth1"].address6 == "2001:2:0:1::11"
    for host in lan.hosts:
        others = [h.address6 for h in lan.hosts if h is not host]
        assert host.reachable(others, timeout=PATIENT) == dict.fromkeys(others, True), host.name
    assert node2.reachable([node1.ifaces["eth1"].address6], timeout=PATIENT) == {"2001:2:0:1::11": True}
    addresses = node1.run(["ip", "-6", "-o", "addr", "show"]).stdout
    found = sorted(line.split()[3] for line in addresses.splitlines())
    assert found == ["2001:2:0:1::11/64", "2001:2::11/64", "::1/128"], "no link-local, nothing but 2001:2::/48"
    switch = lan.networks[0].netns
    argv = ["ip", "-n", switch, "-6", "-o", "addr"]
    bridge = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True)
    assert [line for line in bridge.stdout.splitlines() if " lo " not in line] == [], "IPv6 on the switch"
    lan.power_off(node1)
    lan.power_on(node1)  # a reboot brings the IPv6 addresses back, like the IPv4 ones
    assert node2.reachable([node1.address6], timeout=PATIENT) == {node1.address6: True}


def test_without_ipv6_a_node_has_no_ipv6_address_to_give(lan):
    with pytest.raises(LabError, match="without ipv6=True"):
        _ = lan.nodes[0].address6
    with pytest.raises(ValueError, match="not an address of the lab"):
        lan.nodes[0].ping("192.0.2.1")


# ---- each node is a machine of its own --------------------------------------------------------------


def test_each_node_has_its_own_hostname_and_mount_namespace(make_lan, tmp_path):
    private, shared = tmp_path / "private", tmp_path / "mnt"
    private.mkdir()
    shared.mkdir()
    root_hostname = socket.gethostname()
    lan = make_lan(nodes=2, tmpfs=[str(private)])
    node1, node2 = lan.nodes

    assert [h.hostname() for h in lan.hosts] == ["node1", "node2", "client"]
    node1.run(["sh", "-c", "printf renamed > /proc/sys/kernel/hostname"], check=True)
    assert (node1.hostname(), node2.hostname(), socket.gethostname()) == ("renamed", "node2", root_hostname)

    # a mount made by one command stays for the node's next commands, and only there
    node1.run(["mount", "-t", "tmpfs", "test", str(shared)], check=True)
    node1.run(["sh", "-c", f"echo node1 > {shared}/who"], check=True)
    assert node1.run(["cat", f"{shared}/who"]).stdout == "node1\n"
    assert node2.run(["ls", "-A", str(shared)], check=True).stdout == ""
    assert os.listdir(shared) == []
    assert str(shared) not in Path("/proc/self/mountinfo").read_text()

    # the Lan's tmpfs option: each node gets an empty private directory
    node1.run(["sh", "-c", f"echo 1 > {private}/x"], check=True)
    node2.run(["sh", "-c", f"echo 2 > {private}/x"], check=True)
    assert [node1.run(["cat", f"{private}/x"]).stdout, node2.run(["cat", f"{private}/x"]).stdout] == ["1\n", "2\n"]
    assert os.listdir(private) == []
    # commands start where asked, resolved inside the node
    assert node1.run(["pwd"], cwd=shared).stdout == f"{shared}\n"


def test_pids_are_what_ip_netns_pids_lists(lan):
    node1 = lan.nodes[0]
    sleeper = node1.popen(["sleep", "300"])
    listed = subprocess.run(
        ["ip", "netns", "pids", node1.netns], capture_output=True, text=True, timeout=10, check=True
    )
    assert sorted(int(p) for p in listed.stdout.split()) == node1.pids()
    assert {node1.holder_pid, sleeper.pid} <= set(node1.pids())
    assert sleeper.pid not in lan.nodes[1].pids()


# ---- faults -------------------------------------------------------------------------------------------


def test_partition_drops_traffic_between_the_groups_only_and_heal_restores_it(lan):
    node1, node2, node3 = lan.nodes
    client = lan.client
    vip = lan.networks[0].address(50)
    root_rules = subprocess.run(
        ["nft", "list", "ruleset"], capture_output=True, text=True, timeout=10, check=True
    ).stdout

    lan.partition([node1], [node2, node3])
    assert node1.reachable([node2.address, node3.address], timeout=QUICK) == {
        node2.address: False,
        node3.address: False,
    }
    assert node2.reachable([node1.address], timeout=QUICK) == {node1.address: False}
    assert node2.reachable([node3.address, client.address], timeout=PATIENT) == {
        node3.address: True,
        client.address: True,
    }
    assert client.reachable([node1.address, node2.address], timeout=PATIENT) == {
        node1.address: True,
        node2.address: True,
    }
    # an address node2 takes during the partition (a VIP) is cut off from node1 too
    node2.run(["ip", "addr", "add", f"{vip}/24", "dev", "eth0"], check=True)
    assert client.can_reach(vip, timeout=PATIENT)
    assert not node1.can_reach(vip, timeout=QUICK)
    # the rules live in the nodes, never in the root namespace
    assert (
        subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, timeout=10, check=True).stdout
        == root_rules
    )

    lan.heal()
    for target in (node2.address, node3.address, vip):
        assert node1.can_reach(target, timeout=PATIENT), target


def test_link_down_cuts_the_node_off_and_link_up_reconnects_it(lan):
    node1, node2, node3 = lan.nodes
    lan.link_down(node1)
    assert lan.client.reachable([node1.address], timeout=QUICK) == {node1.address: False}
    assert not node2.can_reach(node1.address, timeout=QUICK)
    assert node2.can_reach(node3.address, timeout=PATIENT)
    assert "NO-CARRIER" in node1.run(["ip", "link", "show", "eth0"]).stdout  # a pulled cable, not ifdown

    lan.link_up(node1)
    assert lan.client.can_reach(node1.address, timeout=PATIENT)
    assert node2.can_reach(node1.address, timeout=PATIENT)


def test_netem_adds_delay_and_loss_and_tcp_still_works(lan):
    node1, node2, node3 = lan.nodes
    assert max(node1.ping(node2.address, count=3, timeout=PATIENT, interval=0.02)) < 10

    lan.netem(node2, delay_ms=20, jitter_ms=0)
    delayed = node1.ping(node2.address, count=5, timeout=PATIENT, interval=0.02)
    assert len(delayed) == 5
    assert min(delayed) >= 15
    assert min(node1.ping(node3.address, count=3, timeout=PATIENT, interval=0.02)) < 10  # only node2 is slow

    lan.netem(delay_ms=20, jitter_ms=10)  # every host: each direction 10..30 ms
    assert min(node1.ping(node3.address, count=5, timeout=PATIENT, interval=0.02)) >= 15
    server = node1.popen([sys.executable, "-c", TCP_SERVER], stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    assert read_line(server.stdout.fileno(), time.monotonic() + 10) == "listening"
    node2.run([sys.executable, "-c", TCP_CLIENT, node1.address], check=True, timeout=60)
    assert read_line(server.stdout.fileno(), time.monotonic() + 30) == TCP_DATA
    server.wait(timeout=10)

    lan.netem(node3, delay_ms=0, jitter_ms=0, loss_pct=100)
    assert not node1.can_reach(node3.address, timeout=QUICK)

    lan.clear_netem()
    assert max(node1.ping(node3.address, count=3, timeout=PATIENT, interval=0.02)) < 10
    assert max(node1.ping(node2.address, count=3, timeout=PATIENT, interval=0.02)) < 10
    assert [procs.netns_pids(net.netns) for net in lan.networks] == [[]]  # the relay has stopped


def test_power_off_kills_every_process_and_power_on_boots_a_fresh_node(lan, tmp_path):
    node1, node2, node3 = lan.nodes
    client = lan.client
    vip = lan.networks[0].address(50)
    disk = tmp_path / "ram"
    disk.mkdir()
    lan.partition([node1], [node2])
    sleeper = node2.popen(["sleep", "300"])
    node2.run(["sh", "-c", "setsid sleep 300 </dev/null >/dev/null 2>&1 &"], check=True)  # a daemon
    node2.run(["ip", "addr", "add", f"{vip}/24", "dev", "eth0"], check=True)
    node2.run(["mount", "-t", "tmpfs", "ram", str(disk)], check=True)
    node2.run(["sh", "-c", f"echo x > {disk}/file"], check=True)
    before = node2.pids()
    assert len(before) >= 3  # holder, sleeper, daemon
    assert client.reachable([node2.address, vip], timeout=PATIENT) == {node2.address: True, vip: True}

    lan.power_off(node2)
    assert [pid for pid in before if procs.alive(pid)] == []
    assert sleeper.returncode == -signal.SIGKILL
    assert node2.pids() == []
    assert node2.netns not in ip_netns_names()
    with pytest.raises(NodeDown):
        node2.run(["true"])
    assert client.reachable([node2.address, vip], timeout=QUICK) == {node2.address: False, vip: False}

    lan.power_on(node2)
    assert client.can_reach(node2.address, timeout=PATIENT)
    assert node2.hostname() == "node2"
    assert not set(before) & set(node2.pids())
    assert not client.can_reach(vip, timeout=QUICK)  # a reboot forgets runtime addresses ...
    assert node2.run(["ls", "-A", str(disk)]).stdout == ""  # ... and mounts
    assert not node1.can_reach(node2.address, timeout=QUICK)  # the partition is the network's: it stays
    assert node3.can_reach(node2.address, timeout=PATIENT)


def test_kill_daemon_freeze_and_thaw_touch_only_processes_of_the_node(lan):
    node1, node2 = lan.nodes[:2]
    sleeper = node1.popen(["sleep", "300"])
    node1.kill_daemon(sleeper.pid)
    assert sleeper.poll() == -signal.SIGKILL

    other = node2.popen(["sleep", "300"])
    for pid in (os.getpid(), other.pid, node1.holder_pid):
        with pytest.raises(LabError):
            node1.kill_daemon(pid)
    assert procs.alive(other.pid)
    assert node2.holder_pid is not None and procs.alive(node2.holder_pid)

    node2.freeze(other.pid)
    assert procs.state(other.pid) == "T"
    node2.thaw(other.pid)
    wait_for(lambda: procs.state(other.pid) == "S", 5, "the thawed process to sleep again")


def test_cpu_hog_busies_every_core_and_stops(lan):
    cores = len(os.sched_getaffinity(0))
    with lan.cpu_hog() as hog:
        assert len(hog.pids) == cores
        assert set(hog.pids) <= set(procs.netns_pids(lan.networks[0].netns))  # cleanup finds them
        time.sleep(0.1)
        assert busy_fraction(0.5) > 0.75
    assert not hog.running
    assert not [pid for pid in hog.pids if procs.alive(pid)]

    short = lan.cpu_hog(0.2, processes=1)
    wait_for(lambda: not short.running, 5, "a 0.2 s hog to end by itself")


# ---- cleanup --------------------------------------------------------------------------------------------


def test_leaving_the_lan_removes_everything_even_when_the_test_fails(needs_lan):
    with pytest.raises(RuntimeError, match="the test failed"), Lan(nodes=2, second_network=True) as lan:
        node1, node2 = lan.nodes
        node1.popen(["sleep", "300"], stdout=subprocess.PIPE)
        node2.run(["sh", "-c", "setsid sleep 300 </dev/null >/dev/null 2>&1 &"], check=True)
        lan.netem(node2, delay_ms=5, jitter_ms=0)
        lan.partition([node1], [node2])
        hog = lan.cpu_hog(processes=1)
        namespaces = {ident for ident in map(procs.netns_id, lan.namespaces) if ident is not None}
        made: dict[str, Any] = {"namespaces": lan.namespaces, "pids": sorted({*procs.pids_in(namespaces), *hog.pids})}
        assert lan.state_file is not None
        assert lan.state_file.exists()
        made["state"] = str(lan.state_file)
        assert len(made["pids"]) >= 7  # 3 holders, sleep, daemon, relay, hog
        raise RuntimeError("the test failed")
    assert_gone(made)


def test_sigterm_during_a_test_cleans_up(needs_lan, tmp_path):
    with ChildLan(tmp_path) as child:
        made = child.made
        assert set(made["namespaces"]) <= ip_netns_names()
        err = child.end(signal.SIGTERM)
        assert child.proc.returncode != 0
        assert "KeyboardInterrupt: SIGTERM" in err
        assert "did not clean up" not in err
        assert_gone(made)


def test_cleanup_stale_removes_the_lan_of_a_crashed_run_and_spares_live_ones(lan, tmp_path):
    with ChildLan(tmp_path) as child:
        made = child.made
        child.end(signal.SIGKILL)  # no cleanup at all
        assert set(made["namespaces"]) <= ip_netns_names()
        assert all(procs.alive(pid) for pid in made["pids"])

        removed = cleanup_stale(tmp_path)
        assert [Path(made["state"]).name] == [f"hakeeper-testlan-{prefix}.json" for prefix in removed]
        assert_gone(made)
    # this process's LAN (its state file is in /run) is alive: untouched
    assert lan.prefix not in cleanup_stale()
    assert set(lan.namespaces) <= ip_netns_names()
    assert lan.nodes[0].can_reach(lan.nodes[1].address, timeout=PATIENT)


def test_without_root_the_lan_skips_with_the_reason(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(LanUnavailable, match=r"^needs root \(network namespaces\)$"):
        Lan().start()
    with pytest.raises(pytest.skip.Exception, match=r"needs root \(network namespaces\)"):
        start_or_skip(Lan())
    assert NEEDS_ROOT == "needs root (network namespaces)"
