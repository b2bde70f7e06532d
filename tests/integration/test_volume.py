"""The FUSE volume end to end: image -> ``serve`` process -> loop device -> ext4 (docs/replication.md).

Each test starts ``python -m hakeeper.replication.serve`` on a sparse image under tmp_path and uses the
loop device it prints. The filesystem on it is made, mounted and written in a private mount namespace
(``unshare -m --propagation private``), so that no mount of the test outlives its shell or is copied into
another namespace. Every wait is bounded; the serving process is stopped by its PID (SIGTERM, then
SIGKILL), and the loop device must be gone at the end of every test.
"""

from __future__ import annotations

import errno
import mmap
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hakeeper.replication import loop
from tests.integration.volume_stores import FLUSH_LOG

pytestmark = pytest.mark.needs_root

ROOT = Path(__file__).resolve().parents[2]
SIZE = 128 << 20  # a sparse image: ext4 needs a few MiB of it
READY = 30.0  # s for the serving process to print its device (a loaded machine)
STOP = 30.0  # s for it to stop
SHELL = 120.0  # s for a shell's mkfs, mount, writes, fsck


@dataclass
class Served:
    process: subprocess.Popen[str]
    device: str
    state_dir: Path
    store: Path
    flush_log: Path

    def flushes(self) -> int:
        return len(self.flush_log.read_text().splitlines()) if self.flush_log.exists() else 0


def requirements() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (FUSE mounts, loop devices, mount namespaces)")
    for tool in ("unshare", "mkfs.ext4", "e2fsck", "sha256sum"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} (Makefile's DEB_PACKAGES)")
    if not Path("/dev/fuse").exists() or not Path(loop.LOOP_CONTROL).exists():
        pytest.skip("needs /dev/fuse and /dev/loop-control (modules fuse and loop)")
    try:
        from hakeeper.replication import fusefs

        fusefs.load_mfusepy()
    except Exception as exc:  # noqa: BLE001 -- any reason it cannot load is the skip's reason
        pytest.skip(f"the FUSE volume cannot run here: {exc}")


def start(tmp_path: Path, wrap: str | None = None, *extra: str) -> Served:
    state_dir, store, flush_log = tmp_path / "state", tmp_path / "store.img", tmp_path / "flushes"
    argv = [sys.executable, "-m", "hakeeper.replication.serve", "--store", str(store)]
    argv += ["--create-size", str(SIZE), "--state-dir", str(state_dir)]
    if wrap:
        argv += ["--wrap", wrap]
    argv += extra
    env = {**os.environ, FLUSH_LOG: str(flush_log), "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    with (tmp_path / "serve.log").open("w") as log:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True, env=env, cwd=tmp_path)
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], READY)
    line = process.stdout.readline().strip() if ready else ""
    if not line.startswith("/dev/loop"):
        stop(process)
        pytest.fail(f"serve printed no device in {READY} s: {line!r}; {(tmp_path / 'serve.log').read_text()}")
    return Served(process, line, state_dir, store, flush_log)


def stop(process: subprocess.Popen[str]) -> int:
    """SIGTERM, then SIGKILL after STOP s, by PID; the exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(STOP)
        except subprocess.TimeoutExpired:
            process.kill()
    code = process.wait(STOP)
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            pipe.close()
    return code


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[list[Served]]:
    """Start serving processes with ``start``; every one is stopped, and its loop device gone, at the end."""
    requirements()
    served: list[Served] = []
    yield served
    for one in served:
        stop(one.process)
        assert loop.wait_detached(Path(one.device).name, STOP), f"{one.device} still attached"


def shell(script: str) -> str:
    """``script`` in sh -e in a private mount namespace (its mounts die with it); its stdout."""
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-ec", script],
        capture_output=True,
        text=True,
        timeout=SHELL,
        check=False,
    )
    assert done.returncode == 0, f"{script}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def fuse_mounts() -> list[str]:
    """The volume's FUSE mounts this process or PID 1 can see (none: they live in the server's namespace)."""
    lines = Path("/proc/self/mountinfo").read_text().splitlines() + Path("/proc/1/mountinfo").read_text().splitlines()
    return [line for line in lines if "hakeeper-volume" in line]


def test_ext4_on_the_volume_is_clean_and_keeps_its_files(serve: list[Served], tmp_path: Path) -> None:
    one = start(tmp_path, wrap="tests.integration.volume_stores:counting")
    serve.append(one)
    assert fuse_mounts() == [], "the FUSE mount must be visible only in the serving process's namespace"
    assert loop.backing_file(Path(one.device).name) is not None
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    files = " ".join(f"{mnt}/f{i}" for i in range(3))
    written = shell(f"""
        mkfs.ext4 -F -q {one.device}
        mount {one.device} {mnt}
        for i in 0 1 2; do dd if=/dev/urandom of={mnt}/f$i bs=64K count=$((16 + 40 * i)) conv=fsync status=none; done
        sha256sum {files}
        umount {mnt}
    """)
    assert one.flushes() >= 3, "every fsync of a file must reach the store as a flush"
    shell(f"e2fsck -fn {one.device}")
    assert shell(f"mount {one.device} {mnt}; sha256sum {files}; umount {mnt}") == written
    assert stop(one.process) == 0
    assert loop.wait_detached(Path(one.device).name, STOP)
    assert not (one.state_dir / "device").exists()
    assert fuse_mounts() == []
    shell(f"e2fsck -fn {one.store}")  # the store itself holds the clean filesystem


def test_a_store_that_fails_gives_eio_not_einval(serve: list[Served], tmp_path: Path) -> None:
    one = start(tmp_path, wrap="tests.integration.volume_stores:failing")
    serve.append(one)
    block = mmap.mmap(-1, 4096)  # page-aligned, as O_DIRECT wants
    block.write(b"x" * 4096)
    fd = os.open(one.device, os.O_WRONLY | os.O_DIRECT)
    try:
        with pytest.raises(OSError) as failed:
            os.pwrite(fd, block, 1 << 20)
    finally:
        os.close(fd)
    assert failed.value.errno == errno.EIO
    reader = os.open(one.device, os.O_RDONLY | os.O_DIRECT)
    try:  # reads still work: the volume failed a write, not the whole disk
        assert os.preadv(reader, [block], 0) == 4096
    finally:
        os.close(reader)
    assert stop(one.process) == 0


def test_sigkill_of_the_serving_process_leaves_no_mount_and_no_loop_device(serve: list[Served], tmp_path: Path) -> None:
    one = start(tmp_path)
    serve.append(one)
    shell(f"mkfs.ext4 -F -q {one.device}")
    one.process.kill()
    one.process.wait(STOP)
    assert loop.wait_detached(Path(one.device).name, STOP), "AUTOCLEAR: the device goes with its last opener"
    assert fuse_mounts() == []


def test_sigkill_with_the_filesystem_mounted_leaves_nothing_once_it_is_unmounted(
    serve: list[Served], tmp_path: Path
) -> None:
    one = start(tmp_path)
    serve.append(one)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    shell(f"mkfs.ext4 -F -q {one.device}")
    holder = mounted(one.device, mnt, "echo data > {mnt}/late; sync || true; umount {mnt}")
    try:
        one.process.kill()
        one.process.wait(STOP)
        assert loop.is_attached(Path(one.device).name), "the mounted filesystem keeps the device"
        finish(holder)  # its writes fail (a dead disk); the unmount works
    finally:
        stop(holder)
    assert loop.wait_detached(Path(one.device).name, STOP)
    assert fuse_mounts() == []


def mounted(device: str, mnt: Path, then: str) -> subprocess.Popen[str]:
    """A shell in a private mount namespace that mounts ``device``, says "up", waits for a line, runs ``then``."""
    holder = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         f"mount {device} {mnt} || exit 1; echo up; read x; {then.format(mnt=mnt)}"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None
    ready, _, _ = select.select([holder.stdout], [], [], SHELL)
    if not (ready and holder.stdout.readline().strip() == "up"):
        stop(holder)
        pytest.fail(f"could not mount {device}")
    return holder


def finish(holder: subprocess.Popen[str]) -> int:
    assert holder.stdin is not None
    holder.stdin.write("go\n")
    holder.stdin.close()
    return holder.wait(SHELL)


def test_sigterm_waits_while_a_filesystem_on_the_device_is_mounted(serve: list[Served], tmp_path: Path) -> None:
    one = start(tmp_path, None, "--detach-timeout", "0.5")
    serve.append(one)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    shell(f"mkfs.ext4 -F -q {one.device}")
    holder = mounted(one.device, mnt, "echo data > {mnt}/late && sync && umount {mnt}")
    try:
        one.process.send_signal(signal.SIGTERM)
        log = tmp_path / "serve.log"
        deadline = time.monotonic() + STOP * 2
        while "still in use" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "still in use" in log.read_text()
        assert one.process.poll() is None, "the volume must keep serving the mounted filesystem"
        assert finish(holder) == 0, "the mounted filesystem keeps working after SIGTERM"
    finally:
        stop(holder)
    assert one.process.wait(STOP * 2) == 0
    assert loop.wait_detached(Path(one.device).name, STOP)
