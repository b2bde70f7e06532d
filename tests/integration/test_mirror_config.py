"""``hakeeper mirror create`` on the test LAN: real hakeeperd on three nodes, the definition on both nodes or on none.

The backing stores are image files in each node's state directory (the lab's
nodes share this machine's filesystem, each checks the path it is given).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hakeeper.db import Lcd
from hakeeper.lab.cluster import HaCluster
from hakeeper.lab.lan import Lan

MiB = 1 << 20


def image(path: Path, size: int) -> str:
    with open(path, "wb") as f:
        f.truncate(size)
    return str(path)


def definition(ha: HaCluster, node: str) -> tuple[object, ...]:
    """The node's mirror definitions and how many changes its LCD has recorded."""
    with Lcd.open(ha.root(node)) as lcd:
        return (tuple(lcd.mirrors()), lcd.last_seq())


@pytest.mark.slow
def test_a_mirror_is_defined_on_its_nodes_or_on_none(ha_cluster: HaCluster, lan: Lan) -> None:
    ha = ha_cluster
    source = image(ha.root("node1") / "data.img", 8 * MiB)
    there = image(ha.root("node2") / "data.img", 8 * MiB)
    small = image(ha.root("node3") / "data.img", 4 * MiB)
    node3_before = definition(ha, "node3")

    said = ha.ok("node1", "hakeeper", "mirror", "create", "data", "--store", source, "--target", "node2",
                 "--target-store", there, "--mode", "sync", "--bitmap-chunk", "256K")  # fmt: skip
    assert f"data mirrored from node1 to node2 (sync, {8 * MiB} bytes, bitmap chunk 256K, no limit)" in said
    with Lcd.open(ha.root("node2")) as lcd:
        mirror = lcd.mirror("data")
    assert (mirror.source, mirror.size, mirror.store) == ("node1", 8 * MiB, source)
    assert [(t.node, t.store, t.bitmap_chunk) for t in mirror.targets] == [("node2", there, 256 * 1024)]
    assert definition(ha, "node1")[0] == definition(ha, "node2")[0]
    assert definition(ha, "node3") == node3_before, "node3 is no node of the mirror: it heard nothing"

    # hakeeperd starts the volume's replication process on both nodes: the verbs reach it.
    def live(node: str) -> dict[str, object]:
        record: dict[str, object] = json.loads(ha.ok(node, "hakeeper", "mirror", "status", "--json"))[0]
        return record

    ha.wait(lambda: live("node2")["live"] is True, 30, "node2's replication process", step=0.2)
    assert live("node2")["role"] == "target" and live("node2")["device"] is None, "a target exposes no device"
    ha.wait(lambda: live("node1")["live"] is True, 30, "node1's replication process", step=0.2)
    assert str(live("node1")["device"]).startswith("/dev/loop")

    # A verb on the target is refused (5), one line, nothing changed; on the source it is done.
    before = {node: definition(ha, node) for node in ("node1", "node2")}
    refused = ha.command("node2", "hakeeper", "mirror", "pause", "data")
    assert refused.returncode == 5 and refused.stdout == "", refused
    assert "run 'mirror pause' on its source node1" in refused.stderr and refused.stderr.count("\n") == 1
    assert "data: mirror to node2 paused" in ha.ok("node1", "hakeeper", "mirror", "pause", "data")
    shown = ha.ok("node1", "hakeeper", "mirror", "status", "data")
    assert "Paused (4)" in shown and f"data: volume device {live('node1')['device']}" in shown, shown
    assert "continued" in ha.ok("node1", "hakeeper", "mirror", "continue", "data")
    assert {node: definition(ha, node) for node in ("node1", "node2")} == before

    # node3's store is smaller than the volume: node3 refuses as it prepares, no LCD changes anywhere.
    before = {node: definition(ha, node) for node in ("node1", "node2", "node3")}
    refused = ha.command("node1", "hakeeper", "mirror", "create", "data", "--target", "node3", "--target-store", small,
                         "--mode", "async")  # fmt: skip
    assert refused.returncode == 5, refused.stderr
    assert "node3" in refused.stderr and "less than" in refused.stderr and refused.stdout == ""
    assert {node: definition(ha, node) for node in ("node1", "node2", "node3")} == before

    # node3 is down: refused with 9 before anything is sent, no LCD changes.
    lan.power_off(lan.node("node3"))
    ha.wait(lambda: "node3 DEAD" in ha.log("node1"), 10, "node1 sees node3 dead")
    image(ha.root("node3") / "data.img", 8 * MiB)
    refused = ha.command("node1", "hakeeper", "mirror", "create", "data", "--target", "node3", "--target-store", small,
                         "--mode", "async")  # fmt: skip
    assert refused.returncode == 9, refused.stderr
    assert "node3" in refused.stderr and "nothing was changed" in refused.stderr
    assert {node: definition(ha, node) for node in ("node1", "node2")} == {n: before[n] for n in ("node1", "node2")}

    # And the mirror goes from both nodes at once.
    assert "data deleted" in ha.ok("node2", "hakeeper", "mirror", "delete", "data")
    assert definition(ha, "node1")[0] == definition(ha, "node2")[0] == ()
    # ... and with it the replication processes: their pid files go as they stop.
    ha.wait(lambda: not (ha.root("node1") / "replication" / "data" / "pid").exists(), 40, "node1's process stopped")
    ha.wait(lambda: not (ha.root("node2") / "replication" / "data" / "pid").exists(), 40, "node2's process stopped")
