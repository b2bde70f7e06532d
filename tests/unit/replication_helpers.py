"""A target node served over socketpairs, and a source, for the mirror engine's tests (no IP networking)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from hakeeper.replication.device import LocalStore
from hakeeper.replication.generations import GenerationStore
from hakeeper.replication.mirror import Mirror
from hakeeper.replication.states import MirrorState
from hakeeper.replication.target import MirrorTarget, TargetRefused

KiB = 1024
MiB = 1024 * KiB
CHUNK = 64 * KiB


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Poll until ``predicate`` holds; fail after a generous bound (not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class GatedStore(LocalStore):
    """A LocalStore whose writes can be frozen (a stalled target) and whose flushes are counted."""

    def __init__(self, path: Path, *, create_size: int | None = None) -> None:
        super().__init__(path, create_size=create_size)
        self.open_gate = threading.Event()
        self.open_gate.set()
        self.flushes = 0
        self.writes = 0

    def write(self, offset: int, data: bytes | memoryview) -> None:
        self.open_gate.wait(30)
        super().write(offset, data)
        self.writes += 1

    def flush(self) -> None:
        super().flush()
        self.flushes += 1


class TargetNode:
    """A target: its store, generations and MirrorTarget, reachable through :meth:`connect`."""

    def __init__(self, tmp_path: Path, name: str, size: int, *, volume: str = "vol1", image: str | None = None) -> None:
        self.name = name
        self.path = tmp_path / (image or f"{name}.img")
        self.store = GatedStore(self.path, create_size=None if self.path.exists() else size)
        self.gens = GenerationStore(tmp_path / (f"{image}.gen" if image else f"{name}.gen"))
        self.target = MirrorTarget(self.store, self.gens, volume=volume, node=name)
        self.up = True
        self.refusals: list[str] = []
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []

    def connect(self) -> socket.socket:
        if not self.up:
            raise ConnectionRefusedError(f"{self.name} is down")
        a, b = socket.socketpair()
        self._socks.append(b)
        t = threading.Thread(target=self._serve, args=(b,), daemon=True)
        self._threads.append(t)
        t.start()
        return a

    def _serve(self, sock: socket.socket) -> None:
        try:
            self.target.serve(sock)
        except TargetRefused as exc:
            self.refusals.append(str(exc))

    def down(self, *, wait: bool = True) -> None:
        """The target node disappears: its connections break, new ones are refused (``wait``: and its
        serving threads have ended; not while a test holds its store's gate, which they wait for)."""
        self.up = False
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        if wait:
            self.join()

    def join(self) -> None:
        for t in self._threads:
            t.join(10)
        self._threads = [t for t in self._threads if t.is_alive()]

    def data(self) -> bytes:
        return self.path.read_bytes()

    def close(self) -> None:
        self.store.open_gate.set()
        self.down()
        for s in self._socks:
            s.close()
        self.store.close()


def make_source(tmp_path: Path, size: int, *, name: str = "node1", image: str = "src.img") -> Mirror:
    local = LocalStore(tmp_path / image, create_size=size)
    return Mirror(local, volume="vol1", node=name, generations=GenerationStore(tmp_path / f"{image}.gen"))


def state_of(mirror: Mirror, target: str) -> MirrorState:
    return mirror.link(target).state


def wait_state(mirror: Mirror, target: str, state: MirrorState) -> None:
    wait_until(lambda: state_of(mirror, target) is state, f"{target} {state.name} (is {state_of(mirror, target).name})")
