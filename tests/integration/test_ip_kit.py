"""The IP kit on the test LAN: its contract inside a node, then failover with hakeeperd, IPv4 and IPv6.

The kit's actions run inside a node, never in the test's own (root) network namespace: either through
``ip_kit_runner.py`` (one process in the node, one event loop, as in hakeeperd) or through hakeeperd.
The client plays the users: it reaches the virtual address (ICMP echo, or HTTP to a gen/app web server
that depends on the address), and its neighbour table shows which MAC it sends to. What the kit must do
for them is visible there: after a takeover, the client's entry for the address must point at the new
node's MAC at once, although the old entry would otherwise stay valid for 15-45 s.

Addresses: 198.18.0.50 and 2001:2::50 are the virtual addresses (free in the LAN's plan), 198.18.0.60 the
duplicate, 198.18.0.99 / 2001:2::99 hosts that do not exist.
"""

from __future__ import annotations

import json
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from hakeeper.db import Lcd, State
from hakeeper.lab.cluster import HaCluster
from hakeeper.lab.lan import Lan
from hakeeper.lab.node import Node
from hakeeper.lab.probe import Prober, double_service, first_answer_from, servers
from hakeeper.lab.webapp import write_scripts

pytestmark = pytest.mark.needs_root

RUNNER = Path(__file__).with_name("ip_kit_runner.py")
VIP4, VIP6 = "198.18.0.50", "2001:2::50"
PORT = 8080
QUICK = 0.5  # s for an answer that must not come
PATIENT = 3.0  # s for an answer that must come
BUDGET, DELAY, SLACK = 0.8, 0.4, 2.0  # detection, takeover_delay (defaults), and room for a loaded machine
IPV6_LAN = pytest.mark.parametrize("lan", [{"nodes": 2, "ipv6": True}], indirect=True, ids=["dual-stack"])
FAMILIES = pytest.mark.parametrize(("vip", "prefix"), [(VIP4, 24), (VIP6, 64)], ids=["ipv4", "ipv6"])


# ---------------------------------------------------------------------- helpers


class KitIn:
    """The IP kit running inside ``node`` (ip_kit_runner.py): ``kit("restore", address=...)`` -> its answer."""

    def __init__(self, node: Node, log: Path) -> None:
        self.log = log
        with open(log, "ab") as err:
            self.proc = node.popen(
                [sys.executable, str(RUNNER), node.name],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
            )

    def __call__(self, action: str, *, state: str = "OSU", **params: str) -> dict[str, Any]:
        return self.request({"action": action, "params": params, "state": state})

    def request(self, request: dict[str, Any], timeout: float = 20.0) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(request) + "\n").encode())
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, f"the kit did not answer {request} within {timeout} s: {self.log.read_text()[-2000:]}"
        answer: dict[str, Any] = json.loads(self.proc.stdout.readline())
        assert not answer.get("error"), answer
        return answer

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # our child, not yet reaped: its pid cannot have been reused
            self.proc.wait(timeout=5)


@pytest.fixture
def kits(tmp_path: Path) -> Iterator[dict[str, KitIn]]:
    """``kits[name]`` is the IP kit in that node, started on first use and stopped after the test."""
    started: dict[str, KitIn] = {}
    yield started
    for kit in started.values():
        kit.close()


def kit_in(kits: dict[str, KitIn], node: Node, tmp_path: Path) -> KitIn:
    if node.name not in kits:
        kits[node.name] = KitIn(node, tmp_path / f"kit-{node.name}.log")
    return kits[node.name]


def held_on(node: Node, address: str) -> list[str]:
    """The interfaces of ``node`` that hold ``address``."""
    links = json.loads(node.run(["ip", "-j", "addr", "show"], check=True, timeout=10).stdout)
    return [
        link["ifname"] for link in links for a in link.get("addr_info", []) if a.get("local") == address
    ]  # fmt: skip


def neighbour_mac(host: Node, address: str, dev: str = "eth0") -> str | None:
    """The MAC ``host``'s neighbour table has for ``address`` (None: no entry, or one without a MAC)."""
    entries = json.loads(host.run(["ip", "-j", "neigh", "show", "to", address, "dev", dev], timeout=10).stdout or "[]")
    return entries[0].get("lladdr") if entries else None


def state(ha: HaCluster, node: str, tag: str) -> State:
    with Lcd.open(ha.root(node)) as lcd:
        return lcd.resource(tag).state


def wait_for_line(ha: HaCluster, node: str, text: str, timeout: float) -> float:
    """Poll ``node``'s log every 5 ms until it holds ``text``; when (monotonic) it was seen."""
    return ha.wait(lambda: text in ha.log(node), timeout, f"{text!r} in {node}'s log", step=0.005)


def watch_neighbours(host: Node, out: Path) -> subprocess.Popen[bytes]:
    """``ip -ts monitor neigh`` in ``host``: every change of its neighbour table, with the time, into ``out``."""
    with open(out, "wb") as file:
        return host.popen(["ip", "-ts", "monitor", "neigh"], stdout=file, stderr=subprocess.DEVNULL)


def log_time(line: str) -> float:
    """The wall-clock time of a log line (hakeeper.logs: 2026-11-25T20:45:18.608+00:00 hakeeperd[12] ...)."""
    return datetime.fromisoformat(line.split(" ", 1)[0]).timestamp()


# ---------------------------------------------------------------------- the contract, in a node


@IPV6_LAN
@FAMILIES
def test_restore_twice_and_remove_twice_succeed_and_quick_check_says_stopped_running_stopped(
    lan: Lan, kits: dict[str, KitIn], tmp_path: Path, vip: str, prefix: int
) -> None:
    node1, client = lan.nodes[0], lan.client
    kit = kit_in(kits, node1, tmp_path)
    address = f"{vip}/{prefix}"

    never = kit("quick_check", address=address)
    assert (never["ok"], never["health"]) == (False, "stopped"), never
    first, second = kit("restore", address=address), kit("restore", address=address)
    assert first["ok"] and second["ok"], (first, second)
    assert "already" in second["message"], second
    assert held_on(node1, vip) == ["eth0"], "restored twice: the address must be there once"
    running = kit("quick_check", state="ISP", address=address)
    assert (running["ok"], running["health"]) == (True, "running"), running
    assert client.can_reach(vip, timeout=PATIENT)
    assert neighbour_mac(client, vip) == node1.mac

    removed, again = kit("remove", state="ISP", address=address), kit("remove", address=address)
    assert removed["ok"] and again["ok"], (removed, again)
    assert "was not on this node" in again["message"], again
    assert held_on(node1, vip) == []
    stopped = kit("quick_check", address=address)
    assert (stopped["ok"], stopped["health"]) == (False, "stopped"), stopped
    assert not client.can_reach(vip, timeout=QUICK)


def test_remove_of_an_address_never_added_succeeds(lan: Lan, kits: dict[str, KitIn], tmp_path: Path) -> None:
    kit = kit_in(kits, lan.nodes[0], tmp_path)
    result = kit("remove", state="OSF", address="198.18.0.51/24")
    assert result["ok"], result
    assert held_on(lan.nodes[0], "198.18.0.51") == []


def test_parameters_that_cannot_work_on_the_node_are_a_configuration_error(
    lan: Lan, kits: dict[str, KitIn], tmp_path: Path
) -> None:
    node1 = lan.nodes[0]
    kit = kit_in(kits, node1, tmp_path)
    assert kit("validate", address="198.18.0.50/24")["ok"]
    cases = {
        "node1 has no interface eth9": {"address": "198.18.0.50/24", "interface": "eth9"},
        "node1 has no backup interface eth1": {"address": "198.18.0.50/24", "backup_interface": "eth1"},
        r"no interface of node1 has an address on 198\.19\.5\.0/24": {"address": "198.19.5.50/24"},
        r"198\.18\.0\.11 is already an address of node1 \(eth0\)": {"address": "198.18.0.11/24"},
        "IPv6 is disabled on eth0": {"address": "2001:2::50/64", "interface": "eth0"},
    }
    for why, params in cases.items():
        for action in ("validate", "restore"):
            result = kit(action, **params)
            assert not result["ok"] and result["policy"] == "config", (action, params, result)
            if action == "validate" or "already an address" not in why:  # restore cannot tell a leftover VIP
                assert re.search(why, result["message"]), (action, result["message"])
    assert held_on(node1, "198.18.0.50") == [] and held_on(node1, "198.19.5.50") == []
    assert held_on(node1, "198.18.0.11") == ["eth0"], "the node's own address must be left alone"


def test_quick_check_fails_when_the_link_is_down_or_the_ping_list_is_silent(
    lan: Lan, kits: dict[str, KitIn], tmp_path: Path
) -> None:
    node1, client = lan.nodes[0], lan.client
    kit = kit_in(kits, node1, tmp_path)
    assert kit("restore", address="198.18.0.50/24")["ok"]
    answering = kit("quick_check", state="ISP", address="198.18.0.50/24", ping_list=f"198.18.0.99,{client.address}")
    assert answering["health"] == "running" and client.address in answering["message"], answering
    silent = kit("quick_check", state="ISP", address="198.18.0.50/24", ping_list="198.18.0.99")
    assert (silent["ok"], silent["health"]) == (False, "failed"), silent
    assert "198.18.0.99" in silent["message"], silent

    lan.link_down(node1, "eth0")
    down = kit("quick_check", state="ISP", address="198.18.0.50/24")
    assert (down["ok"], down["health"]) == (False, "failed"), down
    assert "eth0" in down["message"] and "carrier" in down["message"], down
    lan.link_up(node1, "eth0")
    assert kit("quick_check", state="ISP", address="198.18.0.50/24")["health"] == "running"


@IPV6_LAN
@FAMILIES
def test_the_takeover_node_s_announcement_moves_the_client_at_once_and_remove_stops_the_old_node_s(
    lan: Lan, kits: dict[str, KitIn], tmp_path: Path, vip: str, prefix: int
) -> None:
    """The kit's part of a switchover, without hakeeperd: remove on node1, restore on node2."""
    node1, node2, client = lan.nodes[0], lan.nodes[1], lan.client
    one, two = kit_in(kits, node1, tmp_path), kit_in(kits, node2, tmp_path)
    address = f"{vip}/{prefix}"
    assert one("restore", address=address)["ok"]
    assert client.can_reach(vip, timeout=PATIENT)
    assert neighbour_mac(client, vip) == node1.mac  # the client's entry is fresh: it would last 15-45 s

    assert one("remove", state="ISP", address=address)["ok"]  # at once: node1's repeats are still due
    restored = two("restore", address=address)
    assert restored["ok"], restored
    assert neighbour_mac(client, vip) == node2.mac, "node2's first announcement did not move the client"
    for _ in range(12):  # node1's repeats were due within 0.9 s: none may come after its remove
        time.sleep(0.1)
        assert neighbour_mac(client, vip) == node2.mac, "an announcement from node1 after its remove"
    assert client.can_reach(vip, timeout=PATIENT)
    assert held_on(node1, vip) == [] and held_on(node2, vip) == ["eth0"]


def test_the_announcement_is_repeated_after_restore(lan: Lan, kits: dict[str, KitIn], tmp_path: Path) -> None:
    """A client that missed the first announcement (here: its entry spoiled by hand) learns from a repeat."""
    node1, client = lan.nodes[0], lan.client
    kit = kit_in(kits, node1, tmp_path)
    assert kit("restore", address="198.18.0.50/24")["ok"]
    assert client.can_reach(VIP4, timeout=PATIENT)
    assert kit("restore", address="198.18.0.50/24", announcements="4")["ok"]  # again: the repeats start anew
    bogus = "02:00:5e:00:53:01"
    client.run(["ip", "neigh", "replace", VIP4, "lladdr", bogus, "dev", "eth0", "nud", "stale"], check=True)
    assert neighbour_mac(client, VIP4) == bogus
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline and neighbour_mac(client, VIP4) == bogus:
        time.sleep(0.02)
    assert neighbour_mac(client, VIP4) == node1.mac, "no repeated announcement within 1.5 s"


def test_a_duplicate_on_the_lan_is_found_by_the_probe_and_named_by_its_mac(
    lan: Lan, kits: dict[str, KitIn], tmp_path: Path
) -> None:
    node1, client = lan.nodes[0], lan.client
    client.run(["ip", "addr", "add", "198.18.0.60/24", "dev", "eth0"], check=True)
    kit = kit_in(kits, node1, tmp_path)
    refused = kit("restore", address="198.18.0.60/24")
    assert not refused["ok"] and refused["policy"] == "hard", refused
    assert f"{client.mac} answers for it" in refused["message"], refused
    assert held_on(node1, "198.18.0.60") == []
    found = kit.request({"action": "probe", "ifname": "eth0", "mac": node1.mac, "address": "198.18.0.60"})
    assert found["holder"] == client.mac
    nobody = kit.request({"action": "probe", "ifname": "eth0", "mac": node1.mac, "address": "198.18.0.61"})
    assert nobody["holder"] is None
    forced = kit("restore", address="198.18.0.60/24", duplicate_check="no")
    assert forced["ok"], forced
    assert held_on(node1, "198.18.0.60") == ["eth0"]
    assert kit("remove", state="ISP", address="198.18.0.60/24")["ok"]


# ---------------------------------------------------------------------- with hakeeperd


def setup_vip_and_web(ha: HaCluster, tmp_path: Path, address: str, backups: tuple[str, ...], *more: str) -> None:
    """vip (comm/ip) below web (gen/app, answers with the node's name), extended to ``backups``, on node1."""
    ha.ok("node1", "hakeeper", "create", "comm/ip", "-t", "vip", "-I", "INIT_OSU", f"address={address}", *more)
    scripts = write_scripts(tmp_path / "webapp", PORT)
    params = [f"{name}={scripts[name]}" for name in ("restore", "remove", "quickCheck")]
    ha.ok("node1", "hakeeper", "create", "gen/app", "-t", "web", "-I", "INIT_OSU", *params)
    ha.ok("node1", "dep_create", "-p", "web", "-c", "vip")
    for backup in backups:
        ha.ok("node1", "hakeeper", "extend", "-t", "web", "-s", backup, "-p", backup[-1])
    ha.ok("node1", "perform_action", "-t", "web", "-a", "restore")
    assert state(ha, "node1", "vip") is State.ISP and state(ha, "node1", "web") is State.ISP


def never_holds(node: Node, address: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    for _ in range(int(seconds / 0.05) + 1):
        assert held_on(node, address) == [], f"{node.name} holds {address}"
        if time.monotonic() > deadline:
            return
        time.sleep(0.05)


@pytest.mark.slow
def test_power_off_moves_the_vip_to_node2_the_client_follows_at_once_and_node1_never_takes_it_back(
    ha_cluster: HaCluster, lan: Lan, tmp_path: Path
) -> None:
    ha = ha_cluster
    node1, node2, client = lan.node("node1"), lan.node("node2"), lan.client
    setup_vip_and_web(ha, tmp_path, f"{VIP4}/24", ("node2", "node3"))
    assert held_on(node1, VIP4) == ["eth0"]
    watcher = watch_neighbours(client, tmp_path / "neigh.log")
    with Prober(lan, [(VIP4, PORT)], tmp_path / "probe.jsonl") as prober:
        prober.wait_for(lambda rounds: first_answer_from(rounds, "node1") is not None, 10, "node1 serving the VIP")
        assert neighbour_mac(client, VIP4) == node1.mac
        start = time.monotonic()
        lan.power_off(node1)
        wait_for_line(ha, "node2", "vip OSU -> ISP", 10)
        moved = neighbour_mac(client, VIP4)  # read at once: no ARP exchange of the client's could have done it
        rounds = prober.wait_for(lambda r: first_answer_from(r, "node2", after=start) is not None, 20, "node2")
        served = first_answer_from(rounds, "node2", after=start)
        assert served is not None and served - start <= BUDGET + DELAY + SLACK, f"{(served or 0) - start:.2f} s"
        assert moved == node2.mac, f"the client's entry for {VIP4} is {moved}, not node2's {node2.mac}"

        lan.power_on(node1)
        ha.start(node1)
        ha.wait(ha.all_alive, 20, "node1 ALIVE again")
        never_holds(node1, VIP4, 3.0)
        rounds = prober.rounds()
    watcher.terminate()
    watcher.wait(timeout=5)
    assert not double_service(rounds), "answers from two nodes at once"
    assert servers(rounds) == ["node1", "node2"]
    assert state(ha, "node1", "vip") is State.OSU and state(ha, "node2", "vip") is State.ISP
    assert held_on(node2, VIP4) == ["eth0"] and held_on(lan.node("node3"), VIP4) == []
    report_move(ha, tmp_path / "neigh.log", VIP4, node2.mac)


def report_move(ha: HaCluster, monitor: Path, vip: str, mac: str) -> None:
    """Print when node2's kit announced and when the client's entry moved (for the record; no assertion)."""
    added = next((line for line in ha.log("node2").splitlines() if f"vip: {vip}/" in line and "announced" in line), "")
    moved = next((line for line in monitor.read_text().splitlines() if vip in line and mac in line), "")
    if added and moved.startswith("["):
        when = datetime.fromisoformat(moved[1 : moved.index("]")]).timestamp()
        print(f"kit: {added.split(' ', 1)[1]}")
        print(f"client's entry moved {(when - log_time(added)) * 1000:.1f} ms after the announcement was logged")


@pytest.mark.slow
@pytest.mark.parametrize("lan", [{"nodes": 3, "ipv6": True}], indirect=True, ids=["ipv6"])
def test_ipv6_power_off_moves_the_vip_and_the_client_s_neighbour_entry_at_once(
    ha_cluster: HaCluster, lan: Lan, tmp_path: Path
) -> None:
    ha = ha_cluster
    node1, node2, client = lan.node("node1"), lan.node("node2"), lan.client
    setup_vip_and_web(ha, tmp_path, f"{VIP6}/64", ("node2", "node3"))
    assert held_on(node1, VIP6) == ["eth0"]
    assert client.can_reach(VIP6, timeout=PATIENT)
    assert neighbour_mac(client, VIP6) == node1.mac
    watcher = watch_neighbours(client, tmp_path / "neigh.log")
    lan.power_off(node1)
    wait_for_line(ha, "node2", "vip OSU -> ISP", 10)
    moved = neighbour_mac(client, VIP6)
    assert moved == node2.mac, f"the client's entry for {VIP6} is {moved}, not node2's {node2.mac}"
    assert client.can_reach(VIP6, timeout=PATIENT)
    lan.power_on(node1)
    ha.start(node1)
    ha.wait(ha.all_alive, 20, "node1 ALIVE again")
    never_holds(node1, VIP6, 3.0)
    watcher.terminate()
    watcher.wait(timeout=5)
    assert state(ha, "node2", "vip") is State.ISP and held_on(node2, VIP6) == ["eth0"]
    report_move(ha, tmp_path / "neigh.log", VIP6, node2.mac)


@pytest.mark.slow
@pytest.mark.parametrize("lan", [{"nodes": 2}], indirect=True, ids=["two-nodes"])
def test_a_duplicate_address_on_the_lan_is_refused_at_restore_unless_the_check_is_off(
    ha_cluster: HaCluster, lan: Lan
) -> None:
    ha, client, node1 = ha_cluster, lan.client, lan.node("node1")
    client.run(["ip", "addr", "add", "198.18.0.60/24", "dev", "eth0"], check=True)  # another host holds it
    ha.ok("node1", "hakeeper", "create", "comm/ip", "-t", "dup", "-I", "INIT_OSU", "address=198.18.0.60/24")
    refused = ha.command("node1", "perform_action", "-t", "dup", "-a", "restore")
    assert refused.returncode == 1, (refused.stdout, refused.stderr)
    assert f"198.18.0.60 is in use on the network: {client.mac} answers for it on eth0" in refused.stderr
    assert state(ha, "node1", "dup") is State.OSF
    assert held_on(node1, "198.18.0.60") == []

    twin = ha.command("node1", "hakeeper", "create", "comm/ip", "-t", "dup2", "address=198.18.0.60/24")
    assert twin.returncode == 4 and "ip-198.18.0.60" in twin.stderr, "two resources of one address"
    ha.ok("node1", "hakeeper", "create", "comm/ip", "-t", "forced", "-i", "forced", "-I", "INIT_OSU",
       "address=198.18.0.60/24", "duplicate_check=no")  # fmt: skip
    ha.ok("node1", "perform_action", "-t", "forced", "-a", "restore")
    assert held_on(node1, "198.18.0.60") == ["eth0"] and state(ha, "node1", "forced") is State.ISP
    ha.ok("node1", "perform_action", "-t", "forced", "-a", "remove")
    assert held_on(node1, "198.18.0.60") == []


@pytest.mark.slow
@pytest.mark.parametrize("lan", [{"nodes": 2}], indirect=True, ids=["two-nodes"])
def test_an_address_deleted_by_hand_is_put_back_by_local_recovery_not_by_failover(
    ha_cluster: HaCluster, lan: Lan
) -> None:
    ha, node1, node2, client = ha_cluster, lan.node("node1"), lan.node("node2"), lan.client
    ha.ok("node1", "hakeeper", "create", "comm/ip", "-t", "vip", "-I", "INIT_OSU", "-Q", "1", f"address={VIP4}/24")
    ha.ok("node1", "hakeeper", "extend", "-t", "vip", "-s", "node2", "-p", "2")
    ha.ok("node1", "perform_action", "-t", "vip", "-a", "restore")
    assert client.can_reach(VIP4, timeout=PATIENT)

    node1.run(["ip", "addr", "del", f"{VIP4}/24", "dev", "eth0"], check=True)  # an administrator's slip
    assert held_on(node1, VIP4) == []
    ha.wait(lambda: held_on(node1, VIP4) == ["eth0"], 10, "local recovery to add the address again")
    wait_for_line(ha, "node1", "vip recovered in place by its recover action", 5)
    assert f"quickCheck: {VIP4} is not on this node" in ha.log("node1")
    assert state(ha, "node1", "vip") is State.ISP and state(ha, "node2", "vip") is State.OSU, "no failover"
    assert "vip OSU -> ISP" not in ha.log("node2")
    assert held_on(node2, VIP4) == []
    assert client.can_reach(VIP4, timeout=PATIENT)


@pytest.mark.slow
@pytest.mark.parametrize("lan", [{"nodes": 2, "second_network": True}], indirect=True, ids=["two-networks"])
def test_link_down_moves_the_address_to_the_backup_interface_and_extend_validates_it_on_the_new_node(
    ha_cluster: HaCluster, lan: Lan, kits: dict[str, KitIn], tmp_path: Path
) -> None:
    ha, node1, node2 = ha_cluster, lan.node("node1"), lan.node("node2")
    ha.ok("node1", "hakeeper", "create", "comm/ip", "-t", "vip", "-I", "INIT_OSU", "-Q", "1",
       f"address={VIP4}/24", "interface=eth0", "backup_interface=eth1")  # fmt: skip
    # node2 calls its second NIC lan1: extending there must be refused, naming it, and change nothing
    node2.run(["sh", "-c", "ip link set eth1 down && ip link set eth1 name lan1 && ip link set lan1 up"], check=True)
    refused = ha.command("node1", "hakeeper", "extend", "-t", "vip", "-s", "node2")
    assert refused.returncode != 0 and "node2 has no backup interface eth1" in refused.stderr, refused.stderr
    with Lcd.open(ha.root("node2")) as lcd:
        assert not lcd.resources(tag="vip")
    node2.run(["sh", "-c", "ip link set lan1 down && ip link set lan1 name eth1 && ip link set eth1 up"], check=True)
    ha.ok("node1", "hakeeper", "extend", "-t", "vip", "-s", "node2", "-p", "2")

    ha.ok("node1", "perform_action", "-t", "vip", "-a", "restore")
    assert held_on(node1, VIP4) == ["eth0"]
    lan.link_down(node1, "eth0")  # the cable of eth0: its heartbeats go on over eth1
    ha.wait(lambda: held_on(node1, VIP4) == ["eth1"], 10, "the address to move to eth1")
    wait_for_line(ha, "node1", "vip recovered in place by its recover action", 5)
    assert state(ha, "node1", "vip") is State.ISP and state(ha, "node2", "vip") is State.OSU, "no failover"
    # and it answers on network B: node2 asks there, as the kit's duplicate probe does
    found = kit_in(kits, node2, tmp_path).request(
        {"action": "probe", "ifname": "eth1", "mac": node2.ifaces["eth1"].mac, "address": VIP4}
    )
    assert found["holder"] == node1.ifaces["eth1"].mac
