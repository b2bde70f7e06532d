"""extend and unextend on the test LAN: real daemons, mutual TLS, each node with its own mount namespace.

The commands run as an administrator runs them (the console scripts, talking to
the node's hakeeperd); what each node then holds is read from its LCD and its
state directory.
"""

from __future__ import annotations

import sqlite3
import stat
import subprocess
from contextlib import closing
from pathlib import Path

import pytest

from hakeeper.comm.paths import PathState
from hakeeper.db import Lcd, State
from hakeeper.lab.cluster import HaCluster
from hakeeper.lab.lan import Lan

PRIVATE = "/srv"  # every node gets its own empty tmpfs here (the Lan's tmpfs option): a disk only it has
OWN_DISK = pytest.mark.parametrize("lan", [{"tmpfs": [PRIVATE]}], indirect=True)


def ok(ha: HaCluster, node: str, *argv: str) -> str:
    done = ha.command(node, *argv)
    assert (done.returncode, done.stderr) == (0, ""), (node, argv, done.stderr)
    return done.stdout


def actions(ha: HaCluster, node: str, tag: str) -> Path:
    return ha.root(node) / "subsys" / "gen" / "resources" / "app" / "instances" / tag / "actions"


def scripts(ha: HaCluster, node: str, tag: str) -> dict[str, tuple[bytes, int]]:
    """The copied scripts of ``tag`` on ``node``: name -> (content, mode)."""
    where = actions(ha, node, tag)
    found = sorted(where.iterdir()) if where.exists() else []
    return {p.name: (p.read_bytes(), stat.S_IMODE(p.stat().st_mode)) for p in found}


def eqvs(ha: HaCluster, node: str) -> set[tuple[str, str, int]]:
    with Lcd.open(ha.root(node)) as lcd:
        return {(e.tag, e.node, e.priority) for e in lcd.equivalencies()}


def lcds(ha: HaCluster) -> dict[str, dict[str, list[tuple[object, ...]]]]:
    """Every table of every node's LCD, the change log included."""
    dumps = {}
    for node in ha.names:
        with closing(sqlite3.connect(ha.root(node) / "lcd.sqlite")) as db:
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
            dumps[node] = {t: sorted(db.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables}
    return dumps


def create_web(ha: HaCluster, tmp_path: Path) -> None:
    """On node1: web -> data, two gen/app resources whose scripts differ."""
    for tag in ("data", "web"):
        paths = {}
        for action in ("restore", "remove"):
            script = tmp_path / f"{tag}-{action}"
            script.write_bytes(f"#!/bin/sh\n# the {action} script of {tag}\nexit 0\n".encode())
            script.chmod(0o755)
            paths[action] = script
        ok(ha, "node1", "hakeeper", "create", "gen/app", "-t", tag,
           f"restore={paths['restore']}", f"remove={paths['remove']}")  # fmt: skip
    ok(ha, "node1", "dep_create", "-p", "web", "-c", "data")


def assert_refused(done: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert done.returncode == code, done.stderr
    assert done.stdout == ""
    # hakeeperd's answer reads under the name the user typed, as without it
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("hakeeper extend: "), done.stderr
    for word in words:
        assert word in done.stderr, done.stderr


@pytest.mark.slow
def test_extend_a_hierarchy_to_two_nodes_then_take_it_off_one(ha_cluster: HaCluster, tmp_path: Path) -> None:
    ha = ha_cluster
    create_web(ha, tmp_path)
    ok(ha, "node1", "perform_action", "-t", "web", "-a", "restore")  # an extended hierarchy usually runs

    out = ok(ha, "node1", "hakeeper", "extend", "-t", "web", "-s", "node2", "-p", "5")
    assert out == "web extended to node2 with priority 5: data, web\n"
    with Lcd.open(ha.root("node2")) as lcd:
        assert [(r.tag, r.state) for r in lcd.resources()] == [("data", State.OSU), ("web", State.OSU)]
        assert lcd.edges() == [("web", "data")]
    for tag in ("data", "web"):
        assert scripts(ha, "node2", tag) == scripts(ha, "node1", tag)
        assert {mode for _, mode in scripts(ha, "node2", tag).values()} == {0o700}
    both = {(t, n, p) for t in ("data", "web") for n, p in (("node1", 1), ("node2", 5))}
    assert eqvs(ha, "node1") == eqvs(ha, "node2") == both
    assert eqvs(ha, "node3") == set()

    out = ok(ha, "node1", "hakeeper", "extend", "-t", "web", "-s", "node3")
    assert out == "web extended to node3 with priority 2: data, web\n"
    three = both | {("data", "node3", 2), ("web", "node3", 2)}
    assert eqvs(ha, "node1") == eqvs(ha, "node2") == eqvs(ha, "node3") == three

    # In service on node2: unextend says so, and nothing changes anywhere.
    ok(ha, "node1", "perform_action", "-t", "web", "-a", "restore", "-d", "node2")
    before = lcds(ha)
    refused = ha.command("node1", "hakeeper", "unextend", "-t", "web", "-s", "node2")
    assert refused.returncode == 8, refused.stderr
    assert refused.stderr.count("\n") == 1 and "in service on node2" in refused.stderr, refused.stderr
    assert lcds(ha) == before

    ok(ha, "node1", "perform_action", "-t", "data", "-a", "remove", "-d", "node2")  # data and what needs it
    out = ok(ha, "node1", "hakeeper", "unextend", "-t", "web", "-s", "node2")
    assert out == "web unextended from node2: web, data\n"
    with Lcd.open(ha.root("node2")) as lcd:
        assert lcd.resources() == [] and lcd.equivalencies() == []
    assert scripts(ha, "node2", "web") == scripts(ha, "node2", "data") == {}
    assert not actions(ha, "node2", "web").parent.exists()
    rest = {e for e in three if e[1] != "node2"}
    assert eqvs(ha, "node1") == eqvs(ha, "node3") == rest
    assert scripts(ha, "node3", "web") == scripts(ha, "node1", "web") != {}
    with Lcd.open(ha.root("node1")) as lcd:
        assert lcd.resource("web").state is State.OSU, "the restore on node2 was a switchover: node1 let it go"


@OWN_DISK
@pytest.mark.slow
def test_a_resource_the_target_cannot_validate_is_refused_with_the_reason(
    ha_cluster: HaCluster, lan: Lan, tmp_path: Path
) -> None:
    """An OCF Dummy whose state directory is on a disk only node1 has: node2's validate-all refuses it."""
    ha = ha_cluster
    lan.node("node1").run(["mkdir", f"{PRIVATE}/dummy"], check=True)
    state = f"{PRIVATE}/dummy/dummy.state"
    ok(ha, "node1", "hakeeper", "create", "ocf/ra", "-t", "dummy", "agent=ocf:heartbeat:Dummy", f"state={state}")
    create_web(ha, tmp_path)
    ok(ha, "node1", "dep_create", "-p", "web", "-c", "dummy")  # web needs data and dummy
    before = lcds(ha)

    refused = ha.command("node1", "hakeeper", "extend", "-t", "web", "-s", "node2")
    assert_refused(refused, 5, "node node2: dummy:", "does not validate it on node2", "not writable")
    assert lcds(ha) == before, "no LCD changed"
    assert scripts(ha, "node2", "data") == {}, "data, adopted before dummy failed, left nothing behind"

    lan.node("node2").run(["mkdir", f"{PRIVATE}/dummy"], check=True)  # the disk there too: now it validates
    ok(ha, "node1", "hakeeper", "extend", "-t", "web", "-s", "node2")
    with Lcd.open(ha.root("node2")) as lcd:
        assert sorted(lcd.edges()) == [("web", "data"), ("web", "dummy")]


@pytest.mark.slow
def test_extend_to_a_node_that_cannot_be_reached_changes_nothing(
    ha_cluster: HaCluster, lan: Lan, tmp_path: Path
) -> None:
    ha = ha_cluster
    create_web(ha, tmp_path)
    lan.partition([lan.node("node2")], [lan.node("node1"), lan.node("node3")])
    ha.wait(lambda: ha.node_seen_by("node1", "node2") is PathState.DEAD, 10, "node1 to see node2 DEAD")
    before = lcds(ha)

    refused = ha.command("node1", "hakeeper", "extend", "-t", "web", "-s", "node2")
    assert_refused(refused, 9, "node2 cannot be reached")
    assert lcds(ha) == before
    assert scripts(ha, "node2", "web") == {}

    lan.heal()
    ha.wait(lambda: ha.node_seen_by("node1", "node2") is PathState.ALIVE, 15, "node2 back")
    ok(ha, "node1", "hakeeper", "extend", "-t", "web", "-s", "node2")
    assert eqvs(ha, "node2") == eqvs(ha, "node1") != set()


@pytest.mark.slow
def test_one_extend_to_two_nodes_and_a_refusal_that_names_what_was_done(
    ha_cluster: HaCluster, lan: Lan, tmp_path: Path
) -> None:
    ha = ha_cluster
    create_web(ha, tmp_path)
    out = ok(ha, "node1", "hakeeper", "extend", "-t", "web", "-s", "node2", "-s", "node3")
    assert out == "web extended to node2 with priority 2: data, web\nweb extended to node3 with priority 3: data, web\n"
    three = {(t, n, p) for t in ("data", "web") for n, p in (("node1", 1), ("node2", 2), ("node3", 3))}
    assert eqvs(ha, "node1") == eqvs(ha, "node2") == eqvs(ha, "node3") == three
    ok(ha, "node1", "hakeeper", "unextend", "-t", "web", "-s", "node3")
    lan.power_off(lan.node("node3"))
    ha.wait(lambda: ha.node_seen_by("node1", "node3") is PathState.DEAD, 10, "node1 sees node3 dead")
    ok(ha, "node1", "hakeeper", "unextend", "-t", "web", "-s", "node2")
    refused = ha.command("node1", "hakeeper", "extend", "-t", "web", "-s", "node2", "-s", "node3")
    assert refused.returncode == 9, refused.stderr
    assert "node3" in refused.stderr and "(extended already, and kept: node2)" in refused.stderr, refused.stderr
    assert eqvs(ha, "node1") == eqvs(ha, "node2") == {e for e in three if e[1] != "node3"}
