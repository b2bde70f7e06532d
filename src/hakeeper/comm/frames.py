"""Length-prefixed JSON frames: how messages between nodes (:mod:`~hakeeper.comm.rpc`) and the join
exchange (:mod:`~hakeeper.comm.join`) travel on a TLS connection.

A frame is a 4-byte big-endian length and a UTF-8 JSON object of at most ``limit``
bytes (each protocol sets its own). Anything else — a longer frame, bytes that are
not JSON, JSON nested too deep to read, JSON that is not an object — is a
:class:`FrameError`: the connection that sent it is closed, with a log line saying
who sent what.
"""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

from hakeeper.errors import CommunicationFailed

HEADER = struct.Struct(">I")


class FrameError(CommunicationFailed):
    """A frame that is malformed or too large."""


def encode(message: dict[str, Any], limit: int) -> bytes:
    """``message`` as one frame; FrameError when it is larger than ``limit``."""
    data = json.dumps(message, ensure_ascii=False).encode()
    if len(data) > limit:
        raise FrameError(f"a message of {len(data)} bytes is larger than {limit}")
    return HEADER.pack(len(data)) + data


def decode(data: bytes) -> dict[str, Any]:
    """A frame's body as the JSON object it must be."""
    try:
        message = json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser's stack
        raise FrameError("a frame is not JSON") from None
    if not isinstance(message, dict):
        raise FrameError("a frame is not a JSON object")
    return message


async def read_frame(reader: asyncio.StreamReader, limit: int, first: bytes = b"") -> dict[str, Any]:
    """One frame; ``first``: its first bytes, already read.

    :class:`asyncio.IncompleteReadError` when the peer hangs up before the frame ends.
    """
    header = first + await reader.readexactly(HEADER.size - len(first))
    (size,) = HEADER.unpack(header)
    if size > limit:
        raise FrameError(f"a frame of {size} bytes is larger than {limit}")
    return decode(await reader.readexactly(size))


async def write_frame(writer: asyncio.StreamWriter, message: dict[str, Any], limit: int) -> None:
    writer.write(encode(message, limit))
    await writer.drain()
