"""The frames of a mirror's data connection, over any connected blocking socket (plain or TLS).

Every frame is a 24-byte header and a payload::

    magic "HK" | op u8 | flags u8 | payload length u32 | sequence u64 | offset u64

all big-endian. The source numbers every frame it sends (``sequence``, from 1); the target
answers every frame, in order, with an ``ACK`` (or ``HASHES`` for a ``HASH``, ``HELLO`` for
a ``HELLO``) carrying the same sequence, so one counter tells the source how far the target
got. A payload is at most :data:`MAX_PAYLOAD` (1 MiB + 4 KiB): larger writes are split by the
sender; anything longer, a wrong magic or an unknown op is garbage and refused.
"""

from __future__ import annotations

import enum
import json
import socket
import struct
from dataclasses import dataclass
from typing import Any

from hakeeper.errors import CommunicationFailed

MAGIC = b"HK"
HEADER = struct.Struct("!2sBBIQQ")
MAX_DATA = 1 << 20  # the largest WRITE or RESYNC payload; bigger writes are sent in pieces
MAX_PAYLOAD = MAX_DATA + 4096
DIGEST = 16  # bytes of a chunk's blake2b digest in HASHES


class Op(enum.IntEnum):
    HELLO = 1  # JSON: volume, size, chunk, node, role, generation (both ways, the target answers)
    WRITE = 2  # an application write at offset
    FLUSH = 3  # barrier: the target fdatasyncs, then acks
    ACK = 4  # the target has applied every frame up to this sequence
    ERROR = 5  # UTF-8 text: why the peer gives up; the connection closes after it
    RESYNC = 6  # resync data at offset
    ZERO = 7  # payload u64 length: the range [offset, offset+length) is zeros
    HASH = 8  # payload u32 chunk, u32 count: digests of count chunks from offset
    HASHES = 9  # reply to HASH: count digests of DIGEST bytes
    GEN = 10  # JSON: a generation update (begin resync / in sync / left / handover / handover_commit)
    DIRTY = 11  # u64 pairs (offset, length): a handed-over target's regions; offset = its index in the handover


class ProtocolError(CommunicationFailed):
    """The peer sent something that is not a frame of this protocol, or broke off."""


class ConnectionClosed(ProtocolError):
    """The peer closed the connection at a frame boundary."""


class IdleTimeout(TimeoutError):
    """No byte of a new frame arrived within the socket's timeout (the stream is still in step)."""


@dataclass(frozen=True, slots=True)
class Frame:
    op: Op
    flags: int
    seq: int
    offset: int
    payload: memoryview

    def json(self) -> dict[str, Any]:
        try:
            value = json.loads(bytes(self.payload))
        except ValueError:
            raise ProtocolError(f"a {self.op.name} frame carries no valid JSON") from None
        if not isinstance(value, dict):
            raise ProtocolError(f"a {self.op.name} frame's JSON is not an object")
        return value

    def text(self) -> str:
        return bytes(self.payload).decode("utf-8", "replace")


_SMALL = 64 * 1024  # payloads up to this are sent in one sendall with their header


def send_frame(
    sock: socket.socket, op: Op, *, seq: int = 0, offset: int = 0, payload: bytes | memoryview = b"", flags: int = 0
) -> int:
    """Send one frame (blocking, under the socket's timeout); the bytes put on the wire.

    Not thread-safe: callers that share a socket hold a lock around it.
    """
    n = len(payload)
    if n > MAX_PAYLOAD:
        raise ValueError(f"a frame's payload is at most {MAX_PAYLOAD} bytes, not {n}")
    head = HEADER.pack(MAGIC, op, flags, n, seq, offset)
    if n <= _SMALL:
        sock.sendall(head + bytes(payload) if n else head)
    else:  # no copy of a large payload (an SSLSocket has no sendmsg)
        sock.sendall(head)
        sock.sendall(payload)
    return HEADER.size + n


def send_json(sock: socket.socket, op: Op, value: dict[str, Any], *, seq: int = 0) -> int:
    return send_frame(sock, op, seq=seq, payload=json.dumps(value, separators=(",", ":")).encode())


def _recv_exact(sock: socket.socket, view: memoryview, *, frame_start: bool) -> None:
    got = 0
    while got < len(view):
        try:
            n = sock.recv_into(view[got:])
        except TimeoutError:
            if frame_start and got == 0:
                raise IdleTimeout("no frame within the timeout") from None
            raise ProtocolError("the peer stopped in the middle of a frame") from None
        if n == 0:
            if frame_start and got == 0:
                raise ConnectionClosed("the peer closed the connection")
            raise ProtocolError(f"the connection closed in the middle of a frame ({got} of {len(view)} bytes)")
        got += n


def recv_frame(sock: socket.socket) -> Frame:
    """Receive one frame; :class:`IdleTimeout` if none started within the socket's timeout."""
    head = bytearray(HEADER.size)
    _recv_exact(sock, memoryview(head), frame_start=True)
    magic, op, flags, n, seq, offset = HEADER.unpack(head)
    if magic != MAGIC:
        raise ProtocolError(
            f"garbage on the data connection (header {bytes(head[:8]).hex()}): not a hakeeper mirror peer"
        )
    try:
        kind = Op(op)
    except ValueError:
        raise ProtocolError(f"unknown frame op {op} on the data connection") from None
    if n > MAX_PAYLOAD:
        raise ProtocolError(f"a {kind.name} frame of {n} bytes is larger than the limit of {MAX_PAYLOAD}")
    payload = bytearray(n)
    if n:
        _recv_exact(sock, memoryview(payload), frame_start=False)
    return Frame(kind, flags, seq, offset, memoryview(payload))


def hash_request(chunk: int, count: int) -> bytes:
    return struct.pack("!II", chunk, count)


def parse_hash_request(frame: Frame) -> tuple[int, int]:
    if len(frame.payload) != 8:
        raise ProtocolError("a HASH frame needs 8 bytes of payload (chunk, count)")
    chunk, count = struct.unpack("!II", frame.payload)
    if chunk <= 0 or count <= 0 or count * DIGEST > MAX_PAYLOAD:
        raise ProtocolError(f"a HASH frame asks for {count} chunks of {chunk} bytes: out of bounds")
    return chunk, count


def zero_payload(length: int) -> bytes:
    return struct.pack("!Q", length)


def parse_zero(frame: Frame) -> int:
    if len(frame.payload) != 8:
        raise ProtocolError("a ZERO frame needs 8 bytes of payload (length)")
    (length,) = struct.unpack("!Q", frame.payload)
    return int(length)


def pack_ranges(ranges: list[tuple[int, int]]) -> bytes:
    return b"".join(struct.pack("!QQ", o, n) for o, n in ranges)


def parse_ranges(frame: Frame) -> list[tuple[int, int]]:
    if len(frame.payload) % 16:
        raise ProtocolError("a DIRTY frame's payload is not a list of (offset, length) pairs")
    return [(int(o), int(n)) for o, n in struct.iter_unpack("!QQ", frame.payload)]
