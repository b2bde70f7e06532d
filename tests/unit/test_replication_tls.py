"""The data connection over mutual TLS with the cluster's certificates (socketpairs, no IP networking)."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from pathlib import Path

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
