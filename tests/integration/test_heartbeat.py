"""Heartbeats between real processes' worth of code on loopback addresses (127.0.x.y), over mutual TLS.

Each node listens on its own addresses, as on separate machines; faults that
need a real network (a cut path, a partition, netem) are in the test-LAN tests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import select
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hakeeper.comm import tls
from hakeeper.comm.heartbeat import Config, Heartbeats
from hakeeper.comm.identity import Identity
from hakeeper.db.model import CommPath
from hakeeper.lab.cluster import make_cluster
from tests.ports import free_port

NODES = ["node1", "node2", "node3"]
INTERVAL, MISSES = 0.1, 3  # a 0.3 s budget keeps the tests short


def address(node: str, net: int) -> str:
    return f"127.0.{net}.{10 + NODES.index(node) + 1}"


def config(node: str, port: int, *, interval: float = INTERVAL, nets: tuple[int, ...] = (0, 1)) -> Config:
    paths = tuple(
        CommPath(other, "TCP", address(node, net), address(other, net), i + 1)
        for other in NODES
        if other != node
        for i, net in enumerate(nets)
    )
    return Config(node, port, interval, MISSES, paths)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[float, dict[str, Any]]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.append((time.monotonic(), event))

    def node_state(self, node: str) -> str | None:
        states = [e["state"] for _, e in self.events if e["event"] == "node" and e["node"] == node]
        return states[-1] if states else None

    def when(self, node: str, state: str) -> float | None:
        times = [t for t, e in self.events if e["event"] == "node" and e["node"] == node and e["state"] == state]
        return times[-1] if times else None


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def identities(tmp_path: Path) -> dict[str, Identity]:
    return make_cluster(tmp_path, NODES)


def test_paths_come_alive_and_a_stopped_node_is_declared_dead_within_the_budget(
    identities: dict[str, Identity],
) -> None:
    port = free_port()

    async def scenario() -> None:
        recorders = {n: Recorder() for n in NODES}
        beats = {n: Heartbeats(config(n, port), identities[n], recorders[n]) for n in NODES}
        for hb in beats.values():
            await hb.start()
        try:
            await until(
                lambda: all(recorders[n].node_state(o) == "ALIVE" for n in NODES for o in NODES if o != n),
                5, "every node to see every other ALIVE",
            )  # fmt: skip
            assert all(m.state.value == "ALIVE" for m in beats["node1"].monitors.values()), "both paths alive"
            await beats["node3"].stop()
            await until(
                lambda: all(recorders[n].node_state("node3") == "DEAD" for n in ("node1", "node2")),
                5, "node3 to be declared dead",
            )  # fmt: skip
            for n in ("node1", "node2"):
                # Never before the budget ran out since node3's last frame; on a busy machine (this test's
                # heartbeats run at normal priority, not SCHED_FIFO) the loop may wake late, hence the wide bound.
                heard = max(m.last_heard or 0.0 for k, m in beats[n].monitors.items() if k.startswith("node3/"))
                took = (recorders[n].when("node3", "DEAD") or 0) - heard
                assert INTERVAL * MISSES <= took <= INTERVAL * MISSES + 2.0, (
                    f"{n}: DEAD {took:.2f} s after the last frame"
                )
                assert recorders[n].node_state("node2" if n == "node1" else "node1") == "ALIVE"
                assert [
                    e["heard"] for _, e in recorders[n].events if e["event"] == "node" and e["state"] == "DEAD"
                ] == [True]
            # node3 comes back.
            beats["node3"] = Heartbeats(config("node3", port), identities["node3"], recorders["node3"])
            await beats["node3"].start()
            await until(lambda: recorders["node1"].node_state("node3") == "ALIVE", 5, "node3 to be ALIVE again")
        finally:
            for hb in beats.values():
                await hb.stop()

    asyncio.run(scenario())


def test_a_peer_never_heard_is_dead_after_the_budget_and_said_to_be_never_heard(
    identities: dict[str, Identity],
) -> None:
    """At start, a peer whose hakeeperd does not run yet is DEAD for quorum, but the event says it was never heard."""

    async def scenario() -> None:
        recorder = Recorder()
        alone = Heartbeats(config("node1", free_port()), identities["node1"], recorder)
        await alone.start()
        try:
            await until(lambda: recorder.node_state("node3") == "DEAD", 5, "node3 DEAD")
            dead = [e for _, e in recorder.events if e["event"] == "node" and e["node"] == "node3"]
            assert dead == [{"event": "node", "node": "node3", "state": "DEAD", "paths": 2, "alive": 0, "heard": False}]
        finally:
            await alone.stop()

    asyncio.run(scenario())


def test_a_peer_with_other_timing_is_refused_and_logged(
    identities: dict[str, Identity], caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()

    async def scenario() -> None:
        rec = Recorder()
        one = Heartbeats(config("node1", port, nets=(0,)), identities["node1"], rec)
        two = Heartbeats(config("node2", port, interval=0.2, nets=(0,)), identities["node2"], Recorder())
        await one.start()
        await two.start()
        try:
            await asyncio.sleep(1.0)
        finally:
            await one.stop()
            await two.stop()
        assert rec.node_state("node2") == "DEAD"

    with caplog.at_level(logging.WARNING, logger="hakeeper.comm.heartbeat"):
        asyncio.run(scenario())
    assert any("the settings must be equal" in r.getMessage() for r in caplog.records)


def test_strangers_garbage_and_oversized_frames_are_refused_and_the_node_keeps_hearing(
    identities: dict[str, Identity], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    stranger = make_cluster(tmp_path / "other", ["node2"], cluster="other")["node2"]

    async def send(identity: Identity | None, payload: bytes) -> None:
        context = tls.client_context(identity) if identity else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if identity is None:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        try:
            _, writer = await asyncio.open_connection(
                address("node1", 0), port, ssl=context, local_addr=(address("node2", 0), 0)
            )
            writer.write(payload)
            await writer.drain()
            await asyncio.sleep(0.2)
            writer.close()
        except (OSError, ssl.SSLError):
            pass  # refused during the handshake: what we expect of strangers

    async def scenario() -> None:
        rec = Recorder()
        one = Heartbeats(config("node1", port, nets=(0,)), identities["node1"], rec)
        two = Heartbeats(config("node2", port, nets=(0,)), identities["node2"], Recorder())
        await one.start()
        await two.start()
        try:
            await until(lambda: rec.node_state("node2") == "ALIVE", 5, "node2 ALIVE")
            await send(stranger, b'{"hb": 1}\n')
            await send(None, b"hello\n")
            await send(identities["node2"], b"not json at all\n")
            await send(identities["node2"], b"x" * 5000 + b"\n")
            await asyncio.sleep(INTERVAL * MISSES * 2)
            assert rec.node_state("node2") == "ALIVE", "the real heartbeats kept the path alive"
        finally:
            await one.stop()
            await two.stop()

    with caplog.at_level(logging.WARNING):
        asyncio.run(scenario())
    messages = " | ".join(r.getMessage() for r in caplog.records)
    assert "refused TLS connection" in messages
    assert "malformed heartbeat frame" in messages
    assert "oversized heartbeat frame" in messages


def start_process(node: str, other: str, port: int, root: Path) -> subprocess.Popen[bytes]:
    """The heartbeat process as hakeeperd starts it (comm/link.py), configured for one path to ``other``."""
    paths = (CommPath(other, "TCP", address(node, 0), address(other, 0), 1),)
    with open(root / f"{node}.err", "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hakeeper.comm.heartbeat", "--root", str(root / node)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
        )  # fmt: skip
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(Config(node, port, INTERVAL, MISSES, paths).as_json()).encode() + b"\n")
    proc.stdin.flush()
    return proc


def read_until(proc: subprocess.Popen[bytes], text: str, timeout: float) -> None:
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout
    while text.encode() not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"timed out after {timeout} s waiting for {text!r} in {seen!r}"
        if select.select([proc.stdout], [], [], left)[0]:
            chunk = os.read(proc.stdout.fileno(), 4096)
            assert chunk, f"stdout closed before {text!r}: {seen!r}"
            seen += chunk


@pytest.mark.parametrize("how", ["stdin closes", "hakeeperd killed", "stdout unread", "SIGTERM", "SIGINT"])
def test_the_heartbeat_process_exits_cleanly_when_hakeeperd_goes(
    identities: dict[str, Identity], tmp_path: Path, how: str
) -> None:
    """No traceback, exit code 0, while connections are live (which used to log CancelledError tracebacks)."""
    port = free_port()
    one = start_process("node1", "node2", port, tmp_path)
    two = start_process("node2", "node1", port, tmp_path)
    try:
        read_until(one, '"node": "node2", "state": "ALIVE"', 10)
        assert one.stdin is not None and one.stdout is not None and two.stdin is not None
        if how == "stdin closes":
            one.stdin.close()
        elif how == "hakeeperd killed":  # what the process sees of it: both pipes close
            one.stdin.close()
            one.stdout.close()
        elif how == "stdout unread":  # its next report (node2 DEAD) finds nobody to read it
            one.stdout.close()
            two.stdin.close()
        else:
            one.send_signal(getattr(signal, how))
        code = one.wait(timeout=10)
    finally:
        for proc in (one, two):
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None and not pipe.closed:
                    pipe.close()
    err = (tmp_path / "node1.err").read_text()
    assert code == 0, err
    for bad in ("Traceback", "CancelledError", " ERROR ", "Exception ignored"):
        assert bad not in err, err
    assert "exits:" in err
