"""Nodes join over the test LAN with the commands an administrator types, and their paths come ALIVE."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hakeeper.comm.paths import PathState, read_states
from hakeeper.db import Lcd
from hakeeper.lab.lan import Lan

HAKEEPER = str(Path(sys.executable).parent / "hakeeper")


@pytest.mark.slow
def test_nodes_join_through_a_member_and_their_paths_come_alive(lan: Lan, tmp_path: Path) -> None:
    roots = {n.name: tmp_path / n.name for n in lan.nodes}
    env = {name: {"HAKEEPER_ROOT": str(root), "HAKEEPER_NODE": name} for name, root in roots.items()}
    node1 = lan.node("node1")

    def hk(node_name: str, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return lan.node(node_name).run(
            [HAKEEPER, *argv], env=dict(os.environ, **env[node_name]), timeout=60, input=stdin
        )

    assert hk("node1", "cluster", "init", "--name", "lab").returncode == 0
    serve = node1.popen(
        [HAKEEPER, "cluster", "serve-join", "--listen", str(node1.address), "--timeout", "60"],
        env=dict(os.environ, **env["node1"]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for name, role in (("node2", []), ("node3", ["--witness"])):
            token = hk("node1", "cluster", "token").stdout.strip().splitlines()[-1]
            joined = hk(name, "cluster", "join", *role, "--token", "-", str(node1.address), stdin=token + "\n")
            assert joined.returncode == 0, joined.stderr
            assert ("as a witness" in joined.stdout) == bool(role)
            reused = hk(name, "cluster", "join", "--token", "-", str(node1.address), stdin=token + "\n")
            assert reused.returncode != 0, "a token works once (and an identity exists already)"
    finally:
        serve.kill()
        serve.wait(10)
    # The joins registered the nodes and their paths: node1 and node3 know everyone; node2, which joined
    # before node3, learns of it from node1 once hakeeperd runs there. The administrator starts hakeeperd.
    daemons = []
    for node in lan.nodes:
        with Lcd.open(roots[node.name]) as lcd:
            known = [
                other for other in lan.nodes if other is not node and (node.name, other.name) != ("node2", "node3")
            ]
            assert sorted((p.node, p.local, p.remote) for p in lcd.paths()) == sorted(
                (other.name, str(node.address), str(other.address)) for other in known
            ), node.name
        daemons.append(
            node.popen(
                [sys.executable, "-c", "from hakeeper.cli.daemon import hakeeperd; hakeeperd()"],
                env=dict(os.environ, **env[node.name]),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        states = [read_states(root) for root in roots.values()]
        if all(len(s) == 2 and set(s.values()) == {PathState.ALIVE} for s in states):
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"paths did not all come ALIVE: {[read_states(r) for r in roots.values()]}")
    # node3 joined as a witness: it counts for quorum, and a hierarchy cannot be extended to it.
    true = "/bin/true"
    assert hk("node1", "create", "gen/app", "-t", "app", f"restore={true}", f"remove={true}").returncode == 0
    assert hk("node1", "extend", "-t", "app", "-s", "node2").returncode == 0
    refused = hk("node1", "extend", "-t", "app", "-s", "node3")
    assert refused.returncode != 0 and "node3 is a witness" in refused.stderr, refused.stderr
