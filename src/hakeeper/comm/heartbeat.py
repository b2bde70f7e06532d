"""Heartbeats: a small process of their own, at real-time priority, that nothing else can delay.

LifeKeeper runs its LCM as a real-time process because heartbeats that wait
behind other work make healthy nodes look dead. hakeeperd starts this module as
a child process (``python -m hakeeper.comm.heartbeat``) that:

- raises itself to SCHED_FIFO and locks its memory when the kernel allows it;
- never touches the disk or the LCD: hakeeperd sends it its configuration (this
  node, the paths, the timing settings) as JSON lines on stdin, and it reports
  path and node state changes as JSON lines on stdout; stdin closing means
  hakeeperd is gone and the process exits;
- for every path, dials the peer's heartbeat port from the path's local
  address over mutual TLS and sends a small frame every interval; and accepts
  the peers' connections, each frame heard marking its path ALIVE
  (:class:`hakeeper.comm.paths.PathMonitor`).

A frame carries the sender's interval and miss count; a peer whose timing
differs is refused and logged, instead of the flapping paths LifeKeeper's users
get when ``LCMHBEATTIME`` differs between servers. Malformed or oversized
frames close the connection with a log line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hakeeper.comm import tls
from hakeeper.comm.paths import PathMonitor, PathState, node_state
from hakeeper.db.model import CommPath

logger = logging.getLogger(__name__)

MAX_FRAME = 512


@dataclass(frozen=True)
class Config:
    """What the heartbeat process needs, sent by hakeeperd."""

    node: str
    port: int
    interval: float
    misses: int
    paths: tuple[CommPath, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "port": self.port,
            "interval": self.interval,
            "misses": self.misses,
            "paths": [[p.node, p.kind, p.local, p.remote, p.priority] for p in self.paths],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Config:
        return cls(
            node=str(data["node"]),
            port=int(data["port"]),
            interval=float(data["interval"]),
            misses=int(data["misses"]),
            paths=tuple(CommPath(*p) for p in data["paths"]),
        )


Emit = Callable[[dict[str, Any]], None]


@dataclass
class Heartbeats:
    """Sends and hears heartbeats on every path of ``config``; reports changes through ``emit``."""

    config: Config
    identity: tls.Identity
    emit: Emit
    clock: Callable[[], float] = time.monotonic
    monitors: dict[str, PathMonitor] = field(default_factory=dict)
    _nodes: dict[str, PathState] = field(default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _servers: list[asyncio.Server] = field(default_factory=list)
    _refused: set[tuple[str, str]] = field(default_factory=set)
    _client_ctx: ssl.SSLContext | None = None
    #: Connections are dropped when their path goes DEAD: frames a partition held back are stale
    #: (they carry old settings, and would make the path look ALIVE for a moment when it heals).
    _incoming: dict[str, set[asyncio.StreamWriter]] = field(default_factory=dict)
    _dead_epochs: dict[str, int] = field(default_factory=dict)

    async def start(self, previous: Heartbeats | None = None) -> None:
        """Start on the paths of the configuration; ``previous``: the configuration this one replaces.

        Paths kept from ``previous`` keep their state and last heartbeat, so that
        a new setting or path does not make every node look UNKNOWN (or DEAD again).
        """
        now = self.clock()
        cfg = self.config
        self._client_ctx = tls.client_context(self.identity)
        accept = tls.accept_tls(self.identity, self._serve)
        self.monitors = {p.key: PathMonitor(cfg.interval, cfg.misses, now) for p in cfg.paths}
        self._nodes = {p.node: PathState.UNKNOWN for p in cfg.paths}
        if previous is not None:
            for key, monitor in self.monitors.items():
                old = previous.monitors.get(key)
                if old is not None:
                    monitor.state, monitor.last_heard = old.state, old.last_heard
            self._nodes.update({n: s for n, s in previous._nodes.items() if n in self._nodes})
            self._dead_epochs.update(previous._dead_epochs)
        for local in sorted({p.local for p in cfg.paths}):
            try:
                server = await asyncio.start_server(accept, local, cfg.port, reuse_address=True, limit=MAX_FRAME * 2)
            except OSError as exc:
                logger.error("cannot listen for heartbeats on %s port %d: %s", local, cfg.port, exc.strerror)
                continue
            self._servers.append(server)
        self._tasks = [asyncio.create_task(self._dial(p), name=f"heartbeat to {p.key}") for p in cfg.paths]
        self._tasks.append(asyncio.create_task(self._ticker(), name="heartbeat ticker"))

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self._servers.clear()

    # ---------------------------------------------------------------- sending

    def _frame(self, seq: int) -> bytes:
        cfg = self.config
        return (
            json.dumps({"hb": seq, "node": cfg.node, "interval": cfg.interval, "misses": cfg.misses}).encode() + b"\n"
        )

    async def _dial(self, path: CommPath) -> None:
        """Keep a connection to the peer on this path and send a frame every interval."""
        cfg = self.config
        budget = cfg.interval * cfg.misses
        seq = 0
        while True:
            writer: asyncio.StreamWriter | None = None
            try:
                async with asyncio.timeout(budget):
                    _reader, writer = await asyncio.open_connection(
                        path.remote, cfg.port, ssl=self._client_ctx, local_addr=(path.local, 0)
                    )
                found = tls.peer_node_name(writer.get_extra_info("ssl_object"))
                if found != path.node:
                    self._refuse(path.key, f"{path.remote} is node {found!r}, not {path.node!r}")
                    await asyncio.sleep(budget)
                    continue
                epoch = self._dead_epochs.get(path.key, 0)
                while self._dead_epochs.get(path.key, 0) == epoch:  # until the path goes DEAD
                    seq += 1
                    writer.write(self._frame(seq))
                    async with asyncio.timeout(budget):
                        await writer.drain()
                    await asyncio.sleep(cfg.interval)
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                logger.debug("heartbeat connection %s: %s", path.key, exc)
            finally:
                if writer is not None:
                    writer.transport.abort()  # what is still queued is stale: drop it
            await asyncio.sleep(cfg.interval)

    # ---------------------------------------------------------------- hearing

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: tls.Peer) -> None:
        """One peer's heartbeats on one path (the TLS handshake and its refusals are tls.accept_tls's)."""
        peer_ip = str((writer.get_extra_info("peername") or ("?",))[0])
        local_ip = str((writer.get_extra_info("sockname") or ("?",))[0])
        path = self._path_of(peer.node, local_ip, peer_ip)
        if path is None:
            self._refuse(peer_ip, f"no path here from node {peer.node!r} at {peer_ip} to {local_ip}")
            return
        incoming = self._incoming.setdefault(path.key, set())
        incoming.add(writer)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                if len(line) > MAX_FRAME or not line.endswith(b"\n"):
                    self._refuse(path.key, "oversized heartbeat frame")
                    return
                try:
                    frame = json.loads(line)
                    interval, misses = float(frame["interval"]), int(frame["misses"])
                except (ValueError, KeyError, TypeError):
                    self._refuse(path.key, "malformed heartbeat frame")
                    return
                if (interval, misses) != (self.config.interval, self.config.misses):
                    self._refuse(
                        path.key,
                        f"{path.node} sends heartbeats every {interval:g} s with {misses} misses, this node "
                        f"{self.config.interval:g} s with {self.config.misses}: the settings must be equal",
                    )
                    return
                self._heard(path.key)
        except (OSError, ValueError, asyncio.LimitOverrunError) as exc:  # ssl.SSLError is an OSError
            if isinstance(exc, ValueError) and "limit" in str(exc):
                self._refuse(path.key, "oversized heartbeat frame")
            logger.debug("heartbeat stream from %s: %s", peer_ip, exc)
        finally:
            incoming.discard(writer)

    def _path_of(self, peer: str | None, local: str, remote: str) -> CommPath | None:
        for path in self.config.paths:
            if path.node == peer and path.local == local and path.remote == remote:
                return path
        return None

    def _refuse(self, where: str, reason: str) -> None:
        if (where, reason) not in self._refused:  # say it once, not at every reconnection
            self._refused.add((where, reason))
            logger.warning("heartbeat refused on %s: %s", where, reason)

    def _heard(self, key: str) -> None:
        change = self.monitors[key].heard(self.clock())
        if change is not None:
            self._changed(key, change)

    async def _ticker(self) -> None:
        step = self.config.interval / 4
        while True:
            await asyncio.sleep(step)
            now = self.clock()
            for key, monitor in self.monitors.items():
                change = monitor.tick(now)
                if change is not None:
                    self._changed(key, change)

    def _changed(self, key: str, state: PathState) -> None:
        if state is PathState.DEAD:
            self._dead_epochs[key] = self._dead_epochs.get(key, 0) + 1
            for writer in self._incoming.pop(key, set()):
                writer.transport.abort()
        node = key.split("/", 1)[0]
        self.emit({"event": "path", "path": key, "node": node, "state": state.value})
        states = [m.state for k, m in self.monitors.items() if k.split("/", 1)[0] == node]
        now_state = node_state(states)
        if now_state is not self._nodes.get(node):
            self._nodes[node] = now_state
            alive = sum(s is PathState.ALIVE for s in states)
            self.emit({"event": "node", "node": node, "state": now_state.value, "paths": len(states), "alive": alive})


def realtime() -> str:
    """Raise this process to SCHED_FIFO and lock its memory, when allowed; say what happened."""
    notes = []
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        notes.append("SCHED_FIFO 10")
    except (OSError, AttributeError) as exc:
        notes.append(f"normal scheduling ({exc})")
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.mlockall(3) == 0:  # MCL_CURRENT | MCL_FUTURE
            notes.append("memory locked")
    except OSError:
        pass
    return ", ".join(notes)


async def _main(identity: tls.Identity) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def emit(event: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()

    current: Heartbeats | None = None
    try:
        while True:
            line = await reader.readline()
            if not line:
                return  # hakeeperd is gone
            try:
                config = Config.from_json(json.loads(line))
            except (ValueError, KeyError, TypeError) as exc:
                logger.error("heartbeat: bad configuration from hakeeperd: %s", exc)
                continue
            previous = current
            if previous is not None:
                await previous.stop()
            current = Heartbeats(config, identity, emit)
            await current.start(previous)
            emit({"event": "configured", "paths": len(config.paths)})
    finally:
        if current is not None:
            await current.stop()


def main() -> None:
    """``python -m hakeeper.comm.heartbeat --root DIR``: run by hakeeperd."""
    import argparse

    parser = argparse.ArgumentParser(prog="hakeeper-heartbeat")
    parser.add_argument("--root", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logger.info("heartbeat process %d: %s", os.getpid(), realtime())
    asyncio.run(_main(tls.load_identity(args.root)))


if __name__ == "__main__":
    main()
