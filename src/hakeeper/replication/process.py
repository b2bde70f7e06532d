"""The replication process of one mirrored volume on this node (``python -m hakeeper.replication.process``).

    python -m hakeeper.replication.process --root STATEDIR --volume VOL

hakeeperd starts one per mirrored volume this node belongs to and restarts it when it dies
(:mod:`.supervisor`). It reads the volume's definition from the LCD once, read-only
(:mod:`hakeeper.db.mirrors`), and takes its role from the LCD's source node:

**source** -- enters a private mount namespace (before any thread), hardens itself
(``PR_SET_IO_FLUSHER``, ``mlockall``), wraps the node's backing store in a :class:`~.mirror.Mirror`
with one target per LCD target, then serves the FUSE volume from the Mirror and attaches the loop
device, whose path it writes to ``STATEDIR/replication/VOL/device``. Each target's ``connect`` opens
a TCP connection to that node's **data port** and makes a mutual TLS handshake with the cluster's
certificates; the peer must be that node.

**switchover** -- a source asked ``handover`` (``hakeeper mirror switchover`` on a target) holds its
loop device ``O_EXCL`` (refused while a filesystem on it is mounted), hands the volume over
(:meth:`~.mirror.Mirror.prepare_switchover`) and stays frozen until hakeeperd restarts it as a target
(the LCD's source changed) or ``thaw`` makes it take writes again. A node that starts as the source
with a handover on disk that fits the LCD's mirror builds its Mirror from it
(:meth:`~.mirror.Mirror.from_handover`: partial resyncs only).

**target** -- listens on the data port, accepts mutual TLS from the volume's source node only, and
serves each connection with :class:`~.target.MirrorTarget` in a thread. It never exposes the store:
no FUSE file, no loop device on a target.

**The data port** is ``comm_port + 3`` (7368 by default: 7365 messages, 7366 heartbeats, 7367 joins),
on the local addresses of the communication paths to the peer (a target listens on its ends of the
paths to the source; a source tries the target's ends in path priority order). The data connections
are connections of their own: never the heartbeat path's.

Everything of the volume lives in ``STATEDIR/replication/VOL/``: ``device`` (the loop device, source
only), ``pid``, ``control.sock`` (:mod:`.controlsock`), ``generation.json``, one ``NODE.bitmap`` per
target, ``fuse/`` (the FUSE mount point, visible only in the process's namespace) and ``lock`` (one
process per volume: a second waits for the first to go).

SIGTERM (or hakeeperd's death: ``PR_SET_PDEATHSIG``) stops it: flush, let the loop device go, unmount
the FUSE file, close the data connections and sockets. While a filesystem on the loop device is
mounted the device cannot go: the process says so at ERROR, writes the file ``busy`` and serves on
until it is unmounted (hakeeperd never kills a process that says it is busy).
After a SIGKILL the filesystem above sees I/O errors, as with a failed disk; the process hakeeperd
starts again serves the volume on a new loop device (``hakeeper mirror status VOL`` shows it, and
the ``device`` file holds it).

Exit codes: 0 stopped cleanly, 1 the volume could not be served, 2 bad usage, 7 no such mirror here.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import signal
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from hakeeper.comm.identity import load_identity
from hakeeper.comm.tls import client_context, server_context
from hakeeper.db import Lcd
from hakeeper.db.mirrors import Mirror as MirrorDefinition
from hakeeper.db.mirrors import MirrorTarget as MirrorTargetDefinition
from hakeeper.errors import HakeeperError, IllegalArgument, NotFound, SystemCallFailed, UsageError

from .control import TargetStatus, VolumeStatus
from .controlsock import CONTROL_NAME, ControlServer, status_json
from .dataport import accept_from, connector, data_port, revoked
from .device import LocalStore
from .files import replace as replace_file
from .generations import GenerationStore
from .loop import VolumeError
from .mirror import Mirror
from .resync import ResyncSettings
from .switchover import Handover, SwitchoverRefused, handover_path
from .target import MirrorTarget, TargetRefused
from .volume import Volume, VolumeBusy, enter_private_mount_namespace, harden_process, stop_on_signals

logger = logging.getLogger("hakeeper.replication.process")

DEVICE_NAME = "device"
BUSY_NAME = "busy"  # while a stop waits for the volume's filesystem to be unmounted (hakeeperd does not kill then)
PID_NAME = "pid"
LOCK_NAME = "lock"
GENERATION_NAME = "generation.json"
MOUNT_NAME = "fuse"
LINK_TIMEOUT = 5.0  # s a sync write waits for a target before that mirror pauses
HANDOVER_TIMEOUT = 30.0  # s a switchover waits for the writes under way and for each target's drain
LOCK_WAIT = 30.0  # s a new process waits for the previous one of the volume to go
WATCH = 1.0  # s between two looks at the volume and the stop flag
BUSY_RETRY = 1.0
PR_SET_PDEATHSIG = 1

_libc = ctypes.CDLL(None, use_errno=True)


def volume_dir(root: Path, volume: str) -> Path:
    return root / "replication" / volume


@dataclass(frozen=True)
class Plan:
    """What the LCD says this node does for the volume, read once at start."""

    root: Path
    node: str
    definition: MirrorDefinition
    port: int
    peers: dict[str, list[str]]  # node -> its addresses on the paths to it, by priority
    local: dict[str, list[str]]  # node -> this node's addresses on the paths to it

    @property
    def volume(self) -> str:
        return self.definition.volume

    @property
    def role(self) -> str:
        return "source" if self.definition.source == self.node else "target"

    @property
    def store(self) -> str:
        d = self.definition
        if self.role == "source":
            return d.store
        mine = d.target(self.node)
        assert mine is not None
        return mine.store

    @property
    def state_dir(self) -> Path:
        return volume_dir(self.root, self.volume)


def read_plan(root: Path, volume: str) -> Plan:
    with Lcd.open(root, actor="replication", readonly=True) as lcd:
        node = lcd.local_node
        definition = lcd.mirror(volume)
        if node not in definition.nodes:
            raise NotFound(f"{node} is no node of the mirror {volume!r} ({', '.join(definition.nodes)})")
        port = data_port(int(lcd.settings()["comm_port"]))
        peers: dict[str, list[str]] = {}
        local: dict[str, list[str]] = {}
        for path in lcd.paths():  # by node, then priority
            peers.setdefault(path.node, []).append(path.remote)
            local.setdefault(path.node, []).append(path.local)
    return Plan(root, node, definition, port, peers, local)


# ---------------------------------------------------------------------- the source


class Source:
    """The volume served on the source: Mirror, FUSE file and loop device, control socket."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.mirror: Mirror | None = None
        self.volume: Volume | None = None
        self._connect: Callable[[str, list[str]], Callable[[], socket.socket]] | None = None
        self._reloading = threading.Lock()
        self._held = -1  # the loop device opened O_EXCL while a switchover is under way: no mount meanwhile

    def run(self, stop: threading.Event) -> int:
        plan = self.plan
        state_dir = plan.state_dir
        enter_private_mount_namespace(keep=(Path(plan.store).absolute(), state_dir))  # before any thread
        harden_process()
        identity = load_identity(plan.root)
        context, refusal = client_context(identity), revoked(identity)
        self._connect = lambda node, addresses: connector(context, node, addresses, plan.port, refusal)
        for old in state_dir.glob("*.bitmap"):  # a target deleted: if it comes back, it needs a full resync
            if plan.definition.target(old.stem) is None:
                logger.info("mirror %s: %s is no target any more: its intent log goes", plan.volume, old.stem)
                old.unlink()
        local = LocalStore(plan.store)
        if local.size < plan.definition.size:
            local.close()
            raise IllegalArgument(
                f"{plan.store} has {local.size} bytes, less than {plan.volume}'s {plan.definition.size}"
            )
        generations = GenerationStore(state_dir / GENERATION_NAME)
        handover = self._handover(generations)
        server: ControlServer | None = None
        if handover is not None:  # a switchover: the targets' bitmaps come from the handover
            mirror = self.mirror = self._take_over(local, handover, generations)
        else:
            mirror = self.mirror = Mirror(local, volume=plan.volume, node=plan.node, generations=generations)
        try:
            for t in plan.definition.targets if handover is None else ():  # every target before the volume serves I/O
                self._add(t, plan)
            volume = self.volume = Volume(mirror, state_dir / MOUNT_NAME)
            volume.open()
            replace_file(state_dir / DEVICE_NAME, volume.device)
            server = ControlServer(state_dir / CONTROL_NAME, self.handle).start()
            logger.info("mirror %s: source on %s, volume %s (%d bytes), targets %s", plan.volume, plan.node,
                        volume.device, mirror.size, ", ".join(t.node for t in plan.definition.targets))  # fmt: skip
            self._serve(volume, stop)
        finally:
            if server is not None:
                server.close()
            self._release()
            (state_dir / DEVICE_NAME).unlink(missing_ok=True)
            (state_dir / BUSY_NAME).unlink(missing_ok=True)
            mirror.close()  # a last flush to the sync targets still Mirroring, then the links and the store
        logger.info("mirror %s: source on %s stopped", plan.volume, plan.node)
        return 0

    def _handover(self, generations: GenerationStore) -> Handover | None:
        """The handover kept on disk when this node was handed the volume (a switchover), if it is this plan's."""
        plan, path = self.plan, handover_path(generations)
        if not path.exists():
            return None
        handover = Handover.load(path)
        names = sorted(t.node for t in plan.definition.targets)
        if handover.to != plan.node or handover.volume != plan.volume or sorted(handover.plan()) != names:
            logger.warning("mirror %s: a handover from %s to %s for targets %s does not fit the LCD's mirror "
                           "(targets %s): ignored", plan.volume, handover.source, handover.to,
                           ", ".join(sorted(handover.plan())), ", ".join(names))  # fmt: skip
            path.unlink(missing_ok=True)
            return None
        return handover

    def _take_over(self, local: LocalStore, handover: Handover, generations: GenerationStore) -> Mirror:
        plan = self.plan
        assert self._connect is not None
        connect = {t.node: self._connect(t.node, plan.peers.get(t.node, [])) for t in plan.definition.targets}
        try:
            return Mirror.from_handover(local, handover, generations=generations, node=plan.node, connect=connect,
                                        bitmap_path=lambda name: plan.state_dir / f"{name}.bitmap",
                                        timeout=LINK_TIMEOUT)  # fmt: skip
        except BaseException:
            local.close()
            raise

    # -- switchover, on the old source -------------------------------------------------------

    def _hold(self) -> None:
        """Open the volume's loop device exclusively: refused while a filesystem on it is mounted (or it is
        otherwise in use); held until the process ends or writes are taken again, so nothing mounts it."""
        device = self.volume.device if self.volume is not None else None
        if self._held >= 0 or device is None:
            return
        try:
            self._held = os.open(device, os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise SystemCallFailed(f"cannot open {device}: {exc.strerror}") from None
            raise SwitchoverRefused(
                f"{self.plan.volume} cannot switch over: {device} is in use on {self.plan.node} (a filesystem on it "
                "is mounted): take the hierarchy out of service or unmount it first; nothing changed"
            ) from None

    def _release(self) -> None:
        if self._held >= 0:
            os.close(self._held)
            self._held = -1

    def handover(self, to: str, timeout: float) -> dict[str, Any]:
        mirror, volume = self.mirror, self.plan.volume
        assert mirror is not None
        if self.plan.definition.target(to) is None:
            raise NotFound(f"{volume!r} is not mirrored to {to!r}")
        if mirror.frozen is not None:
            raise SwitchoverRefused(f"{volume} cannot switch over to {to}: {mirror.frozen}")
        self._hold()
        try:
            handover = mirror.prepare_switchover(to, timeout=timeout)
        except BaseException:
            self._release()
            raise
        targets = [{"node": t.name, "state": t.state.label, "dirty_bytes": t.dirty_bytes} for t in handover.targets]
        return {"said": f"{volume}: {self.plan.node} handed over to {to}", "targets": targets}

    def thaw(self) -> str:
        assert self.mirror is not None
        self.mirror.thaw()
        self._release()
        return f"{self.plan.volume}: {self.plan.node} takes writes again"

    def _add(self, t: MirrorTargetDefinition, plan: Plan) -> None:
        assert self.mirror is not None and self._connect is not None
        connect = self._connect(t.node, plan.peers.get(t.node, []))
        settings = ResyncSettings(bandwidth=float(t.limit) or None)
        bitmap = plan.state_dir / f"{t.node}.bitmap"
        self.mirror.add_target(
            t.node, connect, bitmap, mode=t.mode, chunk=t.bitmap_chunk, timeout=LINK_TIMEOUT, settings=settings
        )

    def reload(self) -> str:
        """Targets added to the definition join the running mirror (a full resync each: a new intent log,
        all dirty, covers the writes issued while they are added). Anything else changed: refused, the
        process must start again."""
        with self._reloading:
            old, new = self.plan, read_plan(self.plan.root, self.plan.volume)
            kept = [t.node for t in old.definition.targets]
            same = (
                new.role == old.role
                and (new.port, new.store, new.definition.size) == (old.port, old.store, old.definition.size)
                and all(new.definition.target(n) == old.definition.target(n) for n in kept)
                and all(new.peers.get(n) == old.peers.get(n) for n in kept)
            )
            if not same:
                raise IllegalArgument(f"{old.volume}'s definition changed beyond new targets: the process starts again")
            added = [t for t in new.definition.targets if t.node not in kept]
            for t in added:
                (new.state_dir / f"{t.node}.bitmap").unlink(missing_ok=True)
                self._add(t, new)
            self.plan = new
        if not added:
            return f"{new.volume}: nothing to add"
        logger.info("mirror %s: now mirrored to %s too (full resync)", new.volume, ", ".join(t.node for t in added))
        return f"{new.volume}: mirrored to {', '.join(t.node for t in added)} too"

    def _serve(self, volume: Volume, stop: threading.Event) -> None:
        while True:
            while not stop.wait(WATCH):
                if not volume.serving:
                    raise VolumeError(f"the FUSE loop of {volume.image} ended by itself: {volume.device} is dead")
            self._release()  # a switchover's hold on the device (the volume is handed over: no writes come)
            try:
                volume.close()
                return
            except VolumeBusy as exc:
                logger.error("%s", exc)
                replace_file(self.plan.state_dir / BUSY_NAME, str(exc))
                stop.clear()
                stop.wait(BUSY_RETRY)
                stop.set()

    def _targets(self, target: str | None) -> list[str]:
        names = [t.node for t in self.plan.definition.targets]
        if target is not None and target not in names:
            raise NotFound(f"{self.plan.volume!r} is not mirrored to {target!r}")
        return [target] if target is not None else names

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        mirror, volume = self.mirror, self.plan.volume
        assert mirror is not None
        verb, target = request.get("verb"), request.get("target")
        if verb == "status":
            targets = tuple(
                TargetStatus(s.target, s.state, s.resync_percent, s.bytes_dirty, s.split_brain, s.resync_bytes_sent)
                for s in mirror.status()
            )
            device = self.volume.device if self.volume is not None else None
            return {"status": status_json(VolumeStatus(volume, "source", targets, device))}
        if verb == "resolve":
            keep = str(request.get("keep"))
            for name in self._targets(None):
                mirror.resolve(name, keep)
            return {"said": f"{volume}: split brain resolved, keeping {keep}'s data"}
        if verb == "switchover":
            raise IllegalArgument(f"switchover runs on a target of {volume!r}, not on its source {self.plan.node}")
        if verb == "handover":
            return self.handover(str(target), float(request.get("timeout") or HANDOVER_TIMEOUT))
        if verb == "thaw":
            return {"said": self.thaw()}
        if verb == "reload":
            return {"said": self.reload()}
        names = self._targets(None if target is None else str(target))
        if verb == "pause":
            for name in names:
                mirror.pause(name)
            return {"said": f"{volume}: mirror to {', '.join(names)} paused"}
        if verb == "continue":
            for name in names:
                mirror.continue_(name)
            return {"said": f"{volume}: mirror to {', '.join(names)} continued"}
        if verb == "break":
            for name in names:
                mirror.break_(name)
            return {"said": f"{volume}: mirror to {', '.join(names)} broken"}
        if verb == "resync":
            checksum = bool(request.get("checksum"))
            for name in names:
                mirror.resync(name, checksum=checksum)
            return {"said": f"{volume}: resync to {', '.join(names)} started{' (checksum)' if checksum else ''}"}
        if verb == "verify":
            for name in names:
                threading.Thread(target=self._verify, args=(name,), name=f"verify-{name}", daemon=True).start()
            return {"said": f"{volume}: verify against {', '.join(names)} started (the result goes to the log)"}
        raise UsageError(f"unknown verb {verb!r}")

    def _verify(self, name: str) -> None:
        assert self.mirror is not None
        try:
            ranges = self.mirror.verify(name)
        except HakeeperError as exc:
            logger.error("mirror %s -> %s: verify: %s", self.plan.volume, name, exc)
            return
        if ranges:
            shown = ", ".join(f"{a}+{b}" for a, b in ranges[:20])
            logger.error("mirror %s -> %s: verify found %d differing range(s): %s", self.plan.volume, name,
                         len(ranges), shown)  # fmt: skip
        else:
            logger.info("mirror %s -> %s: verify found no difference", self.plan.volume, name)


# ---------------------------------------------------------------------- the target


class Target:
    """The target side: listeners on the data port, one MirrorTarget for every connection of the source."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.target: MirrorTarget | None = None
        self._threads: list[threading.Thread] = []
        self._listeners: list[socket.socket] = []
        self._conns: set[socket.socket] = set()
        self.refusal: Callable[[x509.Certificate], str | None] | None = None

    def run(self, stop: threading.Event) -> int:
        plan = self.plan
        identity = load_identity(plan.root)
        context = server_context(identity)
        self.refusal = revoked(identity)
        store = LocalStore(plan.store)
        if store.size < plan.definition.size:
            store.close()
            raise IllegalArgument(
                f"{plan.store} has {store.size} bytes, less than {plan.volume}'s {plan.definition.size}"
            )
        self.target = MirrorTarget(store, GenerationStore(plan.state_dir / GENERATION_NAME), volume=plan.volume,
                                   node=plan.node)  # fmt: skip
        addresses = plan.local.get(plan.definition.source, [])
        server = ControlServer(plan.state_dir / CONTROL_NAME, self.handle).start()
        try:
            for address in addresses:
                t = threading.Thread(target=self._listen, args=(address, context, stop), name=f"listen-{address}",
                                     daemon=True)  # fmt: skip
                self._threads.append(t)
                t.start()
            logger.info("mirror %s: target on %s, data port %s, from source %s", plan.volume, plan.node,
                        ", ".join(f"{a}:{plan.port}" for a in addresses) or "none (no path to the source)",
                        plan.definition.source)  # fmt: skip
            stop.wait()
        finally:
            server.close()
            for sock in self._listeners:
                with contextlib.suppress(OSError):
                    sock.close()
            for sock in list(self._conns):  # the connection in service ends with the process
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            for t in self._threads:
                t.join(WATCH * 2)
            store.flush()
            store.close()
        logger.info("mirror %s: target on %s stopped", plan.volume, plan.node)
        return 0

    def _listen(self, address: str, context: ssl.SSLContext, stop: threading.Event) -> None:
        said = False
        while not stop.is_set():
            try:
                sock = socket.create_server((address, self.plan.port), reuse_port=False)
            except OSError as exc:
                if not said:
                    logger.error("mirror %s: cannot listen on %s:%d: %s (retrying)", self.plan.volume, address,
                                 self.plan.port, exc.strerror)  # fmt: skip
                    said = True
                stop.wait(WATCH)
                continue
            self._listeners.append(sock)
            sock.settimeout(WATCH)
            with sock:
                while not stop.is_set():
                    try:
                        conn, peer = sock.accept()
                    except TimeoutError:
                        continue
                    except OSError:
                        return
                    t = threading.Thread(target=self._connection, args=(conn, peer, context), daemon=True,
                                         name=f"data-{peer[0]}")  # fmt: skip
                    t.start()
            return

    def _connection(self, conn: socket.socket, peer: tuple[str, int], context: ssl.SSLContext) -> None:
        assert self.target is not None
        tls = accept_from(conn, peer[0], context, self.plan.definition.source, self.refusal, what=self.plan.volume)
        if tls is None:
            return
        self._conns.add(tls)
        try:
            with contextlib.suppress(TargetRefused):  # said by the target at ERROR
                self.target.serve(tls)
        finally:
            self._conns.discard(tls)

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        target, volume = self.target, self.plan.volume
        assert target is not None
        verb = request.get("verb")
        if verb == "status":
            return {"status": status_json(VolumeStatus(volume, "target", ()))}
        if verb == "resolve":
            target.resolve(str(request.get("keep")))
            return {"said": f"{volume}: split brain resolved on {self.plan.node}, keeping {request.get('keep')}'s data"}
        if verb == "forget_handover":  # the switchover failed after the handover: this node stays a target
            target.handover = None
            handover_path(target.generations).unlink(missing_ok=True)
            logger.info("mirror %s on %s: the handover is dropped (the switchover did not happen)", volume,
                        self.plan.node)  # fmt: skip
            return {"said": f"{volume}: {self.plan.node} stays a target"}
        if verb == "reload":  # another target added: nothing changes for this one
            new = read_plan(self.plan.root, volume)
            old = self.plan
            mine = (old.role, old.store, old.port, old.definition.source, old.local.get(old.definition.source))
            if mine != (new.role, new.store, new.port, new.definition.source, new.local.get(new.definition.source)):
                raise IllegalArgument(f"{volume}'s definition changed for {self.plan.node}: the process starts again")
            return {"said": f"{volume}: nothing changes on target {self.plan.node}"}
        source = self.plan.definition.source
        raise IllegalArgument(f"{self.plan.node} is a target of {volume!r}: run 'mirror {verb}' on its source {source}")


# ---------------------------------------------------------------------- the process


def _lock(state_dir: Path, stop: threading.Event) -> int:
    """One process per volume: wait (bounded) for the previous one to go."""
    fd = os.open(state_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline or stop.wait(0.2):
                os.close(fd)
                raise SystemCallFailed(f"another replication process serves {state_dir.name} still") from None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m hakeeper.replication.process", description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, type=Path, help="hakeeper's state directory (the LCD's)")
    parser.add_argument("--volume", required=True, help="the mirrored volume")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from hakeeper.logs.write import configure_child

    configure_child("hakeeper-replication")
    stop = stop_on_signals()
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)  # hakeeperd gone: stop as on lkstop
    root = args.root.absolute()
    lock = -1
    try:
        plan = read_plan(root, args.volume)
        plan.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = _lock(plan.state_dir, stop)
        (plan.state_dir / BUSY_NAME).unlink(missing_ok=True)  # a killed predecessor's
        replace_file(plan.state_dir / PID_NAME, str(os.getpid()))
        return (Source(plan) if plan.role == "source" else Target(plan)).run(stop)
    except HakeeperError as exc:
        logger.error("mirror %s: %s", args.volume, exc)
        return exc.exit_code
    except Exception:  # logged where hakeeperd logs, not only on a stderr nobody reads
        logger.exception("mirror %s: the replication process failed", args.volume)
        return 1
    finally:
        if lock >= 0:
            with contextlib.suppress(OSError):
                (volume_dir(root, args.volume) / PID_NAME).unlink()
            os.close(lock)


if __name__ == "__main__":
    sys.exit(main())
