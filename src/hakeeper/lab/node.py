"""A host of the lab's LAN: a network namespace plus its own mount, UTS and IPC namespaces.

A *holder* process keeps the namespaces of a node: ``ip netns exec NS unshare --mount --uts --ipc
--propagation private sh -c SETUP`` sets the hostname, sysctls and private tmpfs mounts, prints
``ready`` and execs ``sleep``. The lab then opens ``/proc/HOLDER/ns/{mnt,uts,ipc,net}`` and keeps
these file descriptors: every command enters the node through them (``nsenter --mount=/proc/self/fd/N
...``), never through a PID that could be recycled, so a command can never land in the root namespace.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import procs, shell
from .errors import LabError, NodeDown
from .topology import IPV6_RANGE, Iface

HOLDER_SECONDS = 86_400  # a holder outlives any test run; a crashed run's holders go with cleanup_stale()
NS_KINDS = ("mnt", "uts", "ipc", "net")
NSENTER_FLAGS = {"mnt": "--mount", "uts": "--uts", "ipc": "--ipc", "net": "--net"}
ICMP_SCRIPT = str(Path(__file__).with_name("icmp.py"))
LAN_RANGES = (ipaddress.ip_network("198.18.0.0/15"), IPV6_RANGE)  # all a test may ping


class Node:
    """One machine of the LAN (the nodes and the client alike)."""

    def __init__(
        self,
        name: str,
        netns: str,
        ifaces: Mapping[str, Iface],
        table: procs.ProcessTable,
        *,
        sysctls: Mapping[str, str],
        tmpfs: Sequence[str],
    ) -> None:
        self.name = name
        self.netns = netns
        self.ifaces = dict(ifaces)
        self._table = table
        self._sysctls = dict(sysctls)
        self._tmpfs = list(tmpfs)
        self._holder: subprocess.Popen[bytes] | None = None
        self._fds: dict[str, int] | None = None

    def __repr__(self) -> str:
        return f"<Node {self.name} {self.address} {'on' if self.is_on else 'off'}>"

    # ---- identity ---------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """The address on network A (eth0)."""
        return self.ifaces["eth0"].address

    @property
    def addresses(self) -> dict[str, str]:
        """Interface -> address: ``{"eth0": "198.18.0.11", "eth1": "198.18.1.11"}``."""
        return {name: iface.address for name, iface in self.ifaces.items()}

    @property
    def address6(self) -> str:
        """The IPv6 address on network A (eth0), on a ``Lan(ipv6=True)``: ``2001:2::11``."""
        address = self.ifaces["eth0"].address6
        if address is None:
            raise LabError(f"{self.name} has no IPv6 address: the LAN was built without ipv6=True")
        return address

    @property
    def mac(self) -> str:
        """The MAC address of eth0 (it survives a power cycle)."""
        return self.ifaces["eth0"].mac

    @property
    def is_on(self) -> bool:
        return self._fds is not None

    @property
    def holder_pid(self) -> int | None:
        """The process that holds the node's namespaces (for ``nsenter -t PID -m -u -i -n`` by hand)."""
        return self._holder.pid if self._holder is not None and self.is_on else None

    # ---- running things in the node ------------------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 30.0,
        check: bool = False,
        input: str | None = None,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in the node and wait for it (at most ``timeout`` s); output is captured as text."""
        fds = self._require_on()
        return subprocess.run(
            self._enter(argv, cwd),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            env=env,
            pass_fds=fds,
        )

    def popen(
        self, argv: Sequence[str], *, cwd: str | os.PathLike[str] | None = None, **kw: Any
    ) -> subprocess.Popen[Any]:
        """Start a command in the node; the LAN kills and reaps it at power-off and at exit.

        Returns once the process is inside the node's namespaces (so ``pids()`` lists it).
        """
        fds = self._require_on()
        kw["pass_fds"] = (*kw.get("pass_fds", ()), *fds)
        proc: subprocess.Popen[Any] = subprocess.Popen(self._enter(argv, cwd), **kw)
        self._table.add(self.name, proc)
        # nsenter enters the mount namespace last
        if not procs.await_entry(proc, "mnt", procs.ns_id(f"/proc/self/fd/{self._require_fds()['mnt']}")):
            raise LabError(f"{self.name}: {argv[0]} did not enter the node within 5 s")
        return proc

    def pids(self) -> list[int]:
        """Every live process of the node (its network namespace), as ``ip netns pids`` lists them."""
        return procs.netns_pids(self.netns) if self.is_on else []

    def hostname(self) -> str:
        return self.run(["uname", "-n"], check=True, timeout=10).stdout.strip()

    # ---- faults on single processes ----------------------------------------------------------

    def kill_daemon(self, pid: int, *, sig: int = signal.SIGKILL, timeout: float = 5.0) -> None:
        """Send ``sig`` (default SIGKILL) to a process of this node; with SIGKILL, return once it is dead.

        Refuses a pid that is not in the node, and the holder (use ``lan.power_off`` for the whole node).
        """
        self._signal(pid, sig)
        if sig != signal.SIGKILL:
            return
        tracked = self._table.get(pid)
        if tracked is not None:
            try:
                tracked.wait(timeout=timeout)
            except subprocess.TimeoutExpired as e:
                raise LabError(f"{self.name}: pid {pid} survived SIGKILL for {timeout} s") from e
        if procs.wait_gone([pid], timeout=timeout):
            raise LabError(f"{self.name}: pid {pid} survived SIGKILL for {timeout} s")

    def freeze(self, pid: int, *, timeout: float = 5.0) -> None:
        """SIGSTOP a process of this node (a hung daemon); return once it is stopped."""
        self._signal(pid, signal.SIGSTOP)
        deadline = time.monotonic() + timeout
        while procs.state(pid) not in ("T", "t", None, "Z") and time.monotonic() < deadline:
            time.sleep(0.002)

    def thaw(self, pid: int) -> None:
        """SIGCONT a process frozen with ``freeze``."""
        self._signal(pid, signal.SIGCONT)

    def _signal(self, pid: int, sig: int) -> None:
        fds = self._require_fds()
        if self._holder is not None and pid == self._holder.pid:
            raise LabError(f"{self.name}: pid {pid} holds the node's namespaces; use lan.power_off({self.name})")
        ident = procs.ns_id(f"/proc/self/fd/{fds['net']}")
        if ident is None or not procs.signal_in(pid, ident, sig):
            raise LabError(f"pid {pid} is not a process of {self.name}")

    # ---- reachability ---------------------------------------------------------------------------

    def ping(self, address: str, *, count: int = 1, timeout: float = 1.0, interval: float = 0.2) -> list[float]:
        """ICMP echo from this node (like ``ping -c COUNT -W TIMEOUT``); round-trip times in ms of the answers.

        IPv4 or IPv6 (on a ``Lan(ipv6=True)``); only addresses of the lab.
        """
        return self._icmp([address], count=count, timeout=timeout, interval=interval)[address]

    def can_reach(self, address: str, *, timeout: float = 1.0) -> bool:
        return bool(self.ping(address, timeout=timeout))

    def reachable(self, addresses: Iterable[str], *, timeout: float = 1.0) -> dict[str, bool]:
        """Ping several addresses at once (one process, one timeout): address -> answered."""
        result = self._icmp(list(addresses), count=1, timeout=timeout, interval=0.0)
        return {address: bool(rtts) for address, rtts in result.items()}

    def _icmp(self, addresses: list[str], *, count: int, timeout: float, interval: float) -> dict[str, list[float]]:
        if not 1 <= count <= 1000 or not 0 < timeout <= 60 or not 0 <= interval <= 10:
            raise ValueError("ping: count 1..1000, timeout 0..60 s, interval 0..10 s")
        for address in addresses:
            if not any(ipaddress.ip_address(address) in net for net in LAN_RANGES):
                raise ValueError(f"ping: {address} is not an address of the lab ({', '.join(map(str, LAN_RANGES))})")
        request = json.dumps({"targets": addresses, "count": count, "timeout": timeout, "interval": interval})
        budget = timeout + count * interval + 10
        proc = self.run([sys.executable, "-I", "-S", ICMP_SCRIPT, request], timeout=budget)
        if proc.returncode != 0:
            raise LabError(f"{self.name}: ping failed: {proc.stderr.strip()}")
        answers: dict[str, list[float]] = json.loads(proc.stdout)
        return answers

    # ---- life cycle (driven by the Lan) -------------------------------------------------------

    def _enter(self, argv: Sequence[str], cwd: str | os.PathLike[str] | None) -> list[str]:
        if isinstance(argv, str | bytes):
            raise TypeError("argv must be a list of words, e.g. ['ip', 'addr'] (or ['sh', '-c', script])")
        assert self._fds is not None
        flags = [f"{NSENTER_FLAGS[kind]}=/proc/self/fd/{fd}" for kind, fd in self._fds.items()]
        if cwd is not None:
            flags.append(f"--wdns={os.fspath(cwd)}")  # resolved inside the node's mount namespace
        return [shell.tool("nsenter"), *flags, "--", *argv]

    def _require_on(self) -> tuple[int, ...]:
        return tuple(self._require_fds().values())

    def _require_fds(self) -> dict[str, int]:
        fds = self._fds
        if fds is None:
            raise NodeDown(f"{self.name} is powered off")
        return fds

    def _start_holder(self) -> None:
        """Start the holder; ``_await_holder`` finishes the boot (start many, then await each)."""
        q = shlex.quote
        lines = [
            "set -e",
            # the copied /run/netns mounts would pin every other namespace of the machine: drop them here
            "umount -l /run/netns 2>/dev/null || true",
            f"printf %s {q(self.name)} > /proc/sys/kernel/hostname",
        ]
        for key, value in self._sysctls.items():
            path = "/proc/sys/" + key.replace(".", "/")
            lines.append(f"if [ -e {q(path)} ]; then printf %s {q(value)} > {q(path)}; fi")
        lines += [f"mount -t tmpfs -o mode=0755 hakeeper-{self.name} {q(d)}" for d in self._tmpfs]
        lines += ["echo ready", f"exec sleep {HOLDER_SECONDS}"]
        argv = [
            shell.tool("ip"), "netns", "exec", self.netns,
            shell.tool("unshare"), "--mount", "--uts", "--ipc", "--propagation", "private",
            "--", shell.tool("sh"), "-c", "\n".join(lines),
        ]  # fmt: skip
        holder = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
        self._holder = holder
        self._table.add(self.name, holder)

    def _await_holder(self, deadline: float) -> None:
        holder = self._holder
        assert holder is not None and holder.stdout is not None and holder.stderr is not None
        line = shell.read_line(holder.stdout.fileno(), deadline)
        if line != "ready":
            if holder.poll() is None:
                holder.kill()
            _, err = holder.communicate(timeout=5)
            raise LabError(f"{self.name}: the namespace holder did not start: {err.decode(errors='replace')}")
        holder.stdout.close()
        holder.stderr.close()
        fds: dict[str, int] = {}
        try:
            for kind in NS_KINDS:
                fds[kind] = os.open(f"/proc/{holder.pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
            if procs.ns_id(f"/proc/self/fd/{fds['net']}") != procs.netns_id(self.netns):
                raise LabError(f"{self.name}: the holder is not in network namespace {self.netns}")
        except BaseException:
            for fd in fds.values():
                os.close(fd)
            raise
        self._fds = fds

    def _release(self) -> None:
        """Forget the namespaces (power-off or exit): close our references so the kernel can free them."""
        fds, self._fds = self._fds, None
        for fd in (fds or {}).values():
            os.close(fd)
