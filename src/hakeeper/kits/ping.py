"""ICMP echo for the IP kit's ping list: does at least one of these hosts answer through this interface?

LifeKeeper's IP kit checks the network behind an address by pinging a list of
hosts that should always answer (a router, a file server). :func:`any_answers`
sends an echo request to every host at once, out of the interface that holds
the address (``SO_BINDTODEVICE``), repeats it for those that have not answered
``tries`` times within ``timeout``, and returns at the first answer. Raw
sockets (hakeeperd runs as root), IPv4 and IPv6; the kernel fills in the
ICMPv6 checksum. Every raw ICMP socket sees every echo reply of the host, so
replies are matched by identifier, sequence number and source.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import secrets
import socket
import struct
import time
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address

from hakeeper.kits.neighbour import Address, internet_checksum

ECHO_REQUEST_V4, ECHO_REPLY_V4 = 8, 0
ECHO_REQUEST_V6, ECHO_REPLY_V6 = 128, 129
PAYLOAD = b"hakeeper ping list".ljust(32, b".")


def echo_request(ipv6: bool, ident: int, seq: int) -> bytes:
    """An ICMP (or ICMPv6) echo request; the ICMPv6 checksum is left to the kernel."""
    kind = ECHO_REQUEST_V6 if ipv6 else ECHO_REQUEST_V4
    header = struct.pack("!BBHHH", kind, 0, 0, ident, seq)
    if ipv6:
        return header + PAYLOAD
    return struct.pack("!BBHHH", kind, 0, internet_checksum(header + PAYLOAD), ident, seq) + PAYLOAD


def echo_reply(packet: bytes, ipv6: bool) -> tuple[int, int] | None:
    """(identifier, sequence) of an echo reply; None for anything else. IPv4 packets start with the IP header."""
    start = 0 if ipv6 else (packet[0] & 0x0F) * 4 if packet else 0
    if len(packet) < start + 8:
        return None
    kind, _code, _sum, ident, seq = struct.unpack_from("!BBHHH", packet, start)
    if kind != (ECHO_REPLY_V6 if ipv6 else ECHO_REPLY_V4):
        return None
    return ident, seq


async def _family_answers(
    hosts: Sequence[Address], *, ipv6: bool, ifname: str, ifindex: int, timeout: float, tries: int
) -> Address | None:
    family, proto = (socket.AF_INET6, socket.IPPROTO_ICMPV6) if ipv6 else (socket.AF_INET, socket.IPPROTO_ICMP)
    loop = asyncio.get_running_loop()
    ident = secrets.randbelow(0xFFFF) + 1
    with socket.socket(family, socket.SOCK_RAW, proto) as sock:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        start = time.monotonic()
        deadline = start + timeout
        sends = [start + i * timeout / tries for i in range(tries)]
        sent: dict[tuple[Address, int], Address] = {}
        for _ in range(100_000):  # bounded: each pass sends, or receives a packet, or times out
            now = time.monotonic()
            while sends and sends[0] <= now:
                seq = tries - len(sends) + 1
                sends.pop(0)
                for host in hosts:
                    target: tuple[str, int] | tuple[str, int, int, int] = (str(host), 0)
                    if ipv6 and host.is_link_local:
                        target = (str(host), 0, 0, ifindex)
                    sent[(host, seq)] = host
                    with contextlib.suppress(OSError):  # no route, unreachable: a lost echo
                        sock.sendto(echo_request(ipv6, ident, seq), target)
            if now >= deadline:
                return None
            until = min([deadline, *sends[:1]])
            try:
                async with asyncio.timeout(max(0.0, until - now)):
                    packet, source = await loop.sock_recvfrom(sock, 2048)
            except TimeoutError:
                continue
            reply = echo_reply(packet, ipv6)
            if reply is None or reply[0] != ident:
                continue
            with contextlib.suppress(ValueError):
                answered = sent.get((ipaddress.ip_address(str(source[0]).partition("%")[0]), reply[1]))
                if answered is not None:
                    return answered
    return None


async def any_answers(
    hosts: Sequence[Address], ifname: str, ifindex: int, timeout: float, *, tries: int = 3
) -> Address | None:
    """The first of ``hosts`` to answer an echo sent out of ``ifname`` (index ``ifindex``) within ``timeout`` s."""
    v4: list[Address] = [h for h in hosts if isinstance(h, IPv4Address)]
    v6: list[Address] = [h for h in hosts if isinstance(h, IPv6Address)]
    jobs = [
        asyncio.ensure_future(
            _family_answers(group, ipv6=ipv6, ifname=ifname, ifindex=ifindex, timeout=timeout, tries=tries)
        )
        for group, ipv6 in ((v4, False), (v6, True))
        if group
    ]
    try:
        for done in asyncio.as_completed(jobs):
            answer = await done
            if answer is not None:
                return answer
        return None
    finally:
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
