"""Processes of the lab: which ones live in a namespace, and signalling them by PID without races.

A namespace is known by the identity of its nsfs inode (``st_dev``, ``st_ino``), exactly as
``ip netns pids NAME`` compares ``/proc/PID/ns/net`` with ``/run/netns/NAME``. Signals go through a
pidfd opened *before* the namespace is checked, so a PID recycled by an unrelated process between
the scan and the signal can never be hit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Collection, Iterable
from typing import Any

NsId = tuple[int, int]

NETNS_DIR = "/run/netns"


def ns_id(path: str) -> NsId | None:
    """Identity of the namespace behind ``path`` (a /run/netns entry, /proc/PID/ns/..., /proc/self/fd/N)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def netns_id(name: str) -> NsId | None:
    return ns_id(f"{NETNS_DIR}/{name}")


def pids_in(namespaces: Collection[NsId]) -> dict[int, NsId]:
    """Every live process (zombies have left their namespaces) whose network namespace is one of these."""
    found: dict[int, NsId] = {}
    if not namespaces:
        return found
    with os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            ident = ns_id(f"/proc/{entry.name}/ns/net")
            if ident is not None and ident in namespaces:
                found[int(entry.name)] = ident
    return found


def netns_pids(name: str) -> list[int]:
    """What ``ip netns pids NAME`` prints, without a process per call."""
    ident = netns_id(name)
    return sorted(pids_in({ident})) if ident else []


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    return text[text.rfind(")") + 2 :].split()


def state(pid: int) -> str | None:
    """The kernel's one-letter state of a process (R, S, D, T, Z, ...), None when it does not exist."""
    fields = _stat_fields(pid)
    return fields[0] if fields else None


def alive(pid: int) -> bool:
    """The process exists and has not died (a zombie only waits for its parent to reap it)."""
    return state(pid) not in (None, "Z", "X")


def start_time(pid: int) -> int | None:
    """Start time in clock ticks since boot: with the pid, it names a process even after pid reuse."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def signal_in(pid: int, namespace: NsId, sig: int) -> bool:
    """Send ``sig`` to ``pid`` only if it is (still) a process of ``namespace``; True if it was sent."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        if ns_id(f"/proc/{pid}/ns/net") != namespace:
            return False
        signal.pidfd_send_signal(pidfd, sig)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(pidfd)


def stop_all_in(namespaces: Collection[NsId]) -> None:
    """SIGSTOP every process of these namespaces, once (the power-off's first instant; SIGKILL follows)."""
    for pid, ident in pids_in(namespaces).items():
        signal_in(pid, ident, signal.SIGSTOP)


def kill_all_in(namespaces: Collection[NsId], *, timeout: float = 5.0) -> list[int]:
    """SIGKILL every process of these namespaces until none is left; return the pids that would not die.

    Repeats (a bounded number of times) because a process may fork while its siblings are killed.
    """
    deadline = time.monotonic() + timeout
    pause = 0.002
    for _ in range(200):
        found = pids_in(namespaces)
        if not found:
            return []
        for pid, ident in found.items():
            signal_in(pid, ident, signal.SIGKILL)
        if time.monotonic() >= deadline:
            break
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
    return sorted(pids_in(namespaces))


def wait_gone(pids: Iterable[int], *, timeout: float = 5.0) -> list[int]:
    """Wait (bounded) until these processes have died; return those still alive."""
    left = [p for p in pids if alive(p)]
    deadline = time.monotonic() + timeout
    pause = 0.002
    while left and time.monotonic() < deadline:
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
        left = [p for p in left if alive(p)]
    return left


def await_entry(proc: subprocess.Popen[Any], kind: str, namespace: NsId | None, *, timeout: float = 5.0) -> bool:
    """Wait until a child started through nsenter is inside ``namespace`` (or has ended); False on timeout."""
    deadline = time.monotonic() + timeout
    pause = 0.0002
    while proc.poll() is None and ns_id(f"/proc/{proc.pid}/ns/{kind}") != namespace:
        if time.monotonic() > deadline:
            return False
        time.sleep(pause)
        pause = min(pause * 2, 0.01)
    return True


class ProcessTable:
    """The child processes the lab started (holders, relays, hogs, ``node.popen``), by owner.

    They are our children, so until we reap them their pids cannot be reused: ``Popen.kill`` is safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: list[tuple[str, subprocess.Popen[Any]]] = []

    def add(self, owner: str, proc: subprocess.Popen[Any]) -> None:
        with self._lock:
            # forget children that ended on their own (poll reaps them; the caller keeps the returncode)
            self._procs = [(o, p) for o, p in self._procs if p.poll() is None]
            self._procs.append((owner, proc))

    def get(self, pid: int) -> subprocess.Popen[Any] | None:
        with self._lock:
            return next((p for _, p in self._procs if p.pid == pid), None)

    def pids(self, owner: str | None = None) -> list[int]:
        with self._lock:
            return [p.pid for o, p in self._procs if owner is None or o == owner]

    def finish(self, owner: str | None = None, *, close_pipes: bool = False, timeout: float = 5.0) -> list[int]:
        """Kill and reap the children of ``owner`` (None: all); return pids that could not be reaped."""
        with self._lock:
            mine = [(o, p) for o, p in self._procs if owner is None or o == owner]
            self._procs = [(o, p) for o, p in self._procs if not (owner is None or o == owner)]
        for _, proc in mine:
            if proc.poll() is None:
                proc.kill()
        stuck: list[int] = []
        deadline = time.monotonic() + timeout
        for _, proc in mine:
            try:
                proc.wait(timeout=max(0.01, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                stuck.append(proc.pid)
            if close_pipes:
                for stream in (proc.stdin, proc.stdout, proc.stderr):
                    if stream is not None:
                        with contextlib.suppress(OSError):
                            stream.close()
        return stuck
