"""ICMP echo (ping), run inside a node: ``python icmp.py '{"targets": [...], "count": 1, "timeout": 1, ...}'``.

Prints ``{"198.18.0.12": [0.07], ...}``: the round-trip times in ms of the echoes that were answered.
The lab uses it so that nothing needs a ping binary; it needs root (a raw socket). Every loop is
bounded: ``count`` echoes per target, then at most ``timeout`` seconds of waiting for answers.
IPv6 targets (``2001:2::12``) get ICMPv6 echoes on a socket of their own (the kernel fills in the checksum).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import select
import socket
import struct
import sys
import time

ECHO_REQUEST = 8
ECHO_REPLY = 0
ECHO_REQUEST_V6 = 128
ECHO_REPLY_V6 = 129


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def echo_request(ident: int, seq: int, *, ipv6: bool = False) -> bytes:
    payload = b"hakeeper-testlan".ljust(40, b".")
    if ipv6:
        return struct.pack("!BBHHH", ECHO_REQUEST_V6, 0, 0, ident, seq) + payload
    header = struct.pack("!BBHHH", ECHO_REQUEST, 0, 0, ident, seq)
    return struct.pack("!BBHHH", ECHO_REQUEST, 0, checksum(header + payload), ident, seq) + payload


def ping(targets: list[str], count: int, timeout: float, interval: float) -> dict[str, list[float]]:
    ident = os.getpid() & 0xFFFF
    sent: dict[tuple[str, int], float] = {}
    answered: set[tuple[str, int]] = set()
    rtts: dict[str, list[float]] = {t: [] for t in targets}
    named = {str(ipaddress.ip_address(t)): t for t in targets}  # as the kernel writes it -> as given
    with contextlib.ExitStack() as stack:
        socks: dict[int, socket.socket] = {}
        for target in targets:
            version = ipaddress.ip_address(target).version
            if version not in socks:
                family, proto = (
                    (socket.AF_INET6, socket.IPPROTO_ICMPV6) if version == 6 else (socket.AF_INET, socket.IPPROTO_ICMP)
                )
                socks[version] = stack.enter_context(socket.socket(family, socket.SOCK_RAW, proto))

        def receive(until: float) -> None:
            for _ in range(100_000):
                if len(answered) == len(sent):
                    return  # everything answered
                remaining = until - time.monotonic()
                if remaining <= 0:
                    return
                ready, _, _ = select.select(list(socks.values()), [], [], remaining)
                if not ready:
                    return
                for sock in ready:
                    packet, address = sock.recvfrom(65535)
                    now = time.monotonic()
                    ipv6 = sock.family == socket.AF_INET6
                    start = 0 if ipv6 else (packet[0] & 0x0F) * 4  # IPv4 raw sockets get the IP header too
                    if len(packet) < start + 8:
                        continue
                    kind, _, _, rid, seq = struct.unpack("!BBHHH", packet[start : start + 8])
                    source = named.get(str(address[0]).partition("%")[0], "")
                    started = sent.get((source, seq))
                    reply = ECHO_REPLY_V6 if ipv6 else ECHO_REPLY
                    if kind == reply and rid == ident and started is not None and (source, seq) not in answered:
                        answered.add((source, seq))
                        rtts[source].append(round((now - started) * 1000, 3))

        last = time.monotonic()
        for seq in range(count):
            for target in targets:
                version = ipaddress.ip_address(target).version
                sent[(target, seq)] = last = time.monotonic()
                with contextlib.suppress(OSError):  # no route, neighbour failed: a lost echo
                    socks[version].sendto(echo_request(ident, seq, ipv6=version == 6), (target, 0))
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
