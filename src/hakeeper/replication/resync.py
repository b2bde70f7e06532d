"""Resynchronisation of one target: passes over the bitmap, checksum resync, verify, throttling.

A resync is a series of passes. Each pass takes the dirty runs of the bitmap (a snapshot),
and for each run, under the range lock (no application write to it meanwhile): reads the
local data, sends it (``RESYNC``; an all-zero run, or a hole of an image file, goes as a
``ZERO`` frame of 8 bytes), and records the chunks as pending. Application writes during the
resync are tracked only (bits set, not sent); one that touches a pending chunk keeps its bit.
A pass ends with a FLUSH: its ACK clears the bits of the chunks the target acked untouched.
When a pass ends with a clean bitmap the target takes the source's generation and the
mirror is Mirroring. Writers that outpace the passes are slowed as DataKeeper does: after
``throttle_after`` passes, with the dirty set under ``low_water_bytes``, writes wait (at most
``block_writes_timeout`` each) until the pass completes; after ``max_passes`` the mirror pauses.

Checksum resync (the fast path after a source crash, where most chunks are equal): the target
sends digests of the dirty chunks and only the differing ones are sent. ``verify`` compares
digests of the whole volume online and reports the differing ranges.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hakeeper.errors import CommunicationFailed

from .generations import Generation
from .protocol import DIGEST, MAX_DATA, Op, hash_request, zero_payload
from .states import MirrorState

if TYPE_CHECKING:
    from .link import Conn, TargetLink

_ZEROS = bytes(MAX_DATA)
HASH_BATCH = 256  # chunks per HASH request


@dataclass
class ResyncSettings:
    """How a resync behaves (DataKeeper's names in brackets)."""

    max_passes: int = 200  # (MaxResyncPasses) then the mirror pauses
    throttle_after: int = 20  # passes before writers may be delayed (10% of MaxResyncPasses)
    low_water_bytes: int = 16 << 20  # (ResyncLowWater) dirty bytes under which writers are delayed
    block_writes_timeout: float = 5.0  # (ResyncBlockWritesTimeoutMs) the longest a write is delayed
    bandwidth: float | None = None  # bytes/s for resync data, None: unlimited


@dataclass
class ResyncProgress:
    """Counters of the current (or last) resync, polled by status."""

    total_bytes: int = 0  # dirty bytes found at the start of each pass, summed
    done_bytes: int = 0  # of those, handled (sent, zeroed or found equal)
    bytes_sent: int = 0  # resync data put on the wire (payloads of RESYNC frames)
    zero_bytes: int = 0  # sent as ZERO frames (zeros or holes)
    equal_bytes: int = 0  # found equal by checksum, not sent
    passes: int = 0

    @property
    def percent(self) -> float:
        return 100.0 if not self.total_bytes else min(100.0, 100.0 * self.done_bytes / self.total_bytes)

    def reset(self) -> None:
        self.total_bytes = self.done_bytes = self.bytes_sent = self.zero_bytes = self.equal_bytes = self.passes = 0


class TokenBucket:
    """A bandwidth limit: ``take(n)`` sleeps as long as sending ``n`` bytes needs at ``rate``."""

    def __init__(
        self, rate: float | None, burst: float | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else (rate or 0) / 10
        self._clock = clock
        self._tokens = self.burst
        self._last = clock()
        self._lock = threading.Lock()

    def take(self, n: int, stop: threading.Event) -> None:
        """Account for ``n`` bytes; sleep (interrupted by ``stop``) while they are over the rate."""
        if not self.rate or n <= 0:
            return
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate) - n
            self._last = now
            debt = -self._tokens
        if debt > 0:
            stop.wait(debt / self.rate)


def gen_payload(action: str, gen: Generation | None, **extra: object) -> bytes:
    value: dict[str, object] = {"action": action, **extra}
    if gen is not None:
        value["generation"] = gen.to_json()
    return json.dumps(value).encode()


def is_hole(fd: int, offset: int, length: int) -> bool:
    """True if ``[offset, offset+length)`` of an image file holds no data (SEEK_DATA skips it)."""
    try:
        return os.lseek(fd, offset, os.SEEK_DATA) >= offset + length
    except OSError:  # ENXIO: no data after offset; EINVAL: not supported (block devices)
        return _enxio(fd, offset)


def _enxio(fd: int, offset: int) -> bool:
    try:
        os.lseek(fd, offset, os.SEEK_DATA)
    except OSError as exc:
        return exc.errno == 6  # ENXIO
    return False


def run(link: TargetLink, conn: Conn, *, checksum: bool) -> str | None:
    """Resync ``link`` over ``conn`` until the target is Mirroring; None, or why it stopped."""
    mirror = link.mirror
    settings = link.settings
    progress = link.progress
    progress.reset()
    bitmap = link.bitmap
    if bitmap.dirty_chunks and not link.request(conn, Op.GEN, 0, gen_payload("begin_resync", None)):
        return link.reason
    try:
        while True:
            progress.passes += 1
            if not conn.alive or link.stopping.is_set():
                return link.reason
            dirty = bitmap.dirty_bytes
            progress.total_bytes += dirty
            if progress.passes > settings.throttle_after and dirty <= settings.low_water_bytes:
                mirror.close_gate(link, settings.block_writes_timeout)
            if not _pass(link, conn, checksum=checksum and progress.passes == 1):
                return link.reason
            if bitmap.dirty_chunks == 0:
                reply = link.request(conn, Op.GEN, 0, gen_payload("in_sync", mirror.generations.value))
                if reply is None or not link.wait_reply(conn, reply):
                    return link.reason
                with link.lock:
                    if conn.alive and bitmap.dirty_chunks == 0 and not link.resync_pending:
                        # RESYNCING -> MIRRORING: the target has every chunk; writes are sent from now on
                        link.resyncs_done += 1
                        link.set_state(
                            MirrorState.MIRRORING,
                            f"resync done: {progress.passes} pass(es), {progress.bytes_sent} bytes sent",
                        )
                        return None
            if progress.passes >= settings.max_passes:
                return f"resync did not converge in {progress.passes} passes"
    finally:
        mirror.open_gate(link)


def _pass(link: TargetLink, conn: Conn, *, checksum: bool) -> bool:
    bitmap = link.bitmap
    group = HASH_BATCH if checksum else max(1, MAX_DATA // bitmap.chunk)
    buf = bytearray(group * bitmap.chunk)
    view = memoryview(buf)
    for first, last in bitmap.runs(group):
        if not conn.alive or link.stopping.is_set():
            return False
        sent = _checksum_run(link, conn, first, last, view) if checksum else _send_run(link, conn, first, last, view)
        if sent is None:
            return False
        link.bucket.take(sent, link.stopping)
    if not link.flush_target(conn):
        return False
    link.clear_clean(tick=False)  # the pass's chunks are durable on the target: their bits go now
    return True


def _register(link: TargetLink, first: int, last: int) -> None:
    with link.lock:
        for c in range(first, last + 1):
            link.resync_pending[c] = False


def _send_run(link: TargetLink, conn: Conn, first: int, last: int, view: memoryview) -> int | None:
    """Send chunks ``first..last`` (at most MAX_DATA bytes); the bytes of data sent, None if the link failed.

    All-zero chunks (and holes of an image file) go as ZERO frames: the target zeroes them
    only where it holds something else.
    """
    bitmap, local, progress = link.bitmap, link.mirror.local, link.progress
    offset, length = bitmap.chunk_span(first, last)
    token = link.mirror.ranges.acquire(offset, offset + length)
    try:
        _register(link, first, last)
        if is_hole(local.fd, offset, length):
            segments = [(first, last, True)]
            n = length
        else:
            n = local.read_into(offset, view[:length])
            segments = []
            for c in range(first, last + 1):
                lo = (c - first) * bitmap.chunk
                hi = min(lo + bitmap.chunk, n)
                zero = _ZEROS.startswith(view[lo:hi])  # a memcmp, no copy (== on a memoryview: 90x slower)
                if segments and segments[-1][2] == zero:
                    segments[-1] = (segments[-1][0], c, zero)
                else:
                    segments.append((c, c, zero))
        sent = 0
        for a, b, zero in segments:
            lo = (a - first) * bitmap.chunk
            hi = min((b - first + 1) * bitmap.chunk, n)
            if zero:
                seq = link.send(conn, Op.ZERO, offset + lo, zero_payload(hi - lo), kind="resync", a=a, b=b)
                progress.zero_bytes += hi - lo
            else:
                seq = link.send(conn, Op.RESYNC, offset + lo, view[lo:hi], kind="resync", a=a, b=b)
                sent += hi - lo
                progress.bytes_sent += hi - lo
            if not seq:
                return None
    finally:
        link.mirror.ranges.release(token)
    progress.done_bytes += length
    return sent


def _digests(view: memoryview, n: int, chunk: int) -> list[bytes]:
    return [hashlib.blake2b(view[i : min(i + chunk, n)], digest_size=DIGEST).digest() for i in range(0, n, chunk)]


def _hash_exchange(link: TargetLink, conn: Conn, first: int, last: int, view: memoryview) -> list[bool] | None:
    """Which of chunks ``first..last`` differ between source and target (one consistent snapshot)."""
    bitmap, local = link.bitmap, link.mirror.local
    offset, length = bitmap.chunk_span(first, last)
    count = last - first + 1
    token = link.mirror.ranges.acquire(offset, offset + length)
    try:
        reply = link.request(conn, Op.HASH, offset, hash_request(bitmap.chunk, count))
        n = local.read_into(offset, view[:length])
        mine = _digests(view, n, bitmap.chunk)
    finally:
        link.mirror.ranges.release(token)
    if reply is None or not link.wait_reply(conn, reply) or reply.data is None:
        return None
    theirs = [reply.data[i * DIGEST : (i + 1) * DIGEST] for i in range(count)]
    return [a != b for a, b in zip(mine, theirs, strict=False)]


def _checksum_run(link: TargetLink, conn: Conn, first: int, last: int, view: memoryview) -> int | None:
    bitmap, progress = link.bitmap, link.progress
    _register(link, first, last)
    differs = _hash_exchange(link, conn, first, last, view)
    if differs is None:
        return None
    sent = 0
    with link.lock:
        for i, d in enumerate(differs):
            c = first + i
            if not d and not link.resync_pending.pop(c, True):
                link.to_clear.add(c)
                progress.equal_bytes += bitmap.chunk_span(c, c)[1]
                progress.done_bytes += bitmap.chunk_span(c, c)[1]
    for i, d in enumerate(differs):
        if d:
            n = _send_run(link, conn, first + i, first + i, view)
            if n is None:
                return None
            sent += n
    return sent


def verify(link: TargetLink, conn: Conn) -> list[tuple[int, int]]:
    """Byte ranges whose content differs between the source and the target, compared online.

    A range being written while it is compared may show as differing on an async mirror
    (the write is queued but not yet applied there): compare again to be sure.
    """
    bitmap = link.bitmap
    buf = bytearray(HASH_BATCH * bitmap.chunk)
    view = memoryview(buf)
    ranges: list[tuple[int, int]] = []
    for first in range(0, bitmap.chunks, HASH_BATCH):
        last = min(bitmap.chunks - 1, first + HASH_BATCH - 1)
        differs = _hash_exchange(link, conn, first, last, view)
        if differs is None:
            raise CommunicationFailed(f"verify of the mirror to {link.name} stopped: {link.reason}")
        for i, d in enumerate(differs):
            if d:
                offset, length = bitmap.chunk_span(first + i, first + i)
                if ranges and ranges[-1][0] + ranges[-1][1] == offset:
                    ranges[-1] = (ranges[-1][0], ranges[-1][1] + length)
                else:
                    ranges.append((offset, length))
    return ranges
