"""hakeeperd under Type=notify, as systemd runs it: a real daemon started with ``$NOTIFY_SOCKET`` and
``$WATCHDOG_USEC`` pointing at a datagram socket the test owns, which plays systemd's end."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hakeeper.supervise import FAULTS_ENV
from tests.integration.test_supervision import TRACEBACK, inject

BIN = Path(sys.executable).parent
WATCHDOG_USEC = 400_000  # WatchdogSec=0.4s: a ping every 0.2 s
WAIT = 30.0  # the longest any one message may take to come


@dataclass
class Systemd:
    """systemd's end of the notify socket: every message hakeeperd sent, in order."""

    sock: socket.socket
    messages: list[list[str]] = field(default_factory=list)

    def next(self, timeout: float = WAIT) -> list[str]:
        self.sock.settimeout(timeout)
        message = self.sock.recv(4096).decode().split("\n")
        self.messages.append(message)
        return message

    def drain(self) -> None:
        """Forget the messages sent until now."""
        self.sock.setblocking(False)
        try:
            while True:
                self.messages.append(self.sock.recv(4096).decode().split("\n"))
        except BlockingIOError:
            pass

    def until(self, key: str, timeout: float = WAIT) -> list[str]:
        """Read messages until one has ``key`` (e.g. ``READY=1``); returns that one."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.next(left)
            if key in message:
                return message
        raise AssertionError(f"no {key} within {timeout} s; received: {self.messages}")


@dataclass
class Daemon:
    root: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes]

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / argv[0]), *argv[1:]], env=self.env, capture_output=True, text=True, timeout=120, check=False
        )


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[Systemd]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    try:
        yield Systemd(sock)
    finally:
        sock.close()


def start(tmp_path: Path, *, cluster: bool, **extra: str) -> Daemon:
    root = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    env.update(HAKEEPER_ROOT=str(root), HAKEEPER_NODE="node1")
    if cluster:  # a cluster's node: guard, heartbeats, message listener, and the catch-up before READY
        done = subprocess.run([str(BIN / "hakeeper"), "cluster", "init"], env=env, capture_output=True, text=True,
                              timeout=120, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr
    daemon_env = dict(env, NOTIFY_SOCKET=str(tmp_path / "notify"), WATCHDOG_USEC=str(WATCHDOG_USEC), **extra)
    log = open(tmp_path / "hakeeperd.log", "ab")  # noqa: SIM115 - the child's; closed when it is started
    with log:
        proc = subprocess.Popen(
            [str(BIN / "hakeeperd"), "--root", str(root)], env=daemon_env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=log, start_new_session=True,
        )  # fmt: skip
    return Daemon(root, env, proc)


@pytest.fixture(params=["alone", "cluster"])
def daemon(request: pytest.FixtureRequest, tmp_path: Path, systemd: Systemd) -> Iterator[Daemon]:
    d = start(tmp_path, cluster=request.param == "cluster")
    try:
        yield d
    finally:
        if d.proc.poll() is None:
            os.kill(d.proc.pid, signal.SIGKILL)
            d.proc.wait(timeout=30)


def test_hakeeperd_tells_systemd_ready_status_watchdog_and_stopping(
    daemon: Daemon, systemd: Systemd, tmp_path: Path
) -> None:
    ready = systemd.until("READY=1")
    status = next((f for f in ready if f.startswith("STATUS=")), "")
    assert status in ("STATUS=serving node1 (no cluster)", "STATUS=serving node1: 0 of 0 peers alive"), ready
    # READY=1 means it serves: a command sent now is answered by hakeeperd itself, through its socket.
    ping = daemon.run("hakeeper", "lcdstatus")
    assert ping.returncode == 0, ping.stderr
    assert (daemon.root / "hakeeperd.sock").exists()
    assert not [m for m in systemd.messages[:-1] if "READY=1" in m]  # once, and nothing was ready before
    # The watchdog: a ping every half of WATCHDOG_USEC, again and again while the loop turns.
    pings = [systemd.until("WATCHDOG=1") for _ in range(4)]
    assert len(pings) == 4
    # The processes hakeeperd starts do not inherit systemd's socket (they would take it for theirs).
    env = daemon.run("lcdremexec", "--", "env")
    assert env.returncode == 0, env.stderr
    assert "HAKEEPER_ROOT=" in env.stdout and "NOTIFY_SOCKET" not in env.stdout and "WATCHDOG_" not in env.stdout
    stop = daemon.run("lkstop")
    assert stop.returncode == 0, stop.stderr
    stopping = systemd.until("STOPPING=1")
    assert any(f.startswith("STATUS=stopping") for f in stopping), stopping
    assert daemon.proc.wait(timeout=60) == 0
    log = (tmp_path / "hakeeperd.log").read_text()
    assert "cannot notify systemd" not in log, log


def test_without_a_watchdog_hakeeperd_sends_no_pings(tmp_path: Path, systemd: Systemd) -> None:
    """WatchdogSec= unset: READY and STOPPING only; and WATCHDOG_PID of another process is not ours."""
    root = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    env.update(HAKEEPER_ROOT=str(root), HAKEEPER_NODE="node1")
    daemon_env = dict(env, NOTIFY_SOCKET=str(tmp_path / "notify"), WATCHDOG_USEC=str(WATCHDOG_USEC), WATCHDOG_PID="1")
    proc = subprocess.Popen(
        [str(BIN / "hakeeperd"), "--root", str(root)], env=daemon_env, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        systemd.until("READY=1")
        time.sleep(4 * WATCHDOG_USEC / 1e6)  # room for several pings, were there a watchdog
        os.kill(proc.pid, signal.SIGTERM)  # = lkstop -f
        systemd.until("STOPPING=1")
        assert proc.wait(timeout=60) == 0
        assert not [m for m in systemd.messages if "WATCHDOG=1" in m], systemd.messages
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def test_the_watchdog_pinger_is_a_supervised_service_restarted_when_it_dies(tmp_path: Path, systemd: Systemd) -> None:
    """A death of the pinger is logged and it starts again: the pings resume, and hakeeperd serves on."""
    daemon = start(tmp_path, cluster=False, **{FAULTS_ENV: "1"})
    try:
        systemd.until("READY=1")
        inject(daemon.root, "watchdog")
        log = tmp_path / "hakeeperd.log"
        deadline = time.monotonic() + WAIT
        while "the watchdog service starts again" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert TRACEBACK.format("watchdog") in log.read_text(), "the death is logged with its traceback"
        assert "the watchdog service starts again" in log.read_text()
        systemd.drain()  # what the pinger sent before its death
        pings = [systemd.until("WATCHDOG=1") for _ in range(3)]  # so these come from the restarted one
        assert len(pings) == 3
        assert daemon.proc.poll() is None, "hakeeperd runs on"
        assert daemon.run("lkstop").returncode == 0
        assert daemon.proc.wait(timeout=60) == 0
    finally:
        if daemon.proc.poll() is None:
            os.kill(daemon.proc.pid, signal.SIGKILL)
            daemon.proc.wait(timeout=30)
