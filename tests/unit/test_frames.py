"""Length-prefixed JSON frames, shared by messages between nodes and the join exchange."""

from __future__ import annotations

import asyncio
import struct

import pytest

from hakeeper.comm.frames import HEADER, FrameError, decode, encode, read_frame


def read(data: bytes, limit: int, first: bytes = b"") -> dict[str, object]:
    async def scenario() -> dict[str, object]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await read_frame(reader, limit, first)

    return asyncio.run(scenario())


def test_a_frame_reads_back_as_the_message_utf8_and_all() -> None:
    message = {"op": "echo", "args": {"text": "café ☃ \U0001f600", "n": [1, 2.5, None, True]}}
    data = encode(message, 1000)
    assert struct.unpack(">I", data[:4])[0] == len(data) - 4
    assert "café".encode() in data  # UTF-8, not \\u escapes
    assert read(data, 1000) == message
    assert read(data[1:], 1000, first=data[:1]) == message  # its first bytes already read


def test_a_message_larger_than_the_limit_is_not_sent() -> None:
    with pytest.raises(FrameError, match="larger than 10"):
        encode({"text": "x" * 20}, 10)


@pytest.mark.parametrize(
    "body, error",
    [
        (b"nope!", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),  # deeper than the parser's stack
    ],
)
def test_a_malformed_frame_is_a_frame_error(body: bytes, error: str) -> None:
    with pytest.raises(FrameError, match=error):
        decode(body)
    with pytest.raises(FrameError, match=error):
        read(HEADER.pack(len(body)) + body, len(body))


def test_a_frame_announced_larger_than_the_limit_is_refused_before_it_is_read() -> None:
    with pytest.raises(FrameError, match="larger than 64"):
        read(HEADER.pack(65), 64)


def test_a_peer_that_hangs_up_in_the_middle_is_an_incomplete_read() -> None:
    with pytest.raises(asyncio.IncompleteReadError):
        read(HEADER.pack(10) + b"{}", 64)
