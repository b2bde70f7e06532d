"""Loop devices for the mirrored volume: attach with ``LOOP_CONFIGURE``, detach by letting go, wait until gone.

The volume's loop device is attached with two flags:

* ``LO_FLAGS_DIRECT_IO`` (``losetup --direct-io=on``): the loop device sends its I/O straight to the FUSE
  file, without a second page cache (storage-lab notes, pitfall 2);
* ``LO_FLAGS_AUTOCLEAR``: the kernel detaches the device when its last opener closes it. The serving
  process keeps the descriptor it configured the device with open for as long as it serves; when that
  process ends -- a clean stop or SIGKILL alike -- the device goes away as soon as nobody else (a mounted
  filesystem, ``mkfs``) has it open. A crash therefore leaves no loop device behind once the filesystem
  above it is unmounted, and nothing needs to find and detach it by name.

``losetup -d`` on a device that is still open only sets AUTOCLEAR (pitfall 12); the same holds here: after
:meth:`LoopDevice.release`, :meth:`LoopDevice.wait_detached` polls sysfs, bounded, until the kernel let
the device go. Only then may the FUSE file under it be unmounted.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import struct
import time
from pathlib import Path

from hakeeper.errors import SystemCallFailed

logger = logging.getLogger(__name__)

LOOP_CONTROL = "/dev/loop-control"
LOOP_CTL_GET_FREE = 0x4C82
LOOP_CONFIGURE = 0x4C0A
LO_FLAGS_AUTOCLEAR = 4
LO_FLAGS_DIRECT_IO = 16
LO_NAME_SIZE = 64
# struct loop_config { u32 fd; u32 block_size; struct loop_info64 info; u64 reserved[8]; } (linux/loop.h)
_LOOP_CONFIG = struct.Struct("=II QQQQQ IIII 64s64s32s QQ 8Q")
assert _LOOP_CONFIG.size == 304
ATTACH_ATTEMPTS = 16  # another process may take the free device between GET_FREE and CONFIGURE
POLL = 0.02  # s between two looks at sysfs


class VolumeError(SystemCallFailed):
    """The volume could not be brought up or taken down (FUSE, loop device, mount namespace)."""


def sysfs_dir(name: str) -> Path:
    return Path("/sys/block") / name / "loop"


def backing_file(name: str) -> str | None:
    """What loop device ``name`` (``loop3``) is attached to, as the kernel shows it; None when it is free."""
    try:
        return (sysfs_dir(name) / "backing_file").read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None


def is_attached(name: str) -> bool:
    return sysfs_dir(name).is_dir()


def wait_detached(name: str, timeout: float) -> bool:
    """Wait until loop device ``name`` is free, at most ``timeout`` seconds; whether it is."""
    deadline = time.monotonic() + timeout
    while is_attached(name):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL)
    return True


def pack_config(backing_fd: int, flags: int, file_name: str, block_size: int = 0) -> bytes:
    """The ``struct loop_config`` for LOOP_CONFIGURE (block size 0: the kernel's default, 512)."""
    name = os.fsencode(file_name)[: LO_NAME_SIZE - 1]
    return _LOOP_CONFIG.pack(backing_fd, block_size, 0, 0, 0, 0, 0, 0, 0, 0, flags, name, b"", b"", 0, 0, *[0] * 8)


class LoopDevice:
    """A loop device this process attached and holds open (see the module's docstring)."""

    def __init__(self, number: int, fd: int) -> None:
        self.number = number
        self.name = f"loop{number}"
        self.path = f"/dev/loop{number}"
        self._fd = fd

    @classmethod
    def attach(cls, backing: Path, *, direct_io: bool = True) -> LoopDevice:
        """Attach a free loop device to ``backing`` (read-write, AUTOCLEAR, direct I/O when asked)."""
        flags = LO_FLAGS_AUTOCLEAR | (LO_FLAGS_DIRECT_IO if direct_io else 0)
        try:
            backing_fd = os.open(backing, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise VolumeError(f"cannot open {backing} for the loop device: {exc.strerror}") from None
        try:
            control = os.open(LOOP_CONTROL, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            os.close(backing_fd)
            raise VolumeError(f"cannot open {LOOP_CONTROL}: {exc.strerror} (is the loop module loaded?)") from None
        try:
            config = pack_config(backing_fd, flags, str(backing))
            for _ in range(ATTACH_ATTEMPTS):
                number = fcntl.ioctl(control, LOOP_CTL_GET_FREE)
                fd = os.open(f"/dev/loop{number}", os.O_RDWR | os.O_CLOEXEC)
                try:
                    fcntl.ioctl(fd, LOOP_CONFIGURE, config)
                except OSError as exc:
                    os.close(fd)
                    if exc.errno == errno.EBUSY:  # taken by someone else since GET_FREE: ask again
                        continue
                    raise VolumeError(f"cannot attach /dev/loop{number} to {backing}: {exc.strerror}") from None
                device = cls(number, fd)
                if direct_io and not device.direct_io:
                    logger.warning("%s runs without direct I/O: the kernel refused it for %s", device.path, backing)
                return device
            raise VolumeError(f"no free loop device after {ATTACH_ATTEMPTS} attempts (all taken meanwhile)")
        except OSError as exc:
            raise VolumeError(f"cannot get a free loop device: {exc.strerror}") from None
        finally:
            os.close(control)
            os.close(backing_fd)  # the loop device holds its own reference to the file

    @property
    def direct_io(self) -> bool:
        try:
            return (sysfs_dir(self.name) / "dio").read_text().strip() == "1"
        except OSError:
            return False

    @property
    def held(self) -> bool:
        return self._fd >= 0

    def release(self) -> None:
        """Let go of the device: the kernel detaches it once nobody else has it open (AUTOCLEAR)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def wait_detached(self, timeout: float) -> bool:
        return wait_detached(self.name, timeout)
