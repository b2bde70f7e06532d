"""Delay, jitter and loss on a host's link: the lab side of the user-space relay (see relay.py).

This kernel has no ``sch_netem`` (CONFIG_NET_SCH_NETEM is not set), so ``tc qdisc ... netem`` cannot
work; a relay process per network does the same job on the switch side of the host's port.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from . import procs, shell
from .errors import LabError
from .topology import BRIDGE, Iface, Network

RELAY_SCRIPT = str(Path(__file__).with_name("relay.py"))


@dataclass(frozen=True)
class Impairment:
    """What ``tc qdisc ... netem delay D J loss L`` would do, applied to frames delivered to the host."""

    delay_ms: float = 20.0
    jitter_ms: float = 10.0
    loss_pct: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.delay_ms <= 10_000 or not 0 <= self.jitter_ms <= 10_000 or not 0 <= self.loss_pct <= 100:
            raise ValueError(f"netem: delay and jitter 0..10000 ms, loss 0..100 %, not {self}")


def detour_lines(iface: Iface) -> list[str]:
    """ip batch (in the network's namespace): the veth pair the relay sits on, bridged, up."""
    return [
        f"link add {iface.relay_port} type veth peer name {iface.relay_bridge_port}",
        f"link set {iface.relay_bridge_port} master {BRIDGE}",
        f"link set {iface.relay_bridge_port} up",
        f"link set {iface.relay_port} up",
    ]


class Relay:
    """One relay process in one network's namespace, driven by one-line JSON commands."""

    def __init__(self, network: Network, table: procs.ProcessTable, *, timeout: float = 10.0) -> None:
        self.network = network
        self._timeout = timeout
        self._proc: subprocess.Popen[bytes] = subprocess.Popen(
            [
                shell.tool("nsenter"),
                f"--net={procs.NETNS_DIR}/{network.netns}",
                sys.executable,
                "-I",
                "-S",
                RELAY_SCRIPT,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        table.add(f"relay-{network.name}", self._proc)
        self._expect("ready")

    @property
    def pid(self) -> int:
        return self._proc.pid

    def add(self, iface: Iface) -> None:
        """Bind the relay to the host's port and its detour; it discards frames until ``set``."""
        self._request({"op": "add", "port": iface.port, "relay": iface.relay_port})

    def set(self, iface: Iface, impairment: Impairment) -> None:
        self._request({"op": "set", "port": iface.port, **asdict(impairment)})

    def remove(self, iface: Iface) -> None:
        self._request({"op": "remove", "port": iface.port})

    def stop(self) -> None:
        """Close its stdin (it exits at once), then make sure: kill and reap."""
        for stream in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        try:
            self._proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=5)

    def _request(self, command: dict[str, object]) -> None:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(json.dumps(command).encode() + b"\n")
            self._proc.stdin.flush()
        except OSError as e:
            raise LabError(f"network {self.network.name}: the delay relay is gone: {e}") from e
        self._expect("ok")

    def _expect(self, word: str) -> None:
        assert self._proc.stdout is not None
        line = shell.read_line(self._proc.stdout.fileno(), time.monotonic() + self._timeout)
        if line != word:
            detail = line
            if self._proc.poll() is not None and self._proc.stderr is not None:
                detail += " " + self._proc.stderr.read().decode(errors="replace")
            raise LabError(f"network {self.network.name}: delay relay: expected {word!r}, got {detail.strip()!r}")
