"""``hakeeper status`` on the test LAN: every node's view, the witness's included, agrees with what the client sees.

Three nodes run hakeeperd: ``web`` (the lab's web app, answering with its node's
name) runs on node1 (priority 1) with node2 (priority 2) as its backup; node3 is a
witness. A client probes every node every 10 ms: the node that answers is where
web really runs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from hakeeper.lab.cluster import HaCluster
from hakeeper.lab.lan import Lan
from hakeeper.lab.probe import Prober, double_service, served_by
from tests.integration.test_failover import served_after, serving, setup_web, targets


def status(ha: HaCluster, node: str, *argv: str) -> dict[str, Any]:
    view = json.loads(ha.ok(node, "hakeeper", "status", "--json", *argv))
    assert isinstance(view, dict)
    return view


def node_states(view: dict[str, Any]) -> dict[str, str]:
    return {n["name"]: n["state"] for n in view["nodes"]}


def web_of(view: dict[str, Any]) -> dict[str, Any]:
    found: list[dict[str, Any]] = [h for h in view["hierarchies"] if h["name"] == "web"]
    assert len(found) == 1, view["hierarchies"]
    return found[0]


def web_and_a_witness(ha: HaCluster, tmp_path: Path) -> None:
    """node3 a witness; web in service on node1 (priority 1), node2 (priority 2) its backup."""
    ha.ok("node3", "flg_create", "-f", "witness")
    setup_web(ha, tmp_path, backups=("node2",))


def now_serving(prober: Prober) -> str:
    """Who answers the client now: the last change of who served, which must be one node."""
    time.sleep(0.2)
    who = served_by(prober.rounds())[-1][1]
    assert who is not None and "+" not in who, f"served by {who}"
    return who


@pytest.mark.slow
def test_every_node_and_the_witness_see_where_web_runs_before_and_after_a_power_off(
    ha_cluster: HaCluster, lan: Lan, tmp_path: Path
) -> None:
    ha = ha_cluster
    web_and_a_witness(ha, tmp_path)
    with Prober(lan, targets(lan), tmp_path / "probe.jsonl") as prober:
        start = serving(prober, "node1")
        assert now_serving(prober) == "node1"
        for node in ha.names:
            view = status(ha, node)
            assert view["schema"] == 1 and view["node"] == node and view["daemon"] is True
            assert node_states(view) == dict.fromkeys(ha.names, "ALIVE"), (node, view["nodes"])
            assert {n["name"]: n["witness"] for n in view["nodes"]} == {"node1": False, "node2": False, "node3": True}
            assert view["quorum"]["ok"] is True and view["quorum"]["sees"] == 3
            web = web_of(view)
            assert [r["node"] for r in web["running"]] == ["node1"], (node, web)
            assert web["owner"]["node"] == "node1" and web["owner"]["agreed"], (node, web["owner"])
            assert web["running"][0]["epoch"] == web["owner"]["epoch"] >= 1
            assert [(b["node"], b["priority"], b["live"]) for b in web["backups"]] == [("node2", 2, True)]
            assert view["degraded"] == [], (node, view["degraded"])
            assert {p["state"] for p in view["paths"]} == {"ALIVE"}
        epoch = web["owner"]["epoch"]
        assert where_row(ha, "node2") == ["web", "node1", str(epoch)]  # on the backup: where web runs now
        assert ha.ok("node2", "lcdstatus", "-q") == ""

        lan.power_off(lan.node("node1"))
        served_after(prober, "node2", start)
        survivors = ["node2", "node3"]
        ha.wait(lambda: all("node1" in dead_in(status(ha, n)) for n in survivors), 10, "node1 DEAD in every status")
        where = now_serving(prober)
        views = {node: status(ha, node) for node in survivors}
        rounds = prober.rounds()
    assert not double_service(rounds), "answers from two nodes at once"
    assert where == "node2"
    for node, view in views.items():
        assert node_states(view) == {"node1": "DEAD", "node2": "ALIVE", "node3": "ALIVE"}, (node, view["nodes"])
        assert view["quorum"]["ok"] is True and view["quorum"]["sees"] == 2
        web = web_of(view)
        assert [r["node"] for r in web["running"]] == [where], (node, web)
        assert web["owner"]["node"] == where and web["owner"]["agreed"], (node, web["owner"])
        assert web["owner"]["epoch"] > epoch and web["running"][0]["epoch"] == web["owner"]["epoch"]
        assert web["unknown"] == []
        assert [(b["node"], b["state"], b["live"]) for b in web["backups"]] == [("node1", "DEAD", False)]
        assert f"node1 is DEAD (all paths from {node} DEAD)" in view["degraded"], view["degraded"]
        assert "web: no live backup (node1 DEAD)" in view["degraded"], view["degraded"]
    assert where_row(ha, "node2") == ["web", "node2", str(views["node2"]["hierarchies"][0]["running"][0]["epoch"])]
    assert ha.ok("node2", "lcdstatus", "-q") == "hierarchy web: no live backup (in service on node2; node1 DEAD)\n"
    text = ha.ok("node3", "hakeeper", "status")
    assert f"web: in service on node2 (epoch {views['node3']['hierarchies'][0]['running'][0]['epoch']})" in text
    assert "node3  ALIVE    this node; witness" in text, text


def where_row(ha: HaCluster, node: str, hierarchy: str = "web") -> list[str]:
    """The row of ``hierarchy`` in the HIERARCHY / IN SERVICE ON / EPOCH table of ``lcdstatus -e`` on ``node``."""
    lines = ha.ok(node, "lcdstatus", "-e").splitlines()
    header = next(i for i, line in enumerate(lines) if line.split() == ["HIERARCHY", "IN", "SERVICE", "ON", "EPOCH"])
    rows = [line.split() for line in lines[header + 1 :] if line.split()[:1] == [hierarchy]]
    assert len(rows) == 1, lines
    return rows[0]


def dead_in(view: dict[str, Any]) -> set[str]:
    return {n["name"] for n in view["nodes"] if n["state"] == "DEAD"}


@pytest.mark.slow
def test_a_silent_daemon_is_unknown_never_running_nothing_and_watch_redraws(
    ha_cluster: HaCluster, lan: Lan, tmp_path: Path
) -> None:
    """node1's hakeeperd frozen (its heartbeats go on: ALIVE): what it runs is unknown to node2, not nothing."""
    ha = ha_cluster
    ha.ok("node1", "hakeeper", "settings", "guard_timeout=30")  # its guard must not end the freeze
    setup_web(ha, tmp_path)
    frames = ha.ok("node2", "hakeeper", "status", "--json", "--watch", "0.1", "--count", "2").splitlines()
    assert [json.loads(f)["hierarchies"][0]["running"][0]["node"] for f in frames] == ["node1", "node1"]
    node1 = lan.node("node1")
    node1.freeze(ha.procs["node1"].pid)
    try:
        view = status(ha, "node2")
        row = where_row(ha, "node2")
    finally:
        node1.thaw(ha.procs["node1"].pid)
    assert node_states(view)["node1"] == "ALIVE"
    (n1,) = [n for n in view["nodes"] if n["name"] == "node1"]
    assert n1["answered"] is False and n1["witness"] is None and n1["error"]
    web = web_of(view)
    assert web["running"] == [] and web["unknown"] == ["node1"], web
    assert web["where"].startswith("unknown: node1"), web["where"]
    assert "in service nowhere" not in " ".join(view["degraded"])
    assert row == ["web", "?", "--"], row  # lcdstatus -e: unknown, not "--" (nowhere)
    assert any(line.startswith("node1 did not answer") for line in view["degraded"]), view["degraded"]
    ha.wait(lambda: web_of(status(ha, "node2"))["running"] != [], 10, "node1 answering again")
    assert [r["node"] for r in web_of(status(ha, "node2"))["running"]] == ["node1"]


@pytest.mark.slow
def test_after_the_owners_hakeeperd_is_killed_the_others_agree_and_its_node_shows_its_lcd_marked(
    ha_cluster: HaCluster, lan: Lan, tmp_path: Path
) -> None:
    """SIGKILL of node1's hakeeperd: its guard takes web down, node2 takes over; node1 without hakeeperd says so."""
    ha = ha_cluster
    web_and_a_witness(ha, tmp_path)
    node1 = lan.node("node1")
    survivors = ["node2", "node3"]
    with Prober(lan, targets(lan), tmp_path / "probe.jsonl") as prober:
        start = serving(prober, "node1")
        node1.kill_daemon(ha.procs["node1"].pid)
        served_after(prober, "node2", start)
        ha.wait(lambda: all("node1" in dead_in(status(ha, n)) for n in survivors), 10, "node1 DEAD in every status")
        where = now_serving(prober)
        views = {node: status(ha, node) for node in survivors}
        ha.wait(lambda: "guard: out of service: web" in ha.log("node1"), 10, "node1's guard to take web down")
        alone = status(ha, "node1")
        text = ha.ok("node1", "hakeeper", "status")
        rounds = prober.rounds()
    assert not double_service(rounds), "answers from two nodes at once"
    assert where == "node2"
    for node, view in views.items():
        assert node_states(view) == {"node1": "DEAD", "node2": "ALIVE", "node3": "ALIVE"}, (node, view["nodes"])
        web = web_of(view)
        assert [r["node"] for r in web["running"]] == [where] and web["owner"]["node"] == where, (node, web)
        assert web["owner"]["agreed"] and web["running"][0]["epoch"] == web["owner"]["epoch"]
    # node1: no hakeeperd; what its LCD says, marked; the others unknown, not "running nothing"
    assert alone["daemon"] is False and alone["quorum"]["ok"] is None
    assert node_states(alone) == {"node1": "ALIVE", "node2": "UNKNOWN", "node3": "UNKNOWN"}
    web = web_of(alone)
    assert web["running"] == [] and web["unknown"] == ["node2"], web
    assert alone["degraded"][0].startswith("hakeeperd is not running on node1"), alone["degraded"]
    assert "hakeeperd is not running on node1: what its LCD says" in text
    assert "  web: unknown: node2 did not say what they run" in text
