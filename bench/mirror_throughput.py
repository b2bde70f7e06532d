"""Mirror throughput benchmark (issue 14): the FUSE volume with and without a mirror, and resync, on the test LAN.

One run builds a LAN of two nodes (network namespaces on a bridge, 198.18.0.0/15) and measures, all in
the same run (the machine is shared and noisy, storage-lab pitfall 14: medians, baseline alongside):

* (a) **plain**: a file on the disk that holds the benchmark's directory -- the baseline;
* (b) **volume**: a file in ext4 on the volume's loop device, served in node1 by ``python -m
  hakeeper.replication.serve`` from a fully written image file on that same disk, without a mirror;
* (c) **sync mirror**: as (b), the served store being a :class:`~hakeeper.replication.mirror.Mirror`
  (``bench/mirror_parts.py``'s ``wrap``) with one sync target on node2 (``mirror_parts.py target``,
  its own image on the same disk), over plain TCP; (c-tls) the same over mutual TLS 1.3 as the
  replication process will use (``--no-tls`` skips it), through ``hakeeper.replication.tlssock.SharedTLS``: the
  engine's threads share one TLS socket, and a bare ``SSLSocket`` used so breaks its connection every
  second or two (``--tls-bare`` shows it; see the docs). The headline is plain TCP for that reason;
* (d) **async mirror**: as (c) in async mode;
* **resync** against **raw TCP** between the two namespaces: a timed full resync (``mirror_parts.py
  resync``: Mirror + new target, no FUSE) of an image of ``--resync-mib`` MiB of random data, against
  a blocking-socket sender/receiver pair moving the same bytes (``send``/``sink``), over TLS and plain TCP.

For each volume target: 1 MiB sequential durable writes (``dd bs=1M conv=fdatasync``, ``--mib`` MiB) and
4 KiB QD1 writes (``dd bs=4k oflag=direct``, ``--ops`` writes); one warm-up run (it also allocates the
files, so the measured runs overwrite with ``conv=notrunc``), then ``--runs`` measured runs, ``sync``
and a 1 s pause before each; medians printed with every run in brackets. (a)-(d) are up together and
their runs interleaved (a, b, c, d, a, b, ...), so that the load of the shared machine, which moves,
weighs on each alike; (c-tls) is measured after them, alone. Every dd runs inside node1 (``nsenter``),
timed around the process; MB/s is 10^6 bytes per second. Resync and raw TCP alternate, ``--runs`` times each.

A mirror that left Mirroring during its runs (a lost connection, the async queue's high water) is
reported with the reasons, from the serving process's log: its figure then flatters the mirror.

The last line is ``sync_mirror_ratio=<(c) / (b), 1 MiB fdatasync MB/s>`` (target >= 0.7; the prototype
of the storage notes reached 0.61). ``--profile`` also counts where the time of each mirrored write goes
(timing counters in the serving process and the target, ``mirror_parts.Timers``), per phase (1 MiB
writes, 4 KiB writes; SIGUSR1 to the processes by PID between them), and prints them.

Run as root from the repository root, with ``src`` and the root on PYTHONPATH::

    PYTHONPATH=src:. .venv/bin/python bench/mirror_throughput.py [--quick] [--profile]

Clean-up, also after an error or SIGINT/SIGTERM (both unwind): the ext4 mounts (inside node1's mount
namespace) are unmounted, each serving process and target is stopped by its PID (SIGTERM, then SIGKILL
after a bounded wait), a loop device left attached is detached, the LAN and its namespaces are
deleted (``Lan.close``) and the benchmark's directory removed (``--keep`` keeps it). Every wait is
bounded. Traffic stays on the LAN's bridge.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hakeeper.lab.lan import Lan, unavailable_reason
from hakeeper.replication import loop

ROOT = Path(__file__).resolve().parents[1]
PARTS = str(ROOT / "bench" / "mirror_parts.py")
READY = 30.0  # s for a target or sink to listen
READY_MIRROR = 200.0  # s for a mirrored volume to come up (its initial full resync included)
STOP = 30.0  # s for a process to stop
DD_LIMIT = 600.0  # s for one dd
PORT_TARGET, PORT_SINK = 7790, 7791
MIB = 1 << 20


class BenchFailed(Exception):
    pass


def med(values: list[float], unit: str, fmt: str) -> str:
    if not values:
        return "not measured"
    runs = ", ".join(format(v, fmt) for v in values)
    return f"{format(statistics.median(values), fmt)} {unit} [{runs}]"


@dataclass
class Figures:
    name: str
    seq: list[float] = field(default_factory=list)  # MB/s, 1 MiB conv=fdatasync
    iops: list[float] = field(default_factory=list)  # 4 KiB QD1 oflag=direct
    left_mirroring: Counter[str] | None = None  # a mirror's reasons for leaving Mirroring during the runs

    def line(self) -> str:
        text = f"{self.name}: 1 MiB fdatasync {med(self.seq, 'MB/s', '.0f')}; 4 KiB QD1 {med(self.iops, 'IOPS', '.0f')}"
        if self.left_mirroring is not None:
            total = sum(self.left_mirroring.values())
            if total:
                reasons = "; ".join(f"{n}x {why}" for why, n in self.left_mirroring.most_common())
                text += (
                    f"\n    the mirror left Mirroring {total} times during the runs ({reasons}): writes made while it"
                )
                text += " was Paused/Resynchronizing were only marked in the bitmap, so this figure flatters the mirror"
            else:
                text += " (the mirror stayed Mirroring throughout)"
        return text


@dataclass
class Place:
    """Where one target's files are written, and what its figures are."""

    key: str
    figures: Figures
    directory: Path
    phase: Callable[[], None] = lambda: None
    log: Path | None = None  # a mirror's serving process's log


LEFT = re.compile(r"MIRRORING -> PAUSED \((.*)\)$")


def left_mirroring(log: Path) -> Counter[str]:
    """Why the mirror left Mirroring, from the serving process's log (its closing excluded)."""
    reasons: Counter[str] = Counter()
    for line in log.read_text(errors="replace").splitlines():
        match = LEFT.search(line)
        if match and "closing" not in match.group(1):
            reasons[match.group(1)] += 1
    return reasons


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


def stop_process(process: subprocess.Popen[Any], what: str) -> None:
    """SIGTERM by PID, then SIGKILL after a bounded wait."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP)
        except subprocess.TimeoutExpired:
            print(f"warning: {what} (pid {process.pid}) ignored SIGTERM for {STOP} s: killed")
            process.kill()
            process.wait(STOP)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


def read_ready(process: subprocess.Popen[str], timeout: float) -> str:
    """The first line the process prints, waited for at most ``timeout`` s ("" if none)."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    return process.stdout.readline().strip() if ready else ""


class Bench:
    def __init__(self, lan: Lan, base: Path, args: argparse.Namespace) -> None:
        self.lan, self.base, self.args = lan, base, args
        self.node1, self.node2 = lan.node("node1"), lan.node("node2")
        self.size = (args.mib * 3 // 2 + 128) * MIB  # room for the files and ext4's metadata and journal
        self.profiles: dict[str, Path] = {}
        self.pids: dict[str, int] = {}  # the serving processes and targets, by name

    # -- running things -----------------------------------------------------------------------

    def dd(self, args: list[str]) -> float:
        """dd in node1 after ``sync`` and a 1 s pause; seconds it took."""
        self.node1.run(["sync"], timeout=DD_LIMIT, check=True)
        time.sleep(1)
        start = time.monotonic()
        done = self.node1.run(["dd", *args, "status=none"], timeout=DD_LIMIT)
        elapsed = time.monotonic() - start
        if done.returncode != 0:
            raise BenchFailed(f"dd {' '.join(args)} failed: {done.stderr.strip()}")
        return elapsed

    def measure_all(self, places: list[Place]) -> None:
        """The runs of every place, interleaved (a, b, c, d, a, b, ...: the load of the machine moves, and
        each figure should see the same); ``phase()`` of each after the warm-ups, after the 1 MiB runs
        and after the 4 KiB runs (the profile's phases 1-3)."""
        a = self.args
        seq_args: dict[str, list[str]] = {}
        iops_args: dict[str, list[str]] = {}
        for p in places:
            seq, small = p.directory / "seq.bin", p.directory / "small.bin"
            seq_args[p.key] = [f"of={seq}", "if=/dev/zero", "bs=1M", f"count={a.mib}", "conv=fdatasync,notrunc"]
            iops_args[p.key] = [
                f"of={small}",
                "if=/dev/zero",
                "bs=4k",
                f"count={a.ops}",
                "oflag=direct",
                "conv=notrunc",
            ]
            self.dd(seq_args[p.key])  # warm-up: allocates the files once
            self.dd(iops_args[p.key])
        for p in places:
            p.phase()
        for _ in range(a.runs):
            for p in places:
                p.figures.seq.append(a.mib * MIB / self.dd(seq_args[p.key]) / 1e6)
        for p in places:
            p.phase()
        for _ in range(a.runs):
            for p in places:
                p.figures.iops.append(a.ops / self.dd(iops_args[p.key]))
        for p in places:
            p.phase()
        for p in places:
            if p.log is not None:
                p.figures.left_mirroring = left_mirroring(p.log)

    def image(self, path: Path, mib: int, source: str = "/dev/zero") -> None:
        """A fully written image (its allocation is not what is measured)."""
        subprocess.run(
            ["dd", f"if={source}", f"of={path}", "bs=1M", f"count={mib}", "conv=fsync", "status=none"],
            check=True,
            timeout=DD_LIMIT,
        )

    @contextlib.contextmanager
    def node2_process(self, argv: list[str], what: str) -> Iterator[subprocess.Popen[str]]:
        """A part of mirror_parts.py in node2 that prints "ready" once it listens; stopped by PID."""
        with (self.base / f"{what}.log").open("a") as log:
            process = self.node2.popen(
                [sys.executable, PARTS, *argv], stdout=subprocess.PIPE, stderr=log, text=True, env=env()
            )
        try:
            if read_ready(process, READY) != "ready":
                raise BenchFailed(f"the {what} on node2 did not come up in {READY} s (see {self.base / what}.log)")
            yield process
        finally:
            stop_process(process, what)

    @contextlib.contextmanager
    def target(
        self, name: str, *, tls: bool, profile: Path | None = None, image: str = "target.img", port: int = PORT_TARGET
    ) -> Iterator[str]:
        """A MirrorTarget on node2 with a fresh generation (a new target: full resync); its address."""
        store = self.base / image
        if not store.exists():
            self.image(store, self.size // MIB)
        argv = ["target", "--listen", f"{self.node2.address}:{port}", "--store", str(store)]
        argv += ["--state", str(self.base / f"target-{name}"), "--volume", name]
        argv += ["--tls", str(self.base / "certs")] if tls else []
        argv += ["--profile", str(profile)] if profile else []
        with self.node2_process(argv, f"target-{name}") as process:
            self.pids[f"target-{name}"] = process.pid
            yield f"{self.node2.address}:{port}"

    @contextlib.contextmanager
    def serving(self, name: str, wrap: dict[str, Any] | None = None) -> Iterator[str]:
        """A serving process in node1 on a fully written image; its loop device."""
        image, state = self.base / f"volume-{name}.img", self.base / f"state-{name}"
        self.image(image, self.size // MIB)
        argv = [sys.executable, "-m", "hakeeper.replication.serve", "--store", str(image), "--state-dir", str(state)]
        extra: dict[str, str] = {}
        if wrap is not None:
            argv += ["--wrap", "bench.mirror_parts:wrap"]
            extra["HAKEEPER_BENCH_MIRROR"] = json.dumps({"state": str(self.base / f"mirror-{name}"), **wrap})
        with (self.base / f"serve-{name}.log").open("w") as log:
            process = self.node1.popen(argv, stdout=subprocess.PIPE, stderr=log, text=True, env=env(**extra))
        self.pids[f"serve-{name}"] = process.pid
        device = ""
        try:
            device = read_ready(process, READY_MIRROR if wrap else READY)
            if not device.startswith("/dev/loop"):
                raise BenchFailed(f"the volume did not come up (see {self.base / f'serve-{name}.log'})")
            yield device
        finally:
            stop_process(process, f"serving process {name}")
            if device and not loop.wait_detached(Path(device).name, STOP):
                print(f"warning: {device} is still attached: detaching it")
                subprocess.run(["losetup", "-d", device], timeout=STOP, check=False)
                if not loop.wait_detached(Path(device).name, STOP):
                    print(f"warning: {device} is still attached")

    @contextlib.contextmanager
    def ext4(self, device: str, name: str) -> Iterator[Path]:
        """ext4 on ``device``, mounted in node1's mount namespace."""
        mountpoint = self.base / f"ext4-{name}"
        mountpoint.mkdir()
        self.node1.run(["mkfs.ext4", "-F", "-q", device], timeout=DD_LIMIT, check=True)
        self.node1.run(["mount", device, str(mountpoint)], timeout=60, check=True)
        try:
            yield mountpoint
        finally:
            done = self.node1.run(["umount", str(mountpoint)], timeout=DD_LIMIT)
            if done.returncode != 0:
                print(f"warning: umount {mountpoint} in node1: {done.stderr.strip()}")

    # -- the targets ----------------------------------------------------------------------------

    def plain(self, stack: contextlib.ExitStack, key: str, label: str) -> Place:
        """(a) a directory on the disk."""
        directory = self.base / "plain"
        directory.mkdir()
        return Place(key, Figures(label), directory)

    def volume(self, stack: contextlib.ExitStack, key: str, label: str) -> Place:
        """(b) ext4 on the volume's loop device, no mirror."""
        device = stack.enter_context(self.serving(key))
        return Place(key, Figures(label), stack.enter_context(self.ext4(device, key)))

    def mirrored(self, stack: contextlib.ExitStack, key: str, label: str, mode: str, *, tls: bool, port: int) -> Place:
        """(c), (d): ext4 on a volume mirrored to a target of its own on node2."""
        profile = self.base / f"profile-{key}.json" if self.args.profile else None
        target_profile = self.base / f"profile-{key}-target.json" if self.args.profile else None
        address = stack.enter_context(
            self.target(key, tls=tls, profile=target_profile, image=f"target-{key}.img", port=port)
        )
        host, port_text = address.rsplit(":", 1)
        wrap = {
            "address": host,
            "port": int(port_text),
            "mode": mode,
            "tls": str(self.base / "certs") if tls else None,
            "volume": key,
            "profile": str(profile) if profile else None,
            "tls_bare": self.args.tls_bare,
        }
        device = stack.enter_context(self.serving(key, wrap))
        directory = stack.enter_context(self.ext4(device, key))
        phase: Callable[[], None] = lambda: None  # noqa: E731
        if profile and target_profile:
            phase = functools.partial(self.phase, [f"serve-{key}", f"target-{key}"])
            for n, what in ((2, "1 MiB writes"), (3, "4 KiB writes")):
                self.profiles[f"{label}, {what}, source"] = profile.with_name(f"{profile.name}.{n}")
                self.profiles[f"{label}, {what}, target"] = target_profile.with_name(f"{target_profile.name}.{n}")
        return Place(key, Figures(label), directory, phase, self.base / f"serve-{key}.log")

    @contextlib.contextmanager
    def perf(self, name: str | None) -> Iterator[None]:
        """``perf record`` of the serving process and of the target of ``name`` while the runs go on: the
        share of their CPU samples per shared object (the interpreter, the kernel, libc, libcrypto...)."""
        if name is None or not shutil.which("perf"):
            yield
            return
        records = []
        for who in (f"serve-{name}", f"target-{name}"):
            data = self.base / f"perf-{who}.data"
            argv = ["perf", "record", "-q", "-F", "499", "-p", str(self.pids[who]), "-o", str(data)]
            process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            records.append((who, data, process))
        try:
            yield
        finally:
            for _who, _data, process in records:
                process.send_signal(signal.SIGINT)
            for who, data, process in records:
                try:
                    process.wait(STOP)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(STOP)
                report = subprocess.run(
                    ["perf", "report", "-i", str(data), "--stdio", "--sort", "dso", "--percent-limit", "1"],
                    capture_output=True,
                    text=True,
                    timeout=120,
                    check=False,
                )
                lines = [line.strip() for line in report.stdout.splitlines() if line.strip() and line[0] != "#"]
                print(f"perf, {who} (% of its CPU samples by shared object): " + "; ".join(lines[:8]))

    def phase(self, names: list[str]) -> None:
        """Tell the profiled processes a phase ended (SIGUSR1 by PID: they write their counters)."""
        for name in names:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pids[name], signal.SIGUSR1)
        time.sleep(1.5)  # the serving process's main thread looks up from its wait every second

    def part(self, argv: list[str], timeout: float) -> dict[str, Any]:
        done = self.node1.run([sys.executable, PARTS, *argv], timeout=timeout, env=env())
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            raise BenchFailed(f"mirror_parts {argv[0]} failed: {done.stdout.strip()} {done.stderr.strip()[-2000:]}")
        result: dict[str, Any] = json.loads(lines[-1])
        return result

    def resync_vs_tcp(self, *, tls: bool) -> tuple[list[float], list[float], list[dict[str, Any]]]:
        """(resync MB/s, raw MB/s, resync details), alternating, ``--runs`` each."""
        a = self.args
        source = self.base / "resync-source.img"
        if not source.exists():
            self.image(source, a.resync_mib, "/dev/urandom")  # data: no chunk goes as a ZERO frame
        nbytes = a.resync_mib * MIB
        certs = ["--tls", str(self.base / "certs")] if tls else []
        kind = "tls" if tls else "tcp"
        resync_rates, raw_rates, details = [], [], []
        sink = ["sink", "--listen", f"{self.node2.address}:{PORT_SINK}", *certs]
        with self.node2_process(sink, f"sink-{kind}"):
            for i in range(a.runs):
                raw = self.part(
                    ["send", "--connect", f"{self.node2.address}:{PORT_SINK}", "--bytes", str(nbytes), *certs], 120
                )
                raw_rates.append(nbytes / raw["seconds"] / 1e6)
                name = f"resync-{kind}-{i}"
                profile = self.base / f"profile-{name}.json" if a.profile and i == 0 else None
                target_profile = self.base / f"profile-{name}-target.json" if profile else None
                with self.target(name, tls=tls, profile=target_profile) as address:
                    argv = ["resync", "--store", str(source), "--state", str(self.base / f"mirror-{name}")]
                    argv += ["--profile", str(profile)] if profile else []
                    argv += ["--tls-bare"] if tls and a.tls_bare else []
                    result = self.part([*argv, "--connect", address, "--volume", name, *certs], 180)
                if not result["ok"]:
                    raise BenchFailed(f"the resync did not finish: {result['error']}")
                resync_rates.append(result["bytes_sent"] / result["seconds"] / 1e6)
                details.append(result)
                if profile and target_profile:
                    self.profiles[f"resync over {kind} (first run)"] = profile
                    self.profiles[f"resync over {kind} (first run), target"] = target_profile
        return resync_rates, raw_rates, details


def print_profile(name: str, path: Path) -> None:
    if not path.exists():
        print(f"profile {name}: none written")
        return
    report = json.loads(path.read_text())
    print(f"profile {name}:")
    for key, value in sorted(report.items()):
        if "calls" in value:
            print(f"  {key:34} {value['calls']:>9} calls {value['total_s']:9.3f} s {value['mean_us']:9.1f} us/call")
        else:
            print(f"  {key:34} " + " ".join(f"{k}={v:.2f}" for k, v in value.items()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=256, help="MiB per 1 MiB-block run")
    parser.add_argument("--ops", type=int, default=5000, help="4 KiB writes per IOPS run")
    parser.add_argument("--resync-mib", type=int, default=384, help="MiB of data for the resync and raw TCP runs")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="where the files go (a disk, not tmpfs)")
    parser.add_argument("--quick", action="store_true", help="128 MiB, 2000 writes, 128 MiB resync (a smoke run)")
    parser.add_argument("--profile", action="store_true", help="count where the time of mirrored writes goes")
    parser.add_argument("--perf", action="store_true", help="perf record the sync mirror's processes during (c)")
    parser.add_argument("--tls-bare", action="store_true", help="TLS on the engine's bare SSLSocket (it breaks)")
    parser.add_argument("--no-tls", action="store_true", help="skip (c-tls) and the resync over TLS")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark's directory")
    args = parser.parse_args()
    if args.quick:
        args.mib, args.ops, args.resync_mib = 128, 2000, 128
    reason = unavailable_reason()
    if reason:
        print(f"the mirror benchmark cannot run here: {reason}")
        return 1
    base = Path(tempfile.mkdtemp(prefix="hakeeper-bench-mirror-", dir=args.dir))
    started = time.monotonic()
    print(f"start: {load()}", flush=True)
    results: dict[str, Figures] = {}
    try:
        subprocess.run([sys.executable, PARTS, "certs", "--dir", str(base / "certs"), "node1", "node2"],
                       check=True, timeout=60, env=env())  # fmt: skip
        with Lan(["node1", "node2"]) as lan:
            bench = Bench(lan, base, args)
            with contextlib.ExitStack() as stack:  # (a)-(d) up together, their runs interleaved
                sync, asynchronous = "(c) sync mirror to node2, plain TCP", "(d) async mirror to node2, plain TCP"
                places = [
                    bench.plain(stack, "a", "(a) plain file"),
                    bench.volume(stack, "b", "(b) FUSE volume, no mirror"),
                    bench.mirrored(stack, "c", sync, "sync", tls=False, port=PORT_TARGET),
                    bench.mirrored(stack, "d", asynchronous, "async", tls=False, port=PORT_TARGET + 1),
                ]
                with bench.perf("c" if args.perf else None):
                    bench.measure_all(places)
            for place in places:
                results[place.key] = place.figures
                print(place.figures.line(), flush=True)
            if not args.no_tls:  # apart: its reconnections must not disturb the others' runs
                with contextlib.ExitStack() as stack:
                    label = "(c-tls) sync mirror to node2, mutual TLS (measured after the others)"
                    place = bench.mirrored(stack, "ct", label, "sync", tls=True, port=PORT_TARGET + 2)
                    bench.measure_all([place])
                results["c-tls"] = place.figures
                print(place.figures.line(), flush=True)
            resync: dict[str, tuple[list[float], list[float], list[dict[str, Any]]]] = {}
            for tls in (False,) if args.no_tls else (False, True):
                kind = "TLS" if tls else "plain TCP"
                resync[kind] = rates, raw, details = bench.resync_vs_tcp(tls=tls)
                cpu = statistics.median(d["user_s"] + d["system_s"] for d in details)
                conns = [d["connections"] for d in details]
                print(f"resync over {kind}, {args.resync_mib} MiB of data: {med(rates, 'MB/s', '.0f')}"
                      f" (resync process CPU {cpu:.2f} s; connections per resync {conns})", flush=True)  # fmt: skip
                if any(n > 1 for n in conns):
                    print("    the data connection broke and was reopened during the resync: the figure includes that")
                print(f"raw {kind} node1 -> node2, same bytes: {med(raw, 'MB/s', '.0f')}", flush=True)
                print(
                    f"resync_vs_raw_{'tls' if tls else 'tcp'}={statistics.median(rates) / statistics.median(raw):.2f}"
                )
            for name, path in bench.profiles.items():
                print_profile(name, path)
    except (BenchFailed, subprocess.SubprocessError, OSError) as exc:
        print(f"mirror benchmark failed: {exc}")
        return 1
    except KeyboardInterrupt:  # SIGINT, or SIGTERM (the lab makes it unwind): every "finally" above has run
        print("mirror benchmark interrupted: its mounts, loop devices, processes and namespaces are gone")
        return 130
    finally:
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    print(f"end: {load()}; {time.monotonic() - started:.0f} s")
    a, b = statistics.median(results["a"].seq), statistics.median(results["b"].seq)
    c, d = statistics.median(results["c"].seq), statistics.median(results["d"].seq)
    print(f"volume_vs_plain={b / a:.2f} async_mirror_ratio={d / b:.2f} sync_mirror_vs_plain={c / a:.2f}")
    print(f"sync_mirror_iops_ratio={statistics.median(results['c'].iops) / statistics.median(results['b'].iops):.2f}")
    if "c-tls" in results:
        print(f"sync_mirror_ratio_tls={statistics.median(results['c-tls'].seq) / b:.2f}")
    print("(c) and the headline use plain TCP between the namespaces, not the mutual TLS the replication")
    print("process will use: the TLS figures are beside them (docs/replication.md, 'Benchmark').")
    print(f"sync_mirror_ratio={c / b:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
