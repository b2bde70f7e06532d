"""The target side of a mirror: one data connection applied, in order, to the node's own store.

:meth:`MirrorTarget.serve` runs one accepted connection in the caller's thread: the HELLO
exchange (volume, sizes, generations: see :mod:`.generations`), then every frame in the order
it came, each answered in order (``ACK`` with its sequence; ``HASHES`` for ``HASH``). Writes
go to the store's page cache and a ``FLUSH`` makes them durable before its ``ACK``, as on a disk
with a write cache. The target refuses (ERROR frame, then closes, nothing written) a source
whose volume is larger than its store, another volume, a chunk size it does not agree to, or
data whose generations say the target is ahead, split brain or unrelated, unless resolved.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import socket
import threading

from hakeeper.errors import HakeeperError

from .conn import MirrorError
from .device import LocalStore
from .generations import Generation, GenerationStore, Relation, compare
from .protocol import (
    DIGEST,
    Frame,
    Op,
    ProtocolError,
    parse_hash_request,
    parse_ranges,
    parse_zero,
    recv_frame,
    send_frame,
    send_json,
)
from .resync import is_hole
from .switchover import Handover, handover_path

logger = logging.getLogger(__name__)

HELLO_TIMEOUT = 10.0
_ZERO = bytes(1 << 20)


class TargetRefused(HakeeperError):
    """The target will not take this source's data (sizes, volume, generations)."""

    exit_code = 1


def chunk_digests(store: LocalStore, offset: int, chunk: int, count: int) -> bytes:
    """blake2b digests (:data:`DIGEST` bytes) of ``count`` chunks from ``offset`` (short at the end)."""
    out = bytearray()
    buf = bytearray(chunk)
    view = memoryview(buf)
    for i in range(count):
        n = store.read_into(offset + i * chunk, view)
        out += hashlib.blake2b(view[:n], digest_size=DIGEST).digest()
    return bytes(out)


class MirrorTarget:
    """Serves the data connections of one volume on a target node (one at a time)."""

    def __init__(
        self,
        store: LocalStore,
        generations: GenerationStore,
        *,
        volume: str,
        node: str,
        discard_local: bool = False,
    ) -> None:
        self.store = store
        self.generations = generations
        self.volume = volume
        self.node = node
        self.discard_local = discard_local  # resolve(keep=<the source>): this node's own changes are discarded
        self.last_relation: Relation | None = None
        self.last_error: str | None = None
        self.source_node: str | None = None
        self._serving = threading.Lock()
        self._sock: socket.socket | None = None
        # a switchover to this node: the handover being received (header, regions per target), and the last one
        self._incoming: tuple[dict[str, object], list[list[tuple[int, int]]]] | None = None
        self.handover: Handover | None = None

    def resolve(self, keep: str) -> None:
        """After a split brain: ``keep`` is the node whose data survives. If that is the source
        connecting here, this node's changes are discarded at the next connection."""
        if keep == self.node:
            raise TargetRefused(
                f"to keep {self.node}'s data, {self.node} must be the source: "
                "promote it and make the other node its target"
            )
        self.discard_local = True
        logger.info(
            "mirror %s on %s: split brain resolved, keeping %s (this node's changes will be discarded)",
            self.volume,
            self.node,
            keep,
        )

    def promote(self, *, peer: str, force: bool = False) -> Generation:
        """Failover: this node becomes the source without ``peer`` (see :meth:`.GenerationStore.promote`);
        :class:`.PromotionRefused` unless this copy was Mirroring when it last heard from ``peer``."""
        return self.generations.promote(peer=peer, force=force, volume=self.volume, node=self.node)

    def serve(self, sock: socket.socket) -> None:
        """Serve one connection until the source closes it; refusals raise :class:`TargetRefused`.

        A new connection replaces one still served (the source reconnects only when it gave the
        old one up): the old one is shut down and, once its frame in progress is applied, ends.
        """
        if not self._serving.acquire(blocking=False):
            old = self._sock
            if old is not None:
                with contextlib.suppress(OSError):
                    old.shutdown(socket.SHUT_RDWR)
            if not self._serving.acquire(timeout=HELLO_TIMEOUT):
                with contextlib.suppress(OSError):
                    send_frame(
                        sock, Op.ERROR, payload=f"{self.node} is still busy with the previous connection".encode()
                    )
                sock.close()
                raise TargetRefused(f"a new source connection for {self.volume} while the previous one is stuck")
        self._sock = sock
        try:
            self._handshake(sock)
            self._loop(sock)
        except (ProtocolError, OSError) as exc:  # the source went away, or its stream was garbage
            logger.info("mirror %s on %s: connection from %s ended: %s", self.volume, self.node, self.source_node, exc)
        finally:
            self._sock = None
            self._serving.release()
            with contextlib.suppress(OSError):
                sock.close()

    def _refuse(self, sock: socket.socket, why: str) -> None:
        self.last_error = why
        logger.error("mirror %s on %s: refused source %s: %s", self.volume, self.node, self.source_node, why)
        with contextlib.suppress(OSError):
            send_frame(sock, Op.ERROR, payload=why.encode())
        raise TargetRefused(why)

    def _handshake(self, sock: socket.socket) -> None:
        sock.settimeout(HELLO_TIMEOUT)
        hello = recv_frame(sock)
        if hello.op is not Op.HELLO:
            self._refuse(sock, f"expected HELLO, got {hello.op.name}")
        info = hello.json()
        self.source_node = str(info.get("node", "?"))
        if info.get("role") != "source":
            self._refuse(sock, f"the peer {self.source_node} is not a source")
        if info.get("volume") != self.volume:
            self._refuse(sock, f"this target serves volume {self.volume}, not {info.get('volume')!r}")
        size = info.get("size")
        if not isinstance(size, int) or size <= 0:
            self._refuse(sock, "the source sent no valid volume size")
        assert isinstance(size, int)
        if size > self.store.size:
            self._refuse(
                sock,
                f"the target's store ({self.store.size} bytes) is smaller than the source's volume ({size} bytes)",
            )
        self._size = size
        mine = self.generations.value
        theirs = Generation.from_json(info.get("generation"))
        relation = compare(theirs, mine)
        self.last_relation = relation
        discard = bool(info.get("discard_target")) or self.discard_local
        if relation is Relation.TARGET_AHEAD:
            self._refuse(
                sock,
                f"{self.node}'s data is newer than {self.source_node}'s (generation {mine.current}): "
                "the roles are the wrong way round",
            )
        if relation in (Relation.SPLIT_BRAIN, Relation.UNRELATED) and not discard:
            self._refuse(
                sock,
                f"{relation.value}: {self.source_node} (generation {theirs.current}) and {self.node} "
                f"(generation {mine.current}) both changed the data; choose the survivor with resolve",
            )
        send_json(
            sock,
            Op.HELLO,
            {
                "node": self.node,
                "role": "target",
                "volume": self.volume,
                "size": self.store.size,
                "generation": mine.to_json(),
                "relation": relation.value,
            },
        )
        self.last_error = None
        self._incoming = None
        if self.handover is not None or handover_path(self.generations).exists():
            # a source connects again: a handover received earlier was not acted upon (the switchover failed)
            self.handover = None
            with contextlib.suppress(FileNotFoundError):
                handover_path(self.generations).unlink()
        logger.info(
            "mirror %s on %s: source %s connected (%s)", self.volume, self.node, self.source_node, relation.value
        )
        sock.settimeout(None)

    def _check_range(self, frame: Frame, length: int) -> None:
        if frame.offset < 0 or frame.offset + length > self._size:
            raise ProtocolError(
                f"{frame.op.name} at {frame.offset}+{length} is outside the volume ({self._size} bytes)"
            )

    def _loop(self, sock: socket.socket) -> None:
        store = self.store
        while True:
            frame = recv_frame(sock)
            op = frame.op
            try:
                if op is Op.WRITE or op is Op.RESYNC:
                    self._check_range(frame, len(frame.payload))
                    store.write(frame.offset, frame.payload)
                elif op is Op.FLUSH:
                    store.flush()
                elif op is Op.ZERO:
                    length = parse_zero(frame)
                    self._check_range(frame, length)
                    self._zero(frame.offset, length)
                elif op is Op.HASH:
                    chunk, count = parse_hash_request(frame)
                    self._check_range(frame, 0)
                    count = min(count, -(-(self._size - frame.offset) // chunk))
                    digests = chunk_digests(store, frame.offset, chunk, count)
                    send_frame(sock, Op.HASHES, seq=frame.seq, offset=frame.offset, payload=digests)
                    continue
                elif op is Op.GEN:
                    self._generation(frame)
                elif op is Op.DIRTY:
                    self._dirty(frame)
                elif op is Op.ERROR:
                    raise ProtocolError(f"the source gave up: {frame.text()}")
                else:
                    raise ProtocolError(f"a target does not take {op.name} frames")
            except OSError as exc:
                self.last_error = f"the target's store failed: {exc}"
                send_frame(sock, Op.ERROR, payload=self.last_error.encode())
                raise ProtocolError(self.last_error) from None
            except ProtocolError as exc:
                with contextlib.suppress(OSError):
                    send_frame(sock, Op.ERROR, payload=str(exc).encode())
                raise
            send_frame(sock, Op.ACK, seq=frame.seq)

    def _zero(self, offset: int, length: int) -> None:
        """Make ``[offset, offset+length)`` zeros, writing only where it is not already."""
        if is_hole(self.store.fd, offset, length):  # a sparse image: nothing to read or write
            return
        buf = bytearray(len(_ZERO))
        view = memoryview(buf)
        end = offset + length
        while offset < end:
            n = self.store.read_into(offset, view[: min(len(buf), end - offset)])
            if n <= 0:
                break
            if not _ZERO.startswith(view[:n]):  # a memcmp, no copy (!= on a memoryview: 90x slower)
                self.store.write(offset, _ZERO[:n])
            offset += n

    def _generation(self, frame: Frame) -> None:
        value = frame.json()
        action = value.get("action")
        if action == "begin_resync":
            self.generations.set_inconsistent()
        elif action == "in_sync":
            self.store.flush()
            self.generations.adopt(Generation.from_json(value.get("generation")))
            self.discard_local = False
        elif action == "left":  # the source paused or broke the mirror: this copy falls behind
            state = str(value.get("state", ""))
            self.generations.set_state(state)
            logger.info("mirror %s on %s: %s says the mirror is %s", self.volume, self.node, self.source_node, state)
        elif action == "handover":
            header = value.get("handover")
            targets = header.get("targets") if isinstance(header, dict) else None
            if not isinstance(header, dict) or not isinstance(targets, list):
                raise ProtocolError("a handover without its header")
            self._incoming = (header, [[] for _ in targets])
        elif action == "handover_commit":
            self._commit_handover()
        else:
            raise ProtocolError(f"unknown generation action {action!r}")

    def _dirty(self, frame: Frame) -> None:
        if self._incoming is None or not 0 <= frame.offset < len(self._incoming[1]):
            raise ProtocolError("a DIRTY frame outside a handover")
        self._incoming[1][frame.offset].extend(parse_ranges(frame))

    def _commit_handover(self) -> None:
        """The source handed the volume to this node (a switchover): keep the handover beside the
        generation record, and take the source's generation (its writes stopped, all of them are here)."""
        if self._incoming is None:
            raise ProtocolError("a handover commit without a handover")
        header, dirty = self._incoming
        self._incoming = None
        try:
            handover = Handover.from_json(header, dirty)
        except MirrorError as exc:
            raise ProtocolError(str(exc)) from None
        if handover.to != self.node or handover.volume != self.volume or handover.source != self.source_node:
            raise ProtocolError(
                f"a handover of {handover.volume} from {handover.source} to {handover.to} reached {self.node} "
                f"from {self.source_node}"
            )
        self.store.flush()
        self.generations.adopt(handover.generation)
        handover.save(handover_path(self.generations))
        self.handover = handover
        logger.info(
            "mirror %s on %s: %s handed the volume over (switchover): take over with Mirror.from_handover",
            self.volume,
            self.node,
            handover.source,
        )
