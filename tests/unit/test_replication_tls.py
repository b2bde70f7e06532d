"""The data connection over mutual TLS with the cluster's certificates (socketpairs, no IP networking)."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from pathlib import Path

import pytest

from hakeeper.comm.identity import init_cluster
from hakeeper.comm.tls import client_context, server_context
from hakeeper.replication.states import MirrorState

from .replication_helpers import CHUNK, MiB, TargetNode, make_source, wait_state


def test_a_sync_mirror_runs_over_tls_sockets(tmp_path: Path) -> None:
    identity = init_cluster(tmp_path / "root", "node1", "prod")  # both ends use it: mutual TLS all the same
    server, client = server_context(identity), client_context(identity)
    node2 = TargetNode(tmp_path, "node2", 2 * MiB)
    served: list[threading.Thread] = []
    socks: list[socket.socket] = []

    def serve(raw: socket.socket) -> None:
        raw.settimeout(10)
        with contextlib.suppress(OSError), server.wrap_socket(raw, server_side=True) as tls:
            tls.settimeout(None)
            node2.target.serve(tls)

    def connect() -> socket.socket:
        a, b = socket.socketpair()
        socks.append(b)
        t = threading.Thread(target=serve, args=(b,), daemon=True)
        served.append(t)
        t.start()
        a.settimeout(10)
        tls = client.wrap_socket(a)
        assert isinstance(tls, ssl.SSLSocket) and tls.version() == "TLSv1.3"
        return tls

    source = make_source(tmp_path, 2 * MiB)
    try:
        source.add_target("node2", connect, tmp_path / "node2.bitmap", timeout=5.0, retry_interval=0.05)
        wait_state(source, "node2", MirrorState.MIRRORING)
        for i in range(8):
            source.write(i * 3 * CHUNK, bytes([i + 1]) * (CHUNK + 512))
        source.write(MiB, bytes(range(256)) * 4096)  # 1 MiB: a large frame through TLS records
        source.flush()
        assert source.verify("node2") == []
        assert node2.data() == (tmp_path / "src.img").read_bytes()
    finally:
        source.close()
        for t in served:
            t.join(10)
        for s in socks:
            s.close()
        node2.close()


def test_shared_tls_carries_one_reader_and_several_writers_at_once(tmp_path: Path) -> None:
    """The source's receiver reads while libfuse's threads send: SharedTLS keeps the stream whole both ways,
    and writers that meet OpenSSL's "want write" do not interleave their bytes."""
    from hakeeper.replication.tlssock import SharedTLS

    identity = init_cluster(tmp_path / "root", "node1", "prod")
    server, client = server_context(identity), client_context(identity)
    a, b = socket.socketpair()
    a.settimeout(10)
    b.settimeout(10)
    accepted: list[ssl.SSLSocket] = []
    handshake = threading.Thread(target=lambda: accepted.append(server.wrap_socket(b, server_side=True)))
    handshake.start()
    shared = SharedTLS(client.wrap_socket(a))
    handshake.join(10)
    far = SharedTLS(accepted[0])
    pieces = {w: bytes([w + 1]) * (300 * 1024) for w in range(3)}  # larger than one OpenSSL piece each
    echo = bytes(range(256)) * 2048
    got_far = bytearray()
    got_near = bytearray()

    def far_side() -> None:  # reads what the writers send and, meanwhile, sends its own stream
        far.sendall(echo)
        buf = bytearray(65536)
        while len(got_far) < 3 * 300 * 1024:  # bounded: each recv returns data or raises on timeout
            n = far.recv_into(buf)
            assert n > 0
            got_far.extend(buf[:n])

    def reader() -> None:
        buf = bytearray(65536)
        while len(got_near) < len(echo):
            n = shared.recv_into(buf)
            assert n > 0
            got_near.extend(buf[:n])

    threads = [threading.Thread(target=far_side), threading.Thread(target=reader)]
    threads += [threading.Thread(target=shared.sendall, args=(pieces[w],)) for w in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not any(t.is_alive() for t in threads)
    assert bytes(got_near) == echo
    assert len(got_far) == 3 * 300 * 1024, len(got_far)
    assert sorted(got_far) == sorted(b"".join(pieces.values())), "every byte of every writer arrived"
    shared.settimeout(0.2)
    with pytest.raises(TimeoutError):
        shared.recv_into(bytearray(10))  # nothing more comes: the engine's timeout holds
    shared.close()
    far.close()
