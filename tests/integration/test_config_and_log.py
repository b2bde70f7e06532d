"""A real hakeeperd set up by its configuration file alone (state directory, node name, log file), whose
log is read back with ``hakeeper log --tag``, and followed with ``-f``."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hakeeper.db import Lcd
from hakeeper.demo import CHECK, REMOVE, RESTORE
from hakeeper.lab.cluster import ALIVE_TIMEOUT, HaCluster
from hakeeper.lab.lan import Lan
from hakeeper.logs import CONTINUATION
from hakeeper.logs.read import HEAD, log_files, read_files
from tests.ports import free_port

BIN = Path(sys.executable).parent
OVERRIDES = ("HAKEEPER_ROOT", "HAKEEPER_NODE", "HAKEEPER_LOG_TARGET", "HAKEEPER_LOG_LEVEL", "HAKEEPER_LOG_FILE")


class Node:
    def __init__(self, base: Path) -> None:
        self.state = base / "state"
        self.log = base / "logs" / "hakeeperd.log"
        self.config = base / "hakeeper.toml"
        self.log.parent.mkdir()
        self.config.write_text(
            f'[node]\nname = "alpha"\nstate_dir = "{self.state}"\n\n'
            f'[log]\ntarget = "file"\nfile = "{self.log}"\nmax_bytes = 1048576\nbackups = 2\n'
        )
        self.env = {k: v for k, v in os.environ.items() if k not in OVERRIDES and k != "JOURNAL_STREAM"}
        self.env["HAKEEPER_CONFIG"] = str(self.config)

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(BIN / argv[0]), *argv[1:]], env=self.env, capture_output=True, text=True,
                              timeout=120, check=False)  # fmt: skip
        assert done.returncode == 0, f"{argv} exit {done.returncode}: {done.stderr}"
        return done


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path)
    try:
        yield n
    finally:
        for pidfile in (n.state / "hakeeperd.pid", n.state / "web.pid"):
            try:
                pid = int(pidfile.read_text().strip())
            except (FileNotFoundError, ValueError):
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def web_scripts(node: Node, directory: Path) -> list[str]:
    port = free_port()
    directory.mkdir()
    for name, text in (("restore", RESTORE), ("remove", REMOVE), ("check", CHECK)):
        path = directory / name
        path.write_text(text.format(python=sys.executable, port=port))
        path.chmod(0o755)
    return [f"restore={directory / 'restore'}", f"remove={directory / 'remove'}", f"quickCheck={directory / 'check'}"]


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """One line of ``proc``'s output within ``timeout`` s, else ''."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else ""


@pytest.mark.slow
def test_hakeeperd_configured_by_its_file_logs_there_and_hakeeper_log_reads_it_back(node: Node, tmp_path: Path) -> None:
    started = node.run("lkstart").stdout
    assert started.startswith("hakeeperd started") and str(node.log) in started
    node.run("hakeeper", "create", "gen/app", "-t", "web", "-Q", "0", *web_scripts(node, tmp_path / "scripts"))
    node.run("ins_create", "-a", "gen", "-r", "app", "-t", "web-ip", "-i", "web-ip")
    node.run("perform_action", "-t", "web", "-a", "restore")
    node.run("ins_setstate", "-t", "web-ip", "-S", "ISP")
    assert "web" in node.run("lcdstatus", "-e").stdout  # the light path found the state directory in the file

    with Lcd.open(node.state, readonly=True) as lcd:
        assert lcd.local_node == "alpha"  # the node name came from the file
    assert not (node.state / "hakeeperd.log").exists()  # the log went where the file says
    records = node.run("hakeeper", "log", "--tag", "web").stdout.splitlines()
    assert any(" tag=web: web OSU -> ISP (perform_action by " in line for line in records), records
    assert not any("web-ip" in line for line in records)
    assert all(line.split()[2] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL") for line in records)
    since_now = node.run("hakeeper", "log", "--since", "1 min ago", "-n", "1").stdout
    assert since_now.count("\n") == 1

    follower = subprocess.Popen([str(BIN / "hakeeper"), "log", "-f", "-n", "0", "--tag", "web"], env=node.env,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        time.sleep(0.5)  # it reads from the end of the file: what comes next
        node.run("perform_action", "-t", "web", "-a", "remove")
        line = ""
        deadline = time.monotonic() + 20
        while "web ISP -> OSU" not in line and time.monotonic() < deadline:
            line = read_line(follower, 1.0)
        assert "tag=web: web ISP -> OSU" in line
    finally:
        follower.kill()
        follower.wait(10)
        if follower.stdout is not None:
            follower.stdout.close()
    node.run("lkstop")
    assert "hakeeperd stopped" in node.log.read_text()


def test_the_guard_logs_where_hakeeperd_told_it_with_its_own_name(tmp_path: Path) -> None:
    """The guard as hakeeperd starts it (its settings in the environment), its hakeeperd gone at once:
    on a node with nothing in service it only says so, in hakeeperd's file."""
    state = tmp_path / "state"
    Lcd.open(state, node="node1").close()
    log = tmp_path / "hakeeperd.log"
    setup = {"target": "file", "file": str(log), "level": "INFO", "max_bytes": 0, "backups": 1}
    env = dict(os.environ, HAKEEPER_LOG_SETUP=json.dumps(setup))
    done = subprocess.run(
        [sys.executable, "-m", "hakeeper.guard", "--root", str(state), "--daemon-pid", str(2**22 + 1)],
        input=b"", env=env, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (0, b"")
    lines = log.read_text().splitlines()
    assert lines[0].endswith(f"ERROR hakeeper.guard: guard: hakeeperd (pid {2**22 + 1}) is gone")
    assert all(" hakeeper-guard[" in line for line in lines)


@pytest.mark.slow
def test_the_three_processes_of_a_lan_node_share_one_rotated_file_read_back_whole(lan: Lan, tmp_path: Path) -> None:
    """hakeeperd, its heartbeat process and its guard each write and rotate the same small file: no record is
    lost, cut or mixed with another, and ``hakeeper log`` reads it back across the rotated files."""
    ha = HaCluster(lan, tmp_path / "cluster")
    config = tmp_path / "hakeeper.toml"
    config.write_text('[log]\ntarget = "file"\nlevel = "DEBUG"\nmax_bytes = 600\nbackups = 500\n')
    for name in ha.names:
        ha.daemon_env[name] = {"HAKEEPER_CONFIG": str(config)}  # over the lab's own /dev/null
    ha.start_all()
    ha.wait(ha.all_alive, ALIVE_TIMEOUT, "every path ALIVE on every node")
    path = ha.root("node1") / "hakeeperd.log"
    files = log_files(str(path))
    assert len(files) > 2, "the file did not rotate"
    for name in files:
        for line in Path(name).read_text().splitlines():
            assert HEAD.fullmatch(line) or line.startswith(CONTINUATION), f"{name}: {line!r}"
    records = list(read_files(files))
    writers = {match["process"] for r in records if (match := HEAD.match(r.text)) is not None}
    assert {"hakeeperd", "hakeeper-heartbeat"} <= writers
    times = [r.time for r in records if r.time is not None]
    assert len(times) == len(records)
    shown = [line for line in ha.ok("node1", "hakeeper", "log").splitlines() if not line.startswith(CONTINUATION)]
    assert shown[: len(records)] == [r.text.split("\n")[0] for r in records]  # and what was logged since
