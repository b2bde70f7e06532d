"""The mirrored volume on the source: a FUSE file (:mod:`.fusefs`) with a loop device on it (:mod:`.loop`).

A :class:`Volume` serves one :class:`~.device.BlockStore` as ``<mountpoint>/vol.img`` and attaches a loop
device to that file; the administrator runs ``mkfs`` on :attr:`Volume.device` and mounts it anywhere.

**The managed mount namespace.** The FUSE mount lives only in a private mount namespace of the process that
serves it (storage-lab notes, pitfall 1): a namespace created elsewhere while the mount is visible would get
a copy of it, pin it, and make the stop fail with EBUSY. So the serving process calls
:func:`enter_private_mount_namespace` first thing, while it has one thread (``unshare(CLONE_NEWNS)`` fails
with EINVAL in a process with threads), before it starts anything; :meth:`Volume.open` refuses to run
otherwise. The namespace is private all the way down (``MS_REC | MS_PRIVATE``): nothing mounted in it
propagates out. Mounts of loop devices that the copy inherited (other volumes' filesystems, for instance)
are detached in it, so that this process does not pin them in turn. The loop device itself is global:
it is what the administrator sees and uses. When the process ends, its namespace and the FUSE mount go
with it, and the loop device (AUTOCLEAR, see :mod:`.loop`) goes as soon as nobody has it open.

**Order of a stop** (:meth:`Volume.close`): let go of the loop device, wait (bounded) until the kernel has
detached it -- it stays while a filesystem on it is mounted; :class:`VolumeBusy` says so and the volume
keeps serving -- then end libfuse's loop, which unmounts the FUSE file. Unmounting first would leave the
loop device on a dead file: the filesystem above sees I/O errors, as after a crash.

**Process hardening** (:func:`harden_process`, best effort, WARNING when refused): ``PR_SET_IO_FLUSHER``
(memory reclaim does not wait on I/O this process must serve; threads inherit it, so it is set before
libfuse's threads exist) and ``mlockall`` (no page of the process is swapped out under reclaim).

libfuse installs its own handlers for SIGHUP, SIGINT and SIGTERM when they have the default action; its
handler ends the FUSE loop under the loop device's feet. :meth:`Volume.open` therefore refuses to start
unless the process has its own handlers (or SIG_IGN) for them, as the serve entry point does.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType, TracebackType

from hakeeper.replication import fusefs
from hakeeper.replication.device import BlockStore
from hakeeper.replication.loop import LoopDevice, VolumeError

logger = logging.getLogger(__name__)

CLONE_NEWNS = 0x00020000
MS_REC = 1 << 14
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
PR_SET_IO_FLUSHER = 57
MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT = 1, 2, 4
GUARDED_SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGTERM)

READY_TIMEOUT = 10.0  # s for the FUSE mount to answer INIT
DETACH_TIMEOUT = 10.0  # s for the kernel to let the loop device go
STOP_TIMEOUT = 10.0  # s for libfuse's loop to end and unmount

_libc = ctypes.CDLL(None, use_errno=True)
_private_namespace = False


class VolumeBusy(VolumeError):
    """The loop device is still open (a filesystem on it is mounted): the volume cannot stop yet."""


def _errno_error(what: str) -> OSError:
    code = ctypes.get_errno()
    return OSError(code, f"{what}: {os.strerror(code)}")


def enter_private_mount_namespace(keep: tuple[Path, ...] = ()) -> None:
    """Move this process into a mount namespace of its own, private all the way down.

    Call it at the start of the process, before any thread is started. Mounts of loop devices inherited
    from the parent's namespace are detached here (they stay where they are for everyone else), except
    those holding a path in ``keep`` (the backing store, the state directory).
    """
    global _private_namespace  # noqa: PLW0603 -- a property of the process, set once
    if threading.active_count() > 1:
        raise VolumeError("a private mount namespace must be entered before any thread is started")
    if _libc.unshare(CLONE_NEWNS) != 0:  # os.unshare is Python 3.12's
        raise VolumeError(f"cannot enter a private mount namespace: {os.strerror(ctypes.get_errno())}")
    if _libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        raise VolumeError(f"cannot make the mount namespace private: {_errno_error('mount').strerror}")
    _private_namespace = True
    for mountpoint in inherited_loop_mounts(Path("/proc/self/mountinfo").read_text(), keep):
        if _libc.umount2(os.fsencode(mountpoint), MNT_DETACH) != 0:
            logger.warning("cannot detach %s in this namespace: %s", mountpoint, os.strerror(ctypes.get_errno()))
        else:
            logger.debug("detached %s (a loop device's filesystem) in the volume's namespace", mountpoint)


def in_private_mount_namespace() -> bool:
    return _private_namespace


def unescape_mountinfo(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (``\\040``)."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and len(field[i + 1 : i + 4]) == 3 and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def inherited_loop_mounts(mountinfo: str, keep: tuple[Path, ...] = ()) -> list[str]:
    """Mount points of filesystems on loop devices, deepest first, but none holding a path of ``keep``."""
    found = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        source = line.split(" - ", 1)[1].split()
        if len(source) < 2 or not source[1].startswith("/dev/loop"):
            continue
        mountpoint = unescape_mountinfo(fields[4])
        if any(p == Path(mountpoint) or Path(mountpoint) in p.parents for p in keep):
            continue
        found.append(mountpoint)
    return sorted(found, key=lambda m: m.count("/"), reverse=True)


def stop_on_signals() -> threading.Event:
    """The serving process's own handlers, installed before libfuse runs (it takes over signals left at
    their default): SIGTERM and SIGINT set the event returned, SIGHUP is ignored (a daemon's)."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()  # only a flag: the main thread does the work

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    return stop


def harden_process() -> list[str]:
    """PR_SET_IO_FLUSHER and mlockall, best effort; what was refused (each logged at WARNING)."""
    refused = []
    if _libc.prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) != 0:
        refused.append(f"PR_SET_IO_FLUSHER: {os.strerror(ctypes.get_errno())}")
    if _libc.mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) != 0:
        refused.append(f"mlockall: {os.strerror(ctypes.get_errno())}")
    for what in refused:
        logger.warning("the volume runs without %s (memory reclaim may wait on the volume's own I/O)", what)
    return refused


class Volume:
    """One ``BlockStore`` served as ``<mountpoint>/vol.img`` with a loop device on it (see the module).

    ``with Volume(store, mountpoint) as volume: ... volume.device ...``; the store stays the caller's
    (it is not closed here). libfuse's worker pool is bounded: ``max_threads`` at most, ``max_idle_threads``
    kept when idle.
    """

    def __init__(
        self,
        store: BlockStore,
        mountpoint: Path,
        *,
        max_threads: int = 8,
        max_idle_threads: int = 4,
        direct_io: bool = True,
    ) -> None:
        if max_threads < 1 or not 0 <= max_idle_threads <= max_threads:
            raise VolumeError(f"bad thread pool: max_threads {max_threads}, max_idle_threads {max_idle_threads}")
        self.store = store
        self.mountpoint = Path(mountpoint).absolute()
        self.image = self.mountpoint / fusefs.IMAGE_NAME
        self._max_threads = max_threads
        self._max_idle_threads = max_idle_threads
        self._direct_io = direct_io
        self._fs = fusefs.VolumeFS(store)
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._loop: LoopDevice | None = None

    @property
    def device(self) -> str:
        """The loop device, ``/dev/loopN``."""
        if self._loop is None:
            raise VolumeError("the volume is not open")
        return self._loop.path

    @property
    def serving(self) -> bool:
        """Whether libfuse's loop still runs (it ends only when stopped, unless something went wrong)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def negotiated(self) -> dict[str, int]:
        """What the kernel and libfuse agreed on at INIT (max_write, protocol minor, capabilities)."""
        return self._fs.negotiated

    def open(self, ready_timeout: float = READY_TIMEOUT) -> Volume:
        if not in_private_mount_namespace():
            raise VolumeError(
                "the volume must be served from a private mount namespace: call "
                "enter_private_mount_namespace() at the start of the process"
            )
        for sig in GUARDED_SIGNALS:
            if signal.getsignal(sig) == signal.SIG_DFL:
                raise VolumeError(
                    f"{sig.name} has its default action: libfuse would take it over and end the "
                    "FUSE loop under the loop device; install a handler first"
                )
        fusefs.load_mfusepy()  # refuses an untested libfuse3 before anything is mounted
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._serve, name="volume-fuse", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + ready_timeout
        while not self._fs.ready_event.wait(0.02):
            if not self._thread.is_alive():
                raise VolumeError(f"FUSE could not mount {self.mountpoint}: {self._failure or 'libfuse gave up'}")
            if time.monotonic() >= deadline:
                self._stop_fuse(STOP_TIMEOUT)
                raise VolumeError(f"the FUSE mount on {self.mountpoint} did not answer in {ready_timeout} s")
        try:
            self._loop = LoopDevice.attach(self.image, direct_io=self._direct_io)
        except VolumeError:
            self._stop_fuse(STOP_TIMEOUT)
            raise
        logger.info(
            "volume %s on %s (%d bytes, FUSE %s)", self._loop.path, self.image, self.store.size, self._fs.negotiated
        )
        return self

    def close(self, detach_timeout: float = DETACH_TIMEOUT, stop_timeout: float = STOP_TIMEOUT) -> None:
        """Detach the loop device, wait until it is gone, then unmount; VolumeBusy if it stays in use."""
        if self._loop is not None:
            self._loop.release()
            if not self._loop.wait_detached(detach_timeout):
                raise VolumeBusy(
                    f"{self._loop.path} is still in use after {detach_timeout} s (is a filesystem "
                    "on it mounted? unmount it; the volume keeps serving until then)"
                )
            logger.info("volume %s detached", self._loop.path)
            self._loop = None
        self._stop_fuse(stop_timeout)

    def _serve(self) -> None:
        try:
            fusefs.serve(
                self._fs, self.mountpoint, max_threads=self._max_threads, max_idle_threads=self._max_idle_threads
            )
        except BaseException as exc:  # noqa: BLE001 -- reported by open()/close() in the caller's thread
            self._failure = exc
            if not self._fs.ready_event.is_set():
                return
            logger.error("the FUSE loop of %s ended with an error: %s", self.mountpoint, exc)

    def _stop_fuse(self, timeout: float) -> None:
        thread = self._thread
        if thread is None:
            return
        self._fs.request_stop()
        deadline = time.monotonic() + timeout
        poker = threading.Thread(target=self._poke, args=(thread, deadline), name="volume-stop", daemon=True)
        poker.start()  # its lookups may block (a mount that never answered INIT): this thread only joins
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            raise VolumeError(f"libfuse's loop on {self.mountpoint} did not end in {timeout} s")
        self._thread = None
        logger.info("volume on %s unmounted", self.mountpoint)

    def _poke(self, thread: threading.Thread, deadline: float) -> None:
        """Look up the stop name until libfuse's loop ended: a LOOKUP wakes a worker, which ends the loop."""
        while thread.is_alive() and time.monotonic() < deadline:
            try:
                os.stat(self.mountpoint / fusefs.STOP_PATH.lstrip("/"))
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.ENOTCONN, errno.ENOTDIR):
                    logger.debug("stop lookup: %s", exc)
            thread.join(0.05)

    def __enter__(self) -> Volume:
        return self.open()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
