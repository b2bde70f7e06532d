"""The data connection's frames over real sockets: round trips, limits, garbage."""

from __future__ import annotations

import socket
import struct
import threading

import pytest

from hakeeper.replication.protocol import (
    HEADER,
    MAX_PAYLOAD,
    ConnectionClosed,
    IdleTimeout,
    Op,
    ProtocolError,
    parse_hash_request,
    recv_frame,
    send_frame,
    send_json,
)


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.settimeout(5)
    b.settimeout(5)
    yield a, b
    a.close()
    b.close()


def test_frames_round_trip(pair) -> None:
    a, b = pair
    data = bytes(range(256)) * 4096  # 1 MiB: the largest write

    def sender() -> None:
        send_frame(a, Op.WRITE, seq=7, offset=1 << 40, payload=data)
        send_json(a, Op.HELLO, {"volume": "vol1", "size": 4096})
        send_frame(a, Op.FLUSH, seq=8)

    t = threading.Thread(target=sender)
    t.start()
    f = recv_frame(b)
    assert (f.op, f.seq, f.offset, bytes(f.payload)) == (Op.WRITE, 7, 1 << 40, data)
    assert recv_frame(b).json() == {"volume": "vol1", "size": 4096}
    f = recv_frame(b)
    assert (f.op, f.seq, len(f.payload)) == (Op.FLUSH, 8, 0)
    t.join(10)


@pytest.mark.parametrize(
    ("wire", "error"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "garbage on the data connection"),
        (HEADER.pack(b"HK", Op.WRITE, 0, MAX_PAYLOAD + 1, 1, 0), "larger than the limit"),
        (HEADER.pack(b"HK", 99, 0, 0, 1, 0), "unknown frame op 99"),
        (HEADER.pack(b"HK", Op.WRITE, 0, 100, 1, 0) + b"x" * 10, "in the middle of a frame"),
        (HEADER.pack(b"HK", Op.WRITE, 0, 100, 1, 0)[:10], "in the middle of a frame"),
    ],
)
def test_garbage_oversize_unknown_and_cut_frames_are_refused(pair, wire: bytes, error: str) -> None:
    a, b = pair
    a.sendall(wire)
    a.shutdown(socket.SHUT_WR)
    with pytest.raises(ProtocolError, match=error):
        recv_frame(b)


def test_bounds_of_payloads(pair) -> None:
    a, b = pair
    with pytest.raises(ValueError, match="at most"):
        send_frame(a, Op.WRITE, payload=bytes(MAX_PAYLOAD + 1))
    a.sendall(HEADER.pack(b"HK", Op.HASH, 0, 8, 1, 0) + struct.pack("!II", 65536, 1 << 30))
    with pytest.raises(ProtocolError, match="out of bounds"):
        parse_hash_request(recv_frame(b))


def test_a_clean_close_and_an_idle_timeout_are_told_apart(pair) -> None:
    a, b = pair
    b.settimeout(0.05)
    with pytest.raises(IdleTimeout):
        recv_frame(b)
    send_frame(a, Op.ACK, seq=1)  # the stream is still in step after an idle timeout
    assert recv_frame(b).seq == 1
    a.shutdown(socket.SHUT_WR)
    with pytest.raises(ConnectionClosed):
        recv_frame(b)
