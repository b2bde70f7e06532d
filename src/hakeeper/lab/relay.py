"""The delay relay: netem's job in user space, for kernels built without sch_netem.

Runs in a network's namespace (the switch), one process per network, started by ``netem.Relay``.
For each impaired host port it sits on a detour: ``v-HOST`` (towards the host) is taken off the
bridge, and a veth pair ``d-HOST`` / ``w-HOST`` (``w-`` on the bridge) takes its place. Frames from the
host go on at once; frames towards the host are delayed by ``delay ± jitter`` ms (uniform, so jitter
reorders, as netem's does) and dropped with ``loss`` percent. Raw ``AF_PACKET`` sockets with
``PACKET_VNET_HDR`` pass checksum-offload and GSO metadata through, so TCP works unchanged.

Commands, one JSON object a line on stdin, each answered ``ok`` or ``error: ...`` on stdout:
``{"op": "add", "port": "v-n1", "relay": "d-n1"}`` (bind, discard until "set"),
``{"op": "set", "port": "v-n1", "delay_ms": 20, "jitter_ms": 10, "loss_pct": 0, "seed": null}``,
``{"op": "remove", "port": "v-n1"}``. End of stdin (the lab closed it, or died) ends the relay.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import os
import random
import selectors
import socket
import sys
import time
from dataclasses import dataclass, field

SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23
ETH_P_ALL = 0x0003
BUFFER = 256 * 1024  # a GSO frame is up to 64 KiB plus the 10-byte virtio-net header
QUEUE_LIMIT = 1000  # frames waiting per port, as netem's default limit
MAX_SECONDS = 6 * 3600  # a relay never outlives this, even if nobody closes its stdin
BURST = 256  # frames read from one socket per wake-up


def packet_socket(ifname: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    sock.bind((ifname, ETH_P_ALL))
    sock.setblocking(False)
    return sock


@dataclass
class Port:
    name: str
    to_host: socket.socket  # bound to v-HOST
    to_bridge: socket.socket  # bound to d-HOST
    delay: float = 0.0  # seconds
    jitter: float = 0.0
    loss: float = 0.0  # probability
    forwarding: bool = False
    rng: random.Random = field(default_factory=random.Random)
    queued: int = 0


class Relay:
    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.ports: dict[str, Port] = {}
        self.heap: list[tuple[float, int, str, bytes]] = []
        self.counter = itertools.count()
        self.stdin = b""

    def command(self, line: str) -> str:
        try:
            request = json.loads(line)
            op, name = request["op"], request["port"]
            if op == "add":
                if name in self.ports:
                    raise ValueError(f"{name} is relayed already")
                to_host, to_bridge = packet_socket(name), packet_socket(request["relay"])
                port = Port(name, to_host, to_bridge)
                self.ports[name] = port
                self.selector.register(to_host, selectors.EVENT_READ, (port, True))
                self.selector.register(to_bridge, selectors.EVENT_READ, (port, False))
            elif op == "set":
                port = self.ports[name]
                port.delay = float(request["delay_ms"]) / 1000
                port.jitter = float(request["jitter_ms"]) / 1000
                port.loss = float(request["loss_pct"]) / 100
                if request.get("seed") is not None:
                    port.rng.seed(request["seed"])
                port.forwarding = True
            elif op == "remove":
                port = self.ports.pop(name)
                for sock in (port.to_host, port.to_bridge):
                    self.selector.unregister(sock)
                    sock.close()
                self.heap = [item for item in self.heap if item[2] != name]
                heapq.heapify(self.heap)
            else:
                raise ValueError(f"unknown op {op!r}")
        except (KeyError, ValueError, OSError) as e:
            return f"error: {type(e).__name__}: {e}"
        return "ok"

    def read_stdin(self) -> bool:
        chunk = os.read(0, 65536)
        if not chunk:
            return False
        self.stdin += chunk
        while b"\n" in self.stdin:
            line, self.stdin = self.stdin.split(b"\n", 1)
            sys.stdout.write(self.command(line.decode()) + "\n")
            sys.stdout.flush()
        return True

    def receive(self, port: Port, from_host: bool) -> None:
        sock = port.to_host if from_host else port.to_bridge
        for _ in range(BURST):
            try:
                frame = sock.recv(BUFFER)
            except BlockingIOError:
                return
            except OSError:
                return  # the interface went away (power-off); the lab removes the port
            if not port.forwarding:
                continue
            if from_host:
                send(port.to_bridge, frame)
            elif port.rng.random() >= port.loss and port.queued < QUEUE_LIMIT:
                delay = max(0.0, port.delay + port.rng.uniform(-port.jitter, port.jitter))
                heapq.heappush(self.heap, (time.monotonic() + delay, next(self.counter), port.name, frame))
                port.queued += 1

    def send_due(self) -> None:
        now = time.monotonic()
        while self.heap and self.heap[0][0] <= now:
            _, _, name, frame = heapq.heappop(self.heap)
            port = self.ports.get(name)
            if port is not None:
                port.queued -= 1
                send(port.to_host, frame)

    def run(self) -> int:
        self.selector.register(0, selectors.EVENT_READ, None)
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        end = time.monotonic() + MAX_SECONDS
        while time.monotonic() < end:
            wait = min(1.0, max(0.0, self.heap[0][0] - time.monotonic())) if self.heap else 1.0
            for key, _ in self.selector.select(wait):
                if key.data is None:
                    if not self.read_stdin():
                        return 0
                else:
                    port: Port = key.data[0]
                    if self.ports.get(port.name) is port:  # not removed by a command of this round
                        self.receive(port, bool(key.data[1]))
            self.send_due()
        return 0


def send(sock: socket.socket, frame: bytes) -> None:
    with contextlib.suppress(OSError):  # link down, buffer full: the frame is lost, as on a wire
        sock.send(frame)


def main() -> int:
    with contextlib.suppress(OSError):  # the wire must not slow down when the nodes' CPUs are busy
        os.setpriority(os.PRIO_PROCESS, 0, -10)
    return Relay().run()


if __name__ == "__main__":
    sys.exit(main())
