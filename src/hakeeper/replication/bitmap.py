"""The intent log of one mirror: a persistent bitmap, one bit per chunk of the volume.

A set bit means "this chunk may differ between the source and this target". The rule that
makes a crash of the source harmless: **a bit is set and durable before the write it covers is
issued** (to the local disk or to the target). A bit is cleared only once the target has the
chunk durably (the mirror clears after the target acknowledged a FLUSH that covered it); the
clear becomes durable lazily, with the next page write (a later set, or :meth:`IntentLog.sync`).
A bit that stays set too long only costs a resend after a crash; one that is cleared too
early would lose data, so clearing is always the lazy side.

Setting is cheap: only a 0 -> 1 flip needs a durable write of the bitmap page that holds it.
A writer whose chunks are all dirty already pays nothing (unless their flip by another writer
is not durable yet: then it waits for that commit). Writers that flip bits at the same time
share one ``fdatasync`` (group commit): the first becomes the committer and writes every
changed page; the others wait for it, or for the next commit if their flip came too late.

The file: a 4 KiB header (magic, version, chunk size, volume size, chunk count, CRC), then the
bits in 4 KiB pages (bit ``i`` is bit ``i % 8`` of byte ``i // 8``).
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

from hakeeper.errors import HakeeperError
from hakeeper.replication.files import replace_durably

logger = logging.getLogger(__name__)

MAGIC = b"HKBITMAP"
VERSION = 1
PAGE = 4096
BITS_PER_PAGE = PAGE * 8
DEFAULT_CHUNK = 64 * 1024
MIN_CHUNK = 4096
_HEADER = struct.Struct("<8sIIQQ")  # magic, version, chunk, volume size, chunks; then a CRC32 of these
_CRC = struct.Struct("<I")


class BitmapError(HakeeperError):
    """An intent-log file that cannot be used for this volume (wrong file, wrong size, damaged)."""

    exit_code = 1


def check_chunk(chunk: int) -> int:
    """``chunk`` if it is a power of two of at least 4 KiB, else a :class:`BitmapError`."""
    if chunk < MIN_CHUNK or chunk & (chunk - 1):
        raise BitmapError(f"a bitmap chunk must be a power of two of at least {MIN_CHUNK} bytes, not {chunk}")
    return chunk


class IntentLog:
    """The bitmap of one mirror, in memory and in its file. Thread-safe.

    Open with :meth:`open`; a new file starts all dirty (``new_dirty=True``, the default: a new
    mirror needs a full resync) or all clean.
    """

    def __init__(self, path: Path, fd: int, chunk: int, size: int, bits: bytearray) -> None:
        self.path = path
        self.chunk = chunk
        self.size = size
        self.chunks = -(-size // chunk)
        self._fd = fd
        self._shift = chunk.bit_length() - 1
        self._bits = bits
        self._dirty = sum(bin(b).count("1") for b in bytes(bits)) if any(bits) else 0
        self._lock = threading.Lock()
        self._committed = threading.Condition(self._lock)
        self._changed_pages: set[int] = set()
        self._change_seq = 0  # bumped by every 0 -> 1 flip set
        self._durable_seq = 0  # every flip up to this one is on disk
        self._committing = False
        self._pending: dict[int, int] = {}  # chunk flipped but not durable yet -> its change seq
        self.commits = 0  # fdatasyncs done for flips (observability and tests)

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path | str, *, size: int, chunk: int = DEFAULT_CHUNK, new_dirty: bool = True) -> IntentLog:
        """Open the bitmap at ``path`` for a volume of ``size`` bytes, creating it if missing.

        An existing file made for another volume size or chunk, or not a bitmap at all, is refused.
        """
        path = Path(path)
        check_chunk(chunk)
        if size <= 0:
            raise BitmapError(f"a volume of {size} bytes cannot have a bitmap")
        nchunks = -(-size // chunk)
        nbytes = -(-nchunks // 8)
        npages = -(-nbytes // PAGE)
        if not path.exists():
            bits = bytearray(npages * PAGE)
            if new_dirty:
                _set_all(bits, nchunks)
            replace_durably(path, _header(chunk, size, nchunks) + bytes(bits))
            logger.info(
                "intent log %s created: %d chunks of %d bytes, all %s",
                path,
                nchunks,
                chunk,
                "dirty" if new_dirty else "clean",
            )
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise BitmapError(f"cannot open the bitmap {path}: {exc.strerror}") from None
        try:
            head = os.pread(fd, PAGE, 0)
            _check_header(path, head, chunk, size, nchunks)
            bits = bytearray(os.pread(fd, npages * PAGE, PAGE))
            if len(bits) != npages * PAGE:
                raise BitmapError(f"the bitmap {path} is truncated ({len(bits)} of {npages * PAGE} bytes of bits)")
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, chunk, size, bits)

    # -- chunks and ranges -----------------------------------------------------------------

    def chunk_range(self, offset: int, length: int) -> tuple[int, int]:
        """The first and last chunk (inclusive) that bytes ``[offset, offset+length)`` touch."""
        return offset >> self._shift, (offset + max(length, 1) - 1) >> self._shift

    def chunk_span(self, first: int, last: int) -> tuple[int, int]:
        """Byte offset and length of chunks ``first..last``, cut at the volume's end."""
        start = first << self._shift
        return start, min((last + 1) << self._shift, self.size) - start

    # -- setting (durable before the write) -------------------------------------------------

    def set_range(self, first: int, last: int, *, ahead: int = 0, speculative: list[int] | None = None) -> int:
        """Set the bits of chunks ``first..last`` in memory; the commit to wait for (0: none).

        Pass the result to :meth:`wait_durable` before issuing the write they cover. When the
        write flips a bit (new territory) and ``ahead`` is given, the clean chunks among the next
        ``ahead`` are set in the same commit (appended to ``speculative``): a sequential writer
        then pays one commit per ``ahead`` chunks instead of one per write, at the price of
        resending those chunks after a crash (DRBD's activity-log extents do the same).
        """
        bits = self._bits
        with self._lock:
            need = 0
            flipped: list[int] = []
            for c in range(first, last + 1):
                byte, mask = c >> 3, 1 << (c & 7)
                if bits[byte] & mask:
                    pending = self._pending.get(c)
                    if pending is not None and pending > need:
                        need = pending
                else:
                    bits[byte] |= mask
                    flipped.append(c)
            if flipped:
                if ahead and speculative is not None:
                    for c in range(last + 1, min(last + 1 + ahead, self.chunks)):
                        byte, mask = c >> 3, 1 << (c & 7)
                        if not bits[byte] & mask:
                            bits[byte] |= mask
                            flipped.append(c)
                            speculative.append(c)
                self._change_seq += 1
                need = self._change_seq
                self._dirty += len(flipped)
                for c in flipped:
                    self._pending[c] = need
                    self._changed_pages.add(c // BITS_PER_PAGE)
            return need

    def wait_durable(self, need: int) -> None:
        """Return once the flips of commit ``need`` are on disk (committing them if nobody is)."""
        if need == 0:
            return
        with self._lock:
            while self._durable_seq < need:
                if self._committing:
                    self._committed.wait()
                else:
                    self._commit_locked()

    def mark(self, offset: int, length: int) -> None:
        """Set and make durable the bits covering ``[offset, offset+length)``."""
        self.wait_durable(self.set_range(*self.chunk_range(offset, length)))

    def _commit_locked(self) -> None:
        """Write every changed page and fdatasync; called with the lock held, drops it for the I/O."""
        self._committing = True
        seq = self._change_seq
        pages = sorted(self._changed_pages)
        self._changed_pages.clear()
        images = [bytes(self._bits[p * PAGE : (p + 1) * PAGE]) for p in pages]
        self._lock.release()
        ok = False
        try:
            for page, image in zip(pages, images, strict=True):
                os.pwrite(self._fd, image, PAGE * (1 + page))
            os.fdatasync(self._fd)
            ok = True
        finally:
            self._lock.acquire()
            self._committing = False
            if ok:
                self._durable_seq = max(self._durable_seq, seq)
                self.commits += 1
                if self._pending:
                    self._pending = {c: s for c, s in self._pending.items() if s > seq}
            else:  # the pages are still to write: the next committer retries them
                self._changed_pages.update(pages)
            self._committed.notify_all()

    def sync(self) -> None:
        """Make every change so far durable (clears included); nothing to do costs nothing."""
        with self._lock:
            if not self._changed_pages:
                while self._committing:  # the commit under way covers every change so far
                    self._committed.wait()
                return
            self._change_seq += 1
            need = self._change_seq
            while self._durable_seq < need:
                if self._committing:
                    self._committed.wait()
                else:
                    self._commit_locked()

    # -- clearing (lazy) and whole-bitmap operations ------------------------------------------

    def clear_chunks(self, chunks: Iterator[int] | list[int] | set[int]) -> int:
        """Clear bits in memory (durable with the next commit or :meth:`sync`); how many were set."""
        bits = self._bits
        cleared = 0
        with self._lock:
            for c in chunks:
                byte, mask = c >> 3, 1 << (c & 7)
                if bits[byte] & mask:
                    bits[byte] &= ~mask & 0xFF
                    self._changed_pages.add(c // BITS_PER_PAGE)
                    self._pending.pop(c, None)
                    cleared += 1
            self._dirty -= cleared
        return cleared

    def set_all(self) -> None:
        """Every chunk dirty, durably: the bitmap of a mirror that needs a full resync."""
        with self._lock:
            _set_all(self._bits, self.chunks)
            self._dirty = self.chunks
            self._changed_pages.update(range(len(self._bits) // PAGE))
        self.sync()

    def is_dirty(self, chunk: int) -> bool:
        return bool(self._bits[chunk >> 3] & (1 << (chunk & 7)))

    @property
    def dirty_chunks(self) -> int:
        return self._dirty

    @property
    def dirty_bytes(self) -> int:
        """Bytes covered by set bits (the last chunk counted at its real length)."""
        with self._lock:
            n = self._dirty
            if n and self.is_dirty(self.chunks - 1):
                return (n - 1) * self.chunk + (self.size - (self.chunks - 1) * self.chunk)
            return n * self.chunk

    def runs(self, max_chunks: int = 1 << 62) -> Iterator[tuple[int, int]]:
        """Runs of dirty chunks ``(first, last)``, at most ``max_chunks`` long, from a snapshot."""
        with self._lock:
            snap = bytes(self._bits)
        zero_page = bytes(PAGE)
        start = -1
        for p in range(len(snap) // PAGE):
            page = snap[p * PAGE : (p + 1) * PAGE]
            if page == zero_page:
                if start >= 0:
                    yield from _split(start, p * BITS_PER_PAGE - 1, max_chunks)
                    start = -1
                continue
            for i, byte in enumerate(page):
                base = (p * PAGE + i) * 8
                if (byte == 0xFF and start >= 0) or (byte == 0 and start < 0):
                    continue
                for bit in range(8):
                    c = base + bit
                    if c >= self.chunks:
                        break
                    if byte >> bit & 1:
                        if start < 0:
                            start = c
                    elif start >= 0:
                        yield from _split(start, c - 1, max_chunks)
                        start = -1
        if start >= 0:
            yield from _split(start, self.chunks - 1, max_chunks)

    def close(self) -> None:
        if self._fd >= 0:
            try:
                self.sync()
            finally:
                os.close(self._fd)
                self._fd = -1


def _split(first: int, last: int, max_chunks: int) -> Iterator[tuple[int, int]]:
    while first <= last:
        end = min(last, first + max_chunks - 1)
        yield first, end
        first = end + 1


def _set_all(bits: bytearray, nchunks: int) -> None:
    full, rest = divmod(nchunks, 8)
    bits[:full] = b"\xff" * full
    if rest:
        bits[full] = (1 << rest) - 1


def _header(chunk: int, size: int, nchunks: int) -> bytes:
    head = _HEADER.pack(MAGIC, VERSION, chunk, size, nchunks)
    return (head + _CRC.pack(zlib.crc32(head))).ljust(PAGE, b"\0")


def _check_header(path: Path, head: bytes, chunk: int, size: int, nchunks: int) -> None:
    if len(head) < _HEADER.size + _CRC.size or head[:8] != MAGIC:
        raise BitmapError(
            f"{path} is not a hakeeper bitmap (no {MAGIC.decode()} header); move it away or give its path"
        )
    _magic, version, f_chunk, f_size, f_chunks = _HEADER.unpack_from(head)
    (crc,) = _CRC.unpack_from(head, _HEADER.size)
    if crc != zlib.crc32(head[: _HEADER.size]):
        raise BitmapError(f"the bitmap {path} has a damaged header (CRC mismatch)")
    if version != VERSION:
        raise BitmapError(f"the bitmap {path} has version {version}; this hakeeper reads version {VERSION}")
    if f_chunk != chunk or f_size != size or f_chunks != nchunks:
        raise BitmapError(
            f"the bitmap {path} was made for a volume of {f_size} bytes in chunks of {f_chunk}, "
            f"not {size} bytes in chunks of {chunk}: it belongs to another volume or mirror"
        )
