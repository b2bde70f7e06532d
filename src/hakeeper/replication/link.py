"""One mirror of the source: :class:`TargetLink`, its state, intent log, data connection and threads.

A link owns one connected blocking socket at a time (:class:`Conn`) and threads of its own: a
supervisor (connect, HELLO, resync, then housekeeping), a receiver (acks, in order), and in
async mode a sender draining the link's bounded queue. The application's writes reach it
through :class:`~.mirror.Mirror`, which calls :meth:`TargetLink.prepare` (mark the bitmap,
decide: send, queue or only track) and then sends, queues and waits.

Bits are cleared once the target acknowledged a FLUSH after the write's ACK (the target
processes frames in order, so an ACKed write before a FLUSH ACK is durable there), and then
lazily, at the next housekeeping tick: never earlier, so a chunk's bit covers it until the
target has it on disk.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import resync
from .bitmap import IntentLog
from .conn import _F, _H, _P, _R, _W, Conn, MirrorError, MirrorStatus, Reply
from .generations import Relation
from .protocol import MAX_DATA, Frame, IdleTimeout, Op, ProtocolError, recv_frame, send_frame, send_json
from .states import MirrorMode, MirrorState

if TYPE_CHECKING:
    from .mirror import Mirror

__all__ = ["Conn", "MirrorError", "MirrorStatus", "Reply", "TargetLink"]

logger = logging.getLogger(__name__)


_ALLOWED: dict[MirrorState, set[MirrorState]] = {
    MirrorState.RESYNC_PENDING: {MirrorState.RESYNCING, MirrorState.PAUSED, MirrorState.BROKEN},
    MirrorState.RESYNCING: {MirrorState.MIRRORING, MirrorState.PAUSED, MirrorState.BROKEN},
    MirrorState.MIRRORING: {MirrorState.PAUSED, MirrorState.BROKEN},
    MirrorState.PAUSED: {MirrorState.RESYNCING, MirrorState.BROKEN, MirrorState.RESYNC_PENDING},
    MirrorState.BROKEN: {MirrorState.RESYNC_PENDING, MirrorState.RESYNCING},
    MirrorState.NONE: set(),
}


class TargetLink:
    """The mirror of the volume to one target: its state, intent log, connection and threads."""

    def __init__(
        self,
        mirror: Mirror,
        name: str,
        connect: Callable[[], socket.socket],
        bitmap: IntentLog,
        *,
        mode: MirrorMode,
        timeout: float,
        queue_bytes: int,
        retry_interval: float,
        clear_interval: float,
        mark_ahead: int,
        settings: resync.ResyncSettings,
    ) -> None:
        self.mirror = mirror
        self.name = name
        self.connect = connect
        self.bitmap = bitmap
        self.mode = mode
        self.timeout = timeout
        self.queue_bytes = queue_bytes
        self.retry_interval = retry_interval
        self.clear_interval = clear_interval
        self.settings = settings
        self.progress = resync.ResyncProgress()
        self.resyncs_done = 0  # resyncs that ended in Mirroring
        self.bucket = resync.TokenBucket(settings.bandwidth)
        self.state = MirrorState.RESYNC_PENDING
        self.reason = "waiting for the target"
        self.relation: Relation | None = None
        self.last_error: str | None = None  # why the last connection attempt failed
        self.split_brain = False  # the target refused: both sides wrote independently
        self.lock = threading.Lock()
        self._acked = threading.Condition(self.lock)
        self.conn: Conn | None = None
        self.inflight: dict[int, int] = {}  # chunk -> writes sent or queued, not acked
        self.to_clear: set[int] = set()  # chunks the target acked, not yet flushed there
        self.durable_clean: set[int] = set()  # chunks the target has durably: bits cleared at the next tick
        self.spec_new: set[int] = set()  # chunks marked ahead of a sequential writer in this interval
        self.spec_old: set[int] = set()  # ... in the previous one: cleared at the next tick if untouched
        self.ahead = max(0, mark_ahead // bitmap.chunk)
        self.resync_pending: dict[int, bool] = {}  # chunk sent by resync, not acked -> written since?
        self._admin: str | None = None  # "paused" / "broken": no reconnection until continue
        self._discard_target = False
        self._force_full = False
        self.checksum_next = False
        self.stopping = threading.Event()
        self.wake = threading.Event()
        # async: (conn, offset, data, first, last, reply); first < 0: a FLUSH marker
        self._queue: deque[tuple[Conn, int, bytes, int, int, Reply | None]] = deque()
        self._queued = 0
        self._qcond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"mirror-{mirror.volume}-{name}", daemon=True)

    # -- state -------------------------------------------------------------------------------

    def set_state(self, new: MirrorState, reason: str) -> None:
        """The one place a state changes (call with ``self.lock`` held)."""
        old = self.state
        if new is old:
            self.reason = reason
            return
        if new not in _ALLOWED[old]:
            raise MirrorError(f"mirror {self.mirror.volume} -> {self.name}: no transition {old.name} -> {new.name}")
        self.state = new
        self.reason = reason
        logger.info("mirror %s -> %s: %s -> %s (%s)", self.mirror.volume, self.name, old.name, new.name, reason)

    def status(self) -> MirrorStatus:
        with self.lock:
            state, reason = self.state, self.reason
        running = state is MirrorState.RESYNCING
        return MirrorStatus(
            target=self.name,
            mode=self.mode,
            state=state,
            bytes_dirty=self.bitmap.dirty_bytes,
            resync_percent=self.progress.percent if running else None,
            resync_bytes_sent=self.progress.bytes_sent,
            reason=reason,
            relation=self.relation.value if self.relation else None,
            last_error=self.last_error,
            split_brain=self.split_brain,
        )

    # -- the write path (application threads) ---------------------------------------------

    def prepare(self, offset: int, length: int) -> tuple[Conn | None, int, int, int]:
        """Mark a write's chunks; (connection to send on or None, commit to wait for, first, last chunk)."""
        with self.lock:
            state = self.state
            if state is MirrorState.BROKEN:
                return None, 0, 0, 0
            first, last = self.bitmap.chunk_range(offset, length)
            conn = self.conn
            mirroring = state is MirrorState.MIRRORING and conn is not None and conn.alive
            spec: list[int] = []
            need = self.bitmap.set_range(first, last, ahead=self.ahead if mirroring else 0, speculative=spec)
            self.touch(first, last)
            if spec:
                self.spec_new.update(spec)
            if mirroring:
                assert conn is not None
                inflight = self.inflight
                for c in range(first, last + 1):
                    inflight[c] = inflight.get(c, 0) + 1
                return conn, need, first, last
            return None, need, first, last

    def touch(self, first: int, last: int) -> None:
        """Chunks written again: not to clear on earlier acks (call with ``self.lock`` held)."""
        sets = [s for s in (self.to_clear, self.durable_clean, self.spec_new, self.spec_old) if s]
        for s in sets:
            for c in range(first, last + 1):
                s.discard(c)
        if self.resync_pending:
            for c in range(first, last + 1):
                if c in self.resync_pending:
                    self.resync_pending[c] = True

    def send(
        self,
        conn: Conn,
        op: Op,
        offset: int,
        payload: bytes | memoryview,
        *,
        kind: str,
        a: int = 0,
        b: int = 0,
        reply: Reply | None = None,
    ) -> int:
        """Put one frame on the connection; its sequence, or 0 if the link failed (it is paused then)."""
        if not conn.send_lock.acquire(timeout=self.timeout):
            self.fail(conn, f"target silent for {self.timeout:.1f} s (send blocked)")
            return 0
        try:
            if not conn.alive:
                return 0
            seq = conn.next_seq
            conn.next_seq += 1
            conn.completions.append((seq, kind, a, b, reply))
            send_frame(conn.sock, op, seq=seq, offset=offset, payload=payload)
            return seq
        except TimeoutError:
            self.fail(conn, f"target silent for {self.timeout:.1f} s (send timed out)")
            return 0
        except (OSError, ValueError) as exc:
            self.fail(conn, f"sending to the target failed: {exc}")
            return 0
        finally:
            conn.send_lock.release()

    def send_write(self, conn: Conn, offset: int, data: bytes | memoryview, first: int, last: int) -> int:
        view = memoryview(data)
        seq = 0
        while view:
            piece = view[:MAX_DATA]
            view = view[MAX_DATA:]
            seq = self.send(conn, Op.WRITE, offset, piece, kind=_P if view else _W, a=first, b=last)
            if not seq:
                return 0
            offset += len(piece)
        return seq

    def wait_acked(self, conn: Conn, seq: int) -> bool:
        with self.lock:
            ok = self._acked.wait_for(lambda: conn.acked >= seq or not conn.alive, timeout=self.timeout)
            alive = conn.alive
        if not ok:
            self.fail(conn, f"target silent for {self.timeout:.1f} s")
        return ok and alive

    def enqueue(self, conn: Conn, offset: int, data: bytes, first: int, last: int) -> None:
        """Async: queue a write in order; at the queue's high water the mirror pauses instead."""
        with self._qcond:
            full = self._queued + len(data) > self.queue_bytes
            if not full and conn.alive:
                self._queue.append((conn, offset, data, first, last, None))
                self._queued += len(data)
                self._qcond.notify()
        if full:
            self.fail(conn, f"async queue at its high water ({self.queue_bytes} bytes)")

    # -- acks, flushes, failures ---------------------------------------------------------

    def start_flush(self, conn: Conn) -> int:
        """Send a barrier without waiting; its sequence (0 if the link failed)."""
        return self.send(conn, Op.FLUSH, 0, b"", kind=_F, reply=Reply())

    def flush_target(self, conn: Conn, *, wait: bool = True) -> bool:
        """Send a barrier; with ``wait``, True once the target acked it (every earlier frame durable)."""
        reply = Reply()
        seq = self.send(conn, Op.FLUSH, 0, b"", kind=_F, reply=reply)
        if not seq:
            return False
        return self.wait_acked(conn, seq) if wait else True

    def request(self, conn: Conn, op: Op, offset: int, payload: bytes) -> Reply | None:
        """Send a frame whose reply matters (HASH, GEN); the :class:`Reply` to wait on."""
        reply = Reply()
        return reply if self.send(conn, op, offset, payload, kind=_H, reply=reply) else None

    def wait_reply(self, conn: Conn, reply: Reply) -> bool:
        if not reply.event.wait(self.timeout):
            self.fail(conn, f"target silent for {self.timeout:.1f} s")
        return reply.ok

    def _on_ack(self, conn: Conn, frame: Frame) -> None:
        with self.lock:
            if not conn.alive:
                return
            completions = conn.completions
            while completions and completions[0][0] <= frame.seq:
                seq, kind, a, b, reply = completions.popleft()
                if kind == _W:
                    inflight = self.inflight
                    for c in range(a, b + 1):
                        n = inflight.get(c, 1) - 1
                        if n > 0:
                            inflight[c] = n
                        else:
                            inflight.pop(c, None)
                            self.to_clear.add(c)
                elif kind == _R:
                    for c in range(a, b + 1):
                        if not self.resync_pending.pop(c, True) and c not in self.inflight:
                            self.to_clear.add(c)
                elif kind == _F:  # every ACK before this one is durable on the target now
                    self.durable_clean |= self.to_clear
                    self.to_clear.clear()
                if reply is not None:
                    reply.ok = True
                    if seq == frame.seq and frame.op is Op.HASHES:
                        reply.data = bytes(frame.payload)
                    reply.event.set()
            conn.acked = frame.seq
            self._acked.notify_all()

    def clear_clean(self, *, tick: bool) -> None:
        """Clear the bits of chunks the target has durably (and, on a housekeeping ``tick``, the
        chunks marked ahead that no write touched for a whole interval). Lazy on purpose: a chunk
        written again before this costs no bitmap write at all."""
        with self.lock:
            chunks = self.durable_clean
            self.durable_clean = set()
            if tick:
                chunks |= self.spec_old
                self.spec_old, self.spec_new = self.spec_new, set()
            if chunks:
                self.bitmap.clear_chunks(chunks)

    def fail(self, conn: Conn, reason: str, *, diverge: bool = True) -> None:
        """The connection is lost (error, stall, refusal, high water): pause, keep every bit."""
        with self.lock:
            if not conn.alive:
                return
            conn.alive = False
            was = self.state
            self.inflight.clear()
            self.to_clear.clear()  # acked but maybe not durable there: stays dirty
            # durable on the target and untouched since, or marked ahead and never written: clean
            clean = self.durable_clean | self.spec_new | self.spec_old
            self.durable_clean, self.spec_new, self.spec_old = set(), set(), set()
            if clean:
                self.bitmap.clear_chunks(clean)
            self.resync_pending.clear()
            for _seq, _kind, _a, _b, reply in conn.completions:
                if reply is not None:
                    reply.event.set()
            conn.completions.clear()
            if was in (MirrorState.MIRRORING, MirrorState.RESYNCING):
                self.set_state(MirrorState.PAUSED, reason)  # MIRRORING/RESYNCING -> PAUSED
            else:
                self.reason = reason
            self._acked.notify_all()
        with self._qcond:
            self._queue.clear()
            self._queued = 0
            self._qcond.notify_all()
        with contextlib.suppress(OSError):
            conn.sock.shutdown(socket.SHUT_RDWR)
        if was is MirrorState.MIRRORING and diverge:
            self.mirror.diverged(self, reason)
        self.wake.set()

    # -- threads -------------------------------------------------------------------------

    def _receiver(self, conn: Conn) -> None:
        seen = -1  # conn.acked at the last idle timeout with frames outstanding
        while conn.alive:
            try:
                frame = recv_frame(conn.sock)
            except IdleTimeout:
                if conn.acked < conn.next_seq - 1:
                    if conn.acked == seen:  # outstanding for two timeouts in a row, no progress
                        self.fail(conn, f"target silent for {self.timeout:.1f} s")
                    seen = conn.acked
                else:
                    seen = -1
                continue
            except (ProtocolError, OSError) as exc:
                self.fail(conn, f"connection lost: {exc}")
                return
            seen = -1
            if frame.op in (Op.ACK, Op.HASHES):
                self._on_ack(conn, frame)
            elif frame.op is Op.ERROR:
                self.fail(conn, f"the target gave up: {frame.text()}")
            else:
                self.fail(conn, f"unexpected {frame.op.name} frame from the target")

    def _sender(self, conn: Conn) -> None:
        while True:
            with self._qcond:
                while not self._queue and conn.alive:
                    self._qcond.wait()
                if not conn.alive:
                    return
                item = self._queue.popleft()
                self._queued -= len(item[2])
            c, offset, data, first, last, reply = item
            if c is not conn:
                continue
            if first < 0:  # a flush marker
                self.send(conn, Op.FLUSH, 0, b"", kind=_F, reply=reply)
            elif not self.send_write(conn, offset, data, first, last):
                return

    def queue_flush(self, conn: Conn, reply: Reply | None = None) -> None:
        with self._qcond:
            if conn.alive:
                self._queue.append((conn, 0, b"", -1, -1, reply))
                self._qcond.notify()

    def drain(self, timeout: float) -> bool:
        """Wait until the target has every write acknowledged so far durably (a FLUSH behind them,
        through the queue in async mode); False if the mirror is not Mirroring or it took too long.
        For a switchover: the source stops writing, drains, then the roles swap."""
        with self.lock:
            conn = self.conn
            if conn is None or not conn.alive or self.state is not MirrorState.MIRRORING:
                return False
        reply = Reply()
        if self.mode is MirrorMode.ASYNC:
            self.queue_flush(conn, reply)
        elif not self.send(conn, Op.FLUSH, 0, b"", kind=_F, reply=reply):
            return False
        return reply.event.wait(timeout) and reply.ok and conn.alive

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                self._cycle()
            except Exception:  # the supervisor never dies of one bad cycle
                logger.exception("mirror %s -> %s: connection cycle failed", self.mirror.volume, self.name)
                self.wake.wait(self.retry_interval)
                self.wake.clear()

    def _cycle(self) -> None:
        if self._admin is not None:
            self.wake.wait()
            self.wake.clear()
            return
        try:
            sock = self.connect()
        except OSError as exc:
            with self.lock:
                self.last_error = f"target unreachable: {exc}"
            self.wake.wait(self.retry_interval)
            self.wake.clear()
            return
        conn = Conn(sock)
        try:
            sock.settimeout(self.timeout)
            relation = self._hello(conn)
        except (MirrorError, ProtocolError, OSError, ValueError) as exc:
            refused = isinstance(exc, MirrorError)
            with self.lock:
                again = self.last_error == str(exc)
                self.last_error = str(exc)
                self.split_brain = refused and "split brain" in str(exc)
            if refused and not again:
                logger.error("mirror %s -> %s: %s", self.mirror.volume, self.name, exc)
            with contextlib.suppress(OSError):
                sock.close()
            self.wake.wait(self.retry_interval * (10 if refused else 1))
            self.wake.clear()
            return
        self.relation = relation
        if relation in (Relation.NEW_TARGET, Relation.SPLIT_BRAIN, Relation.UNRELATED) or self._force_full:
            self.bitmap.set_all()
            self._force_full = False
        self._discard_target = False
        self.last_error = None
        self.split_brain = False
        receiver = threading.Thread(target=self._receiver, args=(conn,), name=f"mirror-rx-{self.name}", daemon=True)
        conn.threads.append(receiver)
        if self.mode is MirrorMode.ASYNC:
            sender = threading.Thread(target=self._sender, args=(conn,), name=f"mirror-tx-{self.name}", daemon=True)
            conn.threads.append(sender)
        with self.lock:  # pause() sets _admin before it takes the lock: one of us sees the other
            if self.stopping.is_set() or self._admin is not None:
                sock.close()
                return
            self.conn = conn
            # RESYNC_PENDING/PAUSED/BROKEN -> RESYNCING: the target is back
            self.set_state(MirrorState.RESYNCING, f"target connected ({relation.value})")
        for t in conn.threads:
            t.start()
        checksum, self.checksum_next = self.checksum_next, False
        stopped = resync.run(self, conn, checksum=checksum)
        if stopped is not None:
            self.fail(conn, stopped, diverge=False)
        while conn.alive and not self.stopping.is_set():  # housekeeping: make clears durable now and then
            self.wake.wait(self.clear_interval)
            self.wake.clear()
            if conn.alive and self.to_clear and self.mode is MirrorMode.SYNC:
                self.flush_target(conn)
            elif conn.alive and self.to_clear:
                self.queue_flush(conn)
            if conn.alive:
                self.clear_clean(tick=True)
            self.bitmap.sync()
        for t in conn.threads:
            t.join(self.timeout * 2)
        conn.sock.close()

    def _hello(self, conn: Conn) -> Relation:
        gen = self.mirror.generations.value
        send_json(
            conn.sock,
            Op.HELLO,
            {
                "node": self.mirror.node,
                "role": "source",
                "volume": self.mirror.volume,
                "size": self.mirror.size,
                "chunk": self.bitmap.chunk,
                "generation": gen.to_json(),
                "discard_target": self._discard_target,
            },
        )
        try:
            frame = recv_frame(conn.sock)
        except IdleTimeout:
            raise ProtocolError("the target did not answer HELLO") from None
        if frame.op is Op.ERROR:
            raise MirrorError(f"the target refused: {frame.text()}")
        if frame.op is not Op.HELLO:
            raise ProtocolError(f"the target answered HELLO with {frame.op.name}")
        info = frame.json()
        try:
            relation = Relation(info.get("relation"))
        except ValueError:
            raise ProtocolError(f"the target sent an unknown relation {info.get('relation')!r}") from None
        with self.lock:
            self.relation = relation
        return relation

    # -- administration --------------------------------------------------------------------

    def tell_target(self, conn: Conn | None, state: MirrorState) -> None:
        """Tell a Mirroring target the mirror leaves Mirroring on purpose (its copy will be older than
        the source's: it must not be promoted); best effort, bounded by the link's timeout."""
        if conn is not None and conn.alive and self.state is MirrorState.MIRRORING:
            reply = self.request(conn, Op.GEN, 0, resync.gen_payload("left", None, state=state.label))
            if reply is not None:
                reply.event.wait(self.timeout)

    def pause(self, reason: str = "paused by the administrator") -> None:
        self._admin = "paused"
        with self.lock:
            conn = self.conn
        self.tell_target(conn, MirrorState.PAUSED)
        if conn is not None:
            self.fail(conn, reason)
        with self.lock:
            if self.state is MirrorState.RESYNC_PENDING:
                self.set_state(MirrorState.PAUSED, reason)

    def break_(self) -> None:
        """Stop tracking: only a full resync brings the target back (the bitmap is set all dirty)."""
        self._admin = "broken"
        with self.lock:
            conn = self.conn
        self.tell_target(conn, MirrorState.BROKEN)
        if conn is not None:
            self.fail(conn, "broken by the administrator")
        self.bitmap.set_all()
        with self.lock:
            if self.state is not MirrorState.BROKEN:
                self.set_state(MirrorState.BROKEN, "broken by the administrator")

    def continue_(self) -> None:
        with self.lock:
            if self.state in (MirrorState.BROKEN, MirrorState.PAUSED) and self._admin is not None:
                self.set_state(MirrorState.RESYNC_PENDING, "continued by the administrator")
        self._admin = None
        self.wake.set()

    def resync_now(self, *, full: bool, checksum: bool) -> None:
        self._force_full = full
        self.checksum_next = checksum
        conn = self.conn
        if conn is not None and conn.alive:
            self.fail(conn, "resync requested", diverge=True)
        self.continue_()

    def resolve(self, keep: str) -> None:
        if keep != self.mirror.node:
            raise MirrorError(
                f"to keep {keep}'s data, {keep} must become the source of {self.mirror.volume} "
                f"and {self.mirror.node} its target (started with discard_local=True)"
            )
        self._discard_target = True
        self.checksum_next = True  # a full resync, but only chunks that differ travel
        logger.info(
            "mirror %s -> %s: split brain resolved, keeping %s: %s's changes will be overwritten",
            self.mirror.volume,
            self.name,
            keep,
            self.name,
        )
        self.continue_()

    def close(self) -> None:
        self.stopping.set()
        conn = self.conn
        if conn is not None and conn.alive:
            if self.state is MirrorState.MIRRORING and self.mode is MirrorMode.SYNC:
                self.flush_target(conn)
            self.fail(conn, "the mirror engine is closing", diverge=False)
        self.wake.set()
        self._thread.join(self.timeout * 3)
        self.bitmap.close()
