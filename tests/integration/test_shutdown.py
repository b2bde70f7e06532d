"""The shutdown strategy, each node's own: lkstop on a node set to switch over hands web to the next node."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hakeeper.db import State
from hakeeper.lab.cluster import HaCluster
from hakeeper.lab.lan import Lan
from hakeeper.lab.probe import Prober, double_service, servers
from tests.integration.test_failover import served_after, serving, setup_web, state, targets

SWITCH = "shutdown_strategy=Switch Over Resources"


@pytest.mark.slow
def test_lkstop_switches_over_where_the_node_says_so_and_only_there(
    ha_cluster: HaCluster, lan: Lan, tmp_path: Path
) -> None:
    ha = ha_cluster
    setup_web(ha, tmp_path)
    ha.ok("node1", "hakeeper", "settings", SWITCH)
    with Prober(lan, targets(lan), tmp_path / "probe.jsonl") as prober:
        start = serving(prober, "node1")
        ha.ok("node1", "lkstop")
        ha.procs["node1"].wait(30)
        served_after(prober, "node2", start)
        # node2 keeps the default: its lkstop takes web out of service, and nobody takes it over.
        ha.ok("node2", "lkstop")
        ha.procs["node2"].wait(30)
        time.sleep(1.0)  # node3 would have taken web over by now, had node2's stop been a failure
        rounds = prober.rounds()
    assert not double_service(rounds)
    assert servers(rounds) == ["node1", "node2"]
    assert [state(ha, n) for n in ha.names] == [State.OSU, State.OSU, State.OSU]
    assert "node2 stopped gracefully: nothing moves" in ha.log("node3")
