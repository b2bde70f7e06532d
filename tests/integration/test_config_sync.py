"""Configuration changes to an extended hierarchy: on every node it is extended to, or on none."""

from __future__ import annotations

import pytest

from hakeeper.comm.paths import PathState
from hakeeper.db import Lcd
from hakeeper.lab.cluster import HaCluster
from hakeeper.lab.lan import Lan


def configuration(ha: HaCluster, node: str) -> list[str]:
    """The node's change log without state changes (failover makes those at any time)."""
    return [
        line for line in ha.command(node, "hakeeper", "changes").stdout.splitlines() if "\x01set_state\x01" not in line
    ]


def info(ha: HaCluster, node: str, tag: str) -> object:
    with Lcd.open(ha.root(node)) as lcd:
        return lcd.resource(tag).info


def setup_web(ha: HaCluster) -> None:
    """web (and db, on node1 only) created on node1 and node2, then web extended: equivalent on node2."""
    for node in ("node1", "node2"):
        dest = [] if node == "node1" else ["-d", "node2"]
        argv = ["ins_create", "-a", "gen", "-r", "app", "-t", "web", "-i", "web-1"]  # gen/app: a kit's, known
        done = ha.command("node1", *argv, *dest)
        assert done.returncode == 0, (node, argv, done.stderr)
    assert ha.command("node1", "ins_create", "-a", "gen", "-r", "app", "-t", "db", "-i", "db-1").returncode == 0
    done = ha.command("node1", "eqv_create", "-t", "web", "-S", "node2")
    assert (done.returncode, done.stderr) == (0, "")


@pytest.mark.slow
def test_a_change_is_on_every_node_of_the_hierarchy_or_on_none(ha_cluster: HaCluster, lan: Lan) -> None:
    ha = ha_cluster
    setup_web(ha)
    with Lcd.open(ha.root("node2")) as lcd:
        assert [(e.node, e.priority) for e in lcd.equivalencies(tag="web")] == [("node1", 1), ("node2", 2)]
    assert ha.command("node1", "ins_setinfo", "-t", "web", "-v", "hello").returncode == 0
    assert info(ha, "node1", "web") == info(ha, "node2", "web") == "hello"
    log = ha.command("node2", "hakeeper", "changes").stdout  # fields split by ^A: the actor holds spaces
    assert " via node1#" in log and "\x01set_info\x01" in log

    # node2 unreachable: refused, and neither LCD changes.
    lan.partition([lan.node("node2")], [lan.node("node1"), lan.node("node3")])
    ha.wait(lambda: ha.node_seen_by("node1", "node2") is PathState.DEAD, 10, "node1 to see node2 DEAD")
    # Failover runs meanwhile (node2 alone loses quorum, node1 may restore web): states change, not configuration.
    before = (configuration(ha, "node1"), configuration(ha, "node2"))
    refused = ha.command("node1", "ins_setinfo", "-t", "web", "-v", "changed")
    assert refused.returncode == 9
    assert refused.stderr.count("\n") == 1
    # Refused before trying when hakeeperd already knows node2 is DEAD, or after trying each path.
    assert "node2 cannot be reached" in refused.stderr or "cannot reach node 'node2'" in refused.stderr
    assert info(ha, "node1", "web") == info(ha, "node2", "web") == "hello"
    assert (configuration(ha, "node1"), configuration(ha, "node2")) == before

    # A change that concerns no other node is not held up.
    assert ha.command("node1", "ins_setinfo", "-t", "db", "-v", "local").returncode == 0

    # All up again: the same change is on both.
    lan.heal()
    ha.wait(lambda: ha.node_seen_by("node1", "node2") is PathState.ALIVE, 15, "node2 back")
    assert ha.command("node1", "ins_setinfo", "-t", "web", "-v", "changed").returncode == 0
    assert info(ha, "node1", "web") == info(ha, "node2", "web") == "changed"


@pytest.mark.slow
def test_a_change_the_other_node_cannot_apply_is_refused_everywhere(ha_cluster: HaCluster) -> None:
    ha = ha_cluster
    setup_web(ha)
    refused = ha.command("node1", "dep_create", "-p", "web", "-c", "db")  # node2 has no db
    assert refused.returncode == 9
    assert "refused by node node2" in refused.stderr and "'db'" in refused.stderr
    with Lcd.open(ha.root("node1")) as lcd:
        assert lcd.edges() == [], "the coordinator did not keep it either"
    assert (
        ha.command("node1", "ins_create", "-a", "gen", "-r", "app", "-t", "db", "-i", "db-1", "-d", "node2").returncode
        == 0
    )
    assert ha.command("node1", "dep_create", "-p", "web", "-c", "db").returncode == 0
    for node in ("node1", "node2"):
        with Lcd.open(ha.root(node)) as lcd:
            assert lcd.edges() == [("web", "db")]
