"""Commands on other nodes (-d NODE, lcdremexec) over the test LAN, falling back to the next path."""

from __future__ import annotations

from pathlib import Path

import pytest

from hakeeper.lab.cluster import HaCluster
from hakeeper.lab.lan import Lan

TWO_NETWORKS = pytest.mark.parametrize("lan", [{"nodes": 3, "second_network": True}], indirect=True)


@pytest.mark.slow
@TWO_NETWORKS
def test_lcdi_commands_and_lcdremexec_reach_another_node(ha_cluster: HaCluster, lan: Lan) -> None:
    for argv in (
        ["app_create", "-a", "lk", "-d", "node2"],
        ["typ_create", "-a", "lk", "-r", "svc", "-d", "node2"],
        ["ins_create", "-a", "gen", "-r", "app", "-t", "web", "-i", "web-1", "-d", "node2"],  # gen/app: a kit's
    ):
        done = ha_cluster.command("node1", *argv)
        assert (done.returncode, done.stderr) == (0, ""), argv
    there = ha_cluster.command("node1", "ins_list", "-d", "node2", "-t", "web", "-f:")
    assert there.stdout.split(":")[:4] == ["gen", "app", "web", "web-1"]
    here = ha_cluster.command("node1", "ins_list", "-t", "web")
    assert here.returncode == 7, "the resource was created on node2 only"
    refused = ha_cluster.command("node1", "ins_create", "-a", "gen", "-r", "app", "-t", "web", "-i", "x", "-d", "node2")
    assert (refused.returncode, refused.stderr) == (4, "ins_create: a resource tagged 'web' exists already\n")
    assert "@node1 create_resource" in ha_cluster.command("node2", "hakeeper", "changes", "-f", " ").stdout, "who asked"
    name = ha_cluster.command("node1", "lcdremexec", "-d", "node2", "--", "uname", "-n")
    assert (name.returncode, name.stdout) == (0, "node2\n")
    failing = ha_cluster.command(
        "node1", "lcdremexec", "-e", "-d", "node3", "--", "sh", "-c", "echo out; echo err >&2; exit 3"
    )
    assert (failing.returncode, failing.stdout, failing.stderr) == (3, "out\n", "err\n")


@pytest.mark.slow
@TWO_NETWORKS
def test_a_dead_path_is_skipped_and_an_unreachable_node_is_a_clear_error(ha_cluster: HaCluster, lan: Lan) -> None:
    node2 = lan.node("node2")
    lan.link_down(node2, "eth0")  # the priority-1 path
    done = ha_cluster.command("node1", "lcdremexec", "-d", "node2", "--", "uname", "-n")
    assert (done.returncode, done.stdout) == (0, "node2\n"), done.stderr
    lan.link_up(node2, "eth0")
    lan.partition([node2], [lan.node("node1"), lan.node("node3")])
    cut = ha_cluster.command("node1", "lcdremexec", "-d", "node2", "--", "true")
    assert cut.returncode == 9
    assert cut.stderr.count("\n") == 1
    assert "cannot reach node 'node2' on any of its 2 paths" in cut.stderr
    assert ha_cluster.command("node1", "lcdremexec", "-d", "node3", "--", "true").returncode == 0


def test_without_the_daemon_another_node_is_out_of_reach(cli, root: Path) -> None:
    assert cli("sys_create", "-s", "node2").code == 0
    done = cli("ins_list", "-d", "node2")
    assert done.code == 9
    assert "through hakeeperd" in done.err
