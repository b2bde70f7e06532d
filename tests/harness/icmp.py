"""ICMP echo (ping), run inside a node: ``python icmp.py '{"targets": [...], "count": 1, "timeout": 1, ...}'``.

Prints ``{"198.18.0.12": [0.07], ...}``: the round-trip times in ms of the echoes that were answered.
The harness uses it so that tests need no ping binary; it needs root (a raw socket). Every loop is
bounded: ``count`` echoes per target, then at most ``timeout`` seconds of waiting for answers.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import struct
import sys
import time

ECHO_REQUEST = 8
ECHO_REPLY = 0


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def echo_request(ident: int, seq: int) -> bytes:
    payload = b"hakeeper-testlan".ljust(40, b".")
    header = struct.pack("!BBHHH", ECHO_REQUEST, 0, 0, ident, seq)
    return struct.pack("!BBHHH", ECHO_REQUEST, 0, checksum(header + payload), ident, seq) + payload


def ping(targets: list[str], count: int, timeout: float, interval: float) -> dict[str, list[float]]:
    ident = os.getpid() & 0xFFFF
    sent: dict[tuple[str, int], float] = {}
    answered: set[tuple[str, int]] = set()
    rtts: dict[str, list[float]] = {t: [] for t in targets}
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:

        def receive(until: float) -> None:
            for _ in range(100_000):
                if len(answered) == len(sent):
                    return  # everything answered
                remaining = until - time.monotonic()
                if remaining <= 0:
                    return
                ready, _, _ = select.select([sock], [], [], remaining)
                if not ready:
                    return
                packet, (source, _) = sock.recvfrom(65535)
                now = time.monotonic()
                ihl = (packet[0] & 0x0F) * 4
                kind, _, _, rid, seq = struct.unpack("!BBHHH", packet[ihl : ihl + 8])
                started = sent.get((source, seq))
                if kind == ECHO_REPLY and rid == ident and started is not None and (source, seq) not in answered:
                    answered.add((source, seq))
                    rtts[source].append(round((now - started) * 1000, 3))

        last = time.monotonic()
        for seq in range(count):
            for target in targets:
                sent[(target, seq)] = last = time.monotonic()
                with contextlib.suppress(OSError):  # no route, neighbour failed: a lost echo
                    sock.sendto(echo_request(ident, seq), (target, 0))
            if seq + 1 < count:
                receive(time.monotonic() + interval)
        receive(last + timeout)
    return rtts


def main() -> int:
    request = json.loads(sys.argv[1])
    targets, count = list(request["targets"]), int(request["count"])
    result = ping(targets, count, float(request["timeout"]), float(request["interval"]))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
