"""keepalived on the test LAN: the peer to beat, a virtual address moved by VRRP between two nodes.

    vrrp = Keepalived(lan.node("node1"), workdir, vip="198.18.0.51/24", priority=150, master=True, advert_int=1)
    vrrp.start()                      # checks the configuration (keepalived -t) inside the node, then runs it
    ...
    vrrp.holds()                      # whether the node has the address now

One ``keepalived`` per node, always inside the node (``node.popen``: its network, mount and UTS namespaces),
never in the benchmark's own namespace; the LAN kills it at power-off and at exit. It runs in the
foreground with the VRRP subsystem only (``-n -P``), logging to its stderr (``-l -D``, no syslog ``-G``)
into ``<workdir>/keepalived-<node>.log``, and with pid files of its own (``-p``, ``-r``): without them a
second instance on the machine finds ``/run/keepalived.pid``, says "daemon is already running" and exits
with status 0 (notes/network-lab.md §3).

The configuration is the plain one of the keepalived documentation: one ``vrrp_instance`` on eth0,
virtual router 51, the address as its only ``virtual_ipaddress``, preemption on (the default). An
``advert_int`` below 1 s needs VRRPv3 (``vrrp_version 3`` in ``global_defs``; keepalived 2.2.7 accepts
0.01 s steps there), which this module sets for every interval that is not a whole second; VRRPv2 would
round it up to 1 s with only a warning, so the configuration is checked with ``keepalived -t`` first, and
refused when keepalived complains at all.

VRRP timing (RFC 3768 / 5798), which the benchmark's figures should match: a backup declares the master
dead after ``master_down_interval = 3 x advert_int + skew_time`` without an advertisement, where
``skew_time = (256 - priority) / 256 x advert_int``; it then adds the address and sends gratuitous ARPs.
A ``state MASTER`` instance with a priority below 255 starts as a backup and becomes master only after its
own master-down interval.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from hakeeper.lab.node import Node

VRID = 51
INTERFACE = "eth0"
CHECK_TIMEOUT = 20.0  # s for ``keepalived -t``


class KeepalivedFailed(Exception):
    """keepalived could not be configured or started; the message says why."""


def unavailable_reason() -> str | None:
    """Why keepalived cannot run here, or None when it can."""
    if shutil.which("keepalived") is None:
        return "keepalived is not installed (DEBIAN_FRONTEND=noninteractive apt-get install -y keepalived)"
    return None


def holds(node: Node, address: str) -> bool:
    """Whether ``node`` has ``address`` on eth0 now (False when it is powered off)."""
    if not node.is_on:
        return False
    done = node.run(["ip", "-o", "-4", "addr", "show", "dev", INTERFACE], timeout=10, check=True)
    return any(f" {address}/" in line for line in done.stdout.splitlines())


def master_down_interval(advert_int: float, priority: int) -> float:
    """How long a backup of ``priority`` waits without an advertisement before it takes over, in s."""
    return 3 * advert_int + (256 - priority) / 256 * advert_int


def config(router_id: str, *, vip: str, priority: int, master: bool, advert_int: float) -> str:
    """keepalived.conf for one node: one VRRP instance holding ``vip`` (``address/prefix``) on eth0."""
    if not 1 <= priority <= 254:
        raise ValueError(f"keepalived: priority {priority} must be within 1..254 (255 is the address owner)")
    whole = float(advert_int).is_integer()
    if not (1 <= advert_int <= 255 if whole else 0.01 <= advert_int < 40.96):
        raise ValueError(f"keepalived: advert_int {advert_int:g} must be 1..255 s, or 0.01..40.95 s with VRRPv3")
    version = "" if whole else "    vrrp_version 3\n"
    interval = f"{int(advert_int)}" if whole else f"{advert_int:.2f}"
    return (
        "global_defs {\n"
        f"    router_id {router_id}\n"
        f"{version}"
        "}\n"
        "vrrp_instance VI_1 {\n"
        f"    state {'MASTER' if master else 'BACKUP'}\n"
        f"    interface {INTERFACE}\n"
        f"    virtual_router_id {VRID}\n"
        f"    priority {priority}\n"
        f"    advert_int {interval}\n"
        "    virtual_ipaddress {\n"
        f"        {vip} dev {INTERFACE}\n"
        "    }\n"
        "}\n"
    )


class Keepalived:
    """keepalived on one node of the test LAN; ``start()`` again after the node was powered off and on."""

    def __init__(self, node: Node, workdir: Path, *, vip: str, priority: int, master: bool, advert_int: float) -> None:
        self.node = node
        self.vip = vip
        self.address = vip.split("/", 1)[0]
        self.advert_int = advert_int
        self.priority = priority
        workdir.mkdir(parents=True, exist_ok=True)
        stem = workdir / f"keepalived-{node.name}"
        self.conf = stem.with_suffix(".conf")
        self.pid = stem.with_suffix(".pid")
        self.vrrp_pid = stem.with_name(f"{stem.name}-vrrp.pid")
        self.log = stem.with_suffix(".log")
        self.conf.write_text(config(node.name, vip=vip, priority=priority, master=master, advert_int=advert_int))
        self.proc: subprocess.Popen[Any] | None = None

    def check(self) -> None:
        """``keepalived -t`` inside the node: KeepalivedFailed unless it accepts the configuration silently."""
        done = self.node.run(["keepalived", "-t", "-l", "-f", str(self.conf)], timeout=CHECK_TIMEOUT)
        complaint = (done.stdout + done.stderr).strip()
        if done.returncode != 0 or complaint:
            raise KeepalivedFailed(
                f"keepalived -t on {self.node.name} (exit {done.returncode}) refuses {self.conf}: {complaint}"
            )

    def start(self) -> None:
        """Check the configuration, then start keepalived in the node (foreground, VRRP only, own pid files)."""
        self.check()
        for stale in (self.pid, self.vrrp_pid):
            stale.unlink(missing_ok=True)  # the node was powered off: keepalived had no chance to remove them
        argv = ["keepalived", "-n", "-P", "-l", "-D", "-G", "-f", str(self.conf), "-p", str(self.pid),
                "-r", str(self.vrrp_pid)]  # fmt: skip
        with open(self.log, "ab") as log:
            self.proc = self.node.popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def holds(self) -> bool:
        """Whether the node has the virtual address on eth0 now (False when it is powered off)."""
        return holds(self.node, self.address)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""
