"""``hakeeper lab up|status|down`` as an administrator uses them: each a process of its own, as root.

Every test here fails if the lab is not what it says (namespaces, addresses, daemons that see each other), if it
touches this machine's own network namespace, or if ``lab down`` leaves anything behind. Each lab has its
record in the test's own directory (``--run-dir``), so that an administrator's lab in /run is never touched, and
the ``run_dir`` fixture removes whatever a failed test left.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hakeeper.lab import keeper, procs
from hakeeper.lab.node import ICMP_SCRIPT

pytestmark = [pytest.mark.needs_root, pytest.mark.usefixtures("needs_lan")]

BIN = Path(sys.executable).parent
LAB_NETWORK = ipaddress.ip_network("198.18.0.0/15")


def hakeeper(*argv: str | Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HAKEEPER_ROOT", "HAKEEPER_DEBUG")}
    return subprocess.run(
        [str(BIN / "hakeeper"), *map(str, argv)], env=env, capture_output=True, text=True, timeout=timeout,
        check=False, cwd="/",
    )  # fmt: skip


def ip_netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True, timeout=10).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def root_namespace() -> str:
    """This machine's own links, addresses and routes (what the lab must never change)."""
    words = [["ip", "-o", "link"], ["ip", "-o", "addr"], ["ip", "route"], ["ip", "-6", "route"]]
    outs = [subprocess.run(w, capture_output=True, text=True, check=True, timeout=10).stdout for w in words]
    # a link's counters and the neighbour of a route may change by themselves: keep names, addresses, routes
    return "\n".join(sorted(" ".join(line.split()[:4]) for out in outs for line in out.splitlines()))


def lab_processes(record: dict[str, Any]) -> list[int]:
    idents = {i for i in (procs.netns_id(n) for n in record["namespaces"]) if i is not None}
    return sorted(procs.pids_in(idents))


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[Path]:
    """A run directory for one lab; whatever the test did, no lab of it is left afterwards."""
    path = tmp_path / "run"
    path.mkdir()
    try:
        yield path
    finally:
        keeper.down(path, say=lambda line: None)
        assert not (path / keeper.RECORD_NAME).exists()


def test_a_lab_comes_up_shows_itself_and_goes_down_from_other_processes(run_dir: Path, tmp_path: Path) -> None:
    before = root_namespace()
    nodes = tmp_path / "nodes"
    up = hakeeper("lab", "up", "--nodes", "2", "--run-dir", run_dir, "--dir", nodes)
    assert up.returncode == 0, up.stdout + up.stderr
    record = json.loads((run_dir / keeper.RECORD_NAME).read_text())
    prefix = record["prefix"]
    assert f"lab {prefix}: up since" in up.stdout
    names = set(record["namespaces"])
    assert names == {f"{prefix}-{host}" for host in ("netA", "netB", "node1", "node2", "client")}
    assert names <= ip_netns_names()
    assert root_namespace() == before, "the lab changed this machine's own network namespace"

    hosts = {host["name"]: host for host in record["hosts"]}
    assert set(hosts) == {"node1", "node2", "client"}
    addresses = [a for host in hosts.values() for a in host["addresses"].values()]
    assert len(addresses) == 6 and all(ipaddress.ip_address(a) in LAB_NETWORK for a in addresses)
    for name in ("node1", "node2"):  # hakeeperd runs inside its node, with its own state directory
        pid = hosts[name]["hakeeperd"]["pid"]
        assert procs.ns_id(f"/proc/{pid}/ns/net") == procs.netns_id(f"{prefix}-{name}")
        assert Path(hosts[name]["root"]) == nodes / name

    status = hakeeper("lab", "status", "--run-dir", run_dir)
    assert status.returncode == 0, status.stderr
    assert "sees node2 alive" in status.stdout and "sees node1 alive" in status.stdout
    # the administrator's view of node1, from this (the root) namespace: node2 is ALIVE over its paths
    env = dict(os.environ, HAKEEPER_ROOT=hosts["node1"]["root"])
    argv = [str(BIN / "sys_getst"), "-s", "node2"]
    getst = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert getst.stdout == "ALIVE\n", getst.stderr
    # the client reaches both nodes on both networks
    ping = json.dumps({"targets": addresses[:4], "count": 1, "timeout": 2, "interval": 0})
    client = f"/run/netns/{hosts['client']['netns']}"
    answers = subprocess.run(
        ["nsenter", f"--net={client}", sys.executable, "-I", "-S", ICMP_SCRIPT, ping],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    assert all(json.loads(answers).values()), answers

    again = hakeeper("lab", "up", "--run-dir", run_dir)
    assert again.returncode == 4
    assert again.stderr == (
        f"hakeeper lab: a lab is up already ({prefix}, see: hakeeper lab status); "
        "take it down first: hakeeper lab down\n"
    )
    assert json.loads((run_dir / keeper.RECORD_NAME).read_text()) == record

    everything = [record["keeper"]["pid"], *lab_processes(record)]
    assert len(everything) >= 6  # the keeper, five namespace holders, two hakeeperd
    down = hakeeper("lab", "down", "--run-dir", run_dir)
    assert down.returncode == 0, down.stderr
    assert f"lab {prefix} is down: 5 namespaces deleted" in down.stdout
    assert not names & ip_netns_names()
    assert procs.wait_gone(everything, timeout=5) == []
    assert not (run_dir / keeper.RECORD_NAME).exists()
    assert not Path(record["lan_state"]).exists()
    assert (nodes / "node1" / "hakeeperd.log").exists()  # the logs stay
    assert root_namespace() == before
    assert hakeeper("lab", "status", "--run-dir", run_dir).stdout == "no lab is up (start one: hakeeper lab up)\n"


def test_lab_down_removes_a_lab_whose_keeper_was_killed(run_dir: Path, tmp_path: Path) -> None:
    up = hakeeper(
        "lab", "up", "--bare", "--nodes", "1", "--networks", "1", "--run-dir", run_dir, "--dir", tmp_path / "lab"
    )
    assert up.returncode == 0, up.stdout + up.stderr
    record = json.loads((run_dir / keeper.RECORD_NAME).read_text())
    assert "HAKEEPERD" in up.stdout and not any("hakeeperd" in host for host in record["hosts"])
    holders = [host["holder"]["pid"] for host in record["hosts"]]
    keeper._signal(record["keeper"], signal.SIGKILL)
    assert procs.wait_gone([record["keeper"]["pid"]], timeout=5) == []

    status = hakeeper("lab", "status", "--run-dir", run_dir)
    assert status.returncode == 1
    assert status.stderr.startswith(f"hakeeper lab: the lab is not whole: its keeper (pid {record['keeper']['pid']})")
    # (its namespaces may be gone already: a test run elsewhere on this machine removes the LANs of dead owners)

    down = hakeeper("lab", "down", "--run-dir", run_dir)
    assert down.returncode == 0, down.stderr
    assert not set(record["namespaces"]) & ip_netns_names()
    assert procs.wait_gone(holders, timeout=5) == []
    assert not (run_dir / keeper.RECORD_NAME).exists()
    assert not Path(record["lan_state"]).exists()
    assert [p.name for p in (tmp_path / "lab").iterdir()] == ["lab.log"]  # the keeper's log stays, nothing else
