"""A 3-node cluster with two networks in a few commands (issue 13 item 5), on the test LAN.

``cluster init``, ``serve-join`` and one ``token`` per node on node1, one ``join`` on
node2 and node3 (node3 a witness), ``lkstart`` on each: no ``sys_create`` and no
``net_create`` typed. Then every LCD knows every node (``sys_list``), with a path both
ways on both networks, all ALIVE (``net_list``), and the witness is marked everywhere.
No hakeeperd runs while the nodes join: node1 registers node3 in its own LCD and tells
node2 once the daemons run (its outbox), which the test sees as node2's paths to node3.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hakeeper.lab.cluster import ALIVE_TIMEOUT, HaCluster
from hakeeper.lab.lan import Lan

BIN = Path(sys.executable).parent
ALIVE_WITHIN = 60.0  # bounded wait: the daemons start, catch up (every 5 s) and hear each other


@pytest.mark.slow
@pytest.mark.parametrize("lan", [{"nodes": 3, "second_network": True}], indirect=True)
def test_init_token_join_and_lkstart_are_the_whole_set_up(lan: Lan, tmp_path: Path) -> None:
    roots = {n.name: tmp_path / n.name for n in lan.nodes}
    typed: list[str] = []

    def env(name: str) -> dict[str, str]:
        return dict(os.environ, HAKEEPER_ROOT=str(roots[name]), HAKEEPER_NODE=name)

    def hk(name: str, *argv: str, stdin: str | None = None, count: bool = True) -> str:
        """An administrator's command on node ``name``; it must succeed."""
        if count:
            typed.append(f"{name}$ {' '.join(argv)}")
        done = lan.node(name).run([str(BIN / argv[0]), *argv[1:]], env=env(name), timeout=90, input=stdin)
        assert done.returncode == 0, f"{name}$ {' '.join(argv)}: exit {done.returncode}\n{done.stdout}{done.stderr}"
        return done.stdout

    node1 = lan.node("node1")
    hk("node1", "hakeeper", "cluster", "init", "--name", "lab")
    typed.append("node1$ hakeeper cluster serve-join --listen 198.18.0.11 &")
    serve = node1.popen(
        [str(BIN / "hakeeper"), "cluster", "serve-join", "--listen", str(node1.address), "--timeout", "120"],
        env=env("node1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for name, role in (("node2", []), ("node3", ["--witness"])):
            token = hk("node1", "hakeeper", "cluster", "token").strip()
            said = hk(name, "hakeeper", "cluster", "join", *role, "--token", "-", str(node1.address), stdin=token)
            assert "node1: paths" in said, said
    finally:
        serve.kill()
        serve.wait(10)
    for node in lan.nodes:
        hk(node.name, "lkstart")
    try:
        names = sorted(roots)
        networks = len(lan.networks)
        assert networks == 2
        deadline = time.monotonic() + ALIVE_WITHIN
        while True:
            listings = {n: hk(n, "net_list", "-f:", count=False).splitlines() for n in names}
            alive = all(
                len(rows) == (len(names) - 1) * networks and all(row.endswith(":ALIVE") for row in rows)
                for rows in listings.values()
            )
            if alive or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert alive, f"not every path ALIVE within {ALIVE_WITHIN} s: {listings}"
        for name in names:
            listed = hk(name, "sys_list", "-f:", count=False)
            assert listed == "node1\nnode2\nnode3:witness\n", (name, listed)
            pairs = {(row.split(":")[0], row.split(":")[2], row.split(":")[3]) for row in listings[name]}
            me = lan.node(name)
            for other in lan.nodes:
                if other is me:
                    continue
                for iface, address in me.addresses.items():
                    assert (other.name, str(address), str(other.addresses[iface])) in pairs, (name, other.name, iface)
        shown = hk("node2", "hakeeper", "cluster", "show", count=False)
        assert "member       node3: 2 path(s), witness" in shown, shown
        # The witness explains itself instead of "no resource tagged".
        hk("node1", "hakeeper", "create", "gen/app", "-t", "app", "restore=/bin/true", "remove=/bin/true", count=False)
        hk("node1", "perform_action", "-t", "app", "-a", "restore", count=False)
        hk("node1", "hakeeper", "extend", "-t", "app", "-s", "node2", count=False)
        why = hk("node3", "hakeeper", "why", "app", count=False)
        assert why.strip() == "node3 is a witness: it runs no hierarchy; app runs on node1", why
        refused = lan.node("node3").run([str(BIN / "hakeeper"), "switchover", "app"], env=env("node3"), timeout=60)
        assert (
            refused.returncode == 7 and "node3 is a witness: it runs no hierarchy; app runs on node1" in refused.stderr
        )
        moved = hk("node3", "hakeeper", "switchover", "app", "--to", "node2", count=False)
        assert "node2" in moved, moved
    finally:
        for node in lan.nodes:
            node.run([str(BIN / "lkstop"), "-f"], env=env(node.name), timeout=60)
    # init, serve-join, token x2, join x2, lkstart x3
    assert len(typed) == 9, typed
    assert not [c for c in typed if "sys_create" in c or "net_create" in c]


@pytest.mark.slow
@pytest.mark.parametrize("lan", [{"nodes": 2, "second_network": True}], indirect=True)
def test_net_create_on_one_end_creates_both_when_the_other_node_is_reached(ha_cluster: HaCluster) -> None:
    """As LifeKeeper's 'Create Comm Path': the second network's path, typed once on node1, exists on both ends."""
    b1, b2 = (str(ha_cluster.lan.node(n).addresses["eth1"]) for n in ("node1", "node2"))
    ha_cluster.ok("node1", "net_remove", "-s", "node2", "-r", b2)
    ha_cluster.ok("node2", "net_remove", "-s", "node1", "-r", b1)
    said = ha_cluster.ok("node1", "net_create", "-s", "node2", "-l", b1, "-r", b2)
    assert said.strip() == f"created both ends: {b1} -> {b2} here, {b2} -> {b1} on node2", said
    assert f"node1:TCP:{b2}:{b1}:" in ha_cluster.ok("node2", "net_list", "-f:")
    ha_cluster.wait(ha_cluster.all_alive, ALIVE_TIMEOUT, "both paths ALIVE on both nodes")
    again = ha_cluster.command("node1", "net_create", "-s", "node2", "-l", b1, "-r", b2)
    assert again.returncode == 4, "this end exists already: LifeKeeper's code"


@pytest.mark.slow
@pytest.mark.parametrize("lan", [{"nodes": 3, "second_network": True}], indirect=True)
def test_a_node_joining_a_running_cluster_is_registered_on_every_running_member_at_once(
    lan: Lan, tmp_path: Path
) -> None:
    """With hakeeperd running on node1 and node2, node3's join reaches node2's LCD before the join returns."""
    roots = {n.name: tmp_path / n.name for n in lan.nodes}

    def env(name: str) -> dict[str, str]:
        return dict(os.environ, HAKEEPER_ROOT=str(roots[name]), HAKEEPER_NODE=name)

    def hk(name: str, *argv: str, stdin: str | None = None) -> str:
        done = lan.node(name).run([str(BIN / argv[0]), *argv[1:]], env=env(name), timeout=90, input=stdin)
        assert done.returncode == 0, f"{name}$ {' '.join(argv)}: exit {done.returncode}\n{done.stdout}{done.stderr}"
        return done.stdout

    def alive(name: str, expected: int) -> bool:
        rows = hk(name, "net_list", "-f:").splitlines()
        return len(rows) == expected and all(row.endswith(":ALIVE") for row in rows)

    def wait(what: str, predicate: Callable[[], bool]) -> None:
        deadline = time.monotonic() + ALIVE_WITHIN
        while not predicate():
            assert time.monotonic() < deadline, f"not within {ALIVE_WITHIN} s: {what}"
            time.sleep(0.2)

    node1 = lan.node("node1")
    hk("node1", "hakeeper", "cluster", "init")
    serve = node1.popen(
        [str(BIN / "hakeeper"), "cluster", "serve-join", "--listen", str(node1.address), "--timeout", "120"],
        env=env("node1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        token = hk("node1", "hakeeper", "cluster", "token").strip()
        hk("node2", "hakeeper", "cluster", "join", "--token", "-", str(node1.address), stdin=token)
        hk("node1", "lkstart")
        hk("node2", "lkstart")
        wait("node1 and node2 ALIVE to each other", lambda: alive("node1", 2) and alive("node2", 2))
        token = hk("node1", "hakeeper", "cluster", "token").strip()
        node3 = lan.node("node3")
        announced = [w for a in sorted(node3.addresses.values()) for w in ("--address", f"{a}/24")]
        hk("node3", "hakeeper", "cluster", "join", "--witness", *announced, "--token", "-", str(node1.address),
           stdin=token)  # fmt: skip
    finally:
        serve.kill()
        serve.wait(10)
    try:
        assert hk("node2", "sys_list", "-f:") == "node1\nnode2\nnode3:witness\n", "told by node1's hakeeperd at once"
        paths = [row.split(":")[:4] for row in hk("node2", "net_list", "-f:", "-s", "node3").splitlines()]
        node2 = lan.node("node2")
        assert paths == [["node3", "TCP", str(node2.addresses[i]), str(node3.addresses[i])] for i in ("eth0", "eth1")]
        retried = hk("node1", "sys_create", "-s", "node3", *[w.replace("--address", "-a") for w in announced])
        assert retried == "", "registered already: nothing made again"
        assert len(hk("node2", "net_list", "-f:", "-s", "node3").splitlines()) == 2
        hk("node3", "lkstart")
        wait("every path ALIVE", lambda: all(alive(n, 4) for n in roots))
    finally:
        for node in lan.nodes:
            node.run([str(BIN / "lkstop"), "-f"], env=env(node.name), timeout=60)
