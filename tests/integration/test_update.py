"""``hakeeper update`` on the test LAN: one command changes web's scripts on its three nodes, or on none."""

from __future__ import annotations

from pathlib import Path

import pytest

from hakeeper.db import Lcd, State
from hakeeper.lab.cluster import HaCluster
from hakeeper.lab.lan import Lan
from tests.integration.test_failover import setup_web, state

NODES = ("node1", "node2", "node3")
ACTIONS = Path("subsys/gen/resources/app/instances/web")


def info(ha: HaCluster, node: str) -> dict[str, object]:
    with Lcd.open(ha.root(node)) as lcd:
        value = lcd.resource("web").info
    assert isinstance(value, dict)
    return value


def script_dirs(ha: HaCluster, node: str) -> list[str]:
    return sorted(p.name for p in (ha.root(node) / ACTIONS).iterdir())


@pytest.mark.slow
def test_one_update_changes_every_node_and_the_new_restore_runs_after_a_switchover(
    ha_cluster: HaCluster, tmp_path: Path
) -> None:
    ha = ha_cluster
    setup_web(ha, tmp_path)
    old_restore = (ha.root("node1") / ACTIONS / "actions" / "restore").read_bytes()
    v2 = tmp_path / "restore-v2"
    v2.write_bytes(old_restore.replace(b"#!/bin/sh\n", b'#!/bin/sh\ntouch "$HAKEEPER_ROOT/v2-ran"\n', 1))
    v2.chmod(0o755)
    assert b"v2-ran" in v2.read_bytes(), "the new restore must differ from the old one"
    said = ha.ok("node1", "hakeeper", "update", "-t", "web", f"restore={v2}", "timeout=77")
    assert "web updated on node1, node2, node3: restore, timeout" in said
    version = info(ha, "node1")["version"]
    for node in NODES:
        now = info(ha, node)
        assert (now["version"], now["timeout"]) == (version, 77), node
        assert script_dirs(ha, node) == [f"actions-{version}"], node
        assert (ha.root(node) / ACTIONS / f"actions-{version}" / "restore").read_bytes() == v2.read_bytes(), node
    ha.ok("node2", "hakeeper", "switchover", "web")
    assert state(ha, "node2") is State.ISP
    assert (ha.root("node2") / "v2-ran").exists(), "node2 ran the restore script given to node1's update"


@pytest.mark.slow
def test_an_update_while_a_node_is_down_changes_no_node(ha_cluster: HaCluster, lan: Lan, tmp_path: Path) -> None:
    ha = ha_cluster
    setup_web(ha, tmp_path)
    before = {node: info(ha, node) for node in ("node1", "node2")}
    lan.power_off(lan.node("node3"))
    ha.wait(lambda: "node3 DEAD" in ha.log("node1"), 10, "node1 sees node3 dead")
    refused = ha.command("node1", "hakeeper", "update", "-t", "web", "timeout=77")
    assert refused.returncode == 9 and "nothing was changed" in refused.stderr, refused.stderr
    assert {node: info(ha, node) for node in ("node1", "node2")} == before
    assert script_dirs(ha, "node1") == ["actions"] and script_dirs(ha, "node2") == ["actions"]
