"""What a mirrored volume serves (:class:`BlockStore`) and the node's own backing store (:class:`LocalStore`).

The FUSE volume calls a ``BlockStore`` from libfuse's worker threads, several at once:
every method blocks until its work is done and must be safe to call from many threads.
The mirror engine is a ``BlockStore`` that wraps a :class:`LocalStore` and sends each write
to its targets; a volume that is not mirrored is served from a ``LocalStore`` alone.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Protocol

from hakeeper.errors import HakeeperError

SECTOR = 512  # the unit of a block device's I/O: offsets and lengths the loop device sends are multiples of it


class StoreError(HakeeperError):
    """A backing store that cannot be used (missing, not a file or block device, wrong size)."""

    exit_code = 1


class BlockStore(Protocol):
    """A fixed-size array of bytes with durable writes: the volume's contents."""

    @property
    def size(self) -> int:
        """Bytes, a multiple of :data:`SECTOR`; never changes while the store is open."""
        ...

    def read_into(self, offset: int, buf: memoryview) -> int:
        """Fill ``buf`` from ``offset``; the count read (short only at the end of the store)."""
        ...

    def write(self, offset: int, data: bytes | memoryview) -> None:
        """Write ``data`` at ``offset``. Returns once the write is acknowledged by the store's rules
        (a mirror's mode); raises OSError only when the local disk failed it.

        From the FUSE volume, ``data`` is a memoryview on libfuse's own buffer, valid only until this
        call returns: a store that keeps the data longer (an asynchronous mirror's queue) copies it."""
        ...

    def flush(self) -> None:
        """A barrier: every write acknowledged before the call is durable when it returns."""
        ...

    def close(self) -> None: ...


def store_size(fd: int) -> int:
    """The size of an open image file or block device (``lseek`` to the end works for both)."""
    return os.lseek(fd, 0, os.SEEK_END)


class LocalStore:
    """A block device or an image file of this node, read and written with ``pread``/``pwrite``.

    Durability comes from :meth:`flush` (``fdatasync``), as for a disk with a write cache:
    the FUSE volume passes the filesystem's barriers (FUSE FSYNC) on as flushes.
    """

    def __init__(self, path: Path | str, *, create_size: int | None = None) -> None:
        self.path = Path(path)
        if create_size is not None and not self.path.exists():
            if create_size <= 0 or create_size % SECTOR:
                raise StoreError(f"a volume's size must be a positive multiple of {SECTOR} bytes, not {create_size}")
            with open(self.path, "xb") as image:
                image.truncate(create_size)
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise StoreError(f"no backing store at {self.path}") from None
        except OSError as exc:
            raise StoreError(f"cannot open the backing store {self.path}: {exc.strerror}") from None
        mode = os.fstat(self._fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
            os.close(self._fd)
            raise StoreError(f"{self.path} is neither an image file nor a block device")
        self._size = store_size(self._fd)
        if self._size == 0 or self._size % SECTOR:
            os.close(self._fd)
            raise StoreError(f"{self.path} has {self._size} bytes: a volume needs a positive multiple of {SECTOR}")

    @property
    def size(self) -> int:
        return self._size

    @property
    def fd(self) -> int:
        return self._fd

    def read_into(self, offset: int, buf: memoryview) -> int:
        return os.preadv(self._fd, [buf], offset)

    def write(self, offset: int, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:  # bounded: each pass writes at least one byte or raises
            done = os.pwrite(self._fd, view, offset)
            if done <= 0:
                raise OSError(f"short write to {self.path} at {offset}")
            view, offset = view[done:], offset + done

    def flush(self) -> None:
        os.fdatasync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
