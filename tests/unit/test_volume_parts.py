"""The FUSE volume's pure parts: the operations on a fake store, struct packing, version pinning, mountinfo.

libfuse is not involved: the operations are called as libfuse's threads would call them, with a
``fuse_bufvec`` built here in ctypes memory.
"""

from __future__ import annotations

import ctypes
import errno
import struct
import threading
from pathlib import Path
from typing import Any

import pytest

from hakeeper.replication import fusefs, loop
from hakeeper.replication.fusefs import VolumeFS
from hakeeper.replication.loop import VolumeError
from hakeeper.replication.volume import inherited_loop_mounts, unescape_mountinfo

SIZE = 1 << 20


class MemoryStore:
    def __init__(self, size: int = SIZE) -> None:
        self.data = bytearray(size)
        self.flushes = 0
        self.fail: BaseException | None = None
        self.lock = threading.Lock()

    @property
    def size(self) -> int:
        return len(self.data)

    def read_into(self, offset: int, buf: memoryview) -> int:
        chunk = self.data[offset : offset + len(buf)]
        buf[: len(chunk)] = chunk
        return len(chunk)

    def write(self, offset: int, data: bytes | memoryview) -> None:
        if self.fail is not None:
            raise self.fail
        with self.lock:
            self.data[offset : offset + len(data)] = data

    def flush(self) -> None:
        if self.fail is not None:
            raise self.fail
        self.flushes += 1

    def close(self) -> None:
        pass


class Bufvec:
    """A ``struct fuse_bufvec`` with inline buffers in memory, as libfuse hands it to write_buf."""

    def __init__(self, chunks: list[bytes], idx: int = 0, off: int = 0) -> None:
        self.memory = [ctypes.create_string_buffer(chunk, len(chunk)) for chunk in chunks]
        vec = type(
            "Vec",
            (ctypes.Structure,),
            {"_fields_": [("head", fusefs._FuseBufvecHead), ("buf", fusefs._FuseBuf * len(chunks))]},
        )
        self.vec = vec()
        self.vec.head.count, self.vec.head.idx, self.vec.head.off = len(chunks), idx, off
        for i, mem in enumerate(self.memory):
            self.vec.buf[i].size = len(chunks[i])
            self.vec.buf[i].mem = ctypes.addressof(mem)
        self.pointer: Any = ctypes.pointer(self.vec)


def write(fs: VolumeFS, chunks: list[bytes], offset: int, off: int = 0) -> int:
    vec = Bufvec(chunks, off=off)  # alive until write_buf returns, as libfuse's buffer is
    return fs.write_buf("/vol.img", vec.pointer, offset, 0)


def test_a_write_lands_in_the_store_from_libfuses_buffers() -> None:
    store = MemoryStore()
    fs = VolumeFS(store)
    assert write(fs, [b"a" * 4096, b"b" * 512], 8192) == 4608
    assert store.data[8192 : 8192 + 4608] == b"a" * 4096 + b"b" * 512
    assert write(fs, [b"xxyyyy"], 0, off=2) == 4
    assert store.data[:4] == b"yyyy"


def test_store_failures_are_eio_never_einval() -> None:
    store = MemoryStore()
    fs = VolumeFS(store)
    for failure in (TimeoutError("a mirror timed out"), OSError(errno.ENOSPC, "full"), ValueError("bug")):
        store.fail = failure
        with pytest.raises(OSError) as raised:
            write(fs, [b"z" * 512], 0)
        assert raised.value.errno == errno.EIO
        with pytest.raises(OSError) as raised:
            fs.fsync("/vol.img", 1, 0)
        assert raised.value.errno == errno.EIO
    store.read_into = failing_read  # type: ignore[method-assign]
    with pytest.raises(OSError) as raised:
        read(fs, 512, 0)
    assert raised.value.errno == errno.EIO


def failing_read(offset: int, buf: memoryview) -> int:
    raise TimeoutError("the store gave up")


def test_the_volume_does_not_grow_or_shrink() -> None:
    fs = VolumeFS(MemoryStore())
    with pytest.raises(OSError) as raised:
        write(fs, [b"z" * 1024], SIZE - 512)
    assert raised.value.errno == errno.ENOSPC
    with pytest.raises(OSError) as raised:
        fs.truncate("/vol.img", 0)
    assert raised.value.errno == errno.EPERM
    assert fs.truncate("/vol.img", SIZE) == 0
    assert fs.open("/vol.img", 0o1000 | 2) == 0  # O_TRUNC|O_RDWR: ignored


def test_attributes_are_stable_and_fsync_flushes() -> None:
    store = MemoryStore()
    fs = VolumeFS(store)
    first = fs.getattr("/vol.img")
    write(fs, [b"q" * 512], 0)
    assert fs.getattr("/vol.img") == first
    assert first["st_size"] == SIZE
    assert fs.readdir("/", 0) == [".", "..", "vol.img"]
    with pytest.raises(OSError) as raised:
        fs.getattr("/other")
    assert raised.value.errno == errno.ENOENT
    fs.fsync("/vol.img", 1, 0)
    assert store.flushes == 1
    assert read(fs, 1024, 0) == b"q" * 512 + bytes(512)
    assert read(fs, 1024, SIZE - 100) == bytes(100)
    assert read(fs, 1024, SIZE) == b""


def read(fs: VolumeFS, size: int, offset: int) -> bytes:
    """read_buf as libfuse calls it; the buffers it malloc'd are freed here, as libfuse frees them."""
    pointer = ctypes.pointer(ctypes.c_void_p())
    assert fs.read_buf("/vol.img", pointer, size, offset, 0) == 0
    vec = pointer.contents.value
    assert vec is not None
    head = fusefs._FuseBufvecHead.from_address(vec)
    buf = fusefs._FuseBuf.from_address(vec + ctypes.sizeof(fusefs._FuseBufvecHead))
    assert (head.count, head.idx, head.off, buf.flags) == (1, 0, 0, 0)
    data = ctypes.string_at(buf.mem, buf.size)
    fusefs._libc.free(buf.mem)
    fusefs._libc.free(vec)
    return data


def test_the_loop_config_is_the_kernels_struct() -> None:
    packed = loop.pack_config(7, loop.LO_FLAGS_AUTOCLEAR | loop.LO_FLAGS_DIRECT_IO, "/x/vol.img")
    assert len(packed) == 304
    assert struct.unpack_from("=II", packed) == (7, 0)
    flags_at = 8 + 5 * 8 + 3 * 4  # after fd, block_size, five u64 and three u32 of loop_info64
    assert struct.unpack_from("=I", packed, flags_at) == (20,)
    assert packed[flags_at + 4 : flags_at + 4 + 10] == b"/x/vol.img"


def test_libfuse3_versions_are_pinned() -> None:
    assert fusefs.libfuse3_version("/nonexistent/libfuse3.so.3.14.0") == "3.14.0"
    assert fusefs.libfuse3_version("/nonexistent/libfuse3.so.3") == ""
    fusefs.check_versions("3.14.0", "3.1.1")
    with pytest.raises(VolumeError, match=r"libfuse3 3\.14\.1 is not one"):
        fusefs.check_versions("3.14.1", "3.1.1")
    with pytest.raises(VolumeError, match="version unknown"):
        fusefs.check_versions("", "3.1.1")
    with pytest.raises(VolumeError, match=r"mfusepy 3\.2\.0"):
        fusefs.check_versions("3.14.0", "3.2.0")


MOUNTINFO = """\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
90 22 7:3 / /srv/data rw,relatime shared:40 - ext4 /dev/loop3 rw
91 90 7:4 / /srv/data/inner rw,relatime shared:41 - xfs /dev/loop4 rw
92 22 7:5 / /var/lib/hakeeper\\040vol rw,relatime shared:42 - ext4 /dev/loop5 rw
93 22 0:50 / /tmp rw shared:43 - tmpfs tmpfs rw
"""


def test_inherited_loop_mounts_are_found_deepest_first_except_kept_paths() -> None:
    assert unescape_mountinfo("/a\\040b\\134c") == "/a b\\c"
    assert inherited_loop_mounts(MOUNTINFO) == ["/srv/data/inner", "/var/lib/hakeeper vol", "/srv/data"]
    kept = inherited_loop_mounts(MOUNTINFO, keep=(Path("/var/lib/hakeeper vol/state"),))
    assert kept == ["/srv/data/inner", "/srv/data"]


def test_the_namespace_is_entered_before_threads_and_the_volume_refuses_to_run_outside_one(tmp_path: Path) -> None:
    from hakeeper.replication.volume import Volume, enter_private_mount_namespace

    with pytest.raises(VolumeError, match="private mount namespace"):
        Volume(MemoryStore(), tmp_path / "mnt").open()  # this process never entered one
    release = threading.Event()
    other = threading.Thread(target=release.wait, args=(10,))
    other.start()
    try:
        with pytest.raises(VolumeError, match="before any thread"):
            enter_private_mount_namespace()
    finally:
        release.set()
        other.join(10)
    with pytest.raises(VolumeError, match="thread pool"):
        Volume(MemoryStore(), tmp_path / "mnt", max_threads=2, max_idle_threads=3)


def test_the_engine_seam_loads_a_factory_and_refuses_a_bad_one(tmp_path: Path) -> None:
    from hakeeper.errors import UsageError
    from hakeeper.replication.serve import load_factory, write_device_file
    from tests.integration import volume_stores

    assert load_factory("tests.integration.volume_stores:counting") is volume_stores.counting
    for bad in ("tests.integration.volume_stores", "no.such.module:f", "tests.integration.volume_stores:nothing"):
        with pytest.raises(UsageError):
            load_factory(bad)
    write_device_file(tmp_path, "/dev/loop7")
    assert (tmp_path / "device").read_text() == "/dev/loop7\n"
    assert [p.name for p in tmp_path.iterdir()] == ["device"]
