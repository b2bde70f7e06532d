"""systemd's notify protocol (hakeeper.notify) against a datagram socket the test owns, as systemd's would be."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hakeeper.notify import MAX_STATUS, Notifier


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """systemd's end: a datagram socket bound at a path; yields it and the address for $NOTIFY_SOCKET."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    try:
        yield sock, str(path)
    finally:
        sock.close()


def received(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_ready_status_and_stopping_arrive_as_systemd_reads_them(listener: tuple[socket.socket, str]) -> None:
    sock, address = listener
    notifier = Notifier(address)
    assert notifier.enabled
    assert notifier.ready("serving node1: 2 of 2 peers alive")
    assert received(sock) == ["READY=1", "STATUS=serving node1: 2 of 2 peers alive"]
    assert notifier.status("a status\nover two lines")
    assert received(sock) == ["STATUS=a status over two lines"]  # one line: a newline would start a new field
    assert notifier.stopping()
    assert received(sock) == ["STOPPING=1", "STATUS=stopping"]
    notifier.status("x" * 1000)
    (status,) = received(sock)
    assert len(status) == len("STATUS=") + MAX_STATUS and status.endswith("...")
    notifier.close()


def test_an_address_beginning_with_at_is_in_the_abstract_namespace() -> None:
    name = f"hakeeper-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    try:
        notifier = Notifier("@" + name)
        assert notifier.ready("ok")
        assert received(sock) == ["READY=1", "STATUS=ok"]
        notifier.close()
    finally:
        sock.close()


def test_without_a_socket_nothing_is_sent_and_a_lost_systemd_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert not Notifier(None).enabled
    assert not Notifier(None).ready("x")
    gone = Notifier(str(tmp_path / "nobody-listens"))
    with caplog.at_level(logging.WARNING, logger="hakeeper.notify"):
        assert not gone.send("WATCHDOG=1")
    assert "cannot notify systemd on" in caplog.text
    gone.close()


def test_from_environ_reads_the_watchdog_and_unsets_what_children_would_inherit() -> None:
    env = {"NOTIFY_SOCKET": "@sd", "WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid()), "PATH": "/bin"}
    notifier = Notifier.from_environ(env)
    assert (notifier.address, notifier.watchdog_timeout) == ("@sd", 10.0)
    assert env == {"PATH": "/bin"}
    no_pid = Notifier.from_environ({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "4000000"})
    assert no_pid.watchdog_timeout == 4.0
    kept = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "4000000"}
    Notifier.from_environ(kept, unset=False)
    assert kept == {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "4000000"}


@pytest.mark.parametrize(
    "env",
    [
        {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"},  # the watchdog of another pid
        {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "ten"},
        {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "0"},
        {"NOTIFY_SOCKET": "/run/x"},
    ],
)
def test_no_watchdog_unless_systemd_set_one_for_this_process(env: dict[str, str]) -> None:
    notifier = Notifier.from_environ(env)
    assert notifier.watchdog_timeout is None
    assert asyncio.run(asyncio.wait_for(notifier.watchdog(), 5)) is None  # returns at once: nothing to ping


def test_the_watchdog_pings_every_half_interval_with_the_status_when_it_changes(
    listener: tuple[socket.socket, str],
) -> None:
    sock, address = listener
    notifier = Notifier(address, watchdog_usec=20_000)  # a ping every 10 ms
    statuses = iter(["serving node1: 1 of 2 peers alive", "serving node1: 1 of 2 peers alive"])

    def status() -> str:
        return next(statuses, "serving node1: 2 of 2 peers alive")

    async def run() -> list[bytes]:
        pinger = asyncio.create_task(notifier.watchdog(status))
        loop = asyncio.get_running_loop()
        try:
            return [await asyncio.wait_for(loop.sock_recv(sock, 4096), 5) for _ in range(5)]
        finally:
            pinger.cancel()

    sock.setblocking(False)
    messages = [m.decode().split("\n") for m in asyncio.run(run())]
    assert messages == [
        ["WATCHDOG=1", "STATUS=serving node1: 1 of 2 peers alive"],
        ["WATCHDOG=1"],  # the same status is not sent again
        ["WATCHDOG=1", "STATUS=serving node1: 2 of 2 peers alive"],
        ["WATCHDOG=1"],
        ["WATCHDOG=1"],
    ]
    notifier.close()


def test_a_status_that_fails_does_not_stop_the_pings(listener: tuple[socket.socket, str]) -> None:
    sock, address = listener
    notifier = Notifier(address, watchdog_usec=20_000)

    def broken() -> str:
        raise RuntimeError("no status")

    async def run() -> list[bytes]:
        pinger = asyncio.create_task(notifier.watchdog(broken))
        loop = asyncio.get_running_loop()
        try:
            return [await asyncio.wait_for(loop.sock_recv(sock, 4096), 5) for _ in range(2)]
        finally:
            pinger.cancel()

    sock.setblocking(False)
    assert asyncio.run(run()) == [b"WATCHDOG=1", b"WATCHDOG=1"]
    notifier.close()
