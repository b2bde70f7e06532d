"""The mirror benchmark's moving parts, built on the engine's public API (until the replication process exists).

Each part runs as its own process inside a node of the test LAN (``bench/mirror_throughput.py``
starts them with ``Node.popen``/``Node.run``):

* ``wrap`` -- the ``--wrap`` factory of ``python -m hakeeper.replication.serve`` on the source: a
  :class:`~hakeeper.replication.mirror.Mirror` over the served ``LocalStore`` with one target, reached
  over TCP (mutual TLS 1.3 with certificates of a throwaway cluster CA, as the real process will use,
  or plain TCP). Its settings come as JSON in the environment variable :data:`ENV`. It returns once the
  initial full resync made the mirror Mirroring, so that the volume serves I/O only then.
* ``target`` -- serves :class:`~hakeeper.replication.target.MirrorTarget` on an address of node2.
* ``resync`` -- a full resync of a store with data to a new target, timed (no FUSE involved).
* ``sink`` / ``send`` -- raw TCP (or TLS) between the two namespaces: blocking ``sendall`` of 1 MiB
  buffers against ``recv_into``, the same bytes as the resync; the baseline it is compared with.
* ``certs`` -- a throwaway cluster CA and the certificates of node1 and node2.

With ``profile`` in the settings (``--profile`` for the target), the parts count where the time goes:
every step of a mirrored write and flush is wrapped in a timer (per call: count, total and mean in
microseconds); each SIGUSR1 writes the counters since the last one as JSON, so that the benchmark
gets its phases (1 MiB writes, 4 KiB writes) apart (:class:`Timers`); the resync writes them at its end.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import signal
import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, cast

from hakeeper.comm import tls
from hakeeper.comm.identity import CA_CERT, NODE_CERT, NODE_KEY, Identity
from hakeeper.comm.pki import Authority, cert_pem, key_pem, make_ca, new_key
from hakeeper.replication import target as target_module
from hakeeper.replication.device import LocalStore
from hakeeper.replication.generations import GenerationStore
from hakeeper.replication.mirror import Mirror, MirrorError
from hakeeper.replication.states import MirrorMode, MirrorState
from hakeeper.replication.target import MirrorTarget
from hakeeper.replication.tlssock import SharedTLS

ENV = "HAKEEPER_BENCH_MIRROR"
CONNECT_TIMEOUT = 10.0
IN_SYNC_TIMEOUT = 180.0  # s for the initial full resync before the volume serves
ACCEPT_POLL = 0.5
BLOCK = 1 << 20


# -- certificates ---------------------------------------------------------------------------


def make_certs(directory: Path, nodes: list[str]) -> None:
    """``directory/<node>/{ca.crt,node.crt,node.key}`` for each node, signed by a new cluster CA."""
    ca_key = new_key()
    authority = Authority(make_ca("bench", ca_key), ca_key)
    for node in nodes:
        d = directory / node
        d.mkdir(parents=True, exist_ok=True)
        key = new_key()
        (d / CA_CERT).write_bytes(cert_pem(authority.certificate))
        (d / NODE_CERT).write_bytes(cert_pem(authority.issue(node, key.public_key())))
        (d / NODE_KEY).write_bytes(key_pem(key))
        os.chmod(d / NODE_KEY, 0o600)


def identity(directory: Path, node: str) -> Identity:
    from cryptography import x509

    d = directory / node
    ca = x509.load_pem_x509_certificate((d / CA_CERT).read_bytes())
    cert = x509.load_pem_x509_certificate((d / NODE_CERT).read_bytes())
    return Identity(d, node, ca, cert)


class Connector:
    """What ``Mirror.add_target`` wants: a callable opening a connected blocking socket to the target
    (TLS handshake done and the peer's node name checked); counts its connections."""

    def __init__(
        self, address: str, port: int, tls_dir: str | None, node: str, peer: str, *, serialized: bool = True
    ) -> None:
        self.address, self.port, self.peer, self.serialized = address, port, peer, serialized
        self.context = tls.client_context(identity(Path(tls_dir), node)) if tls_dir else None
        self.calls = 0

    def __call__(self) -> socket.socket:
        self.calls += 1
        sock = socket.create_connection((self.address, self.port), timeout=CONNECT_TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.context is None:
            return sock
        try:
            wrapped = self.context.wrap_socket(sock, server_side=False)
            if tls.peer_node(wrapped) != self.peer:
                raise ssl.SSLError(f"reached {tls.peer_node(wrapped)}, not {self.peer}")
        except BaseException:
            sock.close()
            raise
        return cast(socket.socket, SharedTLS(wrapped)) if self.serialized else wrapped


def listener(address: str, port: int) -> socket.socket:
    server = socket.create_server((address, port), backlog=8)
    server.settimeout(ACCEPT_POLL)
    return server


def accept(server: socket.socket, context: ssl.SSLContext | None, stop: threading.Event) -> socket.socket | None:
    """The next connection (TLS handshake done), or None once ``stop`` is set."""
    while not stop.is_set():
        try:
            sock, _ = server.accept()
        except TimeoutError:
            continue
        sock.settimeout(CONNECT_TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if context is None:
            return sock
        try:
            return context.wrap_socket(sock, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            print(f"TLS handshake refused: {exc}", file=sys.stderr)
            sock.close()
    return None


def stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    return stop


# -- timing counters --------------------------------------------------------------------------


class Timers:
    """Named counters of calls and time (perf_counter_ns), shared by all threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[str, list[int]] = {}

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        counts = self.counts.setdefault(name, [0, 0])
        lock = self.lock
        clock = time.perf_counter_ns

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = clock() - start
                with lock:
                    counts[0] += 1
                    counts[1] += elapsed

        return timed

    def patch(self, obj: object, attr: str, name: str) -> None:
        setattr(obj, attr, self.wrap(name, getattr(obj, attr)))

    def report(self) -> dict[str, dict[str, float]]:
        with self.lock:
            return {
                name: {"calls": n, "total_s": ns / 1e9, "mean_us": ns / n / 1e3 if n else 0.0}
                for name, (n, ns) in self.counts.items()
            }

    def reset(self) -> None:
        with self.lock:
            for counts in self.counts.values():
                counts[0] = counts[1] = 0

    def dump(self, path: Path) -> None:
        report: dict[str, Any] = self.report()
        report["process"] = cpu_seconds()
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=1))
        os.replace(tmp, path)

    def phases_on_sigusr1(self, path: Path) -> None:
        """On each SIGUSR1 (to the main thread): write the counters since the last one to
        ``<path>.<n>`` (n = 1, 2, ...) and start again from zero: the benchmark's phases apart."""
        phase = [0]

        def on_signal(signum: int, frame: FrameType | None) -> None:
            phase[0] += 1
            self.dump(path.with_name(f"{path.name}.{phase[0]}"))
            self.reset()

        signal.signal(signal.SIGUSR1, on_signal)


def cpu_seconds() -> dict[str, float]:
    t = os.times()
    return {"user_s": t.user, "system_s": t.system}


def instrument_mirror(mirror: Mirror, path: Path) -> None:
    """Time every step of the write and flush paths (instance attributes: the engine is unchanged)."""
    timers = Timers()
    link = mirror.links[0]
    timers.patch(mirror.ranges, "acquire", "write.range_lock")
    timers.patch(link, "prepare", "write.bitmap_mark")
    timers.patch(link.bitmap, "wait_durable", "write.bitmap_durable")
    timers.patch(link, "send_write", "write.send_to_target")
    timers.patch(link, "enqueue", "write.async_enqueue")
    timers.patch(link, "wait_acked", "write_or_flush.wait_target_ack")
    timers.patch(link, "start_flush", "flush.send_to_target")
    timers.patch(mirror.local, "write", "write.local_pwrite")
    timers.patch(mirror.local, "flush", "flush.local_fdatasync")
    timers.patch(mirror, "write", "write.total")
    timers.patch(mirror, "flush", "flush.total")
    timers.phases_on_sigusr1(path)


# -- the source: serve's --wrap ----------------------------------------------------------------


def wrap(store: LocalStore) -> Mirror:
    """``--wrap bench.mirror_parts:wrap``: a Mirror of ``store`` to one target, Mirroring when it returns.

    Settings (JSON in :data:`ENV`): ``state`` (directory for the bitmap and generation), ``address``,
    ``port``, ``mode`` (sync/async), ``tls`` (certificate directory or null: plain TCP), ``profile``
    (path for the timing counters, or absent), ``volume``, ``node``, ``target``.
    """
    cfg = json.loads(os.environ[ENV])
    state = Path(cfg["state"])
    state.mkdir(parents=True, exist_ok=True)
    node, peer = cfg.get("node", "node1"), cfg.get("target", "node2")
    mirror = Mirror(
        store, volume=cfg.get("volume", "bench"), node=node, generations=GenerationStore(state / "generation.json")
    )
    link = mirror.add_target(
        peer,
        Connector(cfg["address"], int(cfg["port"]), cfg.get("tls"), node, peer, serialized=not cfg.get("tls_bare")),
        state / "bitmap",
        mode=MirrorMode(cfg["mode"]),
        timeout=float(cfg.get("timeout", 10.0)),
    )
    deadline = time.monotonic() + IN_SYNC_TIMEOUT
    while link.state is not MirrorState.MIRRORING:
        if time.monotonic() > deadline:
            status = link.status()
            mirror.close()
            raise MirrorError(f"the mirror to {peer} is {status.state.label}, not Mirroring: {status.last_error}")
        time.sleep(0.05)
    print(f"mirror to {peer}: Mirroring ({link.reason})", file=sys.stderr, flush=True)
    if cfg.get("profile"):
        instrument_mirror(mirror, Path(cfg["profile"]))
    return mirror


# -- the target --------------------------------------------------------------------------------


def serve_target(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop = stop_on_signals()
    state = Path(args.state)
    state.mkdir(parents=True, exist_ok=True)
    store = LocalStore(args.store)
    timers = Timers() if args.profile else None
    if timers is not None:
        timers.patch(store, "write", "target.pwrite")
        timers.patch(store, "flush", "target.fdatasync")
        target_module.send_frame = timers.wrap("target.send_ack", target_module.send_frame)  # type: ignore[attr-defined]
        target_module.recv_frame = timers.wrap("target.recv_frame(incl. idle)", target_module.recv_frame)  # type: ignore[attr-defined]
        timers.phases_on_sigusr1(Path(args.profile))
    target = MirrorTarget(store, GenerationStore(state / "generation.json"), volume=args.volume, node=args.node)
    context = tls.server_context(identity(Path(args.tls), args.node)) if args.tls else None
    address, port = args.listen.rsplit(":", 1)
    threads: list[threading.Thread] = []
    with listener(address, int(port)) as server:
        print("ready", flush=True)
        while True:
            sock = accept(server, context, stop)
            if sock is None:
                break
            thread = threading.Thread(target=_serve_one, args=(target, sock), daemon=True)
            thread.start()
            threads.append(thread)
    for thread in threads:
        thread.join(5)
    if timers is not None:
        timers.dump(Path(args.profile))  # what no SIGUSR1 wrote (the resync's target)
    store.close()
    return 0


def _serve_one(target: MirrorTarget, sock: socket.socket) -> None:
    with contextlib.suppress(target_module.TargetRefused):
        target.serve(sock)


# -- resync ------------------------------------------------------------------------------------


def resync(args: argparse.Namespace) -> int:
    """A full resync of ``--store`` to a new target; prints JSON: seconds, bytes sent, zero bytes."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    state = Path(args.state)
    state.mkdir(parents=True, exist_ok=True)
    store = LocalStore(args.store)
    timers = Timers() if args.profile else None
    if timers is not None:
        timers.patch(store, "read_into", "resync.local_pread")
    mirror = Mirror(store, volume=args.volume, node="node1", generations=GenerationStore(state / "generation.json"))
    address, port = args.connect.rsplit(":", 1)
    start = time.monotonic()
    connect = Connector(address, int(port), args.tls, "node1", "node2", serialized=not args.tls_bare)
    link = mirror.add_target("node2", connect, state / "bitmap", timeout=10.0)
    if timers is not None:  # the supervisor thread is in its HELLO: the resync's calls come later
        timers.patch(link, "send", "resync.send_frame")
        timers.patch(link, "flush_target", "resync.flush_target_and_wait")
        timers.patch(link, "request", "resync.request(GEN)")
        timers.patch(link.bitmap, "clear_chunks", "resync.bitmap_clear")
        timers.patch(mirror.ranges, "acquire", "resync.range_lock")
    deadline = start + args.timeout
    while link.state is not MirrorState.MIRRORING and time.monotonic() < deadline:
        time.sleep(0.002)
    elapsed = time.monotonic() - start
    ok = link.state is MirrorState.MIRRORING
    progress = link.progress
    result = {
        "ok": ok,
        "seconds": elapsed,
        "bytes_sent": progress.bytes_sent,
        "zero_bytes": progress.zero_bytes,
        "passes": progress.passes,
        "connections": connect.calls,
        "error": None if ok else link.status().last_error or link.reason,
        **cpu_seconds(),
    }
    mirror.close()
    if timers is not None:
        timers.dump(Path(args.profile))
    print(json.dumps(result), flush=True)
    return 0 if ok else 1


# -- raw TCP -----------------------------------------------------------------------------------


def sink(args: argparse.Namespace) -> int:
    """Receive runs: each connection sends an 8-byte count and that many bytes; one byte back at the end."""
    stop = stop_on_signals()
    context = tls.server_context(identity(Path(args.tls), "node2")) if args.tls else None
    address, port = args.listen.rsplit(":", 1)
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    with listener(address, int(port)) as server:
        print("ready", flush=True)
        while True:
            sock = accept(server, context, stop)
            if sock is None:
                break
            with sock:
                sock.settimeout(60)
                head = bytearray(8)
                got = 0
                while got < 8:
                    n = sock.recv_into(memoryview(head)[got:])
                    if not n:
                        break
                    got += n
                (left,) = struct.unpack("!Q", head)
                while left > 0:
                    n = sock.recv_into(view[: min(BLOCK, left)])
                    if not n:
                        break
                    left -= n
                sock.sendall(b"k")
    return 0


def send(args: argparse.Namespace) -> int:
    """Send ``--bytes`` in 1 MiB buffers; prints JSON: seconds until the sink confirmed the last byte."""
    address, port = args.connect.rsplit(":", 1)
    data = memoryview(os.urandom(BLOCK))
    sock = Connector(address, int(port), args.tls, "node1", "node2", serialized=False)()  # one thread: bare
    with sock:
        sock.settimeout(60)
        start = time.monotonic()
        sock.sendall(struct.pack("!Q", args.bytes))
        left = args.bytes
        while left > 0:
            n = min(BLOCK, left)
            sock.sendall(data[:n])
            left -= n
        ok = sock.recv(1) == b"k"
        elapsed = time.monotonic() - start
    print(json.dumps({"ok": ok, "seconds": elapsed, "bytes": args.bytes, **cpu_seconds()}), flush=True)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="part", required=True)
    p = sub.add_parser("certs", help="a throwaway cluster CA and node certificates")
    p.add_argument("--dir", required=True)
    p.add_argument("nodes", nargs="+")
    p = sub.add_parser("target", help="serve MirrorTarget on ADDRESS:PORT")
    p.add_argument("--listen", required=True)
    p.add_argument("--store", required=True)
    p.add_argument("--state", required=True)
    p.add_argument("--volume", default="bench")
    p.add_argument("--node", default="node2")
    p.add_argument("--tls")
    p.add_argument("--profile")
    p = sub.add_parser("resync", help="a timed full resync to a new target")
    p.add_argument("--store", required=True)
    p.add_argument("--state", required=True)
    p.add_argument("--connect", required=True)
    p.add_argument("--volume", default="bench")
    p.add_argument("--tls")
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--tls-bare", action="store_true", help="the bare SSLSocket, not SharedTLS")
    p.add_argument("--profile")
    p = sub.add_parser("sink", help="raw TCP receiver")
    p.add_argument("--listen", required=True)
    p.add_argument("--tls")
    p = sub.add_parser("send", help="raw TCP sender")
    p.add_argument("--connect", required=True)
    p.add_argument("--bytes", type=int, required=True)
    p.add_argument("--tls")
    args = parser.parse_args(argv)
    if args.part == "certs":
        make_certs(Path(args.dir), args.nodes)
        return 0
    parts: dict[str, Callable[[argparse.Namespace], int]] = {
        "target": serve_target,
        "resync": resync,
        "sink": sink,
        "send": send,
    }
    return parts[args.part](args)


if __name__ == "__main__":
    sys.exit(main())
