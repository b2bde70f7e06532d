"""Mirror throughput benchmark (issue 14), first half: a plain file against the FUSE volume without a mirror.

Targets, each measured in the same run (the machine is shared and noisy, storage-lab pitfall 14):

* (a) **plain**: a file on the disk that holds the benchmark's directory -- the baseline;
* (b) **volume**: a file in ext4 on the volume's loop device, served by ``python -m
  hakeeper.replication.serve`` from an image file on that same disk, without a mirror;
* (c) **sync** and (d) **async** mirrors to node2: hooks only (:func:`sync_mirror_target`,
  :func:`async_mirror_target`), filled in when the mirror engine exists; they print "not measured yet".

For each target: 1 MiB sequential durable writes (``dd bs=1M conv=fdatasync``, ``--mib`` MiB) and 4 KiB
QD1 writes (``dd bs=4k oflag=direct``, ``--ops`` writes); one warm-up run, then ``--runs`` measured runs,
medians printed with every run in brackets. The files are written once before (the warm-up), so that the
measured runs overwrite (``conv=notrunc``) and measure no allocation; ``sync`` and a 1 s pause come before
every run. Times are taken around each dd process; MB/s is 10^6 bytes per second.

The last line is ``volume_vs_plain=<(b) / (a), 1 MiB fdatasync MB/s>``; the notes measured 0.71-0.92 on
this kind of machine. When the engine comes, the last line becomes ``sync_mirror_ratio=<(c)/(b)>``.

Run as root from the repository root: ``.venv/bin/python bench/mirror_throughput.py [--quick]``. The
benchmark enters a private mount namespace first (its ext4 mount cannot leak or be pinned), stops the
serving process by its PID, and removes its directory at the end, also after an error (``--keep`` keeps
it). No network traffic.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hakeeper.replication import loop
from hakeeper.replication.volume import enter_private_mount_namespace

ROOT = Path(__file__).resolve().parents[1]
READY = 30.0  # s for the serving process to print its device
STOP = 30.0  # s for it to stop
DD_LIMIT = 600.0  # s for one dd
MIB = 1 << 20


class BenchFailed(Exception):
    pass


@dataclass
class Figures:
    name: str
    seq: list[float] = field(default_factory=list)  # MB/s, 1 MiB conv=fdatasync
    iops: list[float] = field(default_factory=list)  # 4 KiB QD1 oflag=direct

    def line(self) -> str:
        def med(values: list[float], unit: str, fmt: str) -> str:
            if not values:
                return "not measured"
            runs = ", ".join(format(v, fmt) for v in values)
            return f"{format(statistics.median(values), fmt)} {unit} [{runs}]"

        return f"{self.name}: 1 MiB fdatasync {med(self.seq, 'MB/s', '.0f')}; 4 KiB QD1 {med(self.iops, 'IOPS', '.0f')}"


Target = Callable[[Path], contextlib.AbstractContextManager[Path | None]]
"""A target: given the benchmark's directory, a context that yields the directory to write files in
(None: this target cannot be measured yet)."""


def dd(args: list[str]) -> float:
    """Run dd after ``sync`` and a 1 s pause; seconds it took."""
    subprocess.run(["sync"], check=True, timeout=DD_LIMIT)
    time.sleep(1)
    start = time.monotonic()
    done = subprocess.run(["dd", *args, "status=none"], capture_output=True, text=True, timeout=DD_LIMIT, check=False)
    elapsed = time.monotonic() - start
    if done.returncode != 0:
        raise BenchFailed(f"dd {' '.join(args)} failed: {done.stderr.strip()}")
    return elapsed


def measure(name: str, directory: Path, mib: int, ops: int, runs: int) -> Figures:
    figures = Figures(name)
    seq, small = directory / "seq.bin", directory / "small.bin"
    seq_args = [f"of={seq}", "if=/dev/zero", "bs=1M", f"count={mib}", "conv=fdatasync,notrunc"]
    iops_args = [f"of={small}", "if=/dev/zero", "bs=4k", f"count={ops}", "oflag=direct", "conv=notrunc"]
    dd(seq_args)  # warm-up: allocates the files once
    dd(iops_args)
    for _ in range(runs):
        figures.seq.append(mib * MIB / dd(seq_args) / 1e6)
    for _ in range(runs):
        figures.iops.append(ops / dd(iops_args))
    return figures


@contextlib.contextmanager
def plain_target(base: Path) -> Iterator[Path | None]:
    """(a) a directory on the disk."""
    directory = base / "plain"
    directory.mkdir()
    yield directory


@contextlib.contextmanager
def serving(base: Path, size: int, wrap: str | None = None) -> Iterator[str]:
    """A serving process on a fully written image of ``size`` bytes; its loop device."""
    image, state = base / "volume.img", base / "state"
    subprocess.run(
        ["dd", "if=/dev/zero", f"of={image}", "bs=1M", f"count={size // MIB}", "conv=fsync", "status=none"],
        check=True,
        timeout=DD_LIMIT,
    )  # fully allocated: the backing file's allocation is not what is measured
    argv = [sys.executable, "-m", "hakeeper.replication.serve", "--store", str(image), "--state-dir", str(state)]
    if wrap:
        argv += ["--wrap", wrap]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    with (base / "serve.log").open("w") as log:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    assert process.stdout is not None
    device = ""
    try:
        ready, _, _ = select.select([process.stdout], [], [], READY)
        device = process.stdout.readline().strip() if ready else ""
        if not device.startswith("/dev/loop"):
            raise BenchFailed(f"the volume did not come up in {READY} s (see {base / 'serve.log'})")
        yield device
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP)
        process.stdout.close()
        if not loop.wait_detached(Path(device).name if device else "", STOP):
            print(f"warning: {device} is still attached")


@contextlib.contextmanager
def ext4_on(device: str, mountpoint: Path) -> Iterator[Path]:
    subprocess.run(["mkfs.ext4", "-F", "-q", device], check=True, timeout=DD_LIMIT)
    mountpoint.mkdir()
    subprocess.run(["mount", device, str(mountpoint)], check=True, timeout=60)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True, timeout=DD_LIMIT)


def volume_target(size: int) -> Target:
    """(b) ext4 on the volume's loop device, no mirror."""

    @contextlib.contextmanager
    def target(base: Path) -> Iterator[Path | None]:
        with serving(base, size) as device, ext4_on(device, base / "volume") as directory:
            yield directory

    return target


@contextlib.contextmanager
def sync_mirror_target(base: Path) -> Iterator[Path | None]:
    """(c) ext4 on a volume sync-mirrored to node2 of the test LAN: comes with the mirror engine.

    It will be ``serving(base, size, wrap=<the engine's factory>)`` with the target's replication
    process on node2, and this benchmark run on node1.
    """
    yield None


@contextlib.contextmanager
def async_mirror_target(base: Path) -> Iterator[Path | None]:
    """(d) as (c) with an asynchronous mirror: comes with the mirror engine."""
    yield None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=512, help="MiB per 1 MiB-block run")
    parser.add_argument("--ops", type=int, default=10000, help="4 KiB writes per IOPS run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="where the files go (a disk, not tmpfs)")
    parser.add_argument("--quick", action="store_true", help="128 MiB, 2000 writes (a smoke run)")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark's directory")
    args = parser.parse_args()
    if args.quick:
        args.mib, args.ops = 128, 2000
    if os.geteuid() != 0:
        print("the mirror benchmark needs root (FUSE, loop devices, mounts)")
        return 1
    enter_private_mount_namespace()  # before any thread: ext4 mounts stay in this process's namespace
    size = (args.mib * 3 // 2 + 128) * MIB  # room for the files and ext4's metadata and journal
    targets: list[tuple[str, Target]] = [
        ("(a) plain file", plain_target),
        ("(b) FUSE volume, no mirror", volume_target(size)),
        ("(c) sync mirror", sync_mirror_target),
        ("(d) async mirror", async_mirror_target),
    ]
    base = Path(tempfile.mkdtemp(prefix="hakeeper-bench-mirror-", dir=args.dir))
    results: dict[str, Figures] = {}
    try:
        for name, target in targets:
            with target(base) as directory:
                results[name] = measure(name, directory, args.mib, args.ops, args.runs) if directory else Figures(name)
            print(results[name].line(), flush=True)
    except (BenchFailed, subprocess.SubprocessError, OSError) as exc:
        print(f"mirror benchmark failed: {exc}")
        return 1
    finally:
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    plain, volume = results["(a) plain file"], results["(b) FUSE volume, no mirror"]
    ratio = statistics.median(volume.seq) / statistics.median(plain.seq)
    iops_ratio = statistics.median(volume.iops) / statistics.median(plain.iops)
    print(f"volume 4 KiB QD1 IOPS vs plain: {iops_ratio:.2f}")
    print(f"volume_vs_plain={ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
