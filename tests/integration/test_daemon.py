"""hakeeperd as a user meets it: started and stopped in the background, commands through it,
and a real HTTP server killed with SIGKILL that comes back by itself."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from hakeeper.demo import CHECK, REMOVE, RESTORE  # the demo's web server scripts: one copy of them
from tests.ports import free_port

BIN = Path(sys.executable).parent


def serving(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=0.5) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Node:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = dict(os.environ, HAKEEPER_ROOT=str(root), HAKEEPER_NODE="node1")

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(BIN / argv[0]), *argv[1:]], env=self.env, capture_output=True, text=True, timeout=120, check=False
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{argv} exit {done.returncode}: {done.stderr}")
        return done

    def log(self) -> str:
        path = self.root / "hakeeperd.log"
        return path.read_text() if path.exists() else ""

    def daemon_pid(self) -> int:
        return int((self.root / "hakeeperd.pid").read_text().strip())

    def web_pid(self) -> int | None:
        path = self.root / "web.pid"
        try:
            return int(path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path / "state")
    n.root.mkdir()
    try:
        yield n
    finally:
        for pidfile in ("hakeeperd.pid", "web.pid"):
            try:
                pid = int((n.root / pidfile).read_text().strip())
            except (FileNotFoundError, ValueError):
                continue
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def web(node: Node, tmp_path: Path) -> int:
    """A gen/app web server resource, created with the daemon running; returns its port."""
    assert node.run("lkstart").stdout.startswith("hakeeperd started")
    return create_web(node, tmp_path)


def create_web(node: Node, tmp_path: Path) -> int:
    """Create the gen/app resource web (a web server checked every second) through the running daemon; its port."""
    port = free_port()
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    for name, text in (("restore", RESTORE), ("remove", REMOVE), ("check", CHECK)):
        path = scripts / name
        path.write_text(text.format(python=sys.executable, port=port))
        path.chmod(0o755)
    node.run(
        "hakeeper", "create", "gen/app", "-t", "web", "-Q", "1",
        f"restore={scripts / 'restore'}", f"remove={scripts / 'remove'}", f"quickCheck={scripts / 'check'}",
    )  # fmt: skip
    return port


@pytest.mark.slow
def test_commands_go_through_the_daemon_and_its_socket_is_private(node: Node, web: int) -> None:
    sock = node.root / "hakeeperd.sock"
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    done = node.run("perform_action", "-t", "web", "-a", "restore")
    assert done.stdout == "restore of web succeeded: web\n"
    assert serving(web)
    assert "web OSU -> ISP (perform_action by " in node.log(), "the daemon, not the command, did the restore"
    status = node.run("lcdstatus", "-e").stdout
    assert "web" in status and "ISP" in status
    second = subprocess.run(
        [str(BIN / "hakeeperd"), "--root", str(node.root)], capture_output=True, text=True, timeout=30, check=False
    )
    assert second.returncode == 1
    assert "runs already" in second.stderr


@pytest.mark.slow
def test_a_killed_server_comes_back_by_quickcheck_and_by_sendevent(node: Node, web: int) -> None:
    node.run("perform_action", "-t", "web", "-a", "restore")
    first = node.web_pid()
    assert first is not None and serving(web)
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: node.web_pid() not in (None, first) and serving(web), 15, "quickCheck to restart the server")
    wait_for(lambda: "web recovered in place" in node.log(), 15, "the daemon to log the recovery")
    # The sendevent path: checks off, a monitor reports the death.
    node.run("ins_setchkint", "-t", "web", "-v", "0")
    second = node.web_pid()
    assert second is not None
    os.kill(second, signal.SIGKILL)
    done = node.run("sendevent", "-C", "generic", "-E", "failure", "-n", "web", "-m", "test-monitor")
    assert "local recovery of web started" in done.stdout
    wait_for(lambda: node.web_pid() not in (None, second) and serving(web), 15, "sendevent to restart the server")
    # The server answers before the recovery records its end: the state is ISP once it has.
    wait_for(lambda: node.run("ins_list", "-t", "web", "-f:").stdout.split(":")[4] == "ISP", 15, "web to be ISP")
    assert "web recovered in place (remove and restore of web) after: generic/failure" in node.log()


@pytest.mark.slow
def test_sigterm_leaves_the_application_running_and_lkstop_takes_it_down(node: Node, web: int) -> None:
    node.run("perform_action", "-t", "web", "-a", "restore")
    daemon = node.daemon_pid()
    os.kill(daemon, signal.SIGTERM)
    wait_for(lambda: not alive(daemon), 30, "hakeeperd to exit on SIGTERM")
    assert serving(web), "SIGTERM must not take the application down"
    assert "leaving in service: web" in node.log()
    assert not (node.root / "hakeeperd.sock").exists()
    # Without the daemon the commands work on the LCD directly.
    assert node.run("ins_list", "-t", "web", "-f:").stdout.split(":")[4] == "ISP"
    node.run("lkstart")
    assert node.run("lkstop").stdout == "hakeeperd stopped; resources out of service\n"
    assert not serving(web)
    assert node.run("ins_list", "-t", "web", "-f:").stdout.split(":")[4] == "OSU"
    assert node.run("lkstop").stdout == "hakeeperd is not running\n"


@pytest.mark.slow
def test_malformed_requests_are_refused_and_the_daemon_keeps_serving(node: Node, web: int) -> None:
    for payload in (b"not json\n", b'{"command": 5}\n', b"[1,2]\n", b"\xff\xfe\n"):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(node.root / "hakeeperd.sock"))
            s.sendall(payload)
            answer = s.recv(65536)
        assert b'"code": 2' in answer
    assert node.run("ins_list", "-t", "web", "-f:").returncode == 0
    assert "malformed request" in node.log()


def test_sendevent_without_a_daemon_says_so(tmp_path: Path) -> None:
    env = dict(os.environ, HAKEEPER_ROOT=str(tmp_path / "state"))
    done = subprocess.run(
        [str(BIN / "sendevent"), "-C", "generic", "-E", "failure", "-n", "web"],
        env=env, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    assert "hakeeperd is not running" in done.stderr


@pytest.mark.slow
def test_an_administrators_remove_stays_removed_even_if_a_quickcheck_runs_during_it(node: Node, tmp_path: Path) -> None:
    """A quickCheck that starts while a slow remove runs sees the server stopped: that must not undo the remove.

    The remove script stops the server and then takes 0.6 s more; with a quickCheck every second, some
    of the rounds have a check that starts in that window (before the engine records OSU). Today's
    daemon handed that "stopped" to local recovery, which restored web 150 ms after the remove.
    """
    port = free_port()
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    slow_remove = REMOVE.replace("exit 0", "sleep 0.6; exit 0")
    assert slow_remove != REMOVE
    for name, text in (("restore", RESTORE), ("remove", slow_remove), ("check", CHECK)):
        path = scripts / name
        path.write_text(text.format(python=sys.executable, port=port))
        path.chmod(0o755)
    node.run("lkstart")
    node.run(
        "hakeeper", "create", "gen/app", "-t", "web", "-Q", "1",
        f"restore={scripts / 'restore'}", f"remove={scripts / 'remove'}", f"quickCheck={scripts / 'check'}",
    )  # fmt: skip
    for round in range(6):
        node.run("perform_action", "-t", "web", "-a", "restore")
        assert serving(port)
        time.sleep(0.3 + 0.25 * round)  # the remove starts at different points of the check interval
        assert node.run("perform_action", "-t", "web", "-a", "remove").stdout == "remove of web succeeded: web\n"
        time.sleep(2.5)  # two quickCheck intervals and more: what would come back has come back
        state = node.run("ins_list", "-t", "web", "-f:").stdout.split(":")
        assert state[4] == "OSU", f"round {round}: web is {state[4]} ({state[5].strip()}) after the remove"
        assert "perform_action by" in state[5]
        assert not serving(port), f"round {round}: the server runs again after the remove"
        assert "local recovery of web" not in node.log()
    done = node.run("sendevent", "-C", "generic", "-E", "failure", "-n", "web")
    assert "web is OSU; no recovery" in done.stdout
    assert node.run("ins_list", "-t", "web", "-f:").stdout.split(":")[4] == "OSU"


@pytest.mark.slow
def test_a_hierarchy_extended_to_no_other_node_comes_in_service_at_start(node: Node, web: int) -> None:
    """LifeKeeper's AUTORES_ISP on a lone node: hakeeperd starts web by itself (no cluster, no quorum to wait for);
    INIT_OSU waits for the administrator."""
    node.run("lkstop")
    assert not serving(web)
    node.run("lkstart")
    wait_for(lambda: serving(web), 20, "hakeeperd to bring web in service at start")
    wait_for(lambda: node.run("ins_list", "-t", "web", "-f:").stdout.split(":")[4] == "ISP", 15, "web to be ISP")
    assert "web: in service nowhere at start and extended to no other node; restoring web here" in node.log()
    node.run("lkstop")
    node.run("ins_setinit", "-t", "web", "-I", "INIT_OSU")
    node.run("lkstart")
    node.run("lkstop", "-f")  # the start ran before hakeeperd answered lkstop: anything it restored would run now
    assert not serving(web)
    assert node.run("ins_list", "-t", "web", "-f:").stdout.split(":")[4] == "OSU"
