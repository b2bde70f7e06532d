"""The data connections of mirrors: the data port, and mutual TLS with the cluster's certificates.

The data port is ``comm_port + 3`` (7368 by default: 7365 carries messages, 7366 heartbeats, 7367
joins). A target listens on its ends of the communication paths to the source; a source tries the
target's ends of the paths to it in priority order. These are TCP connections of their own, never
the heartbeat path's. Both ends check the peer's certificate: the source that it names the target
it wants, the target that it names the volume's source, both that it is not revoked.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable
from typing import cast

from cryptography import x509

from hakeeper.comm.identity import Identity
from hakeeper.comm.revocation import load_revocations
from hakeeper.comm.tls import peer_node, reason
from hakeeper.errors import HakeeperError
from hakeeper.replication.tlssock import SharedTLS

logger = logging.getLogger(__name__)

DATA_PORT_OFFSET = 3  # comm_port + 3: messages +0, heartbeats +1, joins 7367 (+2)
CONNECT_TIMEOUT = 5.0  # s for a TCP connect and then for the TLS handshake, each

Refusal = Callable[[x509.Certificate], str | None]


def data_port(comm_port: int) -> int:
    """The data port of mirrors: ``comm_port + 3``."""
    return comm_port + DATA_PORT_OFFSET


def keepalive(sock: socket.socket) -> None:
    """A peer that vanished (power off) is noticed within ~11 s even by a thread blocked in recv."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 2)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def revoked(identity: Identity) -> Refusal:
    """The cluster's revocation list, read at each handshake (``hakeeper cluster revoke`` holds here at once)."""
    return lambda cert: load_revocations(identity.directory).refusal(cert)


def connector(
    context: ssl.SSLContext,
    node: str,
    addresses: list[str],
    port: int,
    refusal: Refusal | None = None,
) -> Callable[[], socket.socket]:
    """``connect`` for the mirror to ``node``: TCP to its data port, mutual TLS, the peer checked to be ``node``
    (and not revoked)."""

    def connect() -> socket.socket:
        failures = []
        for address in addresses:
            try:
                raw = socket.create_connection((address, port), timeout=CONNECT_TIMEOUT)
            except OSError as exc:
                failures.append(f"{address}:{port}: {reason(exc)}")
                continue
            try:
                keepalive(raw)
                tls = context.wrap_socket(raw)
                peer = peer_node(tls, refusal)
                if peer != node:
                    raise ConnectionRefusedError(f"{address}:{port} is {peer}, not {node}")
                # The mirror's receiver thread reads while writers send: one OpenSSL call at a time.
                return cast(socket.socket, SharedTLS(tls))
            except (OSError, HakeeperError) as exc:
                raw.close()
                failures.append(f"{address}:{port}: {reason(exc) if isinstance(exc, OSError) else exc}")
        raise ConnectionError(f"no data connection to {node}: {'; '.join(failures) or 'no path to it'}")

    return connect


def accept_from(
    conn: socket.socket, address: str, context: ssl.SSLContext, source: str, refusal: Refusal | None, *, what: str
) -> ssl.SSLSocket | None:
    """The TLS side of an accepted data connection, if its peer is ``source``; else None (logged, closed)."""
    try:
        conn.settimeout(CONNECT_TIMEOUT)
        keepalive(conn)
        tls = context.wrap_socket(conn, server_side=True)
        node = peer_node(tls, refusal)
    except (OSError, HakeeperError) as exc:
        logger.warning("mirror %s: data connection from %s refused: %s", what, address,
                       reason(exc) if isinstance(exc, OSError) else exc)  # fmt: skip
        conn.close()
        return None
    if node != source:
        logger.warning("mirror %s: refused %s (%s): the source is %s", what, node, address, source)
        tls.close()
        return None
    return tls
