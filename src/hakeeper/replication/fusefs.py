"""The volume's FUSE filesystem: one file, ``vol.img``, served from a :class:`~.device.BlockStore`.

Built on mfusepy (ctypes bindings) over libfuse3; ``docs/replication.md`` says why and with which numbers.
Settings, each from the storage-lab notes:

* libfuse **3** (1 MiB WRITEs; libfuse2 caps them at 128 KiB), chosen with ``FUSE_LIBRARY_NAME=fuse3``
  before mfusepy is imported (mfusepy prefers libfuse2 when both are installed);
* the libfuse3 version is checked against the ones whose struct layouts mfusepy gets right and that were
  tested here (:data:`TESTED_LIBFUSE3`): mfusepy hard-codes layouts per minor version and cannot tell
  3.14.0 from 3.14.1, which differ; the full version comes from the shared library's file name;
* zero-copy ``write_buf``: the data is handed to the store as a memoryview on libfuse's own buffer (valid
  only during the call), with our own ``fuse_bufvec`` layout (mfusepy declares ``buf`` as a pointer, the
  C struct has an inline array); ``FUSE_CAP_SPLICE_READ``, which libfuse turns on when ``write_buf``
  exists, is cleared so that the data always arrives in memory;
* no writeback cache (it acknowledges writes before the store has them: no synchronous mirror then);
* stable attributes: a fixed size and mtime (no needless page-cache invalidation);
* FSYNC is the filesystem's barrier and becomes ``store.flush()``;
* ``truncate`` to another size is refused with EPERM; ``O_TRUNC`` at open is ignored;
* every store error becomes EIO: mfusepy turns an exception without an errno into EINVAL, which a
  filesystem above the loop device would take for a bug rather than a failed disk;
* no per-thread state: ctypes gives each callback on libfuse's threads a fresh Python thread state, so
  ``threading.local`` does not survive from one request to the next.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import stat
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from hakeeper.replication.device import BlockStore
from hakeeper.replication.loop import VolumeError

logger = logging.getLogger(__name__)

IMAGE_NAME = "vol.img"
IMAGE_PATH = "/" + IMAGE_NAME
STOP_PATH = "/.hakeeper-stop"  # looked up to wake a libfuse worker when the volume stops
MAX_WRITE = 1 << 20  # the kernel's largest FUSE request here (max_pages_limit 256)
TESTED_LIBFUSE3 = ("3.14.0",)  # libfuse3 versions whose layouts mfusepy 3.1 gets right, tested here
MFUSEPY_SERIES = "3.1."

LOG_EVERY = 1000  # a store that keeps failing: log its first failed write, then one in LOG_EVERY
FUSE_CAP_SPLICE_READ = 1 << 9
FUSE_CAP_WRITEBACK_CACHE = 1 << 16
FUSE_BUF_IS_FD = 1 << 1


class _FuseBuf(ctypes.Structure):
    """``struct fuse_buf`` (fuse_common.h; unchanged since libfuse 3.0)."""

    _fields_ = (
        ("size", ctypes.c_size_t),
        ("flags", ctypes.c_int),
        ("mem", ctypes.c_void_p),
        ("fd", ctypes.c_int),
        ("pos", ctypes.c_int64),
    )


class _FuseBufvecHead(ctypes.Structure):
    """``struct fuse_bufvec`` up to its inline array ``struct fuse_buf buf[]``."""

    _fields_ = (("count", ctypes.c_size_t), ("idx", ctypes.c_size_t), ("off", ctypes.c_size_t))


_VEC_ONE_SIZE = ctypes.sizeof(_FuseBufvecHead) + ctypes.sizeof(_FuseBuf)  # a fuse_bufvec of one buffer
_libc = ctypes.CDLL(None)
_libc.malloc.restype = ctypes.c_void_p
_libc.malloc.argtypes = (ctypes.c_size_t,)
_libc.free.restype = None
_libc.free.argtypes = (ctypes.c_void_p,)


def libfuse3_version(path: str) -> str:
    """The full version of a libfuse3 shared library from its real file name (libfuse3.so.3.14.0 -> 3.14.0)."""
    real = os.path.basename(os.path.realpath(path))
    prefix = "libfuse3.so."
    if not real.startswith(prefix) or real.count(".") < 4:
        return ""
    return real[len(prefix) :]


def check_versions(libfuse3: str, mfusepy_version: str) -> None:
    """Refuse a libfuse3 or mfusepy this volume was not tested with (struct layouts are hard-coded)."""
    if libfuse3 not in TESTED_LIBFUSE3:
        raise VolumeError(
            f"libfuse3 {libfuse3 or '(version unknown)'} is not one the volume was tested with "
            f"({', '.join(TESTED_LIBFUSE3)}): mfusepy hard-codes libfuse's struct layouts per version "
            "and some patch releases changed them (see docs/replication.md, 'The volume')"
        )
    if not mfusepy_version.startswith(MFUSEPY_SERIES):
        raise VolumeError(f"mfusepy {mfusepy_version} is not {MFUSEPY_SERIES}x, the series the volume was tested with")


_mfusepy: ModuleType | None = None
_load_lock = threading.Lock()


def load_mfusepy() -> ModuleType:
    """Import mfusepy on libfuse3 after checking versions; VolumeError when it cannot be used."""
    global _mfusepy  # noqa: PLW0603 -- one import per process, on first use
    with _load_lock:
        if _mfusepy is not None:
            return _mfusepy
        from ctypes.util import find_library
        from importlib.metadata import PackageNotFoundError, version

        try:
            mfusepy_version = version("mfusepy")
        except PackageNotFoundError:
            raise VolumeError("mfusepy is not installed (pip install mfusepy)") from None
        found = find_library("fuse3")
        if found is None:
            raise VolumeError("libfuse3 is not installed (apt-get install fuse3 libfuse3-3)")
        path = _library_path(found)
        check_versions(libfuse3_version(path), mfusepy_version)
        os.environ["FUSE_LIBRARY_NAME"] = "fuse3"  # mfusepy prefers libfuse2 when both are present
        import mfusepy

        if mfusepy.fuse_version_major != 3:
            raise VolumeError(f"mfusepy loaded libfuse {mfusepy.fuse_version_major}, not libfuse3")
        _mfusepy = mfusepy
        return _mfusepy


def _library_path(soname: str) -> str:
    """Where the dynamic linker finds ``soname`` (libfuse3.so.3), by loading it and asking dl."""
    lib = ctypes.CDLL(soname)
    info = _DlInfo()
    libdl = ctypes.CDLL(None)
    if libdl.dladdr(ctypes.cast(lib.fuse_version, ctypes.c_void_p), ctypes.byref(info)) and info.dli_fname:
        return os.fsdecode(info.dli_fname)
    return soname


class _DlInfo(ctypes.Structure):
    _fields_ = (
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    )


def _fuse_error(code: int) -> OSError:
    return OSError(code, os.strerror(code))


class VolumeFS:
    """The operations libfuse calls, from its worker threads, several at once.

    mfusepy registers every attribute whose name is a FUSE operation as that operation (``lock``,
    ``flush``, ``read``...): the state lives in underscored attributes only.
    """

    use_ns = True  # mfusepy: times in nanoseconds

    def __init__(self, store: BlockStore) -> None:
        self._store = store
        self._size = store.size
        self._mtime_ns = time.time_ns()  # fixed for the life of the mount: stable attributes
        self._uid, self._gid = os.getuid(), os.getgid()
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._conn: dict[str, int] = {}
        self._write_failures = 0

    # -- lifecycle (not FUSE operations)

    @property
    def ready_event(self) -> threading.Event:
        return self._ready

    @property
    def negotiated(self) -> dict[str, int]:
        return dict(self._conn)

    def request_stop(self) -> None:
        self._stopping.set()

    # -- FUSE operations

    def init_with_config(self, conn: Any, config: Any) -> None:
        conn.want &= ~(FUSE_CAP_SPLICE_READ | FUSE_CAP_WRITEBACK_CACHE)
        conn.max_write = min(int(conn.max_write), MAX_WRITE)
        self._conn = {"proto_minor": int(conn.proto_minor), "max_write": int(conn.max_write), "want": int(conn.want)}
        logger.debug("FUSE init: %s", self._conn)
        self._ready.set()

    def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o700, "st_nlink": 2, "st_mtime": self._mtime_ns, **self._owner()}
        if path == IMAGE_PATH:
            return {
                "st_mode": stat.S_IFREG | 0o600,
                "st_nlink": 1,
                "st_size": self._size,
                "st_blocks": self._size // 512,
                "st_mtime": self._mtime_ns,
                "st_ctime": self._mtime_ns,
                "st_atime": self._mtime_ns,
                **self._owner(),
            }
        if path == STOP_PATH and self._stopping.is_set():
            self._mfusepy().fuse_exit()  # this worker sees the exit flag when it returns to libfuse's loop
        raise _fuse_error(errno.ENOENT)

    def readdir(self, path: str, fh: int) -> list[str]:
        if path != "/":
            raise _fuse_error(errno.ENOTDIR)
        return [".", "..", IMAGE_NAME]

    def open(self, path: str, flags: int) -> int:
        if path != IMAGE_PATH:
            raise _fuse_error(errno.ENOENT)
        return 0  # O_TRUNC is ignored: the volume keeps its size

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        if path != IMAGE_PATH:
            raise _fuse_error(errno.ENOENT)
        if length != self._size:
            raise _fuse_error(errno.EPERM)
        return 0

    def read_buf(self, path: str, bufpp: Any, size: int, offset: int, fh: int) -> int:
        """Read into a buffer malloc'd here, which libfuse sends and frees (``fuse_free_buf``): one copy."""
        length = max(0, min(size, self._size - offset))
        vec = _libc.malloc(_VEC_ONE_SIZE)
        mem = _libc.malloc(max(length, 1))
        if not vec or not mem:
            _libc.free(vec)
            _libc.free(mem)
            raise _fuse_error(errno.ENOMEM)
        got = 0
        try:
            if length:
                with memoryview((ctypes.c_ubyte * length).from_address(mem)) as raw, raw.cast("B") as view:
                    got = self._store.read_into(offset, view)
        except Exception:
            _libc.free(vec)
            _libc.free(mem)
            logger.exception("reading %d bytes at %d failed: EIO", length, offset)
            raise _fuse_error(errno.EIO) from None
        head = _FuseBufvecHead.from_address(vec)
        head.count, head.idx, head.off = 1, 0, 0
        buf = _FuseBuf.from_address(vec + ctypes.sizeof(_FuseBufvecHead))
        buf.size, buf.flags, buf.mem, buf.fd, buf.pos = got, 0, mem, -1, 0
        ctypes.cast(bufpp, ctypes.POINTER(ctypes.c_void_p))[0] = vec
        return 0

    def write_buf(self, path: str, bufvec: Any, offset: int, fh: int) -> int:
        head = _FuseBufvecHead.from_address(ctypes.addressof(bufvec.contents))
        bufs = (_FuseBuf * head.count).from_address(ctypes.addressof(head) + ctypes.sizeof(_FuseBufvecHead))
        pieces = [(bufs[i], head.off if i == head.idx else 0) for i in range(head.idx, head.count)]
        length = sum(buf.size - skip for buf, skip in pieces)
        if offset + length > self._size:
            raise _fuse_error(errno.ENOSPC)  # the volume does not grow
        done = 0
        try:
            for buf, skip in pieces:
                if buf.flags & FUSE_BUF_IS_FD:  # cannot happen with SPLICE_READ cleared
                    raise RuntimeError("libfuse passed a WRITE as a file descriptor (splice)")
                if buf.size > skip:
                    data = memoryview((ctypes.c_ubyte * (buf.size - skip)).from_address(buf.mem + skip)).cast("B")
                    self._store.write(offset + done, data)
                    done += buf.size - skip
        except Exception as exc:  # noqa: BLE001 -- any failure of the store is a failed disk: EIO
            self._write_failures += 1  # approximate under races: it only thins the log out
            if self._write_failures % LOG_EVERY == 1:
                logger.error(
                    "writing %d bytes at %d failed, EIO to the kernel (%d failed writes so far): %s",
                    length, offset, self._write_failures, exc,
                )  # fmt: skip
            raise _fuse_error(errno.EIO) from None
        return done

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        try:
            self._store.flush()
        except Exception:
            logger.exception("flush failed: EIO")
            raise _fuse_error(errno.EIO) from None
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": self._size // 4096, "f_namemax": 255}

    # -- helpers

    def _owner(self) -> dict[str, int]:
        return {"st_uid": self._uid, "st_gid": self._gid}

    @staticmethod
    def _mfusepy() -> ModuleType:
        return load_mfusepy()


def serve(fs: VolumeFS, mountpoint: Path, *, max_threads: int, max_idle_threads: int) -> None:
    """Mount ``fs`` on ``mountpoint`` and serve it until stopped (blocks; run it in a thread of its own).

    libfuse's worker pool is bounded by ``max_threads``; ``max_idle_threads`` of them stay when idle.
    """
    mfusepy = load_mfusepy()
    mfusepy.FUSE(
        fs,
        str(mountpoint),
        foreground=True,
        fsname="hakeeper-volume",
        subtype="hakeeper",
        max_threads=max_threads,
        max_idle_threads=max_idle_threads,
    )
