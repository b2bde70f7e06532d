"""What outlives a test process: state files under /run, stale-LAN cleanup, and signals.

Each LAN writes ``/run/hakeeper-testlan-<prefix>.json`` (owner pid and start time, namespace names)
*before* it creates anything. ``cleanup_stale()`` removes the LANs whose owner has died: it kills every
process of their namespaces (by PID, through pidfds) and deletes the namespaces. SIGTERM, which would
kill Python without unwinding, becomes KeyboardInterrupt while a LAN is alive, so ``with Lan()`` blocks
and fixtures clean up as on Ctrl-C; building and tearing down a LAN defer both signals until done.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from . import procs, shell
from .errors import LabError
from .topology import NETNS_RE, PREFIX_RE

STATE_DIR = Path("/run")
STATE_GLOB = "hakeeper-testlan-*.json"
UNREADABLE_GRACE_S = 60  # a state file that is not JSON yet may be being written right now


def state_path(state_dir: Path, prefix: str) -> Path:
    return state_dir / f"hakeeper-testlan-{prefix}.json"


def claim(state_dir: Path, namespaces: list[str], *, tries: int = 100) -> tuple[str, Path]:
    """Pick an unused prefix and create its state file (O_EXCL: two processes never share one)."""
    me = os.getpid()
    for _ in range(tries):
        prefix = "hk" + secrets.token_hex(3)
        if any(Path(procs.NETNS_DIR).glob(f"{prefix}-*")):
            continue
        path = state_path(state_dir, prefix)
        record = {
            "prefix": prefix,
            "owner_pid": me,
            "owner_start": procs.start_time(me),
            "created": time.time(),
            "namespaces": [f"{prefix}-{name}" for name in namespaces],
        }
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        return prefix, path
    raise LabError(f"no free LAN prefix after {tries} tries")


def teardown(namespaces: Iterable[str], *, timeout: float = 5.0) -> list[int]:
    """Kill every process of these network namespaces, then delete them; return pids that would not die."""
    names = [n for n in namespaces if NETNS_RE.match(n)]
    idents = {i for i in (procs.netns_id(n) for n in names) if i is not None}
    stuck = procs.kill_all_in(idents, timeout=timeout)
    existing = [n for n in names if os.path.exists(f"{procs.NETNS_DIR}/{n}")]
    if existing:
        batch = "".join(f"netns del {n}\n" for n in existing)
        shell.run([shell.tool("ip"), "-force", "-batch", "-"], input=batch, check=False)
    return stuck


def owner_alive(record: dict[str, Any]) -> bool:
    pid, started = record.get("owner_pid"), record.get("owner_start")
    return isinstance(pid, int) and procs.alive(pid) and procs.start_time(pid) == started


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def cleanup_stale(state_dir: Path = STATE_DIR) -> list[str]:
    """Remove the LANs of test runs that died without cleaning up; return their prefixes."""
    removed: list[str] = []
    with _locked(state_dir):
        for path in sorted(state_dir.glob(STATE_GLOB)):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                with contextlib.suppress(OSError):
                    if time.time() - path.stat().st_mtime > UNREADABLE_GRACE_S:
                        path.unlink()
                continue
            prefix = record.get("prefix")
            if not isinstance(prefix, str) or not PREFIX_RE.match(prefix) or owner_alive(record):
                continue
            names = [n for n in record.get("namespaces", []) if isinstance(n, str) and n.startswith(prefix + "-")]
            teardown(names)
            path.unlink(missing_ok=True)
            removed.append(prefix)
    return removed


# ---- signals --------------------------------------------------------------------------------------


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT and SIGTERM while the LAN is half-built or half-removed; deliver them afterwards."""
    if not _in_main_thread():
        yield
        return
    received: list[int] = []

    def defer(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, defer)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if received:
            signal.raise_signal(received[0])


class Closable(Protocol):
    def close(self) -> None: ...


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt("SIGTERM")


class _Registry:
    """The LANs alive in this process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.live: list[Closable] = []
        self.saved_sigterm: Callable[[int, FrameType | None], Any] | int | None = None
        self.atexit_registered = False

    def register(self, lan: Closable) -> None:
        with self.lock:
            self.live.append(lan)
            if not self.atexit_registered:
                atexit.register(self.close_all)
                self.atexit_registered = True
            if _in_main_thread() and self.saved_sigterm is None and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
                self.saved_sigterm = signal.signal(signal.SIGTERM, _sigterm)

    def unregister(self, lan: Closable) -> None:
        with self.lock:
            if lan in self.live:
                self.live.remove(lan)
            if not self.live and self.saved_sigterm is not None and _in_main_thread():
                if signal.getsignal(signal.SIGTERM) is _sigterm:
                    signal.signal(signal.SIGTERM, self.saved_sigterm)
                self.saved_sigterm = None

    def close_all(self) -> None:
        for lan in list(reversed(self.live)):
            with contextlib.suppress(Exception):
                lan.close()


_registry = _Registry()


def register(lan: Closable) -> None:
    """A LAN is alive: make SIGTERM unwind (KeyboardInterrupt), and close it at interpreter exit."""
    _registry.register(lan)


def unregister(lan: Closable) -> None:
    """A LAN is closed: when it was the last one, give SIGTERM back its previous handler."""
    _registry.unregister(lan)
