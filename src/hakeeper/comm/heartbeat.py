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
  the peers' connections, each frame heard (on any connection of the path)
  marking its path ALIVE (:class:`hakeeper.comm.paths.PathMonitor`).

A path that drops for less than the detection budget must not die of what
follows the drop: the peer acknowledges every frame, and a connection with a
frame unacknowledged for two intervals gets a fresh one dialed beside it, every
half interval, until one is answered (:class:`hakeeper.comm.paths.Dialer`) —
TCP would wait for its next retransmission, a second or more after a cable came
back. A pulled cable also makes the kernel forget the peer's MAC address, and
its next ARP request is a second away; so the process sends one itself
(:func:`solicit`) while the path is stalled.

A frame carries the sender's interval and miss count; a peer whose timing
differs is refused and logged, instead of the flapping paths LifeKeeper's users
get when ``LCMHBEATTIME`` differs between servers. Malformed or oversized
frames close the connection with a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import json
import logging
import math
import os
import signal
import socket
import ssl
import struct
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hakeeper.comm import tls
from hakeeper.comm.identity import Identity, load_identity
from hakeeper.comm.paths import Dialer, PathMonitor, PathState, node_state
from hakeeper.db.model import CommPath

logger = logging.getLogger("hakeeper.comm.heartbeat")  # not __main__ when run as python -m (see main)

MAX_FRAME = 4096
DEADLINE_SLACK = 0.0005  # the ticker wakes this long after a path's budget ran out (a timer may fire early)
RUNS_MAX = 3000  # bytes of the digest a frame carries at most (more: not carried; anti-entropy still compares)


@dataclass(frozen=True)
class Config:
    """What the heartbeat process needs, sent by hakeeperd."""

    node: str
    port: int
    interval: float
    misses: int
    paths: tuple[CommPath, ...] = ()
    voters: int = 0  # the cluster's nodes, when a majority of them is the quorum (0: do not watch it)

    def as_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "port": self.port,
            "interval": self.interval,
            "misses": self.misses,
            "paths": [[p.node, p.kind, p.local, p.remote, p.priority] for p in self.paths],
            "voters": self.voters,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Config:
        return cls(
            node=str(data["node"]),
            port=int(data["port"]),
            interval=float(data["interval"]),
            misses=int(data["misses"]),
            paths=tuple(CommPath(*p) for p in data["paths"]),
            voters=int(data.get("voters", 0)),
        )


@dataclass
class Lease:
    """When this node must cut its clients off by itself: it hears no majority.

    hakeeperd takes its resources out of service when it loses quorum, but a busy
    machine may slow its loop by more than the lease, and a frozen hakeeperd cannot
    act at all. So this process, which sees the loss first and runs SCHED_FIFO,
    removes the virtual addresses itself (``face``: tag -> address, sent by hakeeperd
    with its ticks; :mod:`hakeeper.comm.cut`), once per loss of quorum. hakeeperd ticks
    this process every quarter interval; when it has not ticked for an interval
    during a loss, this process also tells the guard, which records the cut in the
    LCD (once per loss of quorum).
    """

    voters: int
    stale_after: float
    last_tick: float
    sent: bool = False
    face: dict[str, str] = field(default_factory=dict)
    #: A majority was heard since the last cut (or start): only losing it cuts, as only a loss makes hakeeperd
    #: act (hakeeper.cluster.quorum). A node that starts alone keeps what it runs (a lone hierarchy).
    held: bool = False

    def lost(self, alive_peers: int) -> bool:
        return self.voters > 0 and 2 * (alive_peers + 1) <= self.voters

    def cut_due(self, alive_peers: int) -> bool:
        """The face is to be cut now, by this process: the majority heard until now is gone (once per loss)."""
        if not self.lost(alive_peers):
            self.held = self.voters > 0
            return False
        if not self.held:
            return False
        self.held = False
        return bool(self.face)

    def due(self, now: float, alive_peers: int) -> bool:
        """The guard is to be told now (hakeeperd silent during a loss of quorum; once per loss)."""
        if not self.lost(alive_peers):
            self.sent = False
            return False
        if self.sent or now - self.last_tick <= self.stale_after:
            return False
        self.sent = True
        return True


Emit = Callable[[dict[str, Any]], None]

#: Connection attempts in flight per path; a new one beyond this cancels the oldest.
MAX_DIALS = 4


def _tune(sock: Any, budget: float) -> None:
    """Let the kernel give up on a connection whose data waits unacknowledged longer than a budget.

    asyncio already sets TCP_NODELAY: a heartbeat never waits for the previous one's acknowledgement.
    """
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, max(1, int(budget * 1000)))


class _Outgoing:
    """This node's heartbeats to the peer on one path: a frame every interval, a fresh connection when stalled.

    The decisions are :class:`hakeeper.comm.paths.Dialer`'s; this holds the connections,
    the attempts in flight and the tasks that hear the peer's acknowledgements.
    """

    def __init__(self, owner: Heartbeats, path: CommPath) -> None:
        cfg = owner.config
        self.owner = owner
        self.path = path
        self.dialer = Dialer(cfg.interval, cfg.misses)
        self.conns: dict[int, asyncio.StreamWriter] = {}
        self.readers: dict[int, asyncio.Task[None]] = {}
        self.dials: list[asyncio.Task[None]] = []
        self.connecting: set[asyncio.Task[None]] = set()  # the dials whose SYN is out: cancelling them is silent
        self.wake = asyncio.Event()
        self._ids = itertools.count(1)
        self._send_now = False
        self._solicit = True

    async def run(self) -> None:
        cfg = self.owner.config
        clock = self.owner.clock
        seq = 0
        next_frame = on_grid(clock(), cfg.interval)
        try:
            while True:
                self.wake.clear()
                now = clock()
                self.dials = [task for task in self.dials if not task.done()]
                if now >= next_frame or self._send_now:
                    seq += 1
                    self._send(seq, now)
                    if now >= next_frame:
                        next_frame = on_grid(now, cfg.interval)
                    self._send_now = False
                if self.dialer.dial_due(now):
                    waiting = [task for task in self.dials if task in self.connecting]
                    if len(self.dials) >= MAX_DIALS and waiting:
                        waiting[0].cancel()  # the oldest SYN out: a fresh one goes now
                    self.dials.append(asyncio.create_task(self._dial(next(self._ids)), name=f"dial {self.path.key}"))
                    logger.debug("heartbeat: dialing %s (%d attempts in flight)", self.path.key, len(self.dials))
                    if self.dialer.pace(now) < self.dialer.budget:
                        self._ask_arp()
                # At least a millisecond: a loop that never waits would starve this core (SCHED_FIFO).
                delay = max(min(next_frame, self.dialer.next_check(now)) - clock(), 0.001)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self.wake.wait()
        finally:
            for task in self.dials:
                task.cancel()
            self.drop_all()
            await asyncio.gather(*self.dials, *self.readers.values(), return_exceptions=True)

    def describe(self, now: float) -> str:
        """This side of the path, for the line logged when it dies: connections, unanswered frames, dials."""
        oldest = [queue[0][1] for queue in self.dialer.outstanding.values() if queue]
        unanswered = f"oldest unanswered frame {now - min(oldest):.2f} s old" if oldest else "every frame answered"
        return f"{len(self.conns)} connection(s) out, {unanswered}, {len(self.dials)} dial(s) in flight"

    def drop_all(self) -> None:
        """Abort every connection, with what it still queues (the tasks hearing them then end)."""
        for writer in self.conns.values():
            writer.transport.abort()

    def _send(self, seq: int, now: float) -> None:
        frame = self.owner.frame(seq)
        for conn in self.dialer.targets(now):
            writer = self.conns.get(conn)
            if writer is not None and not writer.transport.is_closing():
                writer.write(frame)
                self.dialer.sent(conn, seq, now)

    async def _dial(self, conn: int) -> None:
        """Connect, then the TLS handshake; only the first may be cancelled to make room for a fresh attempt.

        Cutting a handshake makes the peer log a refused connection; cutting a SYN is silent.
        """
        cfg, path = self.owner.config, self.path
        budget = cfg.interval * cfg.misses
        task, context = asyncio.current_task(), self.owner.client_ctx
        assert task is not None and context is not None
        sock = socket.socket(socket.AF_INET6 if ":" in path.remote else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            _tune(sock, budget)
            sock.bind((path.local, 0))
            self.connecting.add(task)
            try:
                async with asyncio.timeout(budget):
                    await asyncio.get_running_loop().sock_connect(sock, (path.remote, cfg.port))
            finally:
                self.connecting.discard(task)
            reader, writer = await asyncio.open_connection(sock=sock, limit=MAX_FRAME * 2)
        except (OSError, TimeoutError) as exc:
            logger.debug("heartbeat connection %s: %s", path.key, exc)
            sock.close()
            self.wake.set()
            return
        except asyncio.CancelledError:
            sock.close()
            raise
        try:  # the transport is ours from here on: abort it on any failure (a cancelled one would leak)
            async with asyncio.timeout(budget):
                await writer.start_tls(context, server_hostname=path.remote)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            logger.debug("heartbeat connection %s: %s", path.key, exc)
            writer.transport.abort()
            return
        except asyncio.CancelledError:
            writer.transport.abort()
            raise
        finally:
            self.wake.set()
        found = tls.peer_node_name(writer.get_extra_info("ssl_object"))
        if found != path.node:
            self.owner.refuse(path.key, f"{path.remote} is node {found!r}, not {path.node!r}")
            writer.transport.abort()
            return
        if self.dialer.working(self.owner.clock()):
            writer.transport.abort()  # another attempt got there first (after the handshake: the peer logs nothing)
            return
        logger.debug("heartbeat: connected on %s", path.key)
        self.conns[conn] = writer
        self.dialer.opened(conn)
        self.readers[conn] = asyncio.create_task(self._hear_acks(conn, reader, writer), name=f"acks {path.key}")
        self._send_now = True  # the peer hears of us at once, not at the next interval

    async def _hear_acks(self, conn: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    seq = int(json.loads(line)["ack"])
                except (ValueError, KeyError, TypeError):
                    self.owner.refuse(self.path.key, "malformed heartbeat acknowledgement")
                    return
                for other in self.dialer.acked(conn, seq):  # the first connection answered on wins
                    stale = self.conns.get(other)
                    if stale is not None:
                        stale.transport.abort()
        except (OSError, ValueError, asyncio.LimitOverrunError) as exc:
            logger.debug("heartbeat acknowledgements on %s: %s", self.path.key, exc)
        finally:
            writer.transport.abort()
            self.conns.pop(conn, None)
            self.readers.pop(conn, None)
            self.dialer.closed(conn)
            self.wake.set()

    def _ask_arp(self) -> None:
        if not self._solicit:
            return
        try:
            if solicit(self.path.local, self.path.remote):
                logger.debug("heartbeat: ARP request for %s", self.path.remote)
        except PermissionError as exc:
            self._solicit = False  # no CAP_NET_RAW: the kernel's own ARP retries remain
            logger.info("heartbeat: cannot send ARP requests on path %s: %s", self.path.key, exc)
        except OSError as exc:  # ENOBUFS, ENETDOWN: the cable is still out
            logger.debug("heartbeat: ARP request on path %s: %s", self.path.key, exc)


def on_grid(now: float, interval: float) -> float:
    """The first multiple of ``interval`` after ``now`` (monotonic seconds): when this node's next frame goes.

    Every path of a node sends on the same grid, so a node that dies sends its
    last frame to every peer at the same moment: the peers declare it dead
    within milliseconds of one another, not up to an interval apart (a claim's
    voters then see its lease lapse at the same time as the claimant).
    """
    return (math.floor(now / interval) + 1) * interval


def solicit(local: str, remote: str) -> bool:
    """Send an ARP request for ``remote`` from ``local`` when the kernel's own one is pending; True if sent.

    A pulled cable makes the kernel forget its neighbours; a packet sent while it is out
    leaves the peer's entry INCOMPLETE until the kernel's next request, a second later.
    A request of ours, once the cable is back, is answered at once, and the answer completes
    the entry. Nothing is sent while the entry is complete, or absent (the kernel then asks
    at the next packet), or for IPv6 addresses.
    """
    if ":" in remote:
        return False
    device = _incomplete_neighbour(remote)
    if device is None:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        hwaddr = fcntl.ioctl(probe.fileno(), SIOCGIFHWADDR, struct.pack("256s", device.encode()[:15]))[18:24]
    arp = struct.pack(
        "!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, hwaddr, socket.inet_aton(local), b"\0" * 6, socket.inet_aton(remote)
    )
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as raw:
        raw.setblocking(False)  # a full device queue must not stop the heartbeats: BlockingIOError instead
        raw.bind((device, 0))
        raw.send(b"\xff" * 6 + hwaddr + b"\x08\x06" + arp)
    return True


SIOCGIFHWADDR = 0x8927
ATF_COM = 0x2


def _incomplete_neighbour(address: str) -> str | None:
    """The device of ``address``'s incomplete ARP entry (this network namespace's), or None."""
    try:
        lines = Path("/proc/net/arp").read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()  # IP address, HW type, Flags, HW address, Mask, Device
        if len(fields) >= 6 and fields[0] == address and not int(fields[2], 16) & ATF_COM:
            return fields[5]
    return None


@dataclass
class Heartbeats:
    """Sends and hears heartbeats on every path of ``config``; reports changes through ``emit``."""

    config: Config
    identity: Identity
    emit: Emit
    clock: Callable[[], float] = time.monotonic
    monitors: dict[str, PathMonitor] = field(default_factory=dict)
    client_ctx: ssl.SSLContext | None = None
    _nodes: dict[str, PathState] = field(default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _servers: list[asyncio.Server] = field(default_factory=list)
    _refused: set[tuple[str, str]] = field(default_factory=set)
    _outgoing: dict[str, _Outgoing] = field(default_factory=dict)
    #: Connections are dropped when their path goes DEAD: frames a partition held back are stale
    #: (they carry old settings, and would make the path look ALIVE for a moment when it heals).
    _incoming: dict[str, set[asyncio.StreamWriter]] = field(default_factory=dict)
    _handlers: set[asyncio.Task[Any]] = field(default_factory=set)
    #: When to cut the virtual addresses here and tell the guard (see Lease), and how to tell it: None, no guard.
    lease: Lease | None = None
    cut: Callable[[], None] | None = None
    _cutting: asyncio.Task[None] | None = None  # this process's own cut (comm/cut), left to finish at a stop
    #: What this node runs (hierarchy -> epoch), from hakeeperd; carried by every frame. The peers' last digests.
    runs: dict[str, int] = field(default_factory=dict)
    _peer_runs: dict[str, dict[str, int]] = field(default_factory=dict)
    #: How late this process's ticker woke, at most, over the last detection budget (seconds): a process that
    #: was not scheduled hears nothing. Shown when a path dies.
    _late: deque[tuple[float, float]] = field(default_factory=deque)

    async def start(self, previous: Heartbeats | None = None) -> None:
        """Start on the paths of the configuration; ``previous``: the configuration this one replaces.

        Paths kept from ``previous`` keep their state and last heartbeat, so that
        a new setting or path does not make every node look UNKNOWN (or DEAD again).
        """
        now = self.clock()
        cfg = self.config
        self.client_ctx = tls.client_context(self.identity)
        accept = tls.accept_tls(self.identity, self._serve)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._handlers.add(task)
            try:
                await accept(reader, writer)
            except asyncio.CancelledError:
                # stop() ends connections so. The task ends normally: asyncio (3.11) logs a cancelled
                # connection task as an error with its traceback.
                writer.transport.abort()
            finally:
                self._handlers.discard(task)

        self.monitors = {p.key: PathMonitor(cfg.interval, cfg.misses, now) for p in cfg.paths}
        self._nodes = {p.node: PathState.UNKNOWN for p in cfg.paths}
        if previous is not None:
            for key, monitor in self.monitors.items():
                old = previous.monitors.get(key)
                if old is not None:
                    monitor.state, monitor.last_heard = old.state, old.last_heard
            self._nodes.update({n: s for n, s in previous._nodes.items() if n in self._nodes})
        for local in sorted({p.local for p in cfg.paths}):
            try:
                server = await asyncio.start_server(handle, local, cfg.port, reuse_address=True, limit=MAX_FRAME * 2)
            except OSError as exc:
                logger.error("cannot listen for heartbeats on %s port %d: %s", local, cfg.port, exc.strerror)
                continue
            self._servers.append(server)
        self._outgoing = {p.key: _Outgoing(self, p) for p in cfg.paths}
        self._tasks = [asyncio.create_task(o.run(), name=f"heartbeat to {k}") for k, o in self._outgoing.items()]
        self._tasks.append(asyncio.create_task(self._ticker(), name="heartbeat ticker"))

    async def stop(self) -> None:
        """Stop listening, end every connection and task; returns when all have ended."""
        for server in self._servers:
            server.close()
        handlers = list(self._handlers)
        for task in handlers + self._tasks:
            task.cancel()
        await asyncio.gather(*handlers, *self._tasks, return_exceptions=True)
        self._tasks.clear()
        self._servers.clear()

    # ---------------------------------------------------------------- sending

    def frame(self, seq: int) -> bytes:
        cfg = self.config
        data: dict[str, Any] = {"hb": seq, "node": cfg.node, "interval": cfg.interval, "misses": cfg.misses}
        if self.runs:
            data["runs"] = self.runs
        return json.dumps(data).encode() + b"\n"

    def set_runs(self, runs: dict[str, int]) -> None:
        """hakeeperd's digest of what runs here; one too large for a frame is not carried."""
        self.runs = runs if len(json.dumps(runs)) <= RUNS_MAX else {}

    # ---------------------------------------------------------------- hearing

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: tls.Peer) -> None:
        """One peer's heartbeats on one path (the TLS handshake and its refusals are tls.accept_tls's).

        Every frame is acknowledged, so that the sender knows this connection works; a
        connection silent for two budgets is closed (its sender replaced it).
        """
        peer_ip = str((writer.get_extra_info("peername") or ("?",))[0])
        local_ip = str((writer.get_extra_info("sockname") or ("?",))[0])
        path = self._path_of(peer.node, local_ip, peer_ip)
        if path is None:
            self.refuse(peer_ip, f"no path here from node {peer.node!r} at {peer_ip} to {local_ip}")
            return
        budget = self.config.interval * self.config.misses
        _tune(writer.get_extra_info("socket"), budget)
        incoming = self._incoming.setdefault(path.key, set())
        incoming.add(writer)
        try:
            while True:
                try:
                    async with asyncio.timeout(2 * budget):
                        line = await reader.readline()
                except TimeoutError:
                    logger.debug("heartbeat connection from %s on %s silent: closed", peer_ip, path.key)
                    return
                if not line:
                    return
                if len(line) > MAX_FRAME or not line.endswith(b"\n"):
                    self.refuse(path.key, "oversized heartbeat frame")
                    return
                try:
                    frame = json.loads(line)
                    seq, interval, misses = int(frame["hb"]), float(frame["interval"]), int(frame["misses"])
                except (ValueError, KeyError, TypeError):
                    self.refuse(path.key, "malformed heartbeat frame")
                    return
                if (interval, misses) != (self.config.interval, self.config.misses):
                    self.refuse(
                        path.key,
                        f"{path.node} sends heartbeats every {interval:g} s with {misses} misses, this node "
                        f"{self.config.interval:g} s with {self.config.misses}: the settings must be equal",
                    )
                    return
                self._heard(path.key)
                self._digest(path.node, frame.get("runs"))
                if writer.transport.get_write_buffer_size() < MAX_FRAME:  # else the acks are not read anyway
                    writer.write(b'{"ack": %d}\n' % seq)
        except (OSError, ValueError, asyncio.LimitOverrunError) as exc:  # ssl.SSLError is an OSError
            if isinstance(exc, ValueError) and "limit" in str(exc):
                self.refuse(path.key, "oversized heartbeat frame")
            logger.debug("heartbeat stream from %s: %s", peer_ip, exc)
        finally:
            incoming.discard(writer)

    def _digest(self, node: str, runs: Any) -> None:
        """A peer's digest of what it runs: reported to hakeeperd when it changed."""
        if runs is None:
            runs = {}
        if not isinstance(runs, dict):
            return
        try:
            digest = {str(k): int(v) for k, v in runs.items()}
        except (TypeError, ValueError):
            return
        if self._peer_runs.get(node) != digest:
            self._peer_runs[node] = digest
            self.emit({"event": "runs", "node": node, "runs": digest})

    def _path_of(self, peer: str | None, local: str, remote: str) -> CommPath | None:
        for path in self.config.paths:
            if path.node == peer and path.local == local and path.remote == remote:
                return path
        return None

    def refuse(self, where: str, reason: str) -> None:
        if (where, reason) not in self._refused:  # say it once, not at every reconnection
            self._refused.add((where, reason))
            logger.warning("heartbeat refused on %s: %s", where, reason)

    def _heard(self, key: str) -> None:
        change = self.monitors[key].heard(self.clock())
        if change is not None:
            self._changed(key, change)

    async def _ticker(self) -> None:
        """Every quarter interval, and at the moment a path's budget runs out: deaths are seen when they happen."""
        step = self.config.interval / 4
        budget = self.config.interval * self.config.misses
        while True:
            start = self.clock()
            deadlines = [m.deadline for m in self.monitors.values() if m.state is not PathState.DEAD]
            pause = min([step, *(d - start + DEADLINE_SLACK for d in deadlines if d - start < step)])
            due = start + max(pause, 0.0)
            await asyncio.sleep(max(pause, 0.0))
            now = self.clock()
            self._late.append((now, now - due))
            while self._late and self._late[0][0] < now - budget:
                self._late.popleft()
            for key, monitor in self.monitors.items():
                change = monitor.tick(now)
                if change is not None:
                    self._changed(key, change)
            alive = sum(s is PathState.ALIVE for s in self._nodes.values())
            if self.lease is not None and self.lease.cut_due(alive):
                self._cutting = asyncio.create_task(self._cut_face(dict(self.lease.face), now))
            if self.lease is not None and self.cut is not None and self.lease.due(now, alive):
                logger.error("heartbeat: no majority heard and hakeeperd silent for %.2f s: the guard cuts the "
                             "virtual addresses", now - self.lease.last_tick)  # fmt: skip
                self.cut()

    async def _cut_face(self, face: dict[str, str], seen: float) -> None:
        """Remove the virtual addresses at once (no majority heard) and tell hakeeperd how long it took."""
        from hakeeper.comm.cut import cut_addresses

        outcome = await cut_addresses(face)
        took = self.clock() - seen
        if outcome.cut:
            logger.warning("heartbeat: no majority heard: cut %s in %.3f s", ", ".join(sorted(outcome.cut)), took)
        for tag, why in sorted(outcome.failed.items()):
            logger.error("heartbeat: no majority heard: cannot cut %s (%s); hakeeperd tries again", tag, why)
        self.emit({"event": "cut", "tags": sorted(outcome.cut), "failed": sorted(outcome.failed), "took": took})

    def _changed(self, key: str, state: PathState) -> None:
        if state is PathState.DEAD:
            self._explain_death(key)
            for writer in self._incoming.pop(key, set()):
                writer.transport.abort()
            outgoing = self._outgoing.get(key)
            if outgoing is not None:
                outgoing.drop_all()
        node = key.split("/", 1)[0]
        self.emit({"event": "path", "path": key, "node": node, "state": state.value})
        paths = [m for k, m in self.monitors.items() if k.split("/", 1)[0] == node]
        now_state = node_state(m.state for m in paths)
        if now_state is not self._nodes.get(node):
            self._nodes[node] = now_state
            alive = sum(m.state is PathState.ALIVE for m in paths)
            heard = any(m.last_heard is not None for m in paths)
            self.emit({"event": "node", "node": node, "state": now_state.value, "paths": len(paths), "alive": alive,
                       "heard": heard})  # fmt: skip

    def _explain_death(self, key: str) -> None:
        """One line that says what this process saw when ``key`` died (hakeeperd logs the state change itself)."""
        now = self.clock()
        monitor = self.monitors[key]
        heard = f"{now - monitor.last_heard:.2f} s" if monitor.last_heard is not None else "since it started"
        outgoing = self._outgoing.get(key)
        ours = outgoing.describe(now) if outgoing is not None else "no connection out"
        late = max((lag for _t, lag in self._late), default=0.0)
        logger.warning("heartbeat: path %s DEAD: nothing heard for %s; %s; this process woke up to %.3f s late",
                       key, heard, ours, late)  # fmt: skip


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


async def _main(identity: Identity, guard_fd: int | None = None) -> str:
    """Run until hakeeperd is gone (stdin closes, or stdout does) or a signal asks; returns why it ended."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    ended = loop.create_future()

    def end(why: str) -> None:  # signal handlers and emit only set this; the loop below does the stopping
        if not ended.done():
            ended.set_result(why)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, end, signal.Signals(sig).name)

    def emit(event: dict[str, Any]) -> None:
        if ended.done():
            return
        try:
            sys.stdout.write(json.dumps(event) + "\n")
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):  # ValueError: stdout closed
            end("hakeeperd stopped reading")

    lease: Lease | None = None
    runs_now: dict[str, int] = {}
    face: dict[str, str] = {}  # hakeeperd's last word on the addresses to cut (a new Lease starts from it)

    def cut() -> None:
        if guard_fd is None:
            return
        try:
            os.write(guard_fd, b"cut\n")
        except OSError as exc:  # the guard is restarting: hakeeperd, once thawed, does the same
            logger.error("heartbeat: cannot tell the guard to cut: %s", exc)

    current: Heartbeats | None = None
    try:
        while True:
            line_task = asyncio.ensure_future(reader.readline())
            await asyncio.wait({line_task, ended}, return_when=asyncio.FIRST_COMPLETED)
            if not line_task.done():
                line_task.cancel()
                await asyncio.gather(line_task, return_exceptions=True)
                return str(ended.result())
            try:
                line = line_task.result()
            except (OSError, ValueError) as exc:
                return f"cannot read from hakeeperd: {exc}"
            if not line:
                return "hakeeperd is gone"
            if line.startswith(b'{"tick"'):  # hakeeperd's event loop runs (and, now and then, what runs here)
                if lease is not None:
                    lease.last_tick = time.monotonic()
                tick: dict[str, Any] = {}
                if b'"face"' in line or b'"runs"' in line:
                    with contextlib.suppress(ValueError):
                        tick = json.loads(line)
                if "face" in tick:
                    with contextlib.suppress(ValueError, TypeError, AttributeError):
                        face = {str(k): str(v) for k, v in tick["face"].items()}
                        if lease is not None:
                            lease.face = face
                if "runs" in tick:
                    with contextlib.suppress(ValueError, TypeError, AttributeError):
                        runs_now = {str(k): int(v) for k, v in tick["runs"].items()}
                        if current is not None:
                            current.set_runs(runs_now)
                continue
            try:
                config = Config.from_json(json.loads(line))
            except (ValueError, KeyError, TypeError) as exc:
                logger.error("heartbeat: bad configuration from hakeeperd: %s", exc)
                continue
            previous = current
            if previous is not None:
                await previous.stop()
            current = Heartbeats(config, identity, emit)
            current.set_runs(runs_now)
            stale = lease.last_tick if lease is not None else time.monotonic()
            held = lease.held if lease is not None else False
            lease = Lease(config.voters, config.interval, time.monotonic(), face=face)
            lease.last_tick, lease.held = max(stale, lease.last_tick), held
            current.lease, current.cut = lease, (cut if guard_fd is not None else None)
            await current.start(previous)
            emit({"event": "configured", "paths": len(config.paths)})
    finally:
        if current is not None:
            await current.stop()


def main() -> None:
    """``python -m hakeeper.comm.heartbeat --root DIR``: run by hakeeperd.

    It exits with 0 and one log line when hakeeperd is gone (its stdin closes, or
    nobody reads its stdout) or on SIGTERM, SIGINT or SIGHUP: no traceback.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="hakeeper-heartbeat")
    parser.add_argument("--root", required=True)
    parser.add_argument("--guard-fd", type=int, help="where to tell the guard to cut (see Lease)")
    args = parser.parse_args()
    from hakeeper.logs.write import configure_child

    configure_child("hakeeper-heartbeat")  # where hakeeperd logs (its journal, syslog or file), else stderr
    import hakeeper.comm.cut  # noqa: F401  # now, not at the cut: importing netlink takes ~0.2 s, twice the lease

    logger.info("heartbeat process %d: %s", os.getpid(), realtime())
    if args.guard_fd is not None:
        os.set_blocking(args.guard_fd, False)  # never wait on the guard
    try:
        why = asyncio.run(_main(load_identity(args.root), args.guard_fd))
    except KeyboardInterrupt:  # SIGINT before the loop took the signals over
        why = "SIGINT"
    logger.info("heartbeat process %d exits: %s", os.getpid(), why)
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
    # Python flushes stdout again at exit: a broken pipe there would print "Exception ignored".
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":
    main()
