"""Telling the LAN who holds an address, and asking whether someone does: ARP (IPv4) and NDP (IPv6) frames.

The IP kit uses this module for two things, on raw ``AF_PACKET`` sockets (no
``arping``, no ``ndisc6``):

**Announcements.** After a virtual address is added, every host and switch on
the LAN must learn at once that it now lives behind this node's MAC; otherwise
a client keeps sending to the old node until its neighbour entry times out
(15-45 s on Linux). IPv4: a gratuitous ARP, in the form RFC 5227 (§2.3) calls
an *ARP Announcement* — a broadcast request whose sender and target protocol
addresses are both the address, target hardware address zero. Linux overrides
an existing entry on such a request whatever ``arp_accept`` and ``locktime``
say. IPv6: an unsolicited Neighbor Advertisement (RFC 4861 §4.4, §7.2.6) to
all-nodes ``ff02::1``, hop limit 255, flags Solicited=0 and Override=1, with the
Target Link-Layer Address option, sent from the address itself.

**Duplicate probes.** Before adding an address, ask whether another host
answers for it. IPv4: an *ARP Probe* (RFC 5227 §2.1.1), a broadcast request
with sender protocol address 0.0.0.0, so that it changes no one's cache; a
holder answers with a reply. IPv6: the Duplicate Address Detection form of a
Neighbor Solicitation (RFC 4862 §5.4.2): source ``::``, to the address's
solicited-node multicast group, no Source Link-Layer option; a holder answers
with an advertisement to ``ff02::1``. Any ARP packet that claims the address as
its sender, or any advertisement for it as target, from another MAC, names a
holder.

The frame builders and parsers are pure functions (tests check their bytes
against the RFC layouts); :func:`announce` and :func:`probe` do the I/O.
Frames shorter than Ethernet's 60-byte minimum are padded with zeros.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import socket
import struct
import time
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address

Address = IPv4Address | IPv6Address

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_HEADER = 14
ETH_MIN_FRAME = 60  # without the FCS, which the NIC adds
BROADCAST_MAC = b"\xff" * 6
ZERO_MAC = b"\0" * 6

ARP_REQUEST = 1
ARP_REPLY = 2
ARP_HTYPE_ETHERNET = 1

IPPROTO_ICMPV6 = 58
ND_NEIGHBOR_SOLICIT = 135
ND_NEIGHBOR_ADVERT = 136
ND_OPT_SOURCE_LL = 1
ND_OPT_TARGET_LL = 2
NA_FLAG_ROUTER = 0x80
NA_FLAG_SOLICITED = 0x40
NA_FLAG_OVERRIDE = 0x20
ND_HOP_LIMIT = 255  # RFC 4861: a receiver drops neighbour discovery with any other hop limit
IPV6_HEADER = 40
ALL_NODES = IPv6Address("ff02::1")
UNSPECIFIED = IPv6Address("::")

PACKET_OUTGOING = 4  # sll_pkttype of a frame this host sent
SO_ATTACH_FILTER = 26

# ---------------------------------------------------------------------- addresses


def mac_bytes(mac: str) -> bytes:
    """``"02:68:6b:00:00:0b"`` -> 6 bytes."""
    parts = mac.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise ValueError(f"{mac!r} is not a MAC address of the form 02:68:6b:00:00:0b")
    return bytes(int(p, 16) for p in parts)


def mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def solicited_node(address: IPv6Address) -> IPv6Address:
    """The solicited-node multicast address of ``address``: ff02::1:ffXX:XXXX (RFC 4291 §2.7.1)."""
    return IPv6Address(int(IPv6Address("ff02::1:ff00:0")) | (int(address) & 0xFFFFFF))


def multicast_mac(group: IPv6Address) -> bytes:
    """The Ethernet address of an IPv6 multicast group: 33:33 and its low 32 bits (RFC 2464 §7)."""
    return b"\x33\x33" + group.packed[-4:]


# ---------------------------------------------------------------------- frames


def _ethernet(dst: bytes, src: bytes, ethertype: int, payload: bytes) -> bytes:
    frame = dst + src + struct.pack("!H", ethertype) + payload
    return frame.ljust(ETH_MIN_FRAME, b"\0")


def _arp(op: int, sha: bytes, spa: IPv4Address, tha: bytes, tpa: IPv4Address) -> bytes:
    """An ARP packet for IPv4 over Ethernet (RFC 826): 28 bytes."""
    return struct.pack("!HHBBH", ARP_HTYPE_ETHERNET, ETH_P_IP, 6, 4, op) + sha + spa.packed + tha + tpa.packed


def arp_announcement(mac: bytes, address: IPv4Address) -> bytes:
    """A gratuitous ARP (RFC 5227 ARP Announcement): broadcast request, sender = target = ``address``."""
    return _ethernet(BROADCAST_MAC, mac, ETH_P_ARP, _arp(ARP_REQUEST, mac, address, ZERO_MAC, address))


def arp_probe(mac: bytes, address: IPv4Address) -> bytes:
    """An RFC 5227 ARP Probe for ``address``: broadcast request from sender address 0.0.0.0."""
    return _ethernet(BROADCAST_MAC, mac, ETH_P_ARP, _arp(ARP_REQUEST, mac, IPv4Address(0), ZERO_MAC, address))


def internet_checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def icmpv6_checksum(src: IPv6Address, dst: IPv6Address, message: bytes) -> int:
    """The ICMPv6 checksum over the IPv6 pseudo-header (RFC 8200 §8.1) and ``message`` (checksum field zero)."""
    pseudo = src.packed + dst.packed + struct.pack("!I3xB", len(message), IPPROTO_ICMPV6)
    return internet_checksum(pseudo + message)


def _icmpv6_frame(dst_mac: bytes, src_mac: bytes, src: IPv6Address, dst: IPv6Address, body: bytes) -> bytes:
    """Ethernet + IPv6 (hop limit 255) + ICMPv6 ``body`` (whose bytes 2-3, the checksum, are filled in here)."""
    checksum = icmpv6_checksum(src, dst, body)
    message = body[:2] + struct.pack("!H", checksum) + body[4:]
    header = struct.pack("!IHBB", 6 << 28, len(message), IPPROTO_ICMPV6, ND_HOP_LIMIT) + src.packed + dst.packed
    return _ethernet(dst_mac, src_mac, ETH_P_IPV6, header + message)


def unsolicited_na(mac: bytes, address: IPv6Address) -> bytes:
    """An unsolicited Neighbor Advertisement for ``address`` to ff02::1: Override set, Solicited clear, TLLA."""
    body = struct.pack("!BBHI", ND_NEIGHBOR_ADVERT, 0, 0, NA_FLAG_OVERRIDE << 24) + address.packed
    body += struct.pack("!BB", ND_OPT_TARGET_LL, 1) + mac
    return _icmpv6_frame(multicast_mac(ALL_NODES), mac, address, ALL_NODES, body)


def dad_solicitation(mac: bytes, address: IPv6Address) -> bytes:
    """A Duplicate Address Detection Neighbor Solicitation for ``address``: from ::, to its solicited-node group."""
    group = solicited_node(address)
    body = struct.pack("!BBHI", ND_NEIGHBOR_SOLICIT, 0, 0, 0) + address.packed  # no options from ::
    return _icmpv6_frame(multicast_mac(group), mac, UNSPECIFIED, group, body)


def announcement(mac: bytes, address: Address) -> bytes:
    """The frame that tells the LAN ``address`` is at ``mac`` (gratuitous ARP or unsolicited NA)."""
    return arp_announcement(mac, address) if isinstance(address, IPv4Address) else unsolicited_na(mac, address)


def probe_frame(mac: bytes, address: Address) -> bytes:
    """The frame that asks whether another host holds ``address`` (ARP Probe or DAD solicitation)."""
    return arp_probe(mac, address) if isinstance(address, IPv4Address) else dad_solicitation(mac, address)


# ---------------------------------------------------------------------- what comes back


def arp_holder(frame: bytes, address: IPv4Address, own: bytes) -> bytes | None:
    """The MAC that ``frame`` says holds ``address``, if it is an ARP packet from another host claiming it."""
    if len(frame) < ETH_HEADER + 28 or struct.unpack_from("!H", frame, 12)[0] != ETH_P_ARP:
        return None
    htype, ptype, hlen, plen, op = struct.unpack_from("!HHBBH", frame, ETH_HEADER)
    if (htype, ptype, hlen, plen) != (ARP_HTYPE_ETHERNET, ETH_P_IP, 6, 4) or op not in (ARP_REQUEST, ARP_REPLY):
        return None
    sha = frame[ETH_HEADER + 8 : ETH_HEADER + 14]
    spa = frame[ETH_HEADER + 14 : ETH_HEADER + 18]
    if spa != address.packed or sha == own:
        return None
    return sha


def na_holder(frame: bytes, address: IPv6Address, own: bytes) -> bytes | None:
    """The MAC that ``frame`` says holds ``address``, if it is a Neighbor Advertisement for it from another host.

    The MAC is the Target Link-Layer Address option's, or the frame's source when the option is missing.
    """
    start = ETH_HEADER + IPV6_HEADER
    if len(frame) < start + 24 or struct.unpack_from("!H", frame, 12)[0] != ETH_P_IPV6:
        return None
    next_header, hop_limit = frame[ETH_HEADER + 6], frame[ETH_HEADER + 7]
    if next_header != IPPROTO_ICMPV6 or hop_limit != ND_HOP_LIMIT or frame[start] != ND_NEIGHBOR_ADVERT:
        return None
    if frame[start + 8 : start + 24] != address.packed:
        return None
    payload_end = min(len(frame), start + struct.unpack_from("!H", frame, ETH_HEADER + 4)[0])
    holder = frame[6:12]
    offset = start + 24
    for _ in range(32):  # options: type, length in units of 8 bytes
        if offset + 8 > payload_end:
            break
        kind, units = frame[offset], frame[offset + 1]
        if units == 0:
            break
        if kind == ND_OPT_TARGET_LL:
            holder = frame[offset + 2 : offset + 8]
            break
        offset += units * 8
    return None if holder == own else holder


def holder_in(frame: bytes, address: Address, own: bytes) -> bytes | None:
    if isinstance(address, IPv4Address):
        return arp_holder(frame, address, own)
    return na_holder(frame, address, own)


# ---------------------------------------------------------------------- sockets

# Classic BPF for the probe's socket: only what can name a holder reaches Python (a busy LAN's other
# IPv6 traffic does not). (code, jt, jf, k); offsets from the start of the Ethernet frame.
_LD_H, _LD_B, _JEQ, _RET = 0x28, 0x30, 0x15, 0x06
ARP_FILTER: Sequence[tuple[int, int, int, int]] = (
    (_LD_H, 0, 0, 12),
    (_JEQ, 0, 1, ETH_P_ARP),
    (_RET, 0, 0, 0xFFFF),
    (_RET, 0, 0, 0),
)
NA_FILTER: Sequence[tuple[int, int, int, int]] = (
    (_LD_H, 0, 0, 12),
    (_JEQ, 0, 5, ETH_P_IPV6),
    (_LD_B, 0, 0, ETH_HEADER + 6),  # next header
    (_JEQ, 0, 3, IPPROTO_ICMPV6),
    (_LD_B, 0, 0, ETH_HEADER + IPV6_HEADER),  # ICMPv6 type
    (_JEQ, 0, 1, ND_NEIGHBOR_ADVERT),
    (_RET, 0, 0, 0xFFFF),
    (_RET, 0, 0, 0),
)


def _attach_filter(sock: socket.socket, program: Sequence[tuple[int, int, int, int]]) -> None:
    code = b"".join(struct.pack("HBBI", *insn) for insn in program)
    buffer = ctypes.create_string_buffer(code)
    fprog = struct.pack("HL", len(program), ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


# Closing a packet socket waits for an RCU grace period in the kernel (synchronize_net: 7-20 ms measured
# here), longer than all the rest of a restore. So announcements go out of one socket that stays open,
# and a probe's socket is closed in a worker thread, off the path of the restore.
_sender: socket.socket | None = None
_closing: set[asyncio.Future[None]] = set()


def _sending_socket() -> socket.socket:
    global _sender  # noqa: PLW0603 - one per process, for its lifetime
    if _sender is None:
        _sender = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: it receives nothing
    return _sender


def announce(ifname: str, mac: bytes, address: Address) -> None:
    """Send one announcement of ``address`` out of ``ifname`` now (a raw frame; it does not block)."""
    _sending_socket().sendto(announcement(mac, address), (ifname, 0))


def _close_later(sock: socket.socket) -> None:
    future = asyncio.get_running_loop().run_in_executor(None, sock.close)
    _closing.add(future)
    future.add_done_callback(_closing.discard)


async def probe(ifname: str, mac: bytes, address: Address, wait: float, *, tries: int = 2) -> bytes | None:
    """Ask the LAN behind ``ifname`` whether another host holds ``address``; its MAC, or None after ``wait`` s.

    Sends ``tries`` probes spread over the first half of ``wait`` (one may be lost), listening from
    before the first, and returns at the first answer.
    """
    ipv4 = isinstance(address, IPv4Address)
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        sock.setblocking(False)
        _attach_filter(sock, ARP_FILTER if ipv4 else NA_FILTER)
        sock.bind((ifname, ETH_P_ARP if ipv4 else ETH_P_IPV6))  # listening from here on (Python applies htons)
        frame = probe_frame(mac, address)
        deadline = time.monotonic() + wait
        sends = [time.monotonic() + i * wait / (2 * tries) for i in range(tries)]
        for _ in range(10_000):  # bounded: each pass sends, receives one frame or times out
            now = time.monotonic()
            while sends and sends[0] <= now:
                sends.pop(0)
                with contextlib.suppress(BlockingIOError):
                    sock.send(frame)
            until = min([deadline, *sends[:1]])
            if now >= deadline:
                return None
            try:
                async with asyncio.timeout(max(0.0, until - now)):
                    data, where = await loop.sock_recvfrom(sock, 2048)
            except TimeoutError:
                continue
            if where[2] == PACKET_OUTGOING:
                continue
            holder = holder_in(data, address, mac)
            if holder is not None:
                return holder
    finally:
        _close_later(sock)
    return None
