"""The source side: :class:`Mirror`, a :class:`~.device.BlockStore` that writes locally and to its targets.

One :class:`~.link.TargetLink` per target (its own socket and threads). The application's
threads (libfuse workers) call :meth:`Mirror.write` concurrently:

1. overlapping writes are serialised by a fair range lock, held from marking the intent log
   until the write is both issued locally and placed on each target's stream: two
   overlapping writes reach every target in the order they reached the local disk, and a
   resync read of a chunk cannot interleave with a write to it;
2. each link marks the write's chunks in its bitmap (durable before anything is issued);
3. sync links in Mirroring get the frame on their socket, then the local write runs (the
   target works meanwhile), async links in Mirroring get it queued after the local write;
4. outside the range lock, the writer waits for the sync links' acks, each at most the link's
   timeout: a target that fails, disconnects or stalls is paused (its writes stay in its
   bitmap) and the write succeeds. A write fails only when the local disk fails it.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import resync
from .bitmap import DEFAULT_CHUNK, IntentLog
from .device import LocalStore
from .generations import GenerationStore
from .link import Conn, MirrorError, MirrorStatus, TargetLink
from .protocol import Op
from .states import MirrorMode, MirrorState

if TYPE_CHECKING:
    from .switchover import Handover

__all__ = ["Mirror", "MirrorError", "MirrorStatus", "RangeLock", "TargetLink"]

logger = logging.getLogger(__name__)


class RangeLock:
    """Byte ranges held by in-flight writes and resync reads; an overlapping request waits.

    Fair: a request that waits blocks later requests that overlap it, so a resync read of a
    run that hot writers keep touching is not starved by a stream of small writes.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._held: list[list[int]] = []
        self._waiting: list[list[int]] = []

    @staticmethod
    def _overlaps(token: list[int], others: list[list[int]]) -> bool:
        start, end = token
        return any(o[0] < end and start < o[1] for o in others)

    def acquire(self, start: int, end: int) -> list[int]:
        token = [start, end]
        with self._cond:
            if self._overlaps(token, self._held) or self._overlaps(token, self._waiting):
                self._waiting.append(token)
                while True:
                    ahead = self._waiting[: next(i for i, t in enumerate(self._waiting) if t is token)]
                    if not self._overlaps(token, self._held) and not self._overlaps(token, ahead):
                        break
                    self._cond.wait()
                self._waiting = [t for t in self._waiting if t is not token]
            self._held.append(token)
        return token

    def release(self, token: list[int]) -> None:
        with self._cond:
            self._held = [t for t in self._held if t is not token]
            self._cond.notify_all()


class Mirror:
    """The mirrored volume on the source: a :class:`~.device.BlockStore` over the local store."""

    def __init__(
        self,
        local: LocalStore,
        *,
        volume: str,
        node: str,
        generations: GenerationStore,
    ) -> None:
        self.local = local
        self.volume = volume
        self.node = node
        self.generations = generations
        generations.start_data()
        self.ranges = RangeLock()
        self._links: tuple[TargetLink, ...] = ()
        self._gate = threading.Condition()
        self._gated: set[str] = set()
        self._gate_timeout = 5.0
        self.delayed_writes = 0  # writes a converging resync delayed (DataKeeper's write throttling)
        self._closed = False
        self._admit = threading.Condition()  # admission of writes: counts them, refuses them when frozen
        self._active = 0  # writes admitted and not returned
        self._frozen: str | None = None  # why writes are refused (a switchover under way or done)
        self._gen_lock = threading.Lock()
        self._diverged: str | None = None  # a target left Mirroring: a new generation at the next write

    def add_target(
        self,
        name: str,
        connect: Callable[[], socket.socket],
        bitmap_path: Path | str,
        *,
        mode: MirrorMode = MirrorMode.SYNC,
        chunk: int = DEFAULT_CHUNK,
        timeout: float = 5.0,
        queue_bytes: int = 64 << 20,
        retry_interval: float = 1.0,
        clear_interval: float = 1.0,
        mark_ahead: int = 4 << 20,
        settings: resync.ResyncSettings | None = None,
    ) -> TargetLink:
        """Mirror to ``name``; ``connect`` opens a connected socket (TLS already wrapped) to its target.

        An existing bitmap file is reopened (after a crash: its dirty chunks are resent); a new one
        starts all dirty (full resync).
        """
        if any(link.name == name for link in self._links):
            raise MirrorError(f"{self.volume} is already mirrored to {name}")
        if name == self.node:
            raise MirrorError(f"{self.volume} cannot be mirrored to its own node {name}")
        if timeout <= 0 or retry_interval <= 0 or clear_interval <= 0:
            raise MirrorError(f"the timeouts and intervals of the mirror to {name} must be positive")
        if queue_bytes <= 0:
            raise MirrorError(f"the async queue of the mirror to {name} needs a positive size, not {queue_bytes}")
        stale = self.generations.bitmap_is_stale(name)
        if stale:  # from before this node took over: it knows nothing of what the old source wrote since
            Path(bitmap_path).unlink(missing_ok=True)
        bitmap = IntentLog.open(bitmap_path, size=self.size, chunk=chunk)
        link = TargetLink(
            self,
            name,
            connect,
            bitmap,
            mode=mode,
            timeout=timeout,
            queue_bytes=queue_bytes,
            retry_interval=retry_interval,
            clear_interval=clear_interval,
            mark_ahead=mark_ahead,
            settings=settings or resync.ResyncSettings(),
        )
        if stale:
            # this node took over (failover): the old source and its other targets hold our data up to
            # the promotion but for what was in flight; a full resync compared by checksum sends only
            # the chunks that differ (a switchover seeds the bitmaps from the handover instead)
            link.checksum_next = True
            self.generations.bitmap_renewed(name)
        self._links = (*self._links, link)
        link.start()
        return link

    def link(self, name: str) -> TargetLink:
        for link in self._links:
            if link.name == name:
                return link
        raise MirrorError(f"{self.volume} has no mirror to {name}")

    @property
    def links(self) -> tuple[TargetLink, ...]:
        return self._links

    def status(self) -> list[MirrorStatus]:
        return [link.status() for link in self._links]

    # -- BlockStore ---------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self.local.size

    def read_into(self, offset: int, buf: memoryview) -> int:
        return self.local.read_into(offset, buf)

    def write(self, offset: int, data: bytes | memoryview) -> None:
        n = len(data)
        if n == 0:
            return
        if offset < 0 or offset + n > self.size:
            raise OSError(errno.EINVAL, f"write at {offset}+{n} outside the volume ({self.size} bytes)")
        with self._admit:
            if self._frozen is not None:
                raise OSError(errno.EROFS, f"{self.volume} takes no writes on {self.node}: {self._frozen}")
            self._active += 1
        try:
            self._write(offset, data, n)
        finally:
            with self._admit:
                self._active -= 1
                if not self._active:
                    self._admit.notify_all()

    def _write(self, offset: int, data: bytes | memoryview, n: int) -> None:
        if self._gated:
            with self._gate:  # a resync finishing its last passes delays writers, bounded
                self.delayed_writes += 1
                self._gate.wait_for(lambda: not self._gated, timeout=self._gate_timeout)
        token = self.ranges.acquire(offset, offset + n)
        waits: list[tuple[TargetLink, Conn, int]] = []
        try:
            plans = [(link, *link.prepare(offset, n)) for link in self._links]
            for link, _conn, need, _first, _last in plans:
                link.bitmap.wait_durable(need)  # the intent is on disk before the write is issued
            for link, conn, _need, first, last in plans:
                if conn is not None and link.mode is MirrorMode.SYNC:
                    seq = link.send_write(conn, offset, data, first, last)
                    if seq:
                        waits.append((link, conn, seq))
            if self._diverged is not None:  # a target left: this write starts the source's new generation
                self._new_generation()
            self.local.write(offset, data)
            copy: bytes | None = None
            for link, conn, _need, first, last in plans:
                if conn is not None and link.mode is MirrorMode.ASYNC:
                    copy = copy if copy is not None else bytes(data)
                    link.enqueue(conn, offset, copy, first, last)
        finally:
            self.ranges.release(token)
        for link, conn, seq in waits:
            link.wait_acked(conn, seq)

    def flush(self) -> None:
        """A barrier: locally and on every Mirroring sync target (async targets get it queued)."""
        conns = []
        for link in self._links:
            conn = link.conn
            if conn is not None and conn.alive and link.state is MirrorState.MIRRORING:
                if link.mode is MirrorMode.SYNC:
                    seq = link.start_flush(conn)
                    if seq:
                        conns.append((link, conn, seq))
                else:
                    link.queue_flush(conn)
        self.local.flush()
        for link, conn, seq in conns:
            link.wait_acked(conn, seq)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for link in self._links:
            link.close()
        self.local.close()

    # -- called by links and resync ---------------------------------------------------------

    def diverged(self, link: TargetLink, reason: str) -> None:
        """A target stopped following: the source's data starts a new generation at its next write
        (not before: a source that writes nothing more is still in sync with that target, and a
        promotion of the target then finds "source ahead", not a split brain). The targets still
        Mirroring take the new generation at once over their stream."""
        with self._gen_lock:
            self._diverged = f"mirror to {link.name} left Mirroring: {reason}"

    def _new_generation(self) -> None:
        with self._gen_lock:  # writers that saw the flag wait here: none writes before the record is durable
            why = self._diverged
            if why is None:
                return
            gen = self.generations.new_generation(why)
            self._diverged = None
        for other in self._links:  # outside the lock: a failing send calls diverged() again
            conn = other.conn
            if conn is not None and conn.alive and other.state is MirrorState.MIRRORING:
                other.request(conn, Op.GEN, 0, resync.gen_payload("in_sync", gen))

    # -- switchover (see switchover.py) -------------------------------------------------------

    def freeze(self, reason: str, timeout: float) -> None:
        """Refuse new writes (EROFS) and wait for those under way; MirrorError if they outlast ``timeout``."""
        with self._admit:
            if self._frozen is not None:
                raise MirrorError(f"{self.volume} on {self.node} takes no writes already: {self._frozen}")
            self._frozen = reason
            if not self._admit.wait_for(lambda: not self._active, timeout):
                self._frozen = None
                raise MirrorError(f"{self.volume} on {self.node}: writes still under way after {timeout:.1f} s")
        logger.info("mirror %s on %s: writes refused from now on (%s)", self.volume, self.node, reason)

    def thaw(self) -> None:
        """Take writes again (a switchover that did not happen)."""
        with self._admit:
            if self._frozen is None:
                return
            self._frozen = None
        logger.info("mirror %s on %s: writes accepted again", self.volume, self.node)

    def handed_over(self, to: str) -> None:
        with self._admit:
            self._frozen = f"handed over to {to}: it is the source now"

    @property
    def frozen(self) -> str | None:
        """Why writes are refused, or None."""
        return self._frozen

    def prepare_switchover(self, to: str, *, timeout: float = 30.0) -> Handover:
        """Switchover, on the source: hand the volume to the Mirroring target ``to`` (see
        :func:`.switchover.prepare`). Afterwards this mirror takes no writes: close it and serve ``to``."""
        from .switchover import prepare

        return prepare(self, to, timeout=timeout)

    @classmethod
    def from_handover(
        cls,
        local: LocalStore,
        handover: Handover,
        *,
        generations: GenerationStore,
        node: str,
        connect: Mapping[str, Callable[[], socket.socket]],
        bitmap_path: Callable[[str], Path | str],
        **options: Any,
    ) -> Mirror:
        """Switchover, on the new source: see :func:`.switchover.take_over`."""
        from .switchover import take_over

        return take_over(
            local, handover, generations=generations, node=node, connect=connect, bitmap_path=bitmap_path, **options
        )

    def close_gate(self, link: TargetLink, timeout: float) -> None:
        with self._gate:
            self._gate_timeout = timeout
            self._gated.add(link.name)

    def open_gate(self, link: TargetLink) -> None:
        with self._gate:
            self._gated.discard(link.name)
            self._gate.notify_all()

    # -- administration --------------------------------------------------------------------

    def pause(self, target: str) -> None:
        self.link(target).pause()

    def continue_(self, target: str) -> None:
        self.link(target).continue_()

    def break_(self, target: str) -> None:
        self.link(target).break_()

    def resync(self, target: str, *, full: bool = False, checksum: bool = False) -> None:
        self.link(target).resync_now(full=full, checksum=checksum)

    def resolve(self, target: str, keep: str) -> None:
        self.link(target).resolve(keep)

    def drain(self, target: str, timeout: float = 30.0) -> bool:
        """True once ``target`` has every write acknowledged so far, durably (see :meth:`TargetLink.drain`)."""
        return self.link(target).drain(timeout)

    def verify(self, target: str) -> list[tuple[int, int]]:
        link = self.link(target)
        conn = link.conn
        if conn is None or not conn.alive or link.state is not MirrorState.MIRRORING:
            raise MirrorError(f"verify needs the mirror to {target} Mirroring (it is {link.state.label})")
        return resync.verify(link, conn)
